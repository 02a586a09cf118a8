"""Lane arrays x[..., row] at anchor rows: moving them from one set of rows to another.

Rows are floating-point image coordinates computed in different ways (a case's GT rows, a model's
anchor rows scaled to the image height, a file's h_samples), so two rows closer than ROW_TOL px
are the same row and are copied, never compared with == and never interpolated: interpolating a
row onto itself would put a tiny weight on its neighbour, and a missing neighbour would turn a
present point into NaN.
"""
from __future__ import annotations

import numpy as np

ROW_TOL = 1e-3  # px: rows closer than this are one row


def resample_rows(x: np.ndarray, rows_from, rows_to, tol: float = ROW_TOL) -> np.ndarray:
    """x[..., rows_from] at rows_to: a point copied where a source row lies within `tol`, else linearly
    interpolated between the two source rows around it (NaN where either is absent, or outside the
    source rows). rows_from may come in any order (a file may list its rows bottom-up)."""
    rows_from = np.asarray(rows_from, np.float64)
    rows_to = np.asarray(rows_to, np.float64)
    x = np.asarray(x)
    order = np.argsort(rows_from, kind="stable")
    rf, xs = rows_from[order], x[..., order]
    if len(rf) == len(rows_to) and np.all(np.abs(rf - rows_to) <= tol):
        return xs.astype(x.dtype, copy=False)
    out = np.full(x.shape[:-1] + (len(rows_to),), np.nan, dtype=np.result_type(x.dtype, np.float32))
    if len(rf) == 0:
        return out
    hi = np.clip(np.searchsorted(rf, rows_to), 0, len(rf) - 1)
    lo = np.clip(hi - 1, 0, len(rf) - 1)
    near = np.where(np.abs(rf[lo] - rows_to) <= np.abs(rf[hi] - rows_to), lo, hi)
    same = np.abs(rf[near] - rows_to) <= tol
    out[..., same] = xs[..., near[same]]
    inside = ~same & (rows_to > rf[0]) & (rows_to < rf[-1])
    if inside.any():
        hi = np.searchsorted(rf, rows_to[inside])
        lo = hi - 1
        w = (rows_to[inside] - rf[lo]) / (rf[hi] - rf[lo])
        out[..., inside] = xs[..., lo] * (1 - w) + xs[..., hi] * w
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else out.dtype, copy=False)
