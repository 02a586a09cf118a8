"""Captures: outputs an engine computed elsewhere (the user's Jetson, DRIVE box or GPU workstation),
read back and matched to frames by the sha256 of each input row.

`parity export-inputs` writes the exact tensors a replay feeds and `inputs.json` (`manifest.py`);
the target runs them (the capture script `target_script.py`, trtexec or `polygraphy run`); each
format it can come back in is one module: the capture script's folder (`script_folder.py`),
Polygraphy RunResults JSON (`polygraphy_json.py`), trtexec raw bindings, `--exportOutput` JSON and
debug tensors (`trtexec.py`), `.npy`/`.npz` (`numpy_files.py`). `load_capture` reads any of them
into a `Capture`; `parity.runners.captured` makes it a runner.

This package may import the shared top-level modules only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UsageError
from .manifest import FILE as MANIFEST_FILE
from .manifest import Manifest, read_manifest

FORMATS = ("capture-script", "polygraphy", "trtexec-raw", "trtexec-json", "npz", "npy")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


@dataclass(frozen=True)
class CaptureSpec:
    """`--outputs NAME=PATH[,inputs=DIR][,precision=P][,format=F][,runner=R]`."""

    name: str
    path: str
    inputs: str | None = None
    precision: str | None = None
    format: str | None = None
    runner: str | None = None  # which runner of a Polygraphy file with several

    @classmethod
    def parse(cls, spec: str) -> "CaptureSpec":
        name, eq, rest = spec.partition("=")
        if not eq or not name.strip() or not rest.strip():
            raise UsageError(f"--outputs expects NAME=PATH[,inputs=DIR][,precision=P][,format=F], got {spec!r}")
        path, *opts = rest.split(",")
        kw = {}
        for o in opts:
            k, eq2, v = o.partition("=")
            if not eq2 or k not in ("inputs", "precision", "format", "runner"):
                raise UsageError(f"--outputs {spec!r}: unknown option {o!r} (inputs=, precision=, format=, runner=)")
            kw[k] = v
        if kw.get("format") and kw["format"] not in FORMATS:
            raise UsageError(f"--outputs {spec!r}: format must be one of {', '.join(FORMATS)}")
        if kw.get("precision") and kw["precision"] not in PRECISIONS:
            raise UsageError(f"--outputs {spec!r}: precision must be one of {', '.join(PRECISIONS)}")
        return cls(name.strip(), path, **kw)

    def absolute(self) -> "CaptureSpec":
        import os

        return CaptureSpec(self.name, os.path.abspath(self.path), self.inputs and os.path.abspath(self.inputs), self.precision,
                           self.format, self.runner)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Capture:
    name: str
    format: str
    path: Path
    manifest: Manifest
    outputs: dict[str, dict[str, np.ndarray]]  # batch id -> output name -> array
    provenance: dict = field(default_factory=dict)
    gpu_ms: dict[str, float] = field(default_factory=dict)
    lossy: str | None = None  # what the format rounds, said in the label

    @property
    def precision(self) -> tuple[str | None, str]:
        """(claimed precision, who claims it)."""
        claim = self.provenance.get("precision_claimed")
        if claim:
            return claim, self.provenance.get("precision_source", "the capture")
        tail = self.name.rsplit("-", 1)[-1]
        return (tail, "its name") if tail in PRECISIONS else (None, "nobody")

    def label(self) -> str:
        p = self.provenance
        where = ", ".join(str(v) for v in (p.get("gpu"), p.get("tensorrt") and f"TensorRT {p['tensorrt']}") if v)
        claim, by = self.precision
        parts = [f"captured outputs ({self.format}: {self.path.name})", where or "target not recorded",
                 f"{claim} claimed by {by}" if claim else "precision not claimed"]
        if self.lossy:
            parts.append(f"lossy: {self.lossy}")
        return "; ".join(parts)

    spec: CaptureSpec | None = None

    def content_sha256(self) -> str:
        """Of the manifest's batches and every captured array's bytes: what a run keyed on this capture depends on."""
        import hashlib

        h = hashlib.sha256(self.manifest.path.read_bytes())
        for bid in sorted(self.outputs):
            for name in sorted(self.outputs[bid]):
                a = np.ascontiguousarray(self.outputs[bid][name])
                h.update(f"{bid}/{name}/{a.dtype.str}/{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def frame_rows(self) -> dict[str, tuple[str, int]]:
        """input row sha256 -> (batch id, row) for every captured frames batch."""
        out = {}
        for b in self.manifest.batches:
            if b.kind == "frames" and b.id in self.outputs:
                for k, h in enumerate(b.frame_sha256):
                    out.setdefault(h, (b.id, k))
        return out


def find_manifest(spec: CaptureSpec) -> Manifest:
    """inputs.json from `inputs=`, else beside the capture: in it (a folder), its folder, or the folder above."""
    if spec.inputs:
        return read_manifest(spec.inputs)
    p = Path(spec.path)
    for folder in ([p] if p.is_dir() else []) + [p.parent, p.parent.parent]:
        if (folder / MANIFEST_FILE).is_file():
            return read_manifest(folder / MANIFEST_FILE)
    raise UsageError(f"{p}: no {MANIFEST_FILE} in it or beside it; say where the export is with "
                     f"--outputs {spec.name}={spec.path},inputs=EXPORT_DIR")


def detect_format(path: Path) -> str:
    from .script_folder import FILE as SCRIPT_FILE

    if path.is_dir():
        if (path / SCRIPT_FILE).is_file():
            return "capture-script"
        if any(path.glob("batch_*/*.raw")):
            return "trtexec-raw"
        if any(path.glob("batch_*.json")) or any(path.glob("batch_*/*.json")):
            return "trtexec-json"
        raise UsageError(f"{path}: neither a capture-script folder (capture.json), trtexec raw bindings (batch_*/*.raw) "
                         "nor trtexec --exportOutput files (batch_*.json)")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "polygraphy"
    if suffix in (".npz", ".npy"):
        return suffix[1:]
    raise UsageError(f"{path}: cannot tell the capture's format from its name; add ,format=({'|'.join(FORMATS)})")


def load_capture(spec: CaptureSpec) -> Capture:
    """A capture read, its outputs checked against the manifest's batches (count, rows, dtype)."""
    from . import numpy_files, polygraphy_json, script_folder, trtexec

    path = Path(spec.path)
    if not path.exists():
        raise UsageError(f"{path}: no such capture (--outputs {spec.name}=...)")
    fmt = spec.format or detect_format(path)
    manifest = read_manifest(path) if fmt == "capture-script" else find_manifest(spec)
    prov, gpu_ms, lossy = {}, {}, None
    if fmt == "capture-script":
        doc = script_folder.read_capture_json(path)
        outputs = script_folder.read_outputs(path, manifest, doc)
        prov, gpu_ms = script_folder.provenance(doc), script_folder.gpu_ms(doc)
    elif fmt == "polygraphy":
        runner, iters = polygraphy_json.read_run_results(path, spec.runner)
        if len(iters) != len(manifest.batches):
            raise UsageError(f"{path}: {len(iters)} iterations, but {manifest.path} has {len(manifest.batches)} batches "
                             "(run polygraphy with that export's --load-inputs file)")
        outputs = {b.id: it for b, it in zip(manifest.batches, iters)}
        prov = {"polygraphy_runner": runner}
    elif fmt == "trtexec-raw":
        outputs = trtexec.read_raw_bindings(path, manifest)
    elif fmt == "trtexec-json":
        outputs = trtexec.read_export_output(path, manifest)
        lossy = trtexec.EXPORT_OUTPUT_LOSS
    else:
        outputs = (numpy_files.read_npz if fmt == "npz" else numpy_files.read_npy)(path, manifest)
    if spec.precision:
        prov = {**prov, "precision_claimed": spec.precision, "precision_source": "--outputs precision="}
    elif prov.get("precision_claimed"):
        prov = {**prov, "precision_source": "the capture script's --precision"}
    _check_outputs(path, manifest, outputs)
    return Capture(spec.name, fmt, path, manifest, outputs, prov, gpu_ms, lossy, spec)


def _check_outputs(path: Path, manifest: Manifest, outputs: dict) -> None:
    by_id = manifest.by_id()
    for bid, outs in outputs.items():
        b = by_id.get(bid)
        if b is None:
            raise UsageError(f"{path}: batch {bid!r} is not in {manifest.path}")
        lacking = [n for n in manifest.output_names if n not in outs]
        if lacking:
            raise UsageError(f"{path}: batch {bid} has outputs {sorted(outs)}, not the model's {', '.join(map(repr, lacking))}")
        for name, arr in outs.items():
            if not isinstance(arr, np.ndarray) or arr.ndim < 1 or len(arr) != b.size:
                shape = getattr(arr, "shape", None)
                raise UsageError(f"{path}: batch {bid} output {name!r} has shape {shape}; the batch has {b.size} frames")
            if arr.dtype.kind != "f":
                raise UsageError(f"{path}: batch {bid} output {name!r} is {arr.dtype}, not a floating tensor")
    if not any(b.kind == "frames" and b.id in outputs for b in manifest.batches):
        raise UsageError(f"{path}: holds no output of any frames batch of {manifest.path}")
