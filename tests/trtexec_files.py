"""Test writers of trtexec's files, following its source (NVIDIA/TensorRT 10.16.1, samples/common):

- `dump_raw_bindings`: sampleInference.cpp `BindingsStd::dumpRawBindingToFiles`: every binding, inputs
  and outputs, as `<name>.<input|output>.<d0>.<d1>...<dtype>.raw`, dims joined by '.', dtype as
  sampleOptions.cpp `operator<<(DataType)` spells it (fp32, fp16, ...), the whole file name through
  common.h `genFilenameSafeString` (every character but [A-Za-z0-9._,-] -> '_'), raw host bytes.
- `export_output`: sampleReporting.cpp `exportJSONOutput`: `[`, then per output `{ "name" : "<name>"`,
  `  , "dimensions" : "AxBxC"`, `  , "values" : [ v, v, ... ]`, `  }`, outputs separated by ', ', `]`;
  values through an ofstream with default formatting (6 significant digits, %g-like), nan/inf bare.
- `debug_tensors`: debugTensorWriter.cpp `processDebugTensor` with `--saveAllDebugTensors=numpy`:
  `<0000>_<name>.npy` per callback (the counter never reset), written by `writeNumpyFile` (v1.0 header,
  a ', ' after every dim, padded to 16 bytes), and `tensor_summary.json` listing each tensor's name,
  shape, type (FLOAT, HALF, ...), statistics and files.numpy.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

DTYPES = {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16", np.dtype(np.int32): "int32", np.dtype(np.int64): "int64"}
TYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.float16): "HALF"}


def safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._,-]", "_", name)
    return s if len(s) <= 150 else s[:73] + "..." + s[-73:]


def dump_raw_bindings(folder: Path, inputs: dict, outputs: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for io, arrays in (("input", inputs), ("output", outputs)):
        for name, a in arrays.items():
            dims = ".".join(str(d) for d in a.shape)
            (folder / safe(f"{name}.{io}.{dims}.{DTYPES[a.dtype]}.raw")).write_bytes(np.ascontiguousarray(a).tobytes())


def _cpp_float(v: float) -> str:
    """std::ostream << float with default flags: %g with precision 6."""
    if math.isnan(v):
        return "-nan" if math.copysign(1, v) < 0 else "nan"
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    return format(float(v), ".6g")


def export_output(path: Path, outputs: dict) -> None:
    lines, sep = ["["], ""
    for name, a in outputs.items():
        lines.append(f'{sep}{{ "name" : "{name}"')
        sep = ", "
        lines.append(f'  {sep}"dimensions" : "{"x".join(str(d) for d in a.shape)}"')
        lines.append(f'  {sep}"values" : [ ' + sep.join(_cpp_float(v) for v in a.astype(np.float32).ravel()) + " ]")
        lines.append("  }")
    lines.append("]")
    path.write_text("\n".join(lines) + "\n")


def npy_bytes(a: np.ndarray) -> bytes:
    descr = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2"}[a.dtype]
    h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + "".join(f"{d}, " for d in a.shape) + "), }"
    h += " " * (16 - ((10 + len(h) + 1) % 16)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + np.ascontiguousarray(a).tobytes()


def debug_tensors(folder: Path, tensors: dict, executions: int = 1) -> None:
    """`executions` > 1: trtexec's warm-up and timed runs call back again; files accumulate."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, k = [], 0
    for _ in range(executions):
        for name, a in tensors.items():
            fname = safe(f"{k:04d}_{name}.npy")
            (folder / fname).write_bytes(npy_bytes(a))
            f = a.astype(np.float32)
            fin = f[np.isfinite(f)]
            stat = {"min": float(fin.min()) if fin.size else "nan", "max": float(fin.max()) if fin.size else "nan",
                    "avg": float(fin.mean()) if fin.size else "nan", "elements": ", ".join(_cpp_float(v) for v in f.ravel()[:5])}
            entries.append({"name": name, "shape": list(a.shape), "type": TYPES[a.dtype], "statistics": stat, "files": {"numpy": fname}})
            k += 1
    doc = {"metadata": {"title": "Tensor Summary Report", "time_generated": "2026-12-02T03:00:00+0000", "engine_name": "",
                        "command_line": "trtexec --loadEngine=model.plan --saveAllDebugTensors=numpy"}, "tensors": entries}
    (folder / "tensor_summary.json").write_text(json.dumps(doc, indent=4))
