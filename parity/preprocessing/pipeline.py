"""Declarative preprocessing: recorded frame -> model input tensor.

A model has a *training* pipeline (what its training set went through) and a *vehicle* pipeline
(what the car's runtime does). Their difference is exactly the deployment mismatch the seeds
describe; here it is a difference of parameters on one implementation. Pipelines are dataclasses,
loadable from JSON or TOML (`load_pipeline`), and stored with every run's provenance.

Order of operations: decode (NV12 -> RGB with the pipeline's matrix/range/chroma, or the RGB
stream) -> crop -> resize -> quantise to 8 bits -> channel order -> scale and normalise -> dtype
and layout. Perturbations hook in at `raw` (the decoded frame), `resized` (the 8-bit model-size
image) and `tensor` (the normalised input), see parity/perturb.py.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..cases.format import Case
from ..colour import nv12_to_rgb
from ..errors import CaseError, UsageError
from .resample import KERNELS, PIXEL_CENTRES, apply_taps, window_taps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Resize:
    kernel: str = "bilinear"
    antialias: bool = True
    # Where a destination pixel samples the source: "half_pixel" maps centres to centres (Pillow,
    # OpenCV, torch align_corners=False), "align_corners" maps corner pixels onto each other,
    # "asymmetric" maps corners to top-left edges (TensorFlow 1, OpenCV INTER_NEAREST).
    pixel_centre: str = "half_pixel"
    cubic_a: float = -0.75  # Pillow uses -0.5, OpenCV and torch -0.75
    pil_rounding: bool = False  # round to 8 bits between the two passes, as Pillow does
    offset: float = 0.0  # sampling grid shift in source pixels (what a wrong pixel-centre convention does)

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise UsageError(f"unknown resize kernel {self.kernel!r}; expected one of {KERNELS}")
        if self.pixel_centre not in PIXEL_CENTRES:
            raise UsageError(f"unknown pixel centre {self.pixel_centre!r}; expected one of {PIXEL_CENTRES}")
        for name in ("antialias", "pil_rounding"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"resize.{name} must be true or false, got {getattr(self, name)!r}")
        for name, lo, hi in (("cubic_a", -2.0, 0.0), ("offset", -64.0, 64.0)):
            if not _finite(getattr(self, name)) or not lo <= getattr(self, name) <= hi:
                raise UsageError(f"resize.{name} must be a number in [{lo:g}, {hi:g}], got {getattr(self, name)!r}")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _numbers(v, n: int) -> bool:
    return isinstance(v, tuple) and len(v) == n and all(_finite(x) for x in v)


@dataclass(frozen=True)
class Pipeline:
    name: str
    size: tuple[int, int]  # model input (height, width)
    streams: tuple[str, ...] = ("jpeg", "png", "nv12")  # recorded streams, in order of preference
    yuv_matrix: str | tuple[float, float] = "bt601"
    yuv_range: str | tuple[float, float, float] = "limited"
    chroma: str = "nearest"
    channel_order: str = "rgb"
    crop: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)  # top, bottom, left, right as fractions
    crop_offset: tuple[int, int] = (0, 0)  # (dx, dy) source pixels; outside the frame the edge repeats
    resize: Resize = field(default_factory=Resize)
    quantize: str = "round"  # how the resized image becomes 8-bit: "round" (half up) or "truncate"
    bits: int = 8
    scale: float = 1 / 255  # pixel value multiplier before mean/std (1/255: 0-1 inputs; 1.0: 0-255)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dtype: str = "float32"
    layout: str = "NCHW"

    def __post_init__(self):
        from ..cases.format import STREAMS
        from ..colour import KR_KB, RANGES

        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"pipeline name must be a non-empty string, got {self.name!r}")
        size, crop, off = self.size, self.crop, self.crop_offset
        checks = [
            (isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8192 for v in size),
             f"size must be [height, width], integers in 1..8192, got {size!r}"),
            (isinstance(self.streams, tuple) and self.streams and all(s in STREAMS for s in self.streams),
             f"streams must be a non-empty list drawn from {list(STREAMS)}, got {self.streams!r}"),
            (self.yuv_matrix in KR_KB if isinstance(self.yuv_matrix, str) else
             _numbers(self.yuv_matrix, 2) and all(0 < v < 1 for v in self.yuv_matrix) and sum(self.yuv_matrix) < 1,
             f"yuv_matrix must be one of {sorted(KR_KB)} or [Kr, Kb] in (0, 1), got {self.yuv_matrix!r}"),
            (self.yuv_range in RANGES if isinstance(self.yuv_range, str) else
             _numbers(self.yuv_range, 3) and self.yuv_range[1] > 0 and self.yuv_range[2] > 0,
             f"yuv_range must be one of {list(RANGES)} or [offset, luma span > 0, chroma span > 0], got {self.yuv_range!r}"),
            (self.chroma in ("nearest", "bilinear"), f"chroma must be 'nearest' or 'bilinear', got {self.chroma!r}"),
            (_numbers(crop, 4), f"crop must be [top, bottom, left, right] fractions, got {crop!r}"),
            (isinstance(off, tuple) and len(off) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 4096 for v in off),
             f"crop_offset must be [dx, dy] integers (source pixels), got {off!r}"),
            (isinstance(self.resize, Resize), f"resize must be a table of {[f.name for f in fields(Resize)]}, got {self.resize!r}"),
            (isinstance(self.bits, int) and not isinstance(self.bits, bool), f"bits must be an integer, got {self.bits!r}"),
            (_finite(self.scale) and self.scale > 0, f"scale must be a number > 0, got {self.scale!r}"),
            (_numbers(self.mean, 3), f"mean must be 3 finite numbers, got {self.mean!r}"),
            (_numbers(self.std, 3) and all(v > 0 for v in self.std), f"std must be 3 numbers > 0 (it divides), got {self.std!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(f"pipeline {self.name!r}: {msg}")
        checks = [
            (self.channel_order in ("rgb", "bgr"), f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}"),
            (self.quantize in ("round", "truncate"), f"quantize must be 'round' or 'truncate', got {self.quantize!r}"),
            (1 <= self.bits <= 8, f"bits must be 1..8, got {self.bits}"),
            (self.dtype in ("float32", "float16"), f"dtype must be float32 or float16, got {self.dtype!r}"),
            (self.layout in ("NCHW", "NHWC"), f"layout must be NCHW or NHWC, got {self.layout!r}"),
            (0 <= self.crop[0] < self.crop[1] <= 1 and 0 <= self.crop[2] < self.crop[3] <= 1, f"crop fractions out of order: {self.crop}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(f"pipeline {self.name!r}: {msg}")

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "pipeline") -> "Pipeline":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"{where}: unknown pipeline field(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        try:
            if "resize" in d:
                if not isinstance(d["resize"], dict):
                    raise UsageError(f"resize must be a table of {[f.name for f in fields(Resize)]}, got {d['resize']!r}")
                rk = {f.name for f in fields(Resize)}
                bad = sorted(set(d["resize"]) - rk)
                if bad:
                    raise UsageError(f"unknown resize field(s) {bad}; known: {sorted(rk)}")
                d["resize"] = Resize(**d["resize"])
            for k in ("size", "streams", "crop", "crop_offset", "mean", "std", "yuv_matrix", "yuv_range"):
                if isinstance(d.get(k), list):
                    d[k] = tuple(d[k])
            return cls(**d)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:  # a value of a type no check above foresaw
            raise UsageError(f"{where}: {exc}") from None

    # ---- the stages ----------------------------------------------------------------------------
    def stream_for(self, case: Case) -> str:
        for s in self.streams:
            if s in case.streams:
                return s
        # Raw RGB kept in a drive log is read by any pipeline that reads an RGB stream, after the ones it names.
        if "rgb" in case.streams and any(s in ("jpeg", "png") for s in self.streams):
            return "rgb"
        raise CaseError([f"{case.root}: case has streams {case.streams}, pipeline {self.name!r} reads one of {list(self.streams)}"])

    def decode(self, case: Case, index: int, stream: str, rows=None) -> np.ndarray:
        """The frame as RGB; `rows=(r0, r1)` decodes only those rows where the stream allows it (NV12)."""
        frame = case.read(index, stream)
        if stream == "nv12":
            return nv12_to_rgb(frame, self.yuv_matrix, self.yuv_range, self.chroma, rows=rows)
        return frame if rows is None else frame[rows[0] : rows[1]]

    def rows_read(self, height: int, width: int) -> tuple[int, int]:
        """The source rows the crop and resize read: all a decode needs when nothing looks at the whole frame."""
        top, bottom, left, right = self.crop_box(height, width)
        _, y0, y1 = self._taps(height, top, bottom, 0)
        return y0, y1

    def _taps(self, n_src: int, start: int, stop: int, axis: int):
        r = self.resize
        return window_taps(n_src, start, stop, self.size[axis], kernel=r.kernel, antialias=r.antialias, centre=r.pixel_centre,
                           cubic_a=r.cubic_a, offset=r.offset)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        t, b, l, r = self.crop
        dx, dy = self.crop_offset
        return round(t * height) + dy, round(b * height) + dy, round(l * width) + dx, round(r * width) + dx

    def prepare(self, case: Case, indices, hooks=None, decoded: "DecodedFrames | None" = None) -> np.ndarray:
        """Frames `indices` of `case` -> model input batch. `hooks` applies a perturbation's stages;
        `decoded` keeps decoded frames for the next call that decodes them the same way (a sweep)."""
        stream = self.stream_for(case)
        whole = hooks is not None and getattr(hooks, "needs_whole_frame", True)
        rows = None if whole else self.rows_read(case.height, case.width)
        frames = []
        for i in indices:
            if decoded is not None:
                rgb = decoded.get(self, case, int(i), stream, rows)
            else:
                rgb = self.decode(case, int(i), stream, rows=rows)
            if hooks is not None:
                rgb = hooks.raw(rgb, int(i))
            frames.append(rgb)
        return self.apply(np.stack(frames), hooks=hooks, indices=list(indices), rows=rows, height=case.height)

    def apply(self, rgb: np.ndarray, hooks=None, indices=None, rows=None, height: int | None = None) -> np.ndarray:
        """uint8 [N, H, W, 3] decoded RGB frames -> model input. `rows=(r0, r1)`: `rgb` holds only those
        rows of frames `height` tall (what `rows_read` asked for)."""
        N, H, W, _ = rgb.shape
        full_h = height if rows is not None else H
        r0 = rows[0] if rows is not None else 0
        top, bottom, left, right = self.crop_box(full_h, W)
        ty, y0, y1 = self._taps(full_h, top, bottom, 0)
        tx, x0, x1 = self._taps(W, left, right, 1)
        x = apply_taps(rgb[:, y0 - r0 : y1 - r0, x0:x1], ty, tx, self.resize.pil_rounding)
        if hooks is not None:
            x = hooks.resized(x, indices)  # before quantisation: it may quantise differently
        x = quantize(x, self.quantize, self.bits)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        x = self._normalised(x)
        if hooks is not None:
            x = hooks.tensor(x, indices)
        return x.astype(self.dtype, copy=False)

    def normalise(self, levels: np.ndarray) -> np.ndarray:
        """8-bit levels [N, H, W, 3] in the model's channel order -> the model input, as `apply` makes it
        (parity.runs.prepared keeps a condition's inputs as these levels)."""
        return self._normalised(levels).astype(self.dtype, copy=False)

    def _normalised(self, x: np.ndarray) -> np.ndarray:
        mean, std, scale = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32), np.float32(self.scale)
        if self.layout == "NCHW":  # channel by channel into the planar tensor: no transpose of the whole batch
            out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), np.float32)
            for c in range(3):
                o = out[:, c]
                np.multiply(x[..., c], scale, out=o)
                o -= mean[c]
                o /= std[c]
            return out
        return np.ascontiguousarray((x * scale - mean) / std, dtype=np.float32)


class DecodedFrames:
    """Decoded frames of one case kept for reuse: a sweep decodes each frame once for every
    perturbation x severity that decodes it the same way (stream, YUV matrix, range, chroma, rows).
    Entries are read-only arrays (a raw perturbation returns a new array); the oldest are dropped
    beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.bytes, self._store = max_bytes, 0, {}

    def get(self, pipe: "Pipeline", case: Case, index: int, stream: str, rows) -> np.ndarray:
        key = (case.name, index, stream, pipe.yuv_matrix, pipe.yuv_range, pipe.chroma, rows) if stream == "nv12" else \
            (case.name, index, stream, rows)
        hit = self._store.get(key)
        if hit is None:
            hit = pipe.decode(case, index, stream, rows=rows)
            hit.flags.writeable = False
            self._store[key] = hit
            self.bytes += hit.nbytes
            while self.bytes > self.max_bytes and len(self._store) > 1:
                self.bytes -= self._store.pop(next(iter(self._store))).nbytes
        return hit


def quantize(x: np.ndarray, mode: str = "round", bits: int = 8) -> np.ndarray:
    """Float image in 0..255 -> 8-bit values (still float): rounded half up or truncated, then `bits` deep."""
    x = x + np.float32(0.5) if mode == "round" else np.array(x, dtype=np.result_type(x, np.float32))
    np.floor(x, out=x)  # in place from here: one new array, not four
    np.clip(x, 0, 255, out=x)
    if bits < 8:
        step = np.float32(2.0 ** (8 - bits))  # a power of two: dividing and multiplying back are exact
        x /= step
        np.floor(x, out=x)
        x *= step
    return x


def load_pipeline(path: str | Path) -> Pipeline:
    """A pipeline from a .json or .toml file (the fields of `Pipeline`; `resize` as a table)."""
    path = Path(path)
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
        else:
            data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: cannot read pipeline: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a pipeline file holds one table/object")
    data.setdefault("name", path.stem)
    return Pipeline.from_dict(data, where=str(path))


def training_pipeline(size=(112, 288), crop_top=136 / 360) -> Pipeline:
    """The training set's path: JPEG RGB, Pillow's antialiased bilinear with half-pixel centres."""
    return Pipeline(
        "training", size=size, streams=("jpeg", "png", "nv12"), crop=(crop_top, 1.0, 0.0, 1.0),
        resize=Resize("bilinear", antialias=True, pixel_centre="half_pixel", pil_rounding=True),
    )


def vehicle_pipeline(size=(112, 288), crop_top=136 / 360) -> Pipeline:
    """The car's path: NV12 from the ISP, BT.601 limited range with nearest chroma upsampling,
    a GPU-style bilinear resize without antialiasing and with align-corners sampling."""
    return Pipeline(
        "vehicle", size=size, streams=("nv12", "jpeg", "png"), yuv_matrix="bt601", yuv_range="limited",
        chroma="nearest", crop=(crop_top, 1.0, 0.0, 1.0),
        resize=Resize("bilinear", antialias=False, pixel_centre="align_corners"),
    )


def pipelines_for(size, crop_top) -> dict[str, Pipeline]:
    return {p.name: p for p in (training_pipeline(size, crop_top), vehicle_pipeline(size, crop_top))}

