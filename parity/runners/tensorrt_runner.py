"""TensorRT engines (10.x / 11.x Python API): build from the exported ONNX, cache, load, run.

Precision is never a silent builder flag: networks are strongly typed, so an fp16 engine is built
from the fp16 ONNX graph and checked afterwards (an engine with no fp16 layer is refused, not
called fp16). TF32 is set or cleared explicitly ("fp32" engines have it cleared: TensorRT turns it
on by default). Buffers go through cuda-python (`cuda.bindings.runtime` or the older `cuda.cudart`),
or pycuda where that is what is installed. Everything is imported when a runner is built, so
`import parity` works without TensorRT.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import RunnerUnavailable
from .base import Runner, RunnerError, TensorSpec

SUPPORTED_MAJOR = (10, 11)
INSTALL_HINT = "tensorrt is not installed (pip install 'parity[gpu]')"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise RunnerUnavailable(INSTALL_HINT) from None
    major = int(str(trt.__version__).split(".")[0])
    if major not in SUPPORTED_MAJOR:
        raise RunnerUnavailable(f"tensorrt {trt.__version__} is installed; parity's TensorRT runner is written for 10.x and 11.x")
    return trt


class CudaMemory:
    """Device buffers and a stream through cuda-python, else pycuda."""

    def __init__(self):
        self.kind = None
        for mod in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                import importlib

                self.rt = importlib.import_module(mod)
                self.kind = "cuda-python"
                break
            except ImportError:
                continue
        if self.kind is None:
            try:
                import pycuda.autoinit  # noqa: F401
                import pycuda.driver as drv

                self.drv, self.kind = drv, "pycuda"
            except ImportError:
                raise RunnerUnavailable("TensorRT needs cuda-python or pycuda (pip install 'parity[gpu]')") from None
        self.stream = self._call("cudaStreamCreate") if self.kind == "cuda-python" else self.drv.Stream()

    def _call(self, fn, *args):
        out = getattr(self.rt, fn)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(err) != 0:
            raise RunnerError(f"CUDA {fn} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes)) if self.kind == "cuda-python" else self.drv.mem_alloc(nbytes)

    def free(self, ptr) -> None:
        if self.kind == "cuda-python":
            self._call("cudaFree", ptr)
        else:
            ptr.free()

    def htod(self, ptr, arr: np.ndarray) -> None:
        if self.kind == "cuda-python":
            self._call("cudaMemcpyAsync", ptr, arr.ctypes.data, arr.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
        else:
            self.drv.memcpy_htod_async(ptr, arr, self.stream)

    def dtoh(self, arr: np.ndarray, ptr) -> None:
        if self.kind == "cuda-python":
            self._call("cudaMemcpyAsync", arr.ctypes.data, ptr, arr.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        else:
            self.drv.memcpy_dtoh_async(arr, ptr, self.stream)

    def stream_handle(self) -> int:
        return int(self.stream) if self.kind == "cuda-python" else self.stream.handle

    def synchronize(self) -> None:
        if self.kind == "cuda-python":
            self._call("cudaStreamSynchronize", self.stream)
        else:
            self.stream.synchronize()

    def gpu_name(self) -> str:
        if self.kind == "cuda-python":
            props = self._call("cudaGetDeviceProperties", 0)
            name = props.name
            return name.decode(errors="replace").rstrip("\x00") if isinstance(name, (bytes, bytearray)) else str(name)
        return self.drv.Device(0).name()


@dataclass(frozen=True)
class BuildOptions:
    precision: str  # fp32 (TF32 cleared) | tf32 (TF32 set) | fp16 (strongly typed fp16 graph)
    workspace_bytes: int = 1 << 30
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def build_engine(trt, onnx_bytes: bytes, input_name: str, input_shape, options: BuildOptions, timing_cache: bytes | None = None):
    """(serialized engine, serialized timing cache). A pinned timing cache makes rebuilds reproducible."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RunnerError("TensorRT could not parse the ONNX model: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: an "fp32" engine would be TF32
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so the inspector reports layer precisions
    profile = builder.create_optimization_profile()
    shape = tuple(input_shape)
    profile.set_shape(input_name, (options.min_batch, *shape), (options.opt_batch, *shape), (options.max_batch, *shape))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RunnerError("TensorRT failed to build the engine (see its log above)")
    return bytes(plan), bytes(cache.serialize())


def layer_precisions(trt, engine) -> dict:
    """{"layers": n, "fp16": k, "fp32": m, "share_fp16": k/n} from the engine inspector."""
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    counts = {"fp16": 0, "fp32": 0, "other": 0}
    for layer in info.get("Layers", []):
        outs = layer.get("Outputs", []) if isinstance(layer, dict) else []
        fmt = " ".join(str(o.get("Format/Datatype", "")) for o in outs)
        counts["fp16" if "Half" in fmt else "fp32" if "Float" in fmt else "other"] += 1
    n = sum(counts.values())
    return {"layers": n, **counts, "share_fp16": counts["fp16"] / n if n else 0.0}


class TensorRTRunner(Runner):
    def __init__(self, name: str, engine_path: Path, label: str, artifact: dict | None = None, expect_fp16: bool = False):
        super().__init__(name)
        self.engine_path = Path(engine_path)
        self.label = label
        self.artifact = artifact or {}
        self.expect_fp16 = expect_fp16
        self.trt = self.mem = self.engine = self.context = None
        self.buffers: dict[str, tuple[object, int]] = {}

    def activate_impl(self) -> None:
        trt = self.trt = import_tensorrt()
        self.mem = CudaMemory()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            plan = self.engine_path.read_bytes()
        except OSError as exc:
            raise RunnerError(f"{self.engine_path}: cannot read engine: {exc}") from None
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RunnerError(
                f"{self.engine_path}: TensorRT {trt.__version__} cannot load this engine on {self.mem.gpu_name()}; "
                "it was probably built by another TensorRT version or for another GPU (rebuild it there or let parity build one)"
            )
        self.precisions = layer_precisions(trt, self.engine)
        if self.expect_fp16 and self.precisions["fp16"] == 0:
            raise RunnerError(f"{self.engine_path}: engine has no fp16 layer; refusing to report an fp32 engine as fp16")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]

    def io_spec_impl(self) -> dict[str, TensorSpec]:
        spec = {}
        for n in self.inputs:
            shape = tuple(int(d) if int(d) >= 0 else None for d in self.engine.get_tensor_shape(n))
            spec[n] = TensorSpec(shape, np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(n))).name)
        return spec

    def _buffer(self, name: str, nbytes: int):
        ptr, size = self.buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                self.mem.free(ptr)
            ptr = self.mem.malloc(nbytes)
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def infer_impl(self, feed):
        for n in self.inputs:
            arr = np.ascontiguousarray(feed[n])
            self.context.set_input_shape(n, arr.shape)
            ptr = self._buffer(n, arr.nbytes)
            self.mem.htod(ptr, arr)
            self.context.set_tensor_address(n, int(ptr))
        outs = {}
        for n in self.names:
            if n in self.inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(n))
            host = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(n)))
            self.context.set_tensor_address(n, int(self._buffer(n, host.nbytes)))
            outs[n] = host
        if not self.context.execute_async_v3(self.mem.stream_handle()):
            raise RunnerError(f"runner {self.name}: TensorRT execution failed")
        for n, host in outs.items():
            self.mem.dtoh(host, self.buffers[n][0])
        self.mem.synchronize()
        return {n: h.astype(np.float32, copy=False) for n, h in outs.items()}

    def deactivate_impl(self) -> None:
        for ptr, _ in self.buffers.values():
            self.mem.free(ptr)
        self.buffers.clear()
        self.context = self.engine = None

    def describe_impl(self) -> dict:
        return {"backend": "tensorrt", "tensorrt": str(self.trt.__version__) if self.trt else None, "engine": str(self.engine_path),
                "layer_precisions": getattr(self, "precisions", None), **self.artifact}


LABELS = {
    "fp32": "fp32 (TensorRT, TF32 cleared)",
    "tf32": "TF32 (TensorRT, TF32 set)",
    "fp16": "fp16 (TensorRT, strongly typed fp16 ONNX graph)",
}


def engine_artifact(checkpoint, cache, precision: str, options: BuildOptions | None = None, timing_cache: str | None = None):
    """Build (or reuse) the engine for `precision`; keyed by ONNX hash, options, TensorRT version and GPU name."""
    from .artifacts import export_onnx, fp16_onnx

    trt = import_tensorrt()
    mem = CudaMemory()
    adapter = checkpoint.adapter()
    onnx_path, onnx_meta = export_onnx(checkpoint, cache)
    if precision == "fp16":
        onnx_path, onnx_meta = fp16_onnx(onnx_path, cache)
    options = options or BuildOptions(precision)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else None
    key = {"onnx_sha256": onnx_meta["sha256"], "options": options.to_dict(), "tensorrt": str(trt.__version__),
           "gpu": mem.gpu_name(), "timing_cache": timing_cache}

    def build(path: Path) -> dict:
        plan, tcache = build_engine(trt, onnx_path.read_bytes(), adapter.input_name, adapter.input_shape(), options, cache_bytes)
        path.write_bytes(plan)
        if timing_cache:
            from .. import atomic

            atomic.write_bytes(timing_cache, tcache)
        return {"precision": precision}

    path, meta = cache.get("trt-engine", key, "model.plan", build)
    return path, {"artifact_sha256": meta["sha256"], "artifact_key": meta["key"]}
