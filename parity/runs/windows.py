"""Which frames of a case a sweep or a rank evaluates: one contiguous window of a documented length.

Jitter and oscillation are frame-to-frame quantities: evenly spaced single frames would turn them
into differences between frames a second apart. A window keeps consecutive frames, so jitter under a
perturbation means what it means in replay. The window is centred in the case (a recorded case is
usually cut around its event) and is the whole case when the case is shorter or `seconds` is 0.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError

DEFAULT_WINDOW_S = 3.0


def check_window(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if not np.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--window-s must be a number of seconds >= 0 (0: the whole case), got {seconds!r}")
    return float(seconds) or None


def window_frames(timestamps: np.ndarray, seconds: float | None) -> np.ndarray:
    """Indices of the contiguous frames covering `seconds` (by the case's median frame interval), centred."""
    n = len(timestamps)
    seconds = check_window(seconds)
    if seconds is None or n < 2:
        return np.arange(n)
    dt = float(np.median(np.diff(timestamps)))
    want = n if not dt > 0 else max(2, int(round(seconds / dt)))
    if want >= n:
        return np.arange(n)
    start = (n - want) // 2
    return np.arange(start, start + want)
