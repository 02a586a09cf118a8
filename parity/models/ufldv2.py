"""Ultra-Fast-Lane-Detection v2 (cfzd/Ultra-Fast-Lane-Detection-v2, commit c903880): row and column
anchors with their existence outputs, four named output tensors.

The network is their `parsingNet` (model/model_culane.py): the same ResNet-18/34 as v1 (`model`,
parity/models/ufld.py), `cls` = [LayerNorm(input_dim) when fc_norm, else Identity], Linear(input_dim,
2048), ReLU, Linear(2048, total), `pool` 1x1 conv 512 -> 8, input_dim = H/32 x W/32 x 8; its output
split, in their order, into loc_row [N, cells_row, rows, lanes], loc_col [N, cells_col, cols, lanes],
exist_row [N, 2, rows, lanes], exist_col [N, 2, cols, lanes], exported as four named outputs.

Preprocessing: theirs resizes the frame to (train_height / crop_ratio) x train_width and keeps the
bottom train_height rows; here the same rows are cropped first and resized to train_height x
train_width (the same region; the resampling differs by the order of crop and resize). Decoding is
their demo's pred2coords: lanes 1 and 2 from the row anchors (kept where more than half the rows
say the lane exists), lanes 0 and 3 from the column anchors (more than a quarter of the columns),
each point the softmax expectation over the argmax cell and its two neighbours, plus 0.5, scaled
to the image; a column lane's points are resampled to the row anchors (x at each anchor row within
the lane's y range) so every lane is x[lane, row] like every other model's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from ..preprocessing.pipeline import pipelines_for
from .ufld import BLOCKS, LANES, authors_state_dict, resnet_backbone

OUTPUTS = ("loc_row", "loc_col", "exist_row", "exist_col")
ROW_LANES, COL_LANES = (1, 2), (0, 3)  # pred2coords' row_lane_idx / col_lane_idx
CONFIGS = {  # configs/*_res18.py and *_res34.py, anchors as utils/common.py merge_config sets them
    **{f"culane-r{d}": {"backbone": d, "num_row": 72, "num_col": 81, "num_cell_row": 200, "num_cell_col": 100, "train_width": 1600,
                        "train_height": 320, "crop_ratio": 0.6, "fc_norm": True, "row_anchor": [0.42, 1.0]}
       for d in BLOCKS},
    **{f"tusimple-r{d}": {"backbone": d, "num_row": 56, "num_col": 41, "num_cell_row": 100, "num_cell_col": 100, "train_width": 800,
                          "train_height": 320, "crop_ratio": 0.8, "fc_norm": False, "row_anchor": [160 / 720, 710 / 720]}
       for d in BLOCKS},
}


@dataclass(frozen=True)
class UfldV2Config:
    backbone: str = "18"
    num_row: int = 72
    num_col: int = 81
    num_cell_row: int = 200
    num_cell_col: int = 100
    train_width: int = 1600
    train_height: int = 320
    crop_ratio: float = 0.6
    fc_norm: bool = True
    row_anchor: tuple[float, float] = (0.42, 1.0)  # np.linspace(row_anchor[0], row_anchor[1], num_row), fractions of the height
    lanes: tuple[str, ...] = LANES
    name: str = "culane-r18"

    @classmethod
    def from_dict(cls, d: dict) -> "UfldV2Config":
        if not isinstance(d, dict):
            raise ValueError(f"config: must be an object, got {type(d).__name__}")
        base = dict(CONFIGS.get(d.get("name", "culane-r18"), {})) if d.get("name", "culane-r18") in CONFIGS else {}
        if "name" in d and d["name"] not in CONFIGS and "num_row" not in d:
            raise ValueError(f"config.name: one of {', '.join(CONFIGS)} (or give every field), got {d['name']!r}")
        base.update({k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in base.items()})
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.backbone not in BLOCKS:
            raise ValueError(f"config.backbone: '18' or '34', got {self.backbone!r}")
        for k in ("num_row", "num_col", "num_cell_row", "num_cell_col"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 1024:
                raise ValueError(f"config.{k}: an integer in 2..1024, got {v!r}")
        if not all(isinstance(v, int) and 32 <= v <= 4096 and v % 32 == 0 for v in (self.train_width, self.train_height)):
            raise ValueError("config.train_width/train_height: multiples of 32 in 32..4096")
        if not (isinstance(self.crop_ratio, (int, float)) and 0.1 <= self.crop_ratio <= 1.0):
            raise ValueError(f"config.crop_ratio: in [0.1, 1], got {self.crop_ratio!r}")
        lo, hi = self.row_anchor
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"config.row_anchor: (first, last) fractions of the height, first < last, got {self.row_anchor!r}")
        if len(self.lanes) != 4:
            raise ValueError("config.lanes: UFLDv2 reads lanes 1, 2 from its rows and 0, 3 from its columns: four lanes")

    @property
    def input_dim(self) -> int:
        return self.train_height // 32 * self.train_width // 32 * 8

    @property
    def dims(self) -> tuple[int, int, int, int]:
        L = len(self.lanes)
        return (self.num_cell_row * self.num_row * L, self.num_cell_col * self.num_col * L, 2 * self.num_row * L, 2 * self.num_col * L)

    @property
    def crop_top(self) -> float:
        """The share of the frame above the rows their test transform keeps (bottom train_height of the resized frame)."""
        return 1.0 - self.train_height / int(self.train_height / self.crop_ratio)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def build_network(cfg: UfldV2Config):
    import torch
    from torch import nn

    d1, d2, d3, d4 = cfg.dims
    L = len(cfg.lanes)

    class ParsingNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = resnet_backbone(cfg.backbone)
            self.cls = nn.Sequential(nn.LayerNorm(cfg.input_dim) if cfg.fc_norm else nn.Identity(), nn.Linear(cfg.input_dim, 2048), nn.ReLU(),
                                     nn.Linear(2048, d1 + d2 + d3 + d4))
            self.pool = nn.Conv2d(512, 8, 1)

        def forward(self, image: torch.Tensor):
            out = self.cls(self.pool(self.model(image)).view(-1, cfg.input_dim))
            return (out[:, :d1].view(-1, cfg.num_cell_row, cfg.num_row, L), out[:, d1 : d1 + d2].view(-1, cfg.num_cell_col, cfg.num_col, L),
                    out[:, d1 + d2 : d1 + d2 + d3].view(-1, 2, cfg.num_row, L), out[:, -d4:].view(-1, 2, cfg.num_col, L))

    return ParsingNetV2()


def _local_expectation(loc: np.ndarray, width: int = 1) -> np.ndarray:
    """pred2coords' point: softmax over the argmax cell and its `width` neighbours each side, the expected index + 0.5."""
    G = loc.shape[1]
    m = loc.argmax(axis=1)  # [B, K, L]
    offs = np.arange(-width, width + 1)
    idx = m[:, None] + offs[None, :, None, None]  # [B, 2w+1, K, L]
    ok = (idx >= 0) & (idx <= G - 1)
    vals = np.take_along_axis(loc, np.clip(idx, 0, G - 1), axis=1)
    vals = np.where(ok, vals, -np.inf)
    e = np.exp(vals - vals.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return (p * np.clip(idx, 0, G - 1)).sum(axis=1) + 0.5


@dataclass
class UfldV2Adapter:
    config_class: ClassVar = UfldV2Config
    config: UfldV2Config = field(default_factory=UfldV2Config)
    input_name: str = "image"
    output_name: str = OUTPUTS[0]
    output_names: tuple[str, ...] = OUTPUTS

    def build(self):
        return build_network(self.config)

    @property
    def lane_names(self) -> list[str]:
        return list(self.config.lanes)

    def pipelines(self):
        return pipelines_for((self.config.train_height, self.config.train_width), self.config.crop_top)

    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.config.train_height, self.config.train_width)

    def row_fractions(self) -> np.ndarray:
        return np.linspace(self.config.row_anchor[0], self.config.row_anchor[1], self.config.num_row)

    def col_fractions(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.config.num_col)

    def anchor_rows(self, image_height: int) -> np.ndarray:
        return self.row_fractions() * image_height

    def decode(self, outs: dict, image_width: int) -> np.ndarray:
        """{loc_row, loc_col, exist_row, exist_col} -> x[B, 4, rows] in source pixels (NaN: absent).

        The column lanes' y is scaled to the image height, which the decoder is not given: the
        anchors are fractions, so y is carried as a fraction of the height and compared with the
        row anchors' fractions."""
        c = self.config
        loc_row, loc_col = np.asarray(outs["loc_row"], np.float32), np.asarray(outs["loc_col"], np.float32)
        valid_row = np.asarray(outs["exist_row"]).argmax(axis=1).astype(bool)  # [B, R, L]
        valid_col = np.asarray(outs["exist_col"]).argmax(axis=1).astype(bool)  # [B, C, L]
        B = loc_row.shape[0]
        x = np.full((B, len(c.lanes), c.num_row), np.nan, dtype=np.float32)
        xr = _local_expectation(loc_row) / (c.num_cell_row - 1) * image_width  # [B, R, L]
        yc = _local_expectation(loc_col) / (c.num_cell_col - 1)  # [B, C, L], a fraction of the height
        rows, cols = self.row_fractions(), self.col_fractions() * image_width
        for b in range(B):
            for i in ROW_LANES:
                if valid_row[b, :, i].sum() > c.num_row / 2:
                    x[b, i] = np.where(valid_row[b, :, i], xr[b, :, i], np.nan)
            for i in COL_LANES:
                keep = valid_col[b, :, i]
                if keep.sum() > c.num_col / 4:
                    y, px = yc[b, keep, i], cols[keep]
                    order = np.argsort(y)
                    y, px = y[order], px[order]
                    inside = (rows >= y[0]) & (rows <= y[-1])
                    x[b, i] = np.where(inside, np.interp(rows, y, px), np.nan)
        return x
    def import_state_dict(self, state: dict) -> dict:
        return authors_state_dict(state, ("seg_head.",))  # the auxiliary segmentation head of training

    # No `targets`: UFLDv2 trains on row and column targets with their own losses, which parity does
    # not build yet; `parity train` refuses this adapter in one line rather than train it wrongly.
