"""Bending: a kink inside one frame, as the excess chord deviation over the reference's."""
from __future__ import annotations

import numpy as np

from .tusimple import TUSIMPLE_WIDTH

KINK_PX = 2.0
KINK_PX_AT_1280 = 20.0  # a kink visible at TuSimple's tolerance: 20 px at 1280 px wide


def kink_threshold(image_width: float) -> float:
    return KINK_PX_AT_1280 * image_width / TUSIMPLE_WIDTH


def chord_deviation(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[..., r] minus the chord between its neighbours at row r (px): the spacing-normalised
    second difference. NaN at the end rows and where a neighbour is missing. A point pushed
    sideways by k px deviates by k; its neighbours by k * (their share of the spacing)."""
    y = np.asarray(rows, np.float64)
    a = (y[1:-1] - y[:-2]) / (y[2:] - y[:-2])
    dev = np.full(x.shape, np.nan)
    dev[..., 1:-1] = x[..., 1:-1] - (x[..., :-2] + a * (x[..., 2:] - x[..., :-2]))
    return dev


def bending(x: np.ndarray, ref: np.ndarray, rows: np.ndarray, kink_px: float = KINK_PX) -> dict:
    """Per lane and frame ([T, L]): `score` = max over rows of |dev(x) - dev(ref)| (px), `row` = the
    anchor-row index where it happens (-1 if none), `kinks` = rows whose excess exceeds kink_px.
    A prediction that follows a genuinely curved reference scores zero."""
    excess = np.abs(chord_deviation(x, rows) - chord_deviation(ref, rows))
    valid = np.isfinite(excess)
    filled = np.where(valid, excess, -1.0)
    row = filled.argmax(axis=-1)
    score = np.take_along_axis(filled, row[..., None], axis=-1)[..., 0]
    has = valid.any(axis=-1)
    return {
        "score": np.where(has, score, np.nan),
        "row": np.where(has, row, -1),
        "kinks": (filled > kink_px).sum(axis=-1),
    }


def kink_rate(bend: dict) -> float:
    """Share of lane-frames with a kink, among the lane-frames that have a bending score (a lane present
    in both x and its reference); NaN when there are none. Replay, sweep, score and localize all use it."""
    has = np.isfinite(bend["score"])
    return float((np.asarray(bend["kinks"])[has] > 0).mean()) if has.any() else float("nan")
