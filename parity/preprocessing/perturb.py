"""Perturbation registry: controlled, seeded, severity-graded changes to what the model sees.

Each entry has a family, the stage where it applies, and one parameter value per severity 1..5
(severity 0 is the unperturbed pipeline, bit for bit). Stages:

- `pipeline`: changes the preprocessing spec itself (a deployment mismatch);
- `raw`: the decoded source frame (uint8 HxWx3), before crop and resize;
- `resized`: the model-size image after resize, before it is quantised to 8 bits;
- `tensor`: the normalised input tensor (the same tensor then goes to every runner);
- `sequence`: which recorded frame is fed at each time step, and its timestamp.

Randomness comes from a generator seeded by (run seed, perturbation, severity, case, frame), so a
run is reproducible frame by frame. Image operations are vectorised numpy or OpenCV.
"""
from __future__ import annotations

import difflib
import math
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np

from ..colour import KR_KB, range_scale
from ..errors import UsageError
from .pipeline import IMAGENET_STD, Pipeline, quantize

STAGES = ("pipeline", "raw", "resized", "tensor", "sequence")
FAMILIES = ("deployment", "camera", "photometric", "codec_sensor", "temporal", "adversarial")


@dataclass(frozen=True)
class Perturbation:
    name: str
    family: str
    stage: str
    values: tuple  # parameter at severity 1..5
    unit: str
    doc: str
    fn: Callable

    def value(self, severity: int):
        if not 1 <= severity <= 5:
            raise UsageError(f"{self.name}: severity must be 1..5 (0 is unperturbed), got {severity}")
        return self.values[severity - 1]


REGISTRY: dict[str, Perturbation] = {}


def register(name, family, stage, values, unit, doc):
    assert family in FAMILIES and stage in STAGES and len(values) == 5, name

    def deco(fn):
        REGISTRY[name] = Perturbation(name, family, stage, tuple(values), unit, doc, fn)
        return fn

    return deco


def get(name: str) -> Perturbation:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown perturbation {name!r}{hint} (`parity perturb list` shows all)")
    return REGISTRY[name]


def _lut(fn) -> np.ndarray:
    return np.clip(np.rint(fn(np.arange(256, dtype=np.float64))), 0, 255).astype(np.uint8)


def _warp(rgb, M):
    import cv2

    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---- deployment mismatches (pipeline stage unless noted) ------------------------------------------
@register("resize_kernel", "deployment", "pipeline", ("bicubic", "area", "lanczos4", "box", "nearest"), "kernel",
          "the runtime resizes with another kernel (antialias and pixel centre as the pipeline's)")
def _resize_kernel(pipe: Pipeline, v):
    return replace(pipe, resize=replace(pipe.resize, kernel=v))


@register("pixel_centre", "deployment", "pipeline", (0.125, 0.25, 0.5, 0.75, 1.0), "source px",
          "sampling grid shifted as a wrong pixel-centre convention shifts it (half-pixel vs asymmetric differ by (scale-1)/2, ~0.6 px here)")
def _pixel_centre(pipe: Pipeline, v):
    return replace(pipe, resize=replace(pipe.resize, offset=pipe.resize.offset + v))


@register("crop_shift_x", "deployment", "pipeline", (2, 4, 8, 16, 32), "source px", "crop window shifted right")
def _crop_x(pipe: Pipeline, v):
    return replace(pipe, crop_offset=(pipe.crop_offset[0] + v, pipe.crop_offset[1]))


@register("crop_shift_y", "deployment", "pipeline", (2, 4, 8, 16, 32), "source px", "crop window shifted down")
def _crop_y(pipe: Pipeline, v):
    return replace(pipe, crop_offset=(pipe.crop_offset[0], pipe.crop_offset[1] + v))


@register("yuv_matrix", "deployment", "pipeline", (0.2, 0.4, 0.6, 0.8, 1.0), "share of the way to the other matrix",
          "NV12 decoded with (Kr, Kb) moved from the pipeline's standard toward the other one (BT.601 <-> BT.709)")
def _yuv_matrix(pipe: Pipeline, v):
    cur = KR_KB[pipe.yuv_matrix] if isinstance(pipe.yuv_matrix, str) else pipe.yuv_matrix
    other = KR_KB["bt709"] if pipe.yuv_matrix != "bt709" else KR_KB["bt601"]
    return replace(pipe, yuv_matrix=tuple((1 - v) * a + v * b for a, b in zip(cur, other)))


@register("yuv_range", "deployment", "pipeline", (0.2, 0.4, 0.6, 0.8, 1.0), "share of the way to the other range",
          "NV12 decoded with levels moved from the pipeline's range toward the other one (limited <-> full)")
def _yuv_range(pipe: Pipeline, v):
    cur = range_scale(pipe.yuv_range)
    other = range_scale("full" if pipe.yuv_range != "full" else "limited")
    return replace(pipe, yuv_range=tuple((1 - v) * a + v * b for a, b in zip(cur, other)))


@register("norm_mismatch", "deployment", "pipeline", (0.1, 0.25, 0.5, 0.75, 1.0), "share of the way to mean=std=0.5",
          "normalisation constants moved from ImageNet mean/std toward the common 0.5/0.5 ([-1, 1]) convention")
def _norm(pipe: Pipeline, v):
    mean = tuple((1 - v) * m + v * 0.5 for m in pipe.mean)
    std = tuple((1 - v) * s + v * 0.5 for s in pipe.std)
    return replace(pipe, mean=mean, std=std)


@register("channel_swap", "deployment", "raw", (0.2, 0.4, 0.6, 0.8, 1.0), "share of BGR",
          "red and blue exchanged (1.0 = the frame arrives BGR), blended for lower severities")
def _swap(rgb, v, rng):
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return bgr if v == 1.0 else cv2.addWeighted(rgb, 1 - v, bgr, v, 0.0)


@register("uint8_rounding", "deployment", "resized", (8, 7, 6, 5, 4), "bits (truncating)",
          "the resized image is truncated instead of rounded to 8 bits, then kept at fewer bits")
def _trunc(x, v, rng):
    return quantize(x, "truncate", int(v))


@register("fp16_input_cast", "deployment", "tensor", (10, 8, 7, 5, 3), "mantissa bits",
          "input tensor rounded to a shorter mantissa: 10 bits = an fp16 cast, 7 = bfloat16, then coarser")
def _fp16(x, v, rng, ctx):
    if v == 10:
        return x.astype(np.float16).astype(np.float32)
    if v == 7:  # bfloat16: torch's cast rounds half to even as below, in one pass
        import torch

        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()
    return round_mantissa(x, v)


def round_mantissa(x: np.ndarray, v: int) -> np.ndarray:
    """float32 rounded half to even to a v-bit mantissa (the exponent kept)."""
    bits = np.array(x, dtype=np.float32).view(np.uint32)
    drop = np.uint32(23 - v)
    lsb = bits >> drop
    lsb &= np.uint32(1)
    bits += (np.uint32(1) << (drop - np.uint32(1))) - np.uint32(1)  # round half to even: + half - 1 + lsb, truncate
    bits += lsb
    bits &= ~((np.uint32(1) << drop) - np.uint32(1))
    return bits.view(np.float32)


# ---- camera geometry (raw stage) -------------------------------------------------------------------
@register("roll", "camera", "raw", (0.5, 1.0, 2.0, 3.0, 5.0), "degrees", "camera rolled clockwise about the image centre")
def _roll(rgb, v, rng):
    import cv2

    h, w = rgb.shape[:2]
    return _warp(rgb, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -v, 1.0))


@register("pitch", "camera", "raw", (3, 6, 10, 15, 24), "px", "camera pitched up: the horizon moves down in the image")
def _pitch(rgb, v, rng):
    return _warp(rgb, np.float32([[1, 0, 0], [0, 1, v]]))


@register("zoom", "camera", "raw", (1.02, 1.05, 1.08, 1.12, 1.2), "x", "longer focal length (scale about the image centre)")
def _zoom(rgb, v, rng):
    import cv2

    h, w = rgb.shape[:2]
    return _warp(rgb, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, v))


@lru_cache(maxsize=16)
def _distortion_maps(h: int, w: int, k1: float):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    norm = math.hypot(cx, cy)
    xn, yn = (xx - cx) / norm, (yy - cy) / norm
    f = 1 + k1 * (xn * xn + yn * yn)
    return (cx + xn * f * norm).astype(np.float32), (cy + yn * f * norm).astype(np.float32)


@register("lens_distortion", "camera", "raw", (0.03, 0.06, 0.1, 0.15, 0.22), "k1",
          "uncorrected radial (barrel) distortion, r normalised to the half-diagonal")
def _distort(rgb, v, rng):
    import cv2

    mx, my = _distortion_maps(rgb.shape[0], rgb.shape[1], float(v))
    return cv2.remap(rgb, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---- photometric (raw stage) -----------------------------------------------------------------------
@register("gamma", "photometric", "raw", (1.15, 1.3, 1.5, 1.8, 2.2), "exponent", "a different tone curve: out = 255 (in/255)^gamma")
def _gamma(rgb, v, rng):
    import cv2

    return cv2.LUT(rgb, _lut(lambda x: 255 * (x / 255) ** v))


@register("brightness", "photometric", "raw", (8, 16, 28, 42, 60), "levels", "exposure offset added to every channel")
def _bright(rgb, v, rng):
    import cv2

    return cv2.LUT(rgb, _lut(lambda x: x + v))


@register("contrast", "photometric", "raw", (0.85, 0.7, 0.55, 0.4, 0.28), "gain about 128", "contrast reduced (haze, low sun)")
def _contrast(rgb, v, rng):
    import cv2

    return cv2.LUT(rgb, _lut(lambda x: (x - 128) * v + 128))


@register("white_balance", "photometric", "raw", (0.05, 0.1, 0.16, 0.24, 0.35), "gain shift",
          "auto white balance off: red gain 1+v, blue gain 1-v")
def _wb(rgb, v, rng):
    import cv2

    return cv2.LUT(rgb, _wb_table(float(v)))


@lru_cache(maxsize=16)
def _wb_table(v: float) -> np.ndarray:
    return np.stack([_lut(lambda x: x * (1 + v)), np.arange(256, dtype=np.uint8), _lut(lambda x: x * (1 - v))], axis=-1)[None]


@register("saturation", "photometric", "raw", (0.8, 0.6, 0.4, 0.2, 0.0), "remaining saturation", "colours pulled toward luma (0 = grey)")
def _sat(rgb, v, rng):
    import cv2

    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # BT.601 luma
    return cv2.addWeighted(rgb, v, grey, 1 - v, 0.0)


@lru_cache(maxsize=16)
def _radius2(h: int, w: int):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return ((xx - cx) ** 2 + (yy - cy) ** 2) / (cx * cx + cy * cy)


@register("vignetting", "photometric", "raw", (0.15, 0.3, 0.45, 0.6, 0.75), "corner fall-off",
          "lens shading left uncorrected: gain 1 - v r^2, r = 1 at the corners")
def _vignette(rgb, v, rng):
    import cv2

    return cv2.multiply(rgb, _vignette_gain(rgb.shape[0], rgb.shape[1], float(v)), scale=1 / 255)


@lru_cache(maxsize=8)
def _vignette_gain(h: int, w: int, v: float) -> np.ndarray:
    """The gain map in 1/255 steps, three channels: OpenCV multiplies and rounds in one pass."""
    g = np.rint((1 - v * _radius2(h, w)) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


# ---- codec and sensor (raw stage) ------------------------------------------------------------------
@register("jpeg", "codec_sensor", "raw", (75, 50, 30, 15, 7), "quality", "JPEG round trip (OpenCV, 4:2:0)")
def _jpeg(rgb, v, rng):
    import cv2

    # cvtColor, not a reversed view: OpenCV copies a negative-stride array slowly (3x the codec's time).
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(v)])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@register("chroma_subsampling", "codec_sensor", "raw", (2, 3, 4, 6, 8), "chroma decimation factor",
          "chroma (YCbCr, BT.601 full range) decimated by area and brought back by nearest; 2 = a 4:2:0 round trip")
def _chroma(rgb, v, rng):
    import cv2

    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    h, w = rgb.shape[:2]
    # The two chroma planes as one 2-channel image (OpenCV's 2x area fast path rounds differently for
    # 1 or 3 channels), moved with mixChannels: numpy's strided channel copies cost 3x the resizes.
    chroma = np.empty((h, w, 2), np.uint8)
    cv2.mixChannels([ycc], [chroma], [1, 0, 2, 1])
    small = cv2.resize(chroma, (max(1, w // v), max(1, h // v)), interpolation=cv2.INTER_AREA)
    cv2.mixChannels([cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)], [ycc], [0, 1, 1, 2])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


@register("gaussian_noise", "codec_sensor", "raw", (3, 6, 10, 15, 22), "sigma, levels", "additive read noise")
def _gauss(rgb, v, rng):
    import cv2

    # Saturating uint8 arithmetic on precomputed positive and negative parts: exactly clip(rgb + noise).
    pos, neg = _scaled_bank(rgb.shape[0], rgb.shape[1], float(v))
    dy, dx = int(rng.integers(0, 97)), int(rng.integers(0, 131))
    h, w = rgb.shape[:2]
    return cv2.subtract(cv2.add(rgb, pos[dy : dy + h, dx : dx + w]), neg[dy : dy + h, dx : dx + w])


@lru_cache(maxsize=8)
def _scaled_bank(h: int, w: int, sigma: float):
    z = np.rint(_noise_bank(h, w) * np.float32(sigma))
    return np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """A fixed field of unit normal noise, larger than the frame; frames take seeded windows of it.
    Drawing fresh noise for every pixel of every frame costs more than the model's inference."""
    return np.random.default_rng(0x5EED).standard_normal((h + 97, w + 131, 3), dtype=np.float32)


def _noise_window(shape, rng) -> np.ndarray:
    h, w = shape[:2]
    dy, dx = int(rng.integers(0, 97)), int(rng.integers(0, 131))
    flip = rng.integers(0, 2, 2)  # mirrored windows multiply the variety
    # The window of the bank mirrored = the mirrored window of a mirrored bank: a forward-strided
    # view, which OpenCV reads without a copy.
    bank = _mirrored_bank(h, w, bool(flip[0]), bool(flip[1]))
    y0 = bank.shape[0] - dy - h if flip[0] else dy
    x0 = bank.shape[1] - dx - w if flip[1] else dx
    return bank[y0 : y0 + h, x0 : x0 + w]


@lru_cache(maxsize=8)
def _mirrored_bank(h: int, w: int, flip_y: bool, flip_x: bool) -> np.ndarray:
    return np.ascontiguousarray(_noise_bank(h, w)[:: -1 if flip_y else 1, :: -1 if flip_x else 1])


@lru_cache(maxsize=16)
def _shot_sigma(photons: float) -> np.ndarray:
    return np.sqrt(np.arange(256, dtype=np.float32) * np.float32(255.0 / photons))  # std in levels for each input level


@register("shot_noise", "codec_sensor", "raw", (300, 120, 60, 30, 12), "photons at white",
          "photon noise: variance proportional to the signal (Gaussian approximation of imagecorruptions' Poisson shot_noise)")
def _shot(rgb, v, rng):
    import cv2

    noise = cv2.multiply(_noise_window(rgb.shape, rng), cv2.LUT(rgb, _shot_sigma(float(v))))
    out = cv2.add(noise, rgb, dtype=cv2.CV_32F)
    np.add(out, 0.5, out=out)  # half up, then truncation: floor(x + 0.5), as before
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


@register("motion_blur", "codec_sensor", "raw", (3, 5, 9, 13, 19), "kernel length, px",
          "camera shake: a line kernel at a random angle within 30 degrees of horizontal (OpenCV filter2D)")
def _motion(rgb, v, rng):
    import cv2

    return cv2.filter2D(rgb, -1, motion_kernel(v, rng), borderType=cv2.BORDER_REPLICATE)


def motion_kernel(v: int, rng) -> np.ndarray:
    """A normalised line of length v at the frame's random angle (the benchmark hands it to OpenCV directly)."""
    k = np.zeros((v, v), np.float32)
    angle = rng.uniform(-30, 30)
    c = (v - 1) / 2
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for t in np.linspace(-c, c, 4 * v):
        k[int(round(c + t * dy)), int(round(c + t * dx))] = 1.0
    return k / k.sum()


@register("defocus_blur", "codec_sensor", "raw", (1, 2, 3, 4.5, 6), "disk radius, px",
          "out of focus (or a dirty windscreen): an anti-aliased disk kernel, as imagecorruptions' defocus_blur")
def _defocus(rgb, v, rng):
    import cv2

    return cv2.filter2D(rgb, -1, disk_kernel(float(v)), borderType=cv2.BORDER_REPLICATE)


@lru_cache(maxsize=8)
def disk_kernel(v: float) -> np.ndarray:
    r = int(math.ceil(v))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    k = np.clip(v + 0.5 - np.sqrt(xx * xx + yy * yy), 0, 1)
    return k / k.sum()


# ---- temporal (sequence stage): fn(n_frames, timestamps, v, rng) -> (fed frame per slot, -1 = dropped; timestamps)
@register("frame_drop", "temporal", "sequence", (0.05, 0.1, 0.2, 0.3, 0.5), "drop probability", "frames lost: no output at those time steps")
def _drop(n, t, v, rng):
    fed = np.arange(n)
    fed[1:][rng.random(n - 1) < v] = -1  # the first frame is always delivered
    return fed, t


@register("frame_repeat", "temporal", "sequence", (0.05, 0.1, 0.2, 0.3, 0.5), "repeat probability",
          "a stale frame: the previous frame is fed again at this time step")
def _repeat(n, t, v, rng):
    fed = np.arange(n)
    rep = np.r_[False, rng.random(n - 1) < v]
    for i in np.flatnonzero(rep):
        fed[i] = fed[i - 1]
    return fed, t


@register("timestamp_jitter", "temporal", "sequence", (0.05, 0.1, 0.2, 0.3, 0.45), "sigma, frame periods",
          "timestamps jitter (kept increasing): what a metric that trusts timestamps sees")
def _tjitter(n, t, v, rng):
    dt = np.median(np.diff(t)) if n > 1 else 0.0
    return np.arange(n), t + np.clip(rng.normal(0, v * dt, n), -0.49 * dt, 0.49 * dt)


# ---- adversarial (tensor stage) --------------------------------------------------------------------
@register("fgsm", "adversarial", "tensor", (0.5, 1, 2, 4, 8), "epsilon, 8-bit levels",
          "fast gradient sign attack on the input tensor, gradient of the row-anchor cross-entropy from the torch model")
def _fgsm(x, v, rng, ctx):
    import torch
    import torch.nn.functional as F

    model, targets = ctx["model"], ctx["targets"]
    std = np.asarray(ctx.get("std", IMAGENET_STD), np.float32).reshape(1, 3, 1, 1)
    xt = torch.from_numpy(np.array(x, dtype=np.float32)).requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xt), torch.from_numpy(targets))
        (grad,) = torch.autograd.grad(loss, xt)
    return (x + (v / 255.0) / std * np.sign(grad.numpy())).astype(np.float32)


SUITES = {
    "deploy": [n for n, p in REGISTRY.items() if p.family == "deployment"],
    "corruptions": [n for n, p in REGISTRY.items() if p.family in ("camera", "photometric", "codec_sensor", "temporal")],
    "all": list(REGISTRY),
}


def resolve(spec: str) -> list[str]:
    """A suite name or a comma-separated list of perturbations."""
    if spec in SUITES:
        return list(SUITES[spec])
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        get(n)
    return names


def _seed(*parts) -> list[int]:
    return [p if isinstance(p, int) and p >= 0 else zlib.crc32(str(p).encode()) for p in parts]


class _SeededOnUse:
    """numpy's generator for one frame, seeded at its first draw: most perturbations draw nothing, and
    seeding costs as much as a whole lookup-table pass over the frame."""

    __slots__ = ("_seed", "_gen")

    def __init__(self, seed):
        self._seed, self._gen = seed, None

    def __getattr__(self, name):
        if self._gen is None:
            self._gen = np.random.default_rng(self._seed)
        return getattr(self._gen, name)


class Applied:
    """One perturbation at one severity for one case: the pipeline to use, the hooks it calls, the
    frame schedule. Severity 0 is the identity everywhere."""

    def __init__(self, pert: Perturbation | None, severity: int, seed: int, case_name: str, tensor_context=None, value=None):
        self.pert, self.severity, self.seed, self.case_name = pert, severity, seed, case_name
        self.tensor_context = tensor_context  # frames -> dict for tensor-stage perturbations (FGSM)
        self.active = pert is not None and severity > 0
        # `value`: a parameter off the severity grid (training draws, parity.training.recipes.perturb_aug)
        self.v = (value if value is not None else pert.value(severity)) if self.active else None

    def rng(self, frame: int) -> np.random.Generator:
        return _SeededOnUse(_seed(self.seed, self.pert.name, self.severity, self.case_name, int(frame)))

    def pipeline(self, pipe: Pipeline) -> Pipeline:
        return self.pert.fn(pipe, self.v) if self.active and self.pert.stage == "pipeline" else pipe

    def hooks(self):
        return self if self.active and self.pert.stage in ("raw", "resized", "tensor") else None

    @property
    def needs_whole_frame(self) -> bool:
        """A raw-stage perturbation sees the decoded frame before the crop (a roll moves pixels in from outside it)."""
        return self.pert.stage == "raw"

    def schedule(self, timestamps: np.ndarray):
        """(fed frame per output slot, -1 = dropped; timestamps) for the case's frames."""
        n = len(timestamps)
        if self.active and self.pert.stage == "sequence":
            return self.pert.fn(n, timestamps.copy(), self.v, self.rng(-1))
        return np.arange(n), timestamps

    # hooks called by Pipeline.prepare/apply
    def raw(self, rgb, frame):
        return self.pert.fn(rgb, self.v, self.rng(frame)) if self.pert.stage == "raw" else rgb

    def resized(self, x, frames):
        if self.pert.stage != "resized":
            return x
        return np.stack([self.pert.fn(x[k], self.v, self.rng(f)) for k, f in enumerate(frames)])

    def tensor(self, x, frames):
        if self.pert.stage != "tensor":
            return x
        ctx = self.tensor_context(frames) if self.tensor_context else {}
        return self.pert.fn(x, self.v, self.rng(frames[0]), ctx)
