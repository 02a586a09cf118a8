"""Raw output parity: how far a runner's output tensor is from the reference runner's."""
from __future__ import annotations

import numpy as np


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
    return {"max": d.max(axis=1), "p99": np.percentile(d, 99, axis=1), "mean": d.mean(axis=1), "cosine": cos}


def argmax_flips(a: np.ndarray, b: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per frame, the share of row-anchor classifications (argmax over `axis`) that differ."""
    if a is b:
        return np.zeros(len(a))
    flips = a.argmax(axis=axis) != b.argmax(axis=axis)
    return flips.reshape(len(flips), -1).mean(axis=1)
