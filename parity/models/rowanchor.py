"""Reference lane model: row-anchor classification in the style of Ultra-Fast-Lane-Detection.

For each of R anchor rows and L lanes the network classifies which of G column cells the lane
crosses, plus one extra cell meaning "no lane here". Decoding takes the softmax expectation over
the G real cells (sub-cell precision) unless the argmax is the no-lane cell.
Output layout is UFLD's: logits[batch, G + 1, R, L].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from ..cases.camera import ANCHOR_ROWS_REF, REFERENCE_SIZE
from ..cases.synth import LANE_NAMES
from ..preprocessing.pipeline import Pipeline, pipelines_for


def _no_lane(last: np.ndarray, top: np.ndarray) -> np.ndarray:
    """`logits.argmax(axis=1) == G` from the "no lane" class's logit and the cells' max (NaN where a cell is
    NaN), without a second pass: argmax takes the first NaN, else the first maximum, so it is G where the
    cells hold no NaN and the last logit is NaN or above every cell."""
    with np.errstate(invalid="ignore"):
        return (last > top) | (np.isnan(last) & ~np.isnan(top))


@dataclass(frozen=True)
class RowAnchorConfig:
    griding: int = 64
    lanes: tuple[str, ...] = tuple(LANE_NAMES)
    # Anchor rows as fractions of the source image height (scaled to each case's height).
    anchor_rows: tuple[float, ...] = tuple(r / REFERENCE_SIZE[1] for r in ANCHOR_ROWS_REF)
    input_size: tuple[int, int] = (112, 288)
    crop_top: float = 136 / 360
    channels: tuple[int, ...] = (24, 32, 32, 64, 64, 96, 96)
    strides: tuple[int, ...] = (2, 2, 1, 2, 1, 2, 1)
    hidden: int = 256

    @classmethod
    def from_dict(cls, d: dict) -> "RowAnchorConfig":
        """A config from a sidecar's `config`, checked before anything is allocated: every problem is a
        ValueError naming the field (the caller names the file)."""
        if not isinstance(d, dict):
            raise ValueError(f"config: must be an object, got {type(d).__name__}")
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        cfg.check()
        return cfg

    def check(self) -> None:
        def ints(name, v, lo, hi, n_lo=1, n_hi=1):
            seq = v if isinstance(v, tuple) else None
            vals = seq if seq is not None else (v,)
            if seq is not None and not n_lo <= len(seq) <= n_hi or seq is None and n_hi > 1:
                raise ValueError(f"config.{name}: needs {n_lo}..{n_hi} values, got {v!r}")
            if not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in vals):
                raise ValueError(f"config.{name}: integers in {lo}..{hi}, got {v!r}")

        ints("griding", self.griding, 2, 1024)
        ints("input_size", self.input_size, 8, 4096, 2, 2)
        ints("channels", self.channels, 1, 2048, 1, 32)
        ints("strides", self.strides, 1, 4, 1, 32)
        ints("hidden", self.hidden, 1, 16384)
        if len(self.channels) != len(self.strides):
            raise ValueError(f"config.strides: one per channel entry ({len(self.channels)}), got {len(self.strides)}")
        if not isinstance(self.lanes, tuple) or not 1 <= len(self.lanes) <= 16 or not all(isinstance(x, str) and x for x in self.lanes):
            raise ValueError(f"config.lanes: 1..16 lane names, got {self.lanes!r}")
        rows = self.anchor_rows
        if (not isinstance(rows, tuple) or not 2 <= len(rows) <= 512 or not all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                                                          and 0 <= r <= 1 for r in rows)
                or any(b <= a for a, b in zip(rows, rows[1:]))):
            raise ValueError("config.anchor_rows: 2..512 strictly increasing fractions of the image height in [0, 1]")
        if not isinstance(self.crop_top, (int, float)) or isinstance(self.crop_top, bool) or not 0 <= self.crop_top < 1:
            raise ValueError(f"config.crop_top: a fraction in [0, 1), got {self.crop_top!r}")
        down = int(np.prod(self.strides))
        feat = 8 * -(-self.input_size[0] // down) * -(-self.input_size[1] // down)
        params = feat * self.hidden + self.hidden * (self.griding + 1) * len(rows) * len(self.lanes)
        if params > 200_000_000:  # the head alone; the reference model has ~2.3 M
            raise ValueError(f"config: the head would have {params:,} weights (more than 200 M); not a lane model this adapter builds")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def build_network(cfg: RowAnchorConfig):
    import torch
    from torch import nn

    class RowAnchorNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            for cout, stride in zip(cfg.channels, cfg.strides):
                layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            self.backbone = nn.Sequential(*layers)
            self.pool = nn.Conv2d(cin, 8, 1)
            down = int(np.prod(cfg.strides))
            h, w = -(-cfg.input_size[0] // down), -(-cfg.input_size[1] // down)
            self.shape = (cfg.griding + 1, len(cfg.anchor_rows), len(cfg.lanes))
            self.head = nn.Sequential(
                nn.Linear(8 * h * w, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, int(np.prod(self.shape)))
            )

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            f = self.pool(self.backbone(image)).flatten(1)
            return self.head(f).view(-1, *self.shape)

    return RowAnchorNet()


@dataclass
class RowAnchorAdapter:
    """Everything parity needs to know about the reference model family."""

    config_class: ClassVar = RowAnchorConfig
    config: RowAnchorConfig = field(default_factory=RowAnchorConfig)
    input_name: str = "image"
    output_name: str = "logits"

    def build(self):
        return build_network(self.config)

    @property
    def lane_names(self) -> list[str]:
        return list(self.config.lanes)

    def pipelines(self) -> dict[str, Pipeline]:
        return pipelines_for(self.config.input_size, self.config.crop_top)

    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.config.input_size)

    def anchor_rows(self, image_height: int) -> np.ndarray:
        return np.asarray(self.config.anchor_rows) * image_height

    def columns(self, image_width: int) -> np.ndarray:
        """Source-image x of each of the G cells (the grid spans the full, uncropped width)."""
        return np.linspace(0.0, image_width - 1.0, self.config.griding)

    def decode(self, logits: np.ndarray, image_width: int) -> np.ndarray:
        """logits[B, G+1, R, L] -> x[B, L, R] in source pixels, NaN where the lane is absent."""
        logits = np.asarray(logits, dtype=np.float32)
        G = self.config.griding
        cells = logits[:, :G]
        top = cells.max(axis=1, keepdims=True)
        absent = _no_lane(logits[:, G], top[:, 0])
        e = np.exp(cells - top)
        prob = e / e.sum(axis=1, keepdims=True)
        loc = np.tensordot(np.arange(G, dtype=np.float32), prob, axes=([0], [1]))  # [B, R, L]
        x = loc * np.float32((image_width - 1.0) / (G - 1))
        x[absent] = np.nan
        return x.transpose(0, 2, 1)

    def targets(self, lanes_x: np.ndarray, image_width: int) -> np.ndarray:
        """GT x[B, L, R] -> class index[B, R, L] for cross-entropy (G = no lane)."""
        G = self.config.griding
        cell = np.rint(lanes_x / ((image_width - 1.0) / (G - 1)))
        ok = np.isfinite(cell) & (cell >= 0) & (cell <= G - 1)
        return np.where(ok, np.nan_to_num(cell), G).astype(np.int64).transpose(0, 2, 1)
