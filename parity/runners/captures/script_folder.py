"""The folder the capture script (`target_script.py`, copied as capture_trt.py) writes on the target:
capture.json, a copy of inputs.json, outputs/<batch>.<output>.npy, optional debug/<batch>/.

Every output file's sha256 and every fed input row's sha256 are checked against capture.json and
inputs.json: a file changed since the capture, or a batch run on other inputs than the export, is
refused naming the batch and the first frame that differs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import UsageError
from ...provenance import sha256_file

SCHEMA = "parity.capture/1"
FILE = "capture.json"


def read_capture_json(folder: Path) -> dict:
    p = Path(folder) / FILE
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{p}: not a readable capture file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("batches"), list):
        raise UsageError(f"{p}: not a parity capture (schema {SCHEMA} with a 'batches' list)")
    return doc


def read_outputs(folder: Path, manifest, doc: dict) -> dict[str, dict[str, np.ndarray]]:
    folder = Path(folder)
    batches = manifest.by_id()
    out = {}
    for i, rec in enumerate(doc["batches"]):
        where = f"{folder / FILE}: batches[{i}]"
        b = batches.get(rec.get("id")) if isinstance(rec, dict) else None
        if b is None:
            raise UsageError(f"{where}: batch {rec.get('id') if isinstance(rec, dict) else rec!r} is not in {manifest.path}")
        fed = rec.get("frame_sha256")
        if fed != b.frame_sha256:
            k = next((k for k, (a, e) in enumerate(zip(fed or [], b.frame_sha256)) if a != e), min(len(fed or []), b.size))
            frame = b.frames[k] if k < b.size else "?"
            raise UsageError(f"{where}: batch {b.id} was run on other inputs than the export: row {k} (case {b.case} frame {frame}) "
                             "differs from inputs.json; export the inputs again and capture again")
        out[b.id] = {}
        for name, o in (rec.get("outputs") or {}).items():
            path = folder / str(o.get("file", ""))
            if not path.is_file():
                raise UsageError(f"{where}: output file {path} is missing")
            if sha256_file(path) != o.get("sha256"):
                raise UsageError(f"{path}: its sha256 is not the one capture.json recorded: the file changed after the capture")
            try:
                out[b.id][name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise UsageError(f"{path}: not a readable .npy file: {exc}") from None
    return out


def provenance(doc: dict) -> dict:
    return {k: doc.get(k) for k in ("engine", "tensorrt", "gpu", "host", "precision_claimed", "layer_precisions", "created")}


def gpu_ms(doc: dict) -> dict[str, float]:
    return {r["id"]: float(r["gpu_ms"]) for r in doc["batches"] if isinstance(r, dict) and isinstance(r.get("gpu_ms"), (int, float))}
