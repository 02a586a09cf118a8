"""Outputs as NumPy files: an `.npz` keyed by batch id (`batch_0000`, or `batch_0000/<output>` for a
model with several outputs), or one `.npy` holding every frame of the frames batches, in the
manifest's order (a batch's rows, then the next batch's)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ...errors import UsageError


def read_npz(path: Path, manifest) -> dict[str, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file: {exc}") from None
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        bid, _, name = key.partition("/")
        out.setdefault(bid, {})[name or manifest.output_name] = arr
    return out


def read_npy(path: Path, manifest) -> dict[str, dict[str, np.ndarray]]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npy file: {exc}") from None
    if len(manifest.output_names) > 1:
        raise UsageError(f"{path}: the model has {len(manifest.output_names)} outputs; give them in an .npz keyed batch_NNNN/<output>")
    frames = [b for b in manifest.batches if b.kind == "frames"]
    n = sum(b.size for b in frames)
    if arr.ndim < 1 or len(arr) != n:
        raise UsageError(f"{path}: holds {arr.shape[0] if arr.ndim else 0} rows; the manifest {manifest.path} has {n} frames "
                         "(one .npy holds every frame of the frames batches in the manifest's order)")
    out, at = {}, 0
    for b in frames:
        out[b.id] = {manifest.output_name: arr[at : at + b.size]}
        at += b.size
    return out


def write_npy(path: Path, arr: np.ndarray) -> None:
    import io

    from ... import atomic

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    atomic.write_bytes(path, buf.getvalue())
