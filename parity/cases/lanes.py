"""Lane arrays x[..., row] at anchor rows: moving them from one set of rows to another."""
from __future__ import annotations

import numpy as np

def resample_rows(x: np.ndarray, rows_from: np.ndarray, rows_to: np.ndarray) -> np.ndarray:
    """Linearly interpolate x[..., rows_from] onto rows_to; NaN where either neighbour is absent."""
    if np.array_equal(rows_from, rows_to):
        return x
    idx = np.clip(np.searchsorted(rows_from, rows_to) - 1, 0, len(rows_from) - 2)
    r0, r1 = rows_from[idx], rows_from[idx + 1]
    w = (rows_to - r0) / (r1 - r0)
    out = x[..., idx] * (1 - w) + x[..., idx + 1] * w
    outside = (rows_to < rows_from[0]) | (rows_to > rows_from[-1])
    out[..., outside] = np.nan
    return out.astype(x.dtype)
