"""Lateral difference between two sets of lanes, in pixels and (through the case's camera) metres."""
from __future__ import annotations

import numpy as np

from ..cases.camera import Camera


def lateral_difference(x: np.ndarray, ref: np.ndarray) -> dict:
    """Point-wise |x - ref| where both exist, plus how often existence disagrees."""
    both = np.isfinite(x) & np.isfinite(ref)
    d = np.abs(x[both] - ref[both]).astype(np.float64)
    exist = np.isfinite(x) != np.isfinite(ref)
    return {
        "points": int(d.size),
        "mean_px": float(d.mean()) if d.size else float("nan"),
        "p99_px": float(np.percentile(d, 99)) if d.size else float("nan"),
        "max_px": float(d.max()) if d.size else float("nan"),
        "existence_disagreement": float(exist.mean()) if exist.size else float("nan"),
    }


def metres_per_pixel(camera: dict, rows: np.ndarray, image_width: int) -> np.ndarray | None:
    """Lateral ground metres per pixel at each anchor row (flat ground, the image centre column),
    from the case's camera; None if the case has no mounting height and pitch."""
    if not camera or "height_m" not in camera or "pitch_deg" not in camera:
        return None
    cam = Camera.from_meta(camera, image_width)
    on, _, _, depth = cam.ground(np.full(len(rows), camera["cx"]), np.asarray(rows, np.float64))
    return np.where(on, depth / camera["fx"], np.nan)
