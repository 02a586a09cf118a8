"""Procedural road-scene recorder: renders what a front camera sees, with exact GT lanes.

Geometry. The road is flat; its centreline curvature along arc length s is
kappa(s) = k0 + ka*sin(2*pi*s/P + phi). In the ego frame (x right, z forward) the lateral position
of lane boundary j at distance z is the standard small-angle lane model

    x_j(z) = b_j - d(t) - psi(t)*z + c_t(z),   c_t(z) = double integral of kappa from s(t) to s(t)+z

with b_j the boundary's offset from the ego lane centre, d the ego's lateral offset and psi its
heading relative to the road. Rendering inverts the pinhole camera per pixel (ground row -> z,
column -> x) and paints markings by exact box-filter coverage of each pixel's ground footprint;
GT projects x_j(z) at the anchor rows. Both use the same functions, so GT lands on the paint.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .case import CaseWriter
from .colour import rgb_to_nv12

LANE_NAMES = ["left_left", "left", "right", "right_right"]
# Anchor rows of the reference camera (640x360); other image heights scale them.
REFERENCE_SIZE = (640, 360)
ANCHOR_ROWS_REF = [166.0 + 11.0 * k for k in range(18)]


@dataclass(frozen=True)
class Camera:
    width: int = 640
    height: int = 360
    fx: float = 520.0
    fy: float = 520.0
    cx: float = 319.5
    cy: float = 179.5
    height_m: float = 1.5
    pitch_deg: float = 3.0

    @property
    def pitch(self) -> float:
        return math.radians(self.pitch_deg)

    def ground_rows(self, v: np.ndarray):
        """For image rows v: (on_ground, z forward metres, ray length t = camera-frame depth)."""
        b = (np.asarray(v, dtype=np.float64) - self.cy) / self.fy
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        denom = b * c + s
        on = denom > 1e-6
        t = np.where(on, self.height_m / np.where(on, denom, 1.0), np.inf)
        z = np.where(on, t * (c - b * s), np.inf)
        return on, z, t

    def anchor_rows(self) -> np.ndarray:
        return np.asarray(ANCHOR_ROWS_REF) * (self.height / REFERENCE_SIZE[1])


@dataclass(frozen=True)
class Scenario:
    """Everything that decides a recording; the same Scenario and seed give the same bytes."""

    name: str
    seed: int = 0
    frames: int = 120
    fps: float = 20.0
    speed_mps: float = 22.0
    lanes_total: int = 3
    ego_lane: int = 1  # 0 = leftmost lane
    lane_width_m: float = 3.6
    k0: float = 0.0  # base curvature 1/m (positive curves right)
    ka: float = 0.0  # s-curve amplitude 1/m
    period_m: float = 500.0
    phase: float = 0.0
    drift_amp_m: float = 0.3  # ego lateral weave amplitude
    drift_period_s: float = 5.0
    drift_phase: float = 0.0
    marking_width_m: float = 0.15
    dash_m: float = 3.0
    gap_m: float = 9.0
    light: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    asphalt: float = 0.36
    shadows: bool = False
    noise_sigma: float = 2.0
    tags: tuple[str, ...] = ()
    camera: Camera = field(default_factory=Camera)

    @classmethod
    def sample(cls, name: str, seed: int, **overrides) -> "Scenario":
        """A random but reproducible scenario: the training distribution."""
        rng = np.random.default_rng([seed, 0x5EED])
        lanes_total = int(rng.integers(2, 5))
        params = dict(
            name=name,
            seed=seed,
            speed_mps=float(rng.uniform(12, 32)),
            lanes_total=lanes_total,
            ego_lane=int(rng.integers(0, lanes_total)),
            lane_width_m=float(rng.uniform(3.2, 3.9)),
            k0=float(rng.uniform(-1, 1) * rng.choice([0.0, 1 / 900, 1 / 400, 1 / 250])),
            ka=float(rng.choice([0.0, 1 / 600, 1 / 300])),
            period_m=float(rng.uniform(250, 700)),
            phase=float(rng.uniform(0, 2 * math.pi)),
            drift_amp_m=float(rng.uniform(0.0, 0.6)),
            drift_period_s=float(rng.uniform(3, 9)),
            drift_phase=float(rng.uniform(0, 2 * math.pi)),
            marking_width_m=float(rng.uniform(0.12, 0.2)),
            dash_m=float(rng.choice([3.0, 4.0, 6.0])),
            gap_m=float(rng.choice([6.0, 9.0, 12.0])),
            light=float(rng.uniform(0.55, 1.25)),
            tint=tuple(float(v) for v in rng.uniform(0.9, 1.1, size=3)),
            asphalt=float(rng.uniform(0.28, 0.45)),
            shadows=bool(rng.random() < 0.4),
            noise_sigma=float(rng.uniform(1.0, 4.0)),
            camera=Camera(pitch_deg=float(rng.uniform(2.4, 3.6)), height_m=float(rng.uniform(1.35, 1.65))),
        )
        params.update(overrides)
        return cls(**params)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tint"] = list(self.tint)
        d["tags"] = list(self.tags)
        return d


class Road:
    """Ego state and road shape at time t (closed forms, so GT is exact)."""

    def __init__(self, scn: Scenario, t: float):
        self.scn = scn
        w = 2 * math.pi / scn.drift_period_s
        self.s = scn.speed_mps * t
        self.d = scn.drift_amp_m * math.sin(w * t + scn.drift_phase)
        # Heading follows the weave so the car drives along a smooth path, not sideways.
        self.psi = scn.drift_amp_m * w * math.cos(w * t + scn.drift_phase) / scn.speed_mps
        self.omega = 2 * math.pi / scn.period_m
        self.alpha = self.omega * self.s + scn.phase

    def centre_offset(self, z: np.ndarray) -> np.ndarray:
        """c_t(z): lateral offset of the road's tangent-relative centreline at distance z."""
        k0, ka, om, a = self.scn.k0, self.scn.ka, self.omega, self.alpha
        return k0 * z * z / 2 + ka / om * (z * math.cos(a) - (np.sin(om * z + a) - math.sin(a)) / om)

    def boundaries(self) -> list[tuple[int, float]]:
        """(boundary index from the left, lateral offset from the ego lane centre) for every painted line."""
        scn = self.scn
        return [(j, (j - scn.ego_lane - 0.5) * scn.lane_width_m) for j in range(scn.lanes_total + 1)]

    def lateral(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Road lateral coordinate (from the ego lane centre) of ground point (x, z) in the ego frame."""
        return x + self.d + self.psi * z - self.centre_offset(z)


def _overlap(lo, hi, a, b):
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)


def _hash_noise(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic value noise in [-0.5, 0.5) on an integer lattice (road texture fixed to the road)."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(np.float32) / 65536.0 - 0.5


def render(scn: Scenario, index: int, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Frame `index`: (uint8 HxWx3 RGB, GT x[lane, anchor row] in pixels, NaN = absent).

    `clean` skips sensor noise so tests can locate paint exactly.
    """
    cam = scn.camera
    t = index / scn.fps
    road = Road(scn, t)
    H, W = cam.height, cam.width
    v = np.arange(H, dtype=np.float64)
    on, z_row, t_row = cam.ground_rows(v)
    u = np.arange(W, dtype=np.float64)
    a = (u - cam.cx) / cam.fx

    # Sky: a vertical gradient, brighter toward the horizon.
    horizon = cam.cy - cam.fy * math.tan(cam.pitch)
    sky_mix = np.clip((horizon - v) / max(horizon, 1.0), 0, 1)[:, None, None]
    sky = (1 - sky_mix) * np.array([0.78, 0.82, 0.86]) + sky_mix * np.array([0.42, 0.58, 0.80])
    img = np.broadcast_to(sky, (H, W, 3)).astype(np.float32).copy()

    g = np.nonzero(on & (z_row < 400))[0]
    if g.size:
        zr, tr = z_row[g][:, None], t_row[g][:, None]
        x = a[None, :] * tr
        ell = road.lateral(x, zr)
        s = road.s + zr
        px_lat = tr / cam.fx  # metres per pixel across
        dz = np.abs(np.gradient(z_row[g]))[:, None] if g.size > 1 else np.full_like(zr, 0.1)
        bounds = road.boundaries()
        left_edge, right_edge = bounds[0][1] - 0.7, bounds[-1][1] + 0.7

        # Asphalt with texture fixed to the road, fading with distance as pixels cover more ground.
        fade = np.exp(-px_lat / 0.08).astype(np.float32)
        tex = _hash_noise(np.floor(ell / 0.05), np.floor(s / 0.05), scn.seed) * 0.06 * np.exp(-px_lat / 0.03)
        patch = 0.035 * np.sin(ell * 0.9 + s * 0.043) * np.sin(s * 0.071 + 1.3)
        road_val = scn.asphalt + tex + patch
        grass = np.stack([0.26 + 0.0 * ell, 0.36 + 0.0 * ell, 0.17 + 0.0 * ell], axis=-1)
        grass = grass + (_hash_noise(np.floor(ell / 0.3), np.floor(s / 0.3), scn.seed + 1) * 0.12 * fade)[..., None]
        on_road = (_overlap(ell - px_lat / 2, ell + px_lat / 2, left_edge, right_edge) / px_lat)[..., None]
        ground = on_road * road_val[..., None] * np.array([1.0, 1.0, 1.03]) + (1 - on_road) * grass

        paint = np.zeros_like(ell)
        half = scn.marking_width_m / 2
        period = scn.dash_m + scn.gap_m
        for j, b in bounds:
            lat = _overlap(ell - px_lat / 2, ell + px_lat / 2, b - half, b + half) / px_lat
            if j in (0, scn.lanes_total):
                cover = lat
            else:
                k = np.floor(s / period)
                lon = sum(
                    _overlap(s - dz / 2, s + dz / 2, (k + o) * period, (k + o) * period + scn.dash_m) for o in (-1, 0, 1)
                ) / np.maximum(dz, 1e-6)
                cover = lat * np.clip(lon, 0, 1)
            paint = np.maximum(paint, cover)
        ground = ground * (1 - paint[..., None]) + paint[..., None] * 0.92

        if scn.shadows:
            # Soft tree shadows across the left part of the road, fixed to the road.
            band = np.clip(1.2 - np.abs(((s + 7.0) % 31.0) - 5.0) / 2.0, 0, 1)
            side = np.clip((bounds[0][1] + 5.0 - ell) / 2.0, 0, 1)
            ground = ground * (1 - 0.5 * band * side)[..., None]

        # Haze toward the horizon.
        haze = np.clip((zr - 60.0) / 250.0, 0, 1)[..., None]
        ground = ground * (1 - haze) + haze * np.array([0.72, 0.75, 0.78])
        img[g] = ground.astype(np.float32)

    img = img * scn.light * np.asarray(scn.tint, dtype=np.float32)
    img = img * 255.0
    if not clean and scn.noise_sigma > 0:
        rng = np.random.default_rng([scn.seed, index, 0xC0FFEE])
        img = img + rng.normal(0.0, scn.noise_sigma, size=img.shape).astype(np.float32)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return rgb, gt_lanes(scn, road)


def gt_lanes(scn: Scenario, road: Road) -> np.ndarray:
    """x[lane, anchor row] of the four ego-relative lanes (left_left, left, right, right_right)."""
    cam = scn.camera
    rows = cam.anchor_rows()
    on, z, t = cam.ground_rows(rows)
    out = np.full((len(LANE_NAMES), rows.size), np.nan, dtype=np.float64)
    by_index = dict(road.boundaries())
    for lane, j in enumerate(range(scn.ego_lane - 1, scn.ego_lane + 3)):
        if j not in by_index:
            continue
        zz = np.where(on, z, 0.0)
        x = by_index[j] - road.d - road.psi * zz + road.centre_offset(zz)
        u = cam.cx + cam.fx * x / np.where(on, t, 1.0)
        ok = on & (u >= 0) & (u <= cam.width - 1)
        out[lane] = np.where(ok, u, np.nan)
    return out.astype(np.float32)


def write_case(scn: Scenario, root: str | Path, streams=("nv12", "jpeg")) -> Path:
    """Render every frame of `scn` into a case folder (NV12 as the ISP emits, JPEG as a training set holds)."""
    cam = scn.camera
    isp = {"yuv_matrix": "bt601", "yuv_range": "limited", "chroma": "4:2:0"}
    meta = {
        "name": scn.name,
        "source": {"kind": "synthetic", "generator": "parity.synth", "scenario": scn.to_dict()},
        "tags": list(scn.tags),
        "image": {"width": cam.width, "height": cam.height},
        "camera": {
            "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
            "height_m": cam.height_m, "pitch_deg": cam.pitch_deg, "roll_deg": 0.0,
        },
        "isp": isp,
        "fps": scn.fps,
    }
    writer = CaseWriter(root, meta, list(streams))
    for i in range(scn.frames):
        rgb, lanes = render(scn, i)
        nv12 = rgb_to_nv12(rgb, isp["yuv_matrix"], isp["yuv_range"]) if "nv12" in streams else None
        writer.add(i / scn.fps, rgb=rgb, nv12=nv12, lanes=lanes)
    return writer.close(LANE_NAMES, cam.anchor_rows())


def with_frames(scn: Scenario, frames: int) -> Scenario:
    return replace(scn, frames=frames)
