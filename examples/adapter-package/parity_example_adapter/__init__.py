"""An adapter from outside parity: a row-anchor lane model with a wider, shallower backbone of its own.

What an adapter provides (docs/architecture.md, "Adapters from other packages"): a `config_class`
with `from_dict` (the sidecar's `config`, checked), `build()` (the torch module), `input_name` and
`output_name`, `input_shape()`, `lane_names`, `pipelines()` (at least "training" and "vehicle"),
`anchor_rows(height)`, `decode(logits, width)` -> x[batch, lane, row] in source pixels (NaN: absent)
and, for training, `targets(lanes_x, width)` for the loop's cross-entropy. Here the pipelines, the
decoding and the targets are parity's row-anchor ones, reused; the network is this package's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from parity.models.rowanchor import RowAnchorAdapter, RowAnchorConfig


@dataclass(frozen=True)
class WideConfig(RowAnchorConfig):
    width: int = 48  # channels of every backbone stage
    depth: int = 4  # stride-2 stages

    @classmethod
    def from_dict(cls, d: dict) -> "WideConfig":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        if not (isinstance(cfg.width, int) and 4 <= cfg.width <= 512 and isinstance(cfg.depth, int) and 1 <= cfg.depth <= 6):
            raise ValueError(f"config: width 4..512 and depth 1..6, got width={cfg.width!r}, depth={cfg.depth!r}")
        cfg.check()
        return cfg

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class WideRowAnchorAdapter(RowAnchorAdapter):
    config_class: ClassVar = WideConfig
    config: WideConfig = field(default_factory=WideConfig)

    def build(self):
        import torch
        from torch import nn

        cfg = self.config

        class WideNet(nn.Module):
            def __init__(self):
                super().__init__()
                layers, cin = [], 3
                for _ in range(cfg.depth):
                    layers += [nn.Conv2d(cin, cfg.width, 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.width), nn.ReLU()]
                    cin = cfg.width
                self.backbone = nn.Sequential(*layers)
                self.pool = nn.Conv2d(cin, 4, 1)
                h = -(-cfg.input_size[0] // 2**cfg.depth)
                w = -(-cfg.input_size[1] // 2**cfg.depth)
                self.shape = (cfg.griding + 1, len(cfg.anchor_rows), len(cfg.lanes))
                self.head = nn.Linear(4 * h * w, (cfg.griding + 1) * len(cfg.anchor_rows) * len(cfg.lanes))

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                return self.head(self.pool(self.backbone(image)).flatten(1)).view(-1, *self.shape)

        return WideNet()
