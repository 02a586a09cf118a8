"""Raw output parity: how far a runner's output tensor is from the reference runner's."""
from __future__ import annotations

import numpy as np

try:  # output_parity compiled (parity/metrics/_tensors.c), built at install where a C compiler is
    from . import _tensors as native
except ImportError:  # pragma: no cover - no compiler at install: the numpy path below
    native = None


def tensor_parity(a: np.ndarray, b: np.ndarray) -> dict:
    """Per frame (first axis): max, p99 and mean |a - b| and cosine similarity of the flattened outputs."""
    same = a is b  # the reference runner against itself
    a = a.reshape(len(a), -1).astype(np.float64)
    b = a if same else b.reshape(len(b), -1).astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = na if same else np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(axis=1) / (na * nb)
    if same and np.isfinite(a).all():  # |a - a| is 0 everywhere: nothing to sort for its p99
        return {"max": np.zeros(len(a)), "p99": np.zeros(len(a)), "mean": np.zeros(len(a)), "cosine": cos}
    d = np.abs(a - b)
    return {"max": d.max(axis=1), "p99": percentile_99(d), "mean": d.mean(axis=1), "cosine": cos}


def percentile_99(d: np.ndarray) -> np.ndarray:
    """np.percentile(d, 99, axis=1) of d [F, n] (its linear interpolation, the same float64 operations:
    the same bits), from each row's top elements: only the elements at or above a cut that a strided
    sample puts below the 99th percentile are partitioned (numpy partitions a copy of the whole row at
    four places). A row whose cut keeps too few, or that holds a NaN, gets numpy's own."""
    F, n = d.shape
    if n < 4096:
        return np.percentile(d, 99, axis=1)
    virtual = (n - 1) * (99 / 100)  # numpy's 'linear' virtual index, (n - 1) * q
    below = int(np.floor(virtual))
    above, gamma = min(below + 1, n - 1), virtual - below
    sample = d[:, ::8]
    at = int(sample.shape[1] * 0.96)
    cut = np.partition(sample, at, axis=1)[:, at]
    nan = np.isnan(d.max(axis=1))  # max propagates NaN
    out = np.empty(F)
    for r in range(F):
        top = d[r][d[r] >= cut[r]]
        skip = n - len(top)  # below the cut: below every kept element in the sorted row
        if nan[r] or skip > below:
            out[r] = np.percentile(d[r], 99)
            continue
        lo, hi = np.partition(top, [below - skip, above - skip])[[below - skip, above - skip]]
        diff = hi - lo
        out[r] = hi - diff * (1 - gamma) if gamma >= 0.5 else lo + diff * gamma  # numpy's _lerp
    return out


def argmax_flips(a: np.ndarray, b: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per frame, the share of row-anchor classifications (argmax over `axis`) that differ."""
    if a is b:
        return np.zeros(len(a))
    flips = a.argmax(axis=axis) != b.argmax(axis=axis)
    return flips.reshape(len(flips), -1).mean(axis=1)


def output_parity(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame of a runner's output `a` against the reference's `b` (same shape, frames first):
    `tensor_parity`'s figures, argmax flips over axis 1 (`flips`) and the share of a's values that
    are NaN/Inf (`nonfinite`). Compiled for float32 outputs (one pass a frame; the same bits as the
    numpy below), numpy otherwise."""
    if native is None or a.dtype != np.float32 or b.dtype != np.float32 or a.shape != b.shape or a.ndim < 2 or a.size == 0:
        with np.errstate(invalid="ignore", over="ignore"):
            return {**tensor_parity(a, b), "flips": argmax_flips(a, b),
                    "nonfinite": (~np.isfinite(a)).reshape(len(a), -1).mean(axis=1)}
    out = np.empty((len(a), 6))
    native.output_parity(len(a), a[0].size, a.shape[1], np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return dict(zip(("max", "p99", "mean", "cosine", "nonfinite", "flips"), out.T))
