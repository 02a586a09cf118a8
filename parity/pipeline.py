"""Declarative preprocessing: recorded frame -> model input tensor.

A model has a *training* pipeline (what its training set went through) and a *vehicle* pipeline
(what the car's runtime does). Their difference is exactly the deployment mismatch the seeds
describe; here it is a difference of parameters on one implementation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .case import Case
from .colour import nv12_to_rgb
from .errors import CaseError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KERNELS = ("nearest", "bilinear", "bicubic", "area")
PIXEL_CENTRES = ("half_pixel", "align_corners")


@dataclass(frozen=True)
class Resize:
    kernel: str = "bilinear"
    antialias: bool = True
    # Where a destination pixel samples the source: "half_pixel" maps centres to centres
    # (PIL, OpenCV, torch align_corners=False); "align_corners" maps the corner pixels onto each other.
    pixel_centre: str = "half_pixel"

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise UsageError(f"unknown resize kernel {self.kernel!r}; expected one of {KERNELS}")
        if self.pixel_centre not in PIXEL_CENTRES:
            raise UsageError(f"unknown pixel centre {self.pixel_centre!r}; expected one of {PIXEL_CENTRES}")
        if self.pixel_centre == "align_corners" and self.kernel not in ("bilinear", "bicubic"):
            raise UsageError(f"pixel_centre='align_corners' is defined for bilinear/bicubic, not {self.kernel}")


@dataclass(frozen=True)
class Pipeline:
    name: str
    size: tuple[int, int]  # model input (height, width)
    streams: tuple[str, ...] = ("jpeg", "png", "nv12")  # recorded streams, in order of preference
    yuv_matrix: str = "bt601"
    yuv_range: str = "limited"
    chroma: str = "nearest"
    crop_top: float = 0.0  # fraction of the source height cut from the top (sky)
    resize: Resize = field(default_factory=Resize)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return asdict(self)

    def stream_for(self, case: Case) -> str:
        for s in self.streams:
            if s in case.streams:
                return s
        raise CaseError(
            [f"{case.root}: case has streams {case.streams}, pipeline {self.name!r} reads one of {list(self.streams)}"]
        )

    def decode(self, case: Case, index: int, stream: str) -> np.ndarray:
        frame = case.read(index, stream)
        if stream == "nv12":
            return nv12_to_rgb(frame, self.yuv_matrix, self.yuv_range, self.chroma)
        return frame

    def crop_rows(self, height: int) -> int:
        return int(round(self.crop_top * height))

    def prepare(self, case: Case, indices) -> np.ndarray:
        """Frames `indices` of `case` -> float32 [N, 3, H, W] model input."""
        stream = self.stream_for(case)
        rgb = np.stack([self.decode(case, int(i), stream) for i in indices])
        return self.apply(rgb)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB frames -> float32 [N, 3, h, w] normalised input."""
        import torch
        import torch.nn.functional as F

        top = self.crop_rows(rgb.shape[1])
        x = torch.from_numpy(np.ascontiguousarray(rgb[:, top:])).permute(0, 3, 1, 2).float()
        r = self.resize
        kwargs = {}
        if r.kernel in ("bilinear", "bicubic"):
            kwargs = {"align_corners": r.pixel_centre == "align_corners", "antialias": r.antialias}
        x = F.interpolate(x, size=self.size, mode=r.kernel, **kwargs)
        # Both the training loader (PIL) and the vehicle resizer produce uint8 images.
        x = x.round_().clamp_(0, 255) / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).numpy().astype(np.float32, copy=False)


def training_pipeline(size=(112, 288), crop_top=136 / 360) -> Pipeline:
    """The training set's path: JPEG RGB, PIL-style antialiased bilinear, half-pixel centres."""
    return Pipeline("training", size=size, streams=("jpeg", "png", "nv12"), crop_top=crop_top)


def vehicle_pipeline(size=(112, 288), crop_top=136 / 360) -> Pipeline:
    """The car's path: NV12 from the ISP, BT.601 limited range with nearest chroma upsampling,
    a GPU-style bilinear resize without antialiasing and with align-corners sampling."""
    return Pipeline(
        "vehicle",
        size=size,
        streams=("nv12", "jpeg", "png"),
        yuv_matrix="bt601",
        yuv_range="limited",
        chroma="nearest",
        crop_top=crop_top,
        resize=Resize("bilinear", antialias=False, pixel_centre="align_corners"),
    )


def pipelines_for(size, crop_top) -> dict[str, Pipeline]:
    return {p.name: p for p in (training_pipeline(size, crop_top), vehicle_pipeline(size, crop_top))}


def with_name(p: Pipeline, name: str) -> Pipeline:
    return replace(p, name=name)
