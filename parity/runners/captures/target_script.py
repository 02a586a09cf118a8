#!/usr/bin/env python3
"""Run a TensorRT engine over a `parity export-inputs` folder on the target and write what it computed.

Copied into every export folder as `capture_trt.py`; it imports only tensorrt, numpy and cuda-python
(`cuda.bindings.runtime` or `cuda.cudart`) or pycuda, never parity, so it runs on a Jetson, a DRIVE
box or a GPU workstation as it is. TensorRT 10.x / 11.x Python API.

    python3 capture_trt.py --engine model.plan --inputs EXPORT_DIR --out CAPTURE_DIR [--precision fp16] [--debug-tensors]

CAPTURE_DIR gets capture.json (engine sha256, TensorRT version, GPU, the precision claimed, the
engine inspector's layer precisions, per batch the sha256 of every input row actually fed and of
every output file, the GPU time of each batch), a copy of inputs.json, outputs/<batch>.<output>.npy
and, with --debug-tensors, debug/<batch>/<tensor>.npy plus debug/<batch>/tensor_summary.json for
every tensor the engine marks as a debug tensor (trtexec --markDebug / --markUnfusedTensorsAsDebugTensors
when building). Bring CAPTURE_DIR back and run `parity replay --outputs NAME=CAPTURE_DIR`.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import time
from datetime import datetime, timezone

import numpy as np

SCHEMA = "parity.capture/1"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def row_hashes(a):
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in a]


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class Cuda:
    """Device buffers and a stream through cuda-python, else pycuda."""

    def __init__(self):
        self.rt = None
        for mod in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                import importlib

                self.rt = importlib.import_module(mod)
                break
            except ImportError:
                continue
        if self.rt is None:
            import pycuda.autoinit  # noqa: F401
            import pycuda.driver as drv

            self.drv = drv
            self.stream = drv.Stream()
        else:
            self.stream = self.call("cudaStreamCreate")

    def call(self, fn, *args):
        out = getattr(self.rt, fn)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(err) != 0:
            raise RuntimeError(f"CUDA {fn} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, n):
        return int(self.call("cudaMalloc", n)) if self.rt else self.drv.mem_alloc(n)

    def free(self, p):
        self.call("cudaFree", p) if self.rt else p.free()

    def htod(self, p, a):
        if self.rt:
            self.call("cudaMemcpyAsync", p, a.ctypes.data, a.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
        else:
            self.drv.memcpy_htod_async(p, a, self.stream)

    def dtoh(self, a, p):
        if self.rt:
            self.call("cudaMemcpyAsync", a.ctypes.data, p, a.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        else:
            self.drv.memcpy_dtoh_async(a, p, self.stream)

    def handle(self):
        return int(self.stream) if self.rt else self.stream.handle

    def sync(self):
        self.call("cudaStreamSynchronize", self.stream) if self.rt else self.stream.synchronize()

    def gpu_name(self):
        if self.rt:
            name = self.call("cudaGetDeviceProperties", 0).name
            return name.decode(errors="replace").rstrip("\x00") if isinstance(name, (bytes, bytearray)) else str(name)
        return self.drv.Device(0).name()


def layer_precisions(trt, engine):
    """Layers by output datatype from the engine inspector (needs an engine built with detailed profiling
    verbosity to list them; else null)."""
    try:
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:
        return None
    counts = {"fp16": 0, "fp32": 0, "other": 0}
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict):
            return None  # LAYER_NAMES_ONLY: names, no datatypes
        fmt = " ".join(str(o.get("Format/Datatype", "")) for o in layer.get("Outputs", []))
        counts["fp16" if "Half" in fmt else "fp32" if "Float" in fmt else "other"] += 1
    n = sum(counts.values())
    return {"layers": n, **counts} if n else None


_POLYGRAPHY = {}


def load_input(folder, tensor):
    path = os.path.join(folder, tensor["file"])
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if path.endswith(".json"):  # the Polygraphy --load-inputs file: a list of feeds, arrays as base64 np.save
        if path not in _POLYGRAPHY:
            with open(path) as f:
                _POLYGRAPHY[path] = json.load(f)
        enc = _POLYGRAPHY[path][tensor["index"]][tensor["name"]]["array"]
        return np.load(io.BytesIO(base64.b64decode(enc)), allow_pickle=False)
    return np.fromfile(path, dtype=np.dtype(tensor["dtype"]).newbyteorder("<")).reshape(tensor["shape"])


class DebugWriter:
    """Saves every debug tensor of one execution as .npy plus tensor_summary.json (trtexec's layout)."""

    def __init__(self, trt, cuda, dtypes):
        self.trt, self.cuda, self.dtypes, self.folder, self.summary = trt, cuda, dtypes, None, []
        base = getattr(trt, "IDebugListener", object)

        class Listener(base):
            def __init__(inner):
                if base is not object:
                    base.__init__(inner)

            def process_debug_tensor(inner, addr, location, dtype, shape, name, stream):
                self.save(addr, dtype, shape, name)
                return True

        self.listener = Listener()

    def save(self, addr, dtype, shape, name):
        arr = np.empty(tuple(int(d) for d in shape), dtype=self.trt.nptype(dtype))
        self.cuda.sync()
        self.cuda.dtoh(arr, addr)
        self.cuda.sync()
        fname = f"{len(self.summary):04d}_{safe(name)}.npy"  # trtexec's naming: a counter, then the name
        np.save(os.path.join(self.folder, fname), arr)
        f = arr.astype(np.float32)
        fin = f[np.isfinite(f)]
        stats = {k: (float(v) if fin.size else "nan") for k, v in (("min", fin.min() if fin.size else 0), ("max", fin.max() if fin.size else 0),
                                                                  ("avg", fin.mean() if fin.size else 0))}
        self.summary.append({"name": name, "shape": list(arr.shape), "type": {"float32": "FLOAT", "float16": "HALF"}.get(arr.dtype.name, arr.dtype.name.upper()),
                             "statistics": {**stats, "nonfinite": int(f.size - fin.size)}, "files": {"numpy": fname}})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--inputs", required=True, help="the export folder (holds inputs.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--precision", help="the precision the engine was built for (recorded and checked by parity)")
    ap.add_argument("--debug-tensors", action="store_true", help="save the engine's debug tensors per batch")
    ap.add_argument("--batches", help="comma-separated batch ids (default: all)")
    args = ap.parse_args(argv)
    import tensorrt as trt

    manifest_path = os.path.join(args.inputs, "inputs.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    os.makedirs(os.path.join(args.out, "outputs"), exist_ok=True)
    shutil.copyfile(manifest_path, os.path.join(args.out, "inputs.json"))
    cuda = Cuda()
    with open(args.engine, "rb") as f:
        plan = f.read()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    if engine is None:
        sys.exit(f"{args.engine}: TensorRT {trt.__version__} cannot load this engine on {cuda.gpu_name()} (another version or GPU?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    debug = DebugWriter(trt, cuda, None) if args.debug_tensors else None
    if debug:
        context.set_debug_listener(debug.listener)
        # the tensors marked when building (trtexec --markDebug / --markUnfusedTensorsAsDebugTensors); the
        # unfused state is a property of the Python context from TensorRT 10.12, absent before
        if hasattr(context, "unfused_tensors_debug_state"):
            context.unfused_tensors_debug_state = True
        context.set_all_tensors_debug_state(True)
    wanted = set(args.batches.split(",")) if args.batches else None
    buffers, records = {}, []

    def buffer(name, nbytes):
        ptr, size = buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                cuda.free(ptr)
            ptr = cuda.malloc(nbytes)
            buffers[name] = (ptr, nbytes)
        return ptr

    for b in manifest["batches"]:
        if wanted and b["id"] not in wanted:
            continue
        x = np.ascontiguousarray(load_input(args.inputs, b["tensor"]))
        feed = {b["tensor"]["name"]: x}
        if set(feed) != set(inputs):
            sys.exit(f"{args.engine}: engine inputs {inputs}, the export has {sorted(feed)}")
        for n, a in feed.items():
            want = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            if a.dtype != want:
                sys.exit(f"{args.engine}: input {n} is {want} in the engine, {a.dtype} in the export")
            context.set_input_shape(n, a.shape)
            ptr = buffer(n, a.nbytes)
            cuda.htod(ptr, a)
            context.set_tensor_address(n, int(ptr))
        outs = {}
        for n in names:
            if n not in inputs:
                host = np.empty(tuple(context.get_tensor_shape(n)), dtype=trt.nptype(engine.get_tensor_dtype(n)))
                context.set_tensor_address(n, int(buffer(n, host.nbytes)))
                outs[n] = host
        if debug:
            debug.folder, debug.summary = os.path.join(args.out, "debug", b["id"]), []
            os.makedirs(debug.folder, exist_ok=True)
        cuda.sync()
        start = time.perf_counter()
        if not context.execute_async_v3(cuda.handle()):
            sys.exit(f"{args.engine}: execution failed on batch {b['id']}")
        cuda.sync()
        ms = (time.perf_counter() - start) * 1e3
        for n, host in outs.items():
            cuda.dtoh(host, buffers[n][0])
        cuda.sync()
        rec = {"id": b["id"], "input_sha256": {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in feed.items()},
               "frame_sha256": row_hashes(x), "gpu_ms": ms, "outputs": {}}
        for n, host in outs.items():
            fname = f"outputs/{b['id']}.{safe(n)}.npy"
            np.save(os.path.join(args.out, fname), host)
            rec["outputs"][n] = {"file": fname, "shape": list(host.shape), "dtype": host.dtype.name, "sha256": sha256_file(os.path.join(args.out, fname))}
        if debug:
            with open(os.path.join(debug.folder, "tensor_summary.json"), "w") as f:
                json.dump({"metadata": {"title": "Tensor Summary Report", "engine": os.path.abspath(args.engine), "batch": b["id"]},
                           "tensors": debug.summary}, f, indent=1)
            rec["debug"] = f"debug/{b['id']}"
        records.append(rec)
        print(f"{b['id']}: {len(x)} frames, {ms:.2f} ms", file=sys.stderr)
    for ptr, _ in buffers.values():
        cuda.free(ptr)
    doc = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(),
        "engine": {"path": os.path.abspath(args.engine), "sha256": hashlib.sha256(plan).hexdigest()},
        "tensorrt": str(trt.__version__), "gpu": cuda.gpu_name(), "host": platform.node(), "precision_claimed": args.precision,
        "layer_precisions": layer_precisions(trt, engine), "inputs_manifest_sha256": sha256_file(manifest_path), "batches": records,
    }
    with open(os.path.join(args.out, "capture.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {args.out}/capture.json: {len(records)} batches", file=sys.stderr)


if __name__ == "__main__":
    main()
