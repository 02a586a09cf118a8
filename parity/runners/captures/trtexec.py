"""trtexec's files (TensorRT 10.16 / 11.1 samples/common), written and read as trtexec does.

- `--loadInputs='input':batch_0000.raw`: raw little-endian bytes, no header, exactly the binding's
  volume x element size (sampleUtils.cpp loadFromFile).
- `--dumpRawBindingsToFile` (sampleInference.cpp BindingsStd::dumpRawBindingToFiles): every binding,
  inputs and outputs, once after the run, into the working folder as
  `<name>.<input|output>.<d0>.<d1>...<dtype>.raw` (dims joined by '.', dtype fp32/fp16/bf16/int8/
  int32/int64/uint8/bool/fp8; the whole name passed through common.h genFilenameSafeString: every
  character but [A-Za-z0-9._,-] becomes '_'). parity reads one folder per batch, `batch_0000/`.
- `--exportOutput=batch_0000.json` (sampleReporting.cpp exportJSONOutput): a list of
  `{"name", "dimensions": "16x56x4x4"? ("x"-joined), "values": [...]}` printed with the stream's
  default precision: 6 significant digits, `nan`/`inf` unquoted (not JSON), names unescaped.
- `--saveAllDebugTensors=numpy` (debugTensorWriter.cpp): `tensor_summary.json` (metadata + "tensors":
  [{"name", "shape", "type": FLOAT|HALF|..., "statistics", "files": {"numpy": "0000_<name>.npy"}}]) and
  one .npy per tensor per execution, the prefix counting every callback (not reset per iteration).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...errors import UsageError

EXPORT_OUTPUT_LOSS = "trtexec --exportOutput prints 6 significant digits (values rounded to 6 significant digits)"
RAW_DTYPES = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "int64": np.int64, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}
DEBUG_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}


def safe_filename(name: str) -> str:
    """common.h genFilenameSafeString: the characters a file name keeps, and its length cap (150)."""
    s = re.sub(r"[^A-Za-z0-9._,-]", "_", name)
    return s if len(s) <= 150 else s[:73] + "..." + s[-73:]


def write_raw(path: Path, arr: np.ndarray) -> None:
    from ... import atomic

    atomic.write_bytes(path, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def _parse_raw(path: Path, name: str, io: str) -> np.ndarray:
    stem = path.name[: -len(".raw")]
    prefix = safe_filename(name) + f".{io}."
    rest = stem[len(prefix):]
    dims, _, dtype = rest.rpartition(".")
    if dtype not in RAW_DTYPES:
        raise UsageError(f"{path}: dtype {dtype!r} in its name is not one parity reads ({', '.join(RAW_DTYPES)})")
    try:
        shape = tuple(int(d) for d in dims.split(".")) if dims else ()
    except ValueError:
        raise UsageError(f"{path}: cannot read the dims in its name ({dims!r})") from None
    data = path.read_bytes()
    want = int(np.prod(shape)) * np.dtype(RAW_DTYPES[dtype]).itemsize
    if len(data) != want:
        raise UsageError(f"{path}: {len(data)} bytes, its name says {shape} {dtype} ({want} bytes)")
    return np.frombuffer(data, dtype=np.dtype(RAW_DTYPES[dtype]).newbyteorder("<")).reshape(shape).astype(RAW_DTYPES[dtype])


def _one(folder: Path, name: str, io: str) -> Path | None:
    hits = sorted(folder.glob(safe_filename(name) + f".{io}.*.raw"))
    if len(hits) > 1:
        raise UsageError(f"{folder}: {len(hits)} {io} dumps of {name!r} ({', '.join(h.name for h in hits)})")
    return hits[0] if hits else None


def read_raw_bindings(root: Path, manifest) -> dict[str, dict[str, np.ndarray]]:
    """Outputs of every `batch_*/` folder; the input dump trtexec writes beside them must be the
    exported batch (its row hashes are checked: nothing is matched by the folder's name alone)."""
    from .manifest import row_hashes

    by_id = manifest.by_id()
    out = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name.startswith("batch_")):
        b = by_id.get(folder.name)
        if b is None:
            raise UsageError(f"{folder}: batch {folder.name} is not in {manifest.path}")
        inp = _one(folder, manifest.input_name, "input")
        if inp is not None:
            fed = row_hashes(_parse_raw(inp, manifest.input_name, "input"))
            if fed != b.frame_sha256:
                k = next((k for k, (a, e) in enumerate(zip(fed, b.frame_sha256)) if a != e), min(len(fed), b.size))
                frame = b.frames[k] if k < b.size else "?"
                raise UsageError(f"{inp}: trtexec ran batch {b.id} on other inputs than the export: row {k} "
                                 f"(case {b.case} frame {frame}) differs from inputs.json")
        outs = {}
        for f in sorted(folder.glob("*.output.*.raw")):
            # the file name holds the tensor name only as trtexec sanitised it: match it back to the model's outputs
            name = next((n for n in manifest.output_names if f.name.startswith(safe_filename(n) + ".output.")), f.name.split(".output.")[0])
            outs[name] = _parse_raw(f, name, "output")
        if not outs:
            raise UsageError(f"{folder}: no output dump (<name>.output.<dims>.<dtype>.raw)")
        out[b.id] = outs
    if not out:
        raise UsageError(f"{root}: no batch_*/ folder of trtexec --dumpRawBindingsToFile files")
    return out


_BARE = re.compile(r"(?<![\w\"])(-?)(nan|inf)(?![\w\"])", re.IGNORECASE)


def _json_number(m) -> str:
    return "NaN" if m.group(2).lower() == "nan" else m.group(1) + "Infinity"


def _loads(text: str):
    """JSON, or trtexec's near-JSON with bare nan/inf (only tried when the text is not JSON: a string may hold "inf")."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(_BARE.sub(_json_number, text))
    except json.JSONDecodeError:
        return None


def parse_export_output(text: str, where: str) -> dict[str, np.ndarray]:
    """One --exportOutput file: {output name: array}. trtexec writes nan/inf bare (not JSON) and
    may put a 'Final shape is ...' line inside it (outputs sized at run time): both are read."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip(" ,").startswith("Final shape"))
    doc = _loads(text)
    if doc is None:
        raise UsageError(f"{where}: not trtexec --exportOutput JSON (a list of outputs)")
    if not isinstance(doc, list):
        raise UsageError(f"{where}: not trtexec --exportOutput JSON (a list of outputs)")
    out = {}
    for i, o in enumerate(doc):
        if not isinstance(o, dict) or not {"name", "dimensions", "values"} <= set(o):
            raise UsageError(f"{where}: output {i} needs 'name', 'dimensions' and 'values'")
        try:
            shape = tuple(int(d) for d in str(o["dimensions"]).split("x")) if o["dimensions"] else ()
        except ValueError:
            raise UsageError(f"{where}: output {o['name']!r}: dimensions {o['dimensions']!r} are not 'AxBxC'") from None
        vals = np.asarray(o["values"], dtype=np.float64)
        if vals.size != int(np.prod(shape)):
            raise UsageError(f"{where}: output {o['name']!r} has {vals.size} values for dimensions {o['dimensions']}")
        out[str(o["name"])] = vals.reshape(shape).astype(np.float32)
    return out


def read_export_output(root: Path, manifest) -> dict[str, dict[str, np.ndarray]]:
    """`batch_0000.json` (or `batch_0000/<anything>.json`) per batch."""
    by_id = manifest.by_id()
    files = {p.stem: p for p in Path(root).glob("batch_*.json")}
    files.update({p.parent.name: p for p in Path(root).glob("batch_*/*.json")})
    out = {}
    for bid, p in sorted(files.items()):
        if bid not in by_id:
            raise UsageError(f"{p}: batch {bid} is not in {manifest.path}")
        out[bid] = parse_export_output(p.read_text(errors="replace"), str(p))
    return out


def read_debug_tensors(folder: Path) -> dict[str, np.ndarray]:
    """tensor_summary.json and its .npy files: tensor name -> array (the first execution of each)."""
    p = Path(folder) / "tensor_summary.json"
    try:
        text = p.read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"{p}: cannot read trtexec's debug tensor summary: {exc}") from None
    doc = _loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("tensors"), list):
        raise UsageError(f"{p}: not a debug tensor summary (an object with a 'tensors' list)")
    out = {}
    for i, t in enumerate(doc["tensors"]):
        if not isinstance(t, dict) or "name" not in t:
            raise UsageError(f"{p}: tensors[{i}] has no name")
        name = str(t["name"])
        if name in out:
            continue  # a later execution of the same tensor (warm-up runs call back too)
        f = (t.get("files") or {}).get("numpy") or t.get("file")
        if not f:
            raise UsageError(f"{p}: tensor {name!r} has no .npy file (run trtexec with --saveAllDebugTensors=numpy)")
        try:
            arr = np.load(Path(folder) / f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UsageError(f"{Path(folder) / f}: not a readable .npy file: {exc}") from None
        if isinstance(t.get("shape"), list) and list(arr.shape) != [int(d) for d in t["shape"]]:
            raise UsageError(f"{Path(folder) / f}: shape {list(arr.shape)}, the summary says {t['shape']}")
        out[name] = arr
    if not out:
        raise UsageError(f"{p}: lists no debug tensor")
    return out

