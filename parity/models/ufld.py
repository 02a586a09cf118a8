"""Ultra-Fast-Lane-Detection v1 (cfzd/Ultra-Fast-Lane-Detection, commit 353df10) as its authors ship it.

The network is their `parsingNet` with a ResNet-18/34 backbone: `model` (conv1, bn1, relu, maxpool,
layer1..layer4, torchvision's names), `pool` (1x1 conv 512 -> 8), `cls` (Linear 1800 -> 2048, ReLU,
Linear 2048 -> (griding + 1) x rows x lanes), output logits[batch, griding + 1, rows, lanes]. The state
dict keys are theirs, so `parity import-checkpoint` loads a released `.pth` unchanged (the auxiliary
segmentation head of training, `aux_header*` / `aux_combine`, is dropped: inference never runs it).

The backbone is written with torch.nn under torchvision's module names instead of importing
torchvision: the torchvision wheel PyPI serves next to this project's CPU torch is a CUDA build that
fails to import (its `_C.so` needs libtorch_cuda), and the authors' wrapper keeps only these layers
anyway. Where torchvision does import, a test checks both give the same keys and outputs.

Preprocessing is theirs: the whole frame resized to 288x800, ImageNet mean/std (the `training`
pipeline: Pillow's antialiased bilinear, what `transforms.Resize` does to a PIL image). Decoding is
their demo's: softmax over the griding cells, expectation over cell indices 1..G, the no-lane cell
where the argmax is G, x = loc * (800 - 1) / (G - 1) * W / 800 - 1, y at their row anchors (defined
on 288 rows) scaled to the image height, and a lane with at most 2 points dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from ..preprocessing.pipeline import pipelines_for

# data/constant.py of the authors' repository: rows on the 288-high network input
CULANE_ROW_ANCHOR = (121, 131, 141, 150, 160, 170, 180, 189, 199, 209, 219, 228, 238, 248, 258, 267, 277, 287)
TUSIMPLE_ROW_ANCHOR = tuple(range(64, 288, 4))
BLOCKS = {"18": (2, 2, 2, 2), "34": (3, 4, 6, 3)}
CONFIGS = {
    f"{data}-r{depth}": {"backbone": depth, "griding": grid, "row_anchor": list(rows)}
    for data, grid, rows in (("culane", 200, CULANE_ROW_ANCHOR), ("tusimple", 100, TUSIMPLE_ROW_ANCHOR))
    for depth in BLOCKS
}
LANES = ("left_left", "left", "right", "right_right")
INPUT = (288, 800)
AUX_PREFIXES = ("aux_header2.", "aux_header3.", "aux_header4.", "aux_combine.")


@dataclass(frozen=True)
class UfldConfig:
    backbone: str = "18"
    griding: int = 200
    row_anchor: tuple[int, ...] = CULANE_ROW_ANCHOR
    lanes: tuple[str, ...] = LANES
    name: str = "culane-r18"

    @classmethod
    def from_dict(cls, d: dict) -> "UfldConfig":
        """`{"name": "culane-r18"}` (one of CONFIGS) or every field; checked field by field."""
        if not isinstance(d, dict):
            raise ValueError(f"config: must be an object, got {type(d).__name__}")
        base = {}
        if "name" in d:
            if d["name"] not in CONFIGS and not {"griding", "row_anchor"} <= set(d):
                raise ValueError(f"config.name: one of {', '.join(CONFIGS)} (or give backbone, griding and row_anchor), got {d['name']!r}")
            base = dict(CONFIGS.get(d["name"], {}))
        base.update({k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__})
        base = {k: tuple(v) if isinstance(v, list) else v for k, v in base.items()}
        cfg = cls(**base)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.backbone not in BLOCKS:
            raise ValueError(f"config.backbone: '18' or '34' (the ResNets parsingNet pools from 512 channels), got {self.backbone!r}")
        if not isinstance(self.griding, int) or isinstance(self.griding, bool) or not 2 <= self.griding <= 1024:
            raise ValueError(f"config.griding: an integer in 2..1024, got {self.griding!r}")
        rows = self.row_anchor
        if (not isinstance(rows, tuple) or not 2 <= len(rows) <= 288 or not all(isinstance(r, int) and 0 <= r < INPUT[0] for r in rows)
                or any(b <= a for a, b in zip(rows, rows[1:]))):
            raise ValueError("config.row_anchor: 2..288 strictly increasing rows of the 288-high input")
        if not isinstance(self.lanes, tuple) or not 1 <= len(self.lanes) <= 16 or not all(isinstance(x, str) and x for x in self.lanes):
            raise ValueError(f"config.lanes: 1..16 lane names, got {self.lanes!r}")

    @property
    def cls_dim(self) -> tuple[int, int, int]:
        return (self.griding + 1, len(self.row_anchor), len(self.lanes))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def resnet_backbone(depth: str):
    """The authors' backbone.resnet(depth): torchvision's ResNet-18/34 stem and layers under their names (layer4's output)."""
    from torch import nn

    def conv3x3(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)

    class BasicBlock(nn.Module):  # torchvision.models.resnet.BasicBlock, its attribute names
        def __init__(self, cin, cout, stride=1, downsample=None):
            super().__init__()
            self.conv1, self.bn1, self.relu = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            self.conv2, self.bn2, self.downsample = conv3x3(cout, cout), nn.BatchNorm2d(cout), downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):  # the authors' backbone.resnet: torchvision's stem and layers, no avgpool/fc
        def __init__(self, blocks):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
                stride = 1 if i == 0 else 2
                down = None if stride == 1 and cin == width else nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                layers = [BasicBlock(cin, width, stride, down)] + [BasicBlock(width, width) for _ in range(n - 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
                cin = width

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    return ResNet(BLOCKS[depth])


def build_network(cfg: UfldConfig):
    from torch import nn

    class ParsingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_dim = cfg.cls_dim
            self.model = resnet_backbone(cfg.backbone)
            # in the authors' order (cls before pool), so the state dict lists the keys as theirs does
            self.cls = nn.Sequential(nn.Linear(1800, 2048), nn.ReLU(), nn.Linear(2048, int(np.prod(self.cls_dim))))
            self.pool = nn.Conv2d(512, 8, 1)

        def forward(self, image):
            fea = self.pool(self.model(image)).view(-1, 1800)
            return self.cls(fea).view(-1, *self.cls_dim)

    return ParsingNet()


@dataclass
class UfldAdapter:
    config_class: ClassVar = UfldConfig
    config: UfldConfig = field(default_factory=UfldConfig)
    input_name: str = "image"
    output_name: str = "logits"

    def build(self):
        return build_network(self.config)

    @property
    def lane_names(self) -> list[str]:
        return list(self.config.lanes)

    def pipelines(self):
        return pipelines_for(INPUT, 0.0)

    def input_shape(self) -> tuple[int, int, int]:
        return (3, *INPUT)

    def anchor_rows(self, image_height: int) -> np.ndarray:
        """The demo's y: int(h * row / 288) - 1, kept fractional (x is too)."""
        return np.asarray(self.config.row_anchor, dtype=np.float64) * image_height / INPUT[0] - 1.0

    def decode(self, logits: np.ndarray, image_width: int) -> np.ndarray:
        """logits[B, G+1, R, L] -> x[B, L, R] in source pixels, NaN where the lane is absent (demo.py)."""
        logits = np.asarray(logits, dtype=np.float32)
        G = self.config.griding
        cells = logits[:, :G]
        e = np.exp(cells - cells.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
        loc = np.tensordot(np.arange(1, G + 1, dtype=np.float32), prob, axes=([0], [1]))  # [B, R, L]
        loc[logits.argmax(axis=1) == G] = 0
        x = loc * np.float32((INPUT[1] - 1) / (G - 1) * image_width / INPUT[1]) - 1.0
        x[loc == 0] = np.nan
        few = (loc > 0).sum(axis=1) <= 2  # [B, L]: the demo draws a lane only with more than 2 points
        x = x.transpose(0, 2, 1)
        x[few] = np.nan
        return x

    def targets(self, lanes_x: np.ndarray, image_width: int) -> np.ndarray:
        """GT x[B, L, R] -> class index[B, R, L]: the cell whose 1-based index the decoding maps nearest to x (G = no lane)."""
        G = self.config.griding
        step = (INPUT[1] - 1) / (G - 1) * image_width / INPUT[1]
        cell = np.rint((lanes_x + 1.0) / step) - 1
        ok = np.isfinite(cell) & (cell >= 0) & (cell <= G - 1)
        return np.where(ok, np.nan_to_num(cell), G).astype(np.int64).transpose(0, 2, 1)

    def import_state_dict(self, state: dict) -> dict:
        return authors_state_dict(state, AUX_PREFIXES)


def authors_state_dict(state, drop: tuple[str, ...]) -> dict:
    """The authors' checkpoint (utils/common.py save_model) as a network's state dict: `{'model': ...}`
    unwrapped, DDP's `module.` prefix removed, the training-only heads under `drop` left out."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return state
    out = {}
    for k, v in state.items():
        k = k[7:] if isinstance(k, str) and k.startswith("module.") else k
        if not (isinstance(k, str) and k.startswith(drop)):
            out[k] = v
    return out
