"""Procedural road-scene recorder: what a front camera sees, with exact GT lanes.

Geometry. The road is flat. Its reference line (the leftmost boundary) has curvature kappa(s)
along arc length s: piecewise linear between knots (so transitions are clothoids) plus an
s-curve term. Lane k has width w_k(s) (slow variation; the rightmost lane can taper away in a
merge); boundary j lies at road-lateral offset B_j(s) = sum of the widths to its left. In the ego
frame (x right, z forward) boundary j at distance z is the small-angle lane model

    x_j(z) = B_j(s_t + z) - p(t) - psi(t)*z + c_t(z),   c_t(z) = double integral of kappa over [s_t, s_t + z]

with p the ego's road-lateral position and psi its heading relative to the road. Rendering inverts
the pinhole camera (pitch and roll) per pixel to a ground point and paints markings by exact
box-filter coverage of the pixel's footprint. GT samples x_j(z) densely, projects it, and reads
the column where it crosses each anchor row. Both use the same functions, so GT lands on the paint
(tests check the paint centroid is within 1 px).

Frames are written as the vehicle ISP emits them (NV12, BT.601 limited range) and as the JPEG
copy a training set holds. Everything is deterministic for a scenario and seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..colour import rgb_to_nv12
from .camera import Camera
from .format import CaseWriter

LANE_NAMES = ["left_left", "left", "right", "right_right"]
LIGHTING = ("day", "dusk", "night", "tunnel_exit")
MARKINGS = ("solid", "dashed", "double")
Z_MAX = 300.0  # metres of road that are integrated and drawn


@dataclass(frozen=True)
class Vehicle:
    """A car ahead: lane index (0 = leftmost), initial gap in metres, speed relative to ego (m/s)."""

    lane: int
    gap_m: float
    rel_speed: float = 0.0
    colour: tuple[float, float, float] = (0.18, 0.2, 0.24)


@dataclass(frozen=True)
class Scenario:
    """Everything that decides a recording; the same Scenario gives the same bytes."""

    name: str
    seed: int = 0
    frames: int = 120
    fps: float = 20.0
    speed_mps: float = 22.0
    lanes: int = 3
    start_lane: int = 1  # 0 = leftmost
    lane_width_m: float = 3.6
    width_var_m: float = 0.0  # amplitude of slow lane-width variation
    curvature: tuple[tuple[float, float], ...] = ((0.0, 0.0),)  # (s, kappa) knots; linear between = clothoid
    ka: float = 0.0  # s-curve amplitude (1/m)
    period_m: float = 500.0
    phase: float = 0.0
    markings: tuple[str, ...] = ()  # per boundary, left to right; default: solid edges, dashed inside
    marking_width_m: float = 0.15
    dash_m: float = 3.0
    gap_m: float = 9.0
    wear: float = 0.0  # 0..1 share of paint worn away (patchy)
    missing_dashes: float = 0.0  # 0..1 share of dashes not painted at all
    merge: tuple[float, float] | None = None  # (s start, s end): the rightmost lane tapers away
    drift_amp_m: float = 0.25
    drift_period_s: float = 5.0
    drift_phase: float = 0.0
    lane_changes: tuple[tuple[float, int], ...] = ()  # (start time s, +1 right / -1 left)
    lane_change_s: float = 4.0
    lighting: str = "day"
    light: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tunnel_exit_s: float = 60.0  # road position of the tunnel portal (lighting="tunnel_exit")
    asphalt: float = 0.36
    shadows: bool = False
    vehicles: tuple[Vehicle, ...] = ()
    rain: float = 0.0  # 0..1
    noise_sigma: float = 2.0  # read noise, 8-bit levels
    vignetting: float = 0.15
    tags: tuple[str, ...] = ()
    camera: Camera = field(default_factory=Camera)

    def __post_init__(self):
        if self.lighting not in LIGHTING:
            raise ValueError(f"lighting must be one of {LIGHTING}, got {self.lighting!r}")
        if not 0 <= self.start_lane < self.lanes:
            raise ValueError(f"start_lane {self.start_lane} outside 0..{self.lanes - 1}")
        bad = [m for m in self.markings if m not in MARKINGS]
        if bad or (self.markings and len(self.markings) != self.lanes + 1):
            raise ValueError(f"markings: {self.lanes + 1} of {MARKINGS} expected, got {self.markings}")

    @classmethod
    def sample(cls, name: str, seed: int, **overrides) -> "Scenario":
        """A random but reproducible scenario: the training distribution."""
        rng = np.random.default_rng([seed, 0x5EED])
        lanes = int(rng.integers(2, 5))
        lighting = str(rng.choice(LIGHTING, p=[0.55, 0.2, 0.17, 0.08]))
        k_end = float(rng.uniform(-1, 1) * rng.choice([0.0, 1 / 900, 1 / 400, 1 / 250]))
        speed = float(rng.uniform(12, 32))
        params = dict(
            name=name, seed=seed, speed_mps=speed, lanes=lanes, start_lane=int(rng.integers(0, lanes)),
            lane_width_m=float(rng.uniform(3.2, 3.9)), width_var_m=float(rng.choice([0.0, 0.15])),
            curvature=((0.0, float(rng.uniform(-1, 1) / 1500)), (float(rng.uniform(20, 120)), k_end)),
            ka=float(rng.choice([0.0, 1 / 600, 1 / 300])), period_m=float(rng.uniform(250, 700)),
            phase=float(rng.uniform(0, 2 * math.pi)),
            markings=tuple(["solid"] + [str(rng.choice(["dashed", "dashed", "double"])) for _ in range(lanes - 1)] + ["solid"]),
            marking_width_m=float(rng.uniform(0.12, 0.2)), dash_m=float(rng.choice([3.0, 4.0, 6.0])),
            gap_m=float(rng.choice([6.0, 9.0, 12.0])),
            wear=float(rng.choice([0.0, 0.0, 0.3, 0.6])), missing_dashes=float(rng.choice([0.0, 0.0, 0.2])),
            drift_amp_m=float(rng.uniform(0.0, 0.5)), drift_period_s=float(rng.uniform(3, 9)),
            drift_phase=float(rng.uniform(0, 2 * math.pi)),
            lighting=lighting, light=float(rng.uniform(0.8, 1.2)) if lighting == "day" else float(rng.uniform(0.5, 0.8)),
            tint=tuple(float(v) for v in rng.uniform(0.92, 1.08, size=3)),
            tunnel_exit_s=float(rng.uniform(10, 60)),
            asphalt=float(rng.uniform(0.28, 0.45)), shadows=bool(rng.random() < 0.35),
            rain=float(rng.choice([0.0, 0.0, 0.0, 0.5])), noise_sigma=float(rng.uniform(1.0, 4.0)),
            camera=Camera(pitch_deg=float(rng.uniform(2.4, 3.6)), height_m=float(rng.uniform(1.35, 1.65)),
                          roll_deg=float(rng.uniform(-1.0, 1.0))),
        )
        if lanes >= 2 and rng.random() < 0.25:
            params["vehicles"] = (Vehicle(int(rng.integers(0, lanes)), float(rng.uniform(12, 40)), float(rng.uniform(-3, 3))),)
        if rng.random() < 0.15:
            s0 = float(rng.uniform(0, 60))
            params["merge"] = (s0, s0 + 120.0)
        if lanes >= 2 and rng.random() < 0.15:
            start = params["start_lane"]
            params["lane_changes"] = ((float(rng.uniform(0.5, 2.0)), 1 if start < lanes - 1 else -1),)
        params.update(overrides)
        return cls(**params)

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- road geometry (vectorised over s) -------------------------------------------------
    def kappa(self, s: np.ndarray) -> np.ndarray:
        knots = np.asarray(self.curvature, dtype=np.float64).reshape(-1, 2)
        base = np.interp(s, knots[:, 0], knots[:, 1])
        return base + self.ka * np.sin(2 * math.pi * s / self.period_m + self.phase)

    def _taper(self, s):
        if self.merge is None:
            return np.ones_like(s)
        a, b = self.merge
        q = np.clip((s - a) / (b - a), 0.0, 1.0)
        return 1.0 - q * q * (3 - 2 * q)

    def widths(self, s: np.ndarray) -> np.ndarray:
        """[lanes, *s.shape] lane widths at road positions s."""
        k = np.arange(self.lanes).reshape(-1, *([1] * np.ndim(s)))
        w = self.lane_width_m + self.width_var_m * np.sin(2 * math.pi * np.asarray(s) / 180.0 + 1.7 * k)
        w = np.broadcast_to(w, (self.lanes, *np.shape(s))).copy()
        w[-1] = w[-1] * self._taper(np.asarray(s, dtype=np.float64))
        return w

    def boundaries(self, s: np.ndarray) -> np.ndarray:
        """[lanes + 1, *s.shape] road-lateral offsets of every boundary (0 = left edge)."""
        w = self.widths(s)
        return np.concatenate([np.zeros((1, *np.shape(s))), np.cumsum(w, axis=0)], axis=0)

    def boundary_exists(self, j: int, s: np.ndarray) -> np.ndarray:
        if j == self.lanes and self.merge is not None:
            return np.asarray(s) < self.merge[1]
        return np.ones(np.shape(s), dtype=bool)

    def marking(self, j: int, s: np.ndarray) -> np.ndarray:
        """Marking type index into MARKINGS of boundary j along s (a merged lane's inner line becomes the edge)."""
        kinds = self.markings or tuple(["solid"] + ["dashed"] * (self.lanes - 1) + ["solid"])
        out = np.full(np.shape(s), MARKINGS.index(kinds[j]))
        if self.merge is not None and j == self.lanes - 1:
            out = np.where(np.asarray(s) >= self.merge[1], MARKINGS.index("solid"), out)
        return out


class EgoState:
    """Ego pose and road shape at time t."""

    def __init__(self, scn: Scenario, t: float):
        self.scn, self.t = scn, t
        self.s = scn.speed_mps * t
        self.p = self.position(t)
        dt = 1e-3
        self.psi = (self.position(t + dt) - self.position(t - dt)) / (2 * dt * scn.speed_mps)
        # Centreline offset relative to the road tangent at s, integrated on a fine grid.
        self.z_grid = np.linspace(0.0, Z_MAX, 1201)
        k = scn.kappa(self.s + self.z_grid)
        dz = self.z_grid[1] - self.z_grid[0]
        heading = np.concatenate([[0.0], np.cumsum((k[1:] + k[:-1]) / 2) * dz])
        self.c_grid = np.concatenate([[0.0], np.cumsum((heading[1:] + heading[:-1]) / 2) * dz])

    def position(self, t: float) -> float:
        scn = self.scn
        s = scn.speed_mps * t
        b = scn.boundaries(np.asarray(s))
        lane = scn.start_lane
        p = float((b[lane] + b[lane + 1]) / 2)
        for t0, direction in scn.lane_changes:
            q = min(max((t - t0) / scn.lane_change_s, 0.0), 1.0)
            p += direction * scn.lane_width_m * q * q * (3 - 2 * q)
        w = 2 * math.pi / scn.drift_period_s
        return p + scn.drift_amp_m * math.sin(w * t + scn.drift_phase)

    def centre_offset(self, z) -> np.ndarray:
        return np.interp(z, self.z_grid, self.c_grid)

    def ego_lane(self) -> int:
        b = self.scn.boundaries(np.asarray(self.s))
        return int(np.clip(np.searchsorted(b, self.p) - 1, 0, self.scn.lanes - 1))

    def lateral(self, x, z) -> np.ndarray:
        """Road-lateral offset of ego-frame ground point (x, z)."""
        return x + self.p + self.psi * z - self.centre_offset(z)

    def to_ego_x(self, ell, z) -> np.ndarray:
        return ell - self.p - self.psi * z + self.centre_offset(z)


def _overlap(lo, hi, a, b):
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)


def _hash01(i, j, seed: int) -> np.ndarray:
    """Deterministic value noise in [0, 1) on an integer lattice (texture and wear fixed to the road)."""
    h = (np.asarray(i).astype(np.int64) * 73856093) ^ (np.asarray(j).astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(np.float32) / 65536.0


class Renderer:
    """Renders frames of one scenario; per-pixel ground geometry is computed once."""

    def __init__(self, scn: Scenario):
        self.scn = scn
        cam = scn.camera
        self.v, self.u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
        on, x, z, depth = cam.ground(self.u, self.v)
        self.on = on & (z < Z_MAX)
        self.x, self.z = x, z
        self.px_lat = depth / cam.fx  # ground metres across one pixel
        # Ground metres along one pixel: from the next row down.
        _, _, z_next, _ = cam.ground(self.u, self.v + 1.0)
        z_next = np.where(np.isfinite(z_next), z_next, 0.0)
        self.px_lon = np.where(self.on, np.abs(z_next - np.where(self.on, z, 0.0)), 1.0) + 1e-4
        self.ray = cam.ray(self.u, self.v)

    @cached_property
    def vignette(self) -> np.ndarray:
        cam = self.scn.camera
        r2 = ((self.u - cam.cx) / cam.cx) ** 2 + ((self.v - cam.cy) / cam.cx) ** 2
        return (1.0 - self.scn.vignetting * r2).astype(np.float32)

    def frame(self, index: int, clean: bool = False) -> tuple[np.ndarray, dict]:
        """Frame `index`: (uint8 HxWx3 RGB, GT dict). `clean` drops the camera's vignetting and noise, rain and vehicles (tests locate paint with it)."""
        scn, cam = self.scn, self.scn.camera
        t = index / scn.fps
        ego = EgoState(scn, t)
        H, W = cam.height, cam.width
        img = np.empty((H, W, 3), dtype=np.float32)

        # Sky (or tunnel wall) for every pixel; ground overwrites its part.
        horizon_v = cam.cy - cam.fy * math.tan(math.radians(cam.pitch_deg))
        mix = np.clip((horizon_v - self.v) / max(horizon_v, 1.0), 0, 1)[..., None]
        sky_lo, sky_hi = {
            "day": ((0.78, 0.82, 0.86), (0.42, 0.58, 0.80)),
            "dusk": ((0.85, 0.62, 0.45), (0.30, 0.32, 0.50)),
            "night": ((0.05, 0.05, 0.07), (0.01, 0.01, 0.02)),
            "tunnel_exit": ((0.78, 0.82, 0.86), (0.42, 0.58, 0.80)),
        }[scn.lighting]
        img[:] = (1 - mix) * np.asarray(sky_lo) + mix * np.asarray(sky_hi)

        g = self.on
        z, x = self.z[g], self.x[g]
        pl, pz = self.px_lat[g], self.px_lon[g]
        s = ego.s + z
        ell = ego.lateral(x, z)
        bounds = scn.boundaries(s)  # [lanes+1, n]
        left_edge, right_edge = bounds[0] - 0.7, bounds[-1] + 0.7

        fade = np.exp(-pl / 0.03)
        tex = (_hash01(np.floor(ell / 0.05), np.floor(s / 0.05), scn.seed) - 0.5) * 0.06 * fade
        patch = 0.035 * np.sin(ell * 0.9 + s * 0.043) * np.sin(s * 0.071 + 1.3)
        road = scn.asphalt * (0.8 if scn.rain else 1.0) + tex + patch
        grass_noise = (_hash01(np.floor(ell / 0.3), np.floor(s / 0.3), scn.seed + 1) - 0.5) * 0.12 * np.exp(-pl / 0.08)
        grass = np.stack([0.26 + grass_noise, 0.36 + grass_noise, 0.17 + grass_noise], axis=-1)
        on_road = (_overlap(ell - pl / 2, ell + pl / 2, left_edge, right_edge) / pl)[:, None]
        ground = on_road * (road[:, None] * np.array([1.0, 1.0, 1.03])) + (1 - on_road) * grass

        paint = self._paint(ell, s, pl, pz, bounds)
        paint_level = 0.92 * (0.75 if scn.rain else 1.0)
        ground = ground * (1 - paint[:, None]) + paint[:, None] * paint_level

        light = np.full(z.shape, scn.light)
        if scn.shadows:
            band = np.clip(1.2 - np.abs(((s + 7.0) % 31.0) - 5.0) / 2.0, 0, 1)
            side = np.clip((bounds[0] + 5.0 - ell) / 2.0, 0, 1)
            light = light * (1 - 0.5 * band * side)
        if scn.lighting == "night":
            # Ambient plus low-beam headlights: a cone that falls off with distance; paint is retroreflective.
            # Low beams carry ~40 m: far and outer markings fade into the sensor noise.
            beam = np.exp(-(((x - 0.3) / np.maximum(z, 1.0)) / 0.2) ** 2) * np.minimum(1.0, (9.0 / np.maximum(z, 1.0)) ** 2)
            light = scn.light * (0.03 + 1.0 * beam * (1 + 0.6 * paint))
        elif scn.lighting == "tunnel_exit":
            inside = s < scn.tunnel_exit_s
            lamps = 0.05 * (np.cos(2 * math.pi * s / 12.0) > 0.6)
            light = np.where(inside, 0.28 + lamps, light)
        haze = np.clip((z - 60.0) / 250.0, 0, 1)[:, None]
        haze_col = np.asarray(sky_lo) if scn.lighting != "night" else np.asarray((0.02, 0.02, 0.03))
        ground = ground * light[:, None]
        ground = ground * (1 - haze) + haze * haze_col
        img[g] = ground.astype(np.float32)

        if scn.lighting == "tunnel_exit":
            self._tunnel(img, ego)
        if not clean:
            for veh in scn.vehicles:
                self._vehicle(img, ego, veh, t)

        exposure = 1.0
        if scn.lighting == "tunnel_exit":
            # Auto-exposure metered for the dark tunnel blows out the exit, then adapts (tau 0.5 s).
            t_exit = scn.tunnel_exit_s / scn.speed_mps
            exposure = 2.2 if t < t_exit else 1.0 + 1.2 * math.exp(-(t - t_exit) / 0.5)
        img *= np.asarray(scn.tint, dtype=np.float32) * exposure * 255.0
        if scn.lighting != "night" and not clean:
            img *= self.vignette[..., None]
        if not clean:
            rng = np.random.default_rng([scn.seed, index, 0xC0FFEE])
            if scn.rain > 0:
                self._rain(img, rng)
            if scn.noise_sigma > 0:
                # Read noise plus shot noise that grows with signal.
                sigma = np.sqrt(scn.noise_sigma**2 + 0.02 * np.clip(img, 0, 255))
                img += rng.standard_normal(img.shape, dtype=np.float32) * sigma.astype(np.float32)
                if scn.lighting == "night":
                    img += rng.standard_normal(img.shape, dtype=np.float32) * 4.0  # high analogue gain
        rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return rgb, gt_lanes(scn, ego)

    def _paint(self, ell, s, pl, pz, bounds) -> np.ndarray:
        scn = self.scn
        paint = np.zeros_like(ell)
        half = scn.marking_width_m / 2
        period = scn.dash_m + scn.gap_m
        for j in range(scn.lanes + 1):
            b = bounds[j]
            kind = scn.marking(j, s)
            single = _overlap(ell - pl / 2, ell + pl / 2, b - half, b + half) / pl
            off = 0.15 + half  # a double line's two stripes sit either side of the boundary
            double = (_overlap(ell - pl / 2, ell + pl / 2, b - off - half, b - off + half)
                      + _overlap(ell - pl / 2, ell + pl / 2, b + off - half, b + off + half)) / pl
            lat = np.where(kind == MARKINGS.index("double"), double, single)
            k = np.floor(s / period)
            lon = np.zeros_like(s)
            for o in (-1, 0, 1):
                kept = _hash01(k + o, j, scn.seed + 7) >= scn.missing_dashes
                lon += kept * _overlap(s - pz / 2, s + pz / 2, (k + o) * period, (k + o) * period + scn.dash_m)
            lon = np.clip(lon / pz, 0, 1)
            cover = np.where(kind == MARKINGS.index("dashed"), lat * lon, lat)
            if scn.wear > 0:
                # Worn paint: patches 0.4 m x 0.8 m fixed to the road, a `wear` share of them gone.
                keep = _hash01(np.floor(ell / 0.4), np.floor(s / 0.8), scn.seed + 11 + j) >= scn.wear
                cover = cover * np.where(keep, 1.0, 0.12)
            cover = cover * scn.boundary_exists(j, s)
            paint = np.maximum(paint, cover)
        return paint

    def _tunnel(self, img, ego: EgoState) -> None:
        """Dark walls and ceiling up to the portal; the portal opening shows the bright outside."""
        scn, cam = self.scn, self.scn.camera
        gap = scn.tunnel_exit_s - ego.s
        if gap <= 0:
            return
        rx, ry, rz = self.ray
        tau = gap / np.maximum(rz, 1e-6)
        px, py = rx * tau, ry * tau  # where each ray meets the portal plane (y down from camera)
        b = scn.boundaries(np.asarray(scn.tunnel_exit_s))
        left = ego.to_ego_x(b[0] - 2.0, gap)
        right = ego.to_ego_x(b[-1] + 2.0, gap)
        opening = (rz > 0) & (px > left) & (px < right) & (py > cam.height_m - 5.5)
        inside = self.on & (self.z <= gap)
        beyond = self.on & (self.z > gap)
        wall = ~opening & ~inside & ~beyond
        # Inside the tunnel there is no verge: what is off the carriageway is wall.
        ell = ego.lateral(self.x, np.where(inside, self.z, 0.0))
        bs = scn.boundaries(ego.s + np.where(inside, self.z, 0.0))
        wall |= inside & ((ell < bs[0] - 0.7) | (ell > bs[-1] + 0.7))
        img[wall] = np.asarray((0.16, 0.15, 0.14), dtype=np.float32)

    def _vehicle(self, img, ego: EgoState, veh: Vehicle, t: float) -> None:
        scn, cam = self.scn, self.scn.camera
        gap = veh.gap_m + veh.rel_speed * t
        if gap < 3.0 or gap > Z_MAX:
            return
        b = scn.boundaries(np.asarray(ego.s + gap))
        lane = min(veh.lane, scn.lanes - 1)
        xc = float(ego.to_ego_x((b[lane] + b[lane + 1]) / 2, gap))
        rx, ry, rz = self.ray
        tau = gap / np.maximum(rz, 1e-6)
        px, py = rx * tau, ry * tau
        body = (rz > 0) & (np.abs(px - xc) < 0.9) & (py > cam.height_m - 1.45) & (py < cam.height_m - 0.12)
        body &= ~(self.on & (self.z < gap))
        wheels = (rz > 0) & (np.abs(np.abs(px - xc) - 0.65) < 0.18) & (py >= cam.height_m - 0.12) & (py < cam.height_m)
        wheels &= ~(self.on & (self.z < gap))
        lamps = body & (np.abs(np.abs(px - xc) - 0.7) < 0.15) & (np.abs(py - (cam.height_m - 0.85)) < 0.08)
        shadow = self.on & (self.z > gap) & (self.z < gap + 4.0) & (np.abs(self.x - xc) < 1.0)
        img[shadow] *= 0.45
        img[body] = np.asarray(veh.colour, dtype=np.float32)
        img[wheels] = 0.05
        img[lamps] = np.asarray((0.85, 0.08, 0.06), dtype=np.float32)

    def _rain(self, img, rng) -> None:
        """Slanted streaks, brighter than the scene behind them, plus a veil of lost contrast."""
        H, W = img.shape[:2]
        n = int(500 * self.scn.rain)
        x0 = rng.uniform(0, W, n)
        y0 = rng.uniform(0, H, n)
        length = rng.uniform(8, 22, n)
        steps = np.linspace(0, 1, 24)
        xs = np.clip((x0[:, None] + 0.25 * length[:, None] * steps), 0, W - 1).astype(np.int64).ravel()
        ys = np.clip((y0[:, None] + length[:, None] * steps), 0, H - 1).astype(np.int64).ravel()
        layer = np.zeros((H, W), np.float32)
        np.add.at(layer, (ys, xs), 1.0)
        layer = np.clip(layer, 0, 1)
        img += (0.5 * (200.0 - img) * layer[..., None]).astype(np.float32)
        img[:] = img * 0.85 + 0.15 * img.mean()


def gt_lanes(scn: Scenario, ego: EgoState) -> dict:
    """GT of the four ego-relative lanes: x[lane, row] in pixels and xyz[lane, row, 3] metres
    (ISO 8855 vehicle frame: x forward, y left, z up, origin on the ground under the camera)."""
    cam = scn.camera
    rows = cam.anchor_rows()
    L, R = len(LANE_NAMES), rows.size
    x_px = np.full((L, R), np.nan)
    xyz = np.full((L, R, 3), np.nan)
    z = np.geomspace(1.0, Z_MAX, 6000)
    s = ego.s + z
    bounds = scn.boundaries(s)
    ego_lane = ego.ego_lane()
    for lane, j in enumerate(range(ego_lane - 1, ego_lane + 3)):
        if not 0 <= j <= scn.lanes:
            continue
        xl = ego.to_ego_x(bounds[j], z)
        u, v, front = cam.project(xl, z)
        ok = front & scn.boundary_exists(j, s)
        if ok.sum() < 2:
            continue
        u, v, zz, xx = u[ok], v[ok], z[ok], xl[ok]
        order = np.argsort(v)  # the far end of the lane is highest in the image
        v, u, zz, xx = v[order], u[order], zz[order], xx[order]
        inside = (rows >= v[0]) & (rows <= v[-1])
        ur = np.interp(rows, v, u)
        good = inside & (ur >= 0) & (ur <= cam.width - 1)
        x_px[lane] = np.where(good, ur, np.nan)
        zr, xr = np.interp(rows, v, zz), np.interp(rows, v, xx)
        xyz[lane] = np.where(good[:, None], np.stack([zr, -xr, np.zeros_like(zr)], axis=-1), np.nan)
    return {"x": x_px.astype(np.float32), "xyz": xyz.astype(np.float32)}


def render(scn: Scenario, index: int, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (RGB uint8, GT x[lane, row]). For many frames use a Renderer."""
    rgb, gt = Renderer(scn).frame(index, clean=clean)
    return rgb, gt["x"]


def write_case(scn: Scenario, root: str | Path, streams=("nv12", "jpeg"), labels: bool = True) -> Path:
    """Render every frame of `scn` into a case folder (without GT when not `labels`: a recording as a fleet has most of)."""
    cam = scn.camera
    isp = {"yuv_matrix": "bt601", "yuv_range": "limited", "chroma": "4:2:0"}
    meta = {
        "name": scn.name,
        "source": {"kind": "synthetic", "generator": "parity.synth", "scenario": scn.to_dict()},
        "tags": list(scn.tags),
        "image": {"width": cam.width, "height": cam.height},
        "camera": {
            "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
            "height_m": cam.height_m, "pitch_deg": cam.pitch_deg, "roll_deg": cam.roll_deg,
        },
        "isp": isp,
        "fps": scn.fps,
    }
    writer = CaseWriter(root, meta, list(streams))
    renderer = Renderer(scn)
    for i in range(scn.frames):
        rgb, gt = renderer.frame(i)
        nv12 = rgb_to_nv12(rgb, isp["yuv_matrix"], isp["yuv_range"]) if "nv12" in streams else None
        writer.add(i / scn.fps, rgb=rgb, nv12=nv12, lanes=gt["x"] if labels else None, lanes3d=gt["xyz"] if labels else None)
    return writer.close(LANE_NAMES, cam.anchor_rows()) if labels else writer.close()

