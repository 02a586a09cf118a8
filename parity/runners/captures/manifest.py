"""inputs.json: what `parity export-inputs` wrote, batch by batch, so outputs computed anywhere can
be matched back to frames by content.

Each batch names its case, frames, pipeline (and its spec's sha256), perturbation, the tensor's
name, shape, dtype and sha256, its file, and one sha256 per frame (per row of the batch). A capture
is matched to a replay's frames through those row hashes, never through file names or order alone.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UsageError

SCHEMA = "parity.inputs/1"
FILE = "inputs.json"
KINDS = ("frames", "invariance")  # invariance: one frame repeated over a whole batch (batch-invariance probe)


def row_hashes(batch: np.ndarray) -> list[str]:
    """sha256 of each row's bytes, as float32 little-endian C order: what a frame's input is."""
    a = np.ascontiguousarray(batch, dtype=np.dtype(batch.dtype).newbyteorder("<"))
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in a]


def tensor_sha256(batch: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(batch).tobytes()).hexdigest()


@dataclass
class Batch:
    id: str
    kind: str
    case: str
    pipeline: str
    pipeline_sha256: str
    perturbation: str
    severity: int
    frames: list[int]
    tensor: dict  # name, shape, dtype, sha256, file
    frame_sha256: list[str]

    @property
    def size(self) -> int:
        return len(self.frames)


@dataclass
class Manifest:
    path: Path
    doc: dict
    batches: list[Batch] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def input_name(self) -> str:
        return self.doc["input_name"]

    @property
    def output_name(self) -> str:
        return self.doc["output_name"]

    @property
    def output_names(self) -> list[str]:
        """Every named output of the model (one, or several: UFLDv2's four)."""
        names = self.doc.get("output_names")
        return list(names) if isinstance(names, list) and names else [self.output_name]

    def by_id(self) -> dict[str, Batch]:
        return {b.id: b for b in self.batches}

    def expected(self, case: str, pipeline_sha256: str) -> dict[int, str]:
        """frame -> row sha256 of one case under one pipeline spec (unperturbed frames batches)."""
        out = {}
        for b in self.batches:
            if b.kind == "frames" and b.case == case and b.pipeline_sha256 == pipeline_sha256 and b.perturbation == "none":
                out.update(zip(b.frames, b.frame_sha256))
        return out


def write_manifest(folder: Path, doc: dict, batches: list[Batch]) -> Path:
    from ... import atomic

    path = Path(folder) / FILE
    atomic.write_json(path, {**doc, "schema": SCHEMA, "batches": [b.__dict__ for b in batches]})
    return path


def read_manifest(path: str | Path) -> Manifest:
    """inputs.json (or a folder holding one), every field checked; problems name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{p}: no such inputs manifest (write one with `parity export-inputs`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{p}: not a readable inputs manifest: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UsageError(f"{p}: not a parity inputs manifest (schema {doc.get('schema') if isinstance(doc, dict) else None!r}, expected {SCHEMA})")
    for k in ("input_name", "output_name"):
        if not isinstance(doc.get(k), str):
            raise UsageError(f"{p}: needs {k!r} (a string)")
    if not isinstance(doc.get("batches"), list) or not doc["batches"]:
        raise UsageError(f"{p}: 'batches' must be a non-empty list")
    batches = []
    for i, b in enumerate(doc["batches"]):
        batches.append(_batch(p, i, b))
    if len({b.id for b in batches}) < len(batches):
        raise UsageError(f"{p}: two batches share an id")
    return Manifest(p, doc, batches)


def _batch(p: Path, i: int, b) -> Batch:
    where = f"{p}: batches[{i}]"
    if not isinstance(b, dict):
        raise UsageError(f"{where} must be an object")
    try:
        batch = Batch(**{k: b[k] for k in Batch.__dataclass_fields__})
    except KeyError as exc:
        raise UsageError(f"{where} needs {exc.args[0]!r}") from None
    t = batch.tensor
    ok = (batch.kind in KINDS and isinstance(batch.frames, list) and all(isinstance(f, int) for f in batch.frames)
          and isinstance(batch.frame_sha256, list) and len(batch.frame_sha256) == len(batch.frames) and batch.frames
          and isinstance(t, dict) and isinstance(t.get("shape"), list) and t["shape"][:1] == [len(batch.frames)]
          and isinstance(t.get("sha256"), str) and isinstance(t.get("dtype"), str))
    if not ok:
        raise UsageError(f"{where} ({b.get('id')!r}): kind, frames, frame_sha256 and tensor.shape/dtype/sha256 do not agree")
    return batch
