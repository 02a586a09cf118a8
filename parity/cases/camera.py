"""The pinhole camera of a case (`case.json` "camera"): pixels <-> flat-ground points, with pitch and roll.

The synthetic recorder renders through it, and metrics use it to turn pixels into metres.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

REFERENCE_SIZE = (640, 360)
ANCHOR_ROWS_REF = [166.0 + 11.0 * k for k in range(18)]  # reference camera rows; other heights scale them


@dataclass(frozen=True)
class Camera:
    width: int = 640
    height: int = 360
    fx: float = 520.0
    fy: float = 520.0
    cx: float = 319.5
    cy: float = 179.5
    height_m: float = 1.5
    pitch_deg: float = 3.0  # positive looks down
    roll_deg: float = 0.0  # positive turns the image clockwise

    def _unroll(self, u, v):
        a = (np.asarray(u, dtype=np.float64) - self.cx) / self.fx
        b = (np.asarray(v, dtype=np.float64) - self.cy) / self.fy
        r = math.radians(self.roll_deg)
        return a * math.cos(r) + b * math.sin(r), -a * math.sin(r) + b * math.cos(r)

    def ground(self, u, v):
        """Pixels -> (on_ground, x right m, z forward m, depth along the optical axis)."""
        a, b = self._unroll(u, v)
        th = math.radians(self.pitch_deg)
        denom = b * math.cos(th) + math.sin(th)
        on = denom > 1e-6
        depth = np.where(on, self.height_m / np.where(on, denom, 1.0), np.inf)
        z = np.where(on, depth * (math.cos(th) - b * math.sin(th)), np.inf)
        with np.errstate(invalid="ignore"):  # rows above the horizon: inf depth, masked out by `on`
            return on, np.where(on, a * depth, 0.0), z, depth

    def ray(self, u, v):
        """Pixels -> ray direction (x right, y down, z forward) in the level vehicle frame."""
        a, b = self._unroll(u, v)
        th = math.radians(self.pitch_deg)
        return a, b * math.cos(th) + math.sin(th), math.cos(th) - b * math.sin(th)

    def project(self, x, z, y_down=None):
        """Points (x right, z forward, y down from the camera; ground by default) -> (u, v, in_front)."""
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        y = np.full_like(x, self.height_m) if y_down is None else np.asarray(y_down, dtype=np.float64)
        th = math.radians(self.pitch_deg)
        yc = y * math.cos(th) - z * math.sin(th)
        zc = y * math.sin(th) + z * math.cos(th)
        front = zc > 1e-6
        a, b = x / np.where(front, zc, 1.0), yc / np.where(front, zc, 1.0)
        r = math.radians(self.roll_deg)
        ar, br = a * math.cos(r) - b * math.sin(r), a * math.sin(r) + b * math.cos(r)
        return self.cx + self.fx * ar, self.cy + self.fy * br, front

    def anchor_rows(self) -> np.ndarray:
        return np.asarray(ANCHOR_ROWS_REF) * (self.height / REFERENCE_SIZE[1])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_meta(cls, camera: dict, image_width: int) -> "Camera":
        """The camera of a case.json "camera" object (fx, fy, cx, cy, height_m, pitch_deg[, roll_deg])."""
        return cls(width=image_width, height=int(2 * camera["cy"] + 1), fx=camera["fx"], fy=camera["fy"], cx=camera["cx"],
                   cy=camera["cy"], height_m=camera["height_m"], pitch_deg=camera["pitch_deg"], roll_deg=camera.get("roll_deg", 0.0))


def camera_problems(camera) -> list[str]:
    """What is wrong with a case.json / camera JSON "camera" object ('' prefix: the field), or []:
    fx, fy > 0 and cx, cy finite are required; height_m > 0, pitch_deg and roll_deg in (-90, 90)
    are optional (without height and pitch no metres are derived)."""
    if not isinstance(camera, dict):
        return [f": must be an object {{fx, fy, cx, cy[, height_m, pitch_deg, roll_deg]}}, got {type(camera).__name__}"]

    def number(k):
        v = camera.get(k)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    out = []
    for k in ("fx", "fy", "cx", "cy"):
        if number(k) is None:
            out.append(f"{k}: required finite number, got {camera.get(k)!r}")
    for k in ("fx", "fy"):
        if number(k) is not None and number(k) <= 0:
            out.append(f"{k}: must be > 0, got {camera[k]!r}")
    for k, lo, hi in (("height_m", 0.0, 100.0), ("pitch_deg", -90.0, 90.0), ("roll_deg", -90.0, 90.0)):
        if k in camera and (number(k) is None or not lo < number(k) < hi):
            out.append(f"{k}: must be a number in ({lo:g}, {hi:g}), got {camera[k]!r}")
    if ("height_m" in camera) != ("pitch_deg" in camera):
        out.append("height_m and pitch_deg: give both (the ground is located from the two) or neither")
    return out
