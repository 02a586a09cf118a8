"""Checkpoint = weights (`<name>.pt`, a plain state_dict loadable with torch.load(weights_only=True))
+ sidecar (`<name>.json`: adapter, model config, training method, hyper-parameters, data hash, git sha).
"""
from __future__ import annotations

import importlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import CheckpointError
from ..provenance import sha256_file

SCHEMA = "parity.checkpoint/1"
REFERENCE_ADAPTER = "parity.models.rowanchor:RowAnchorAdapter"


@dataclass
class Checkpoint:
    path: Path  # the .pt file
    meta: dict
    sha256: str

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.stem

    def adapter(self):
        return make_adapter(self.meta["adapter"], self.meta.get("config", {}), self.path)

    def build_model(self):
        """The torch module with these weights, in eval mode on CPU."""
        import torch

        model = self.adapter().build()
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # torch raises many types here; all mean "these weights do not fit"
            raise CheckpointError(f"{self.path}: weights do not load into {self.meta['adapter']}: {exc}") from None
        return model.eval()


def sidecar_path(pt: Path) -> Path:
    return pt.with_suffix(".json")


def make_adapter(ref: str, config: dict, where: Path):
    module, _, obj = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module), obj)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{where}: adapter {ref!r} cannot be imported: {exc}") from None
    cfg_cls = getattr(cls, "config_class", None)
    if cfg_cls is None:
        raise CheckpointError(f"{where}: adapter {ref!r} has no config_class")
    return cls(cfg_cls.from_dict(config))


def save_checkpoint(path: str | os.PathLike, model, meta: dict) -> Checkpoint:
    import torch

    path = Path(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic.write_bytes(path, buf.getvalue())
    full = {"schema": SCHEMA, "name": path.stem, "adapter": REFERENCE_ADAPTER, **meta}
    full["weights_sha256"] = sha256_file(path)
    atomic.write_json(sidecar_path(path), full)
    return Checkpoint(path, full, full["weights_sha256"])


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Accepts the .pt file or its .json sidecar."""
    p = Path(path)
    pt = p.with_suffix(".pt") if p.suffix == ".json" else p
    side = sidecar_path(pt)
    if not pt.is_file():
        raise CheckpointError(f"{pt}: no such checkpoint file")
    if not side.is_file():
        raise CheckpointError(f"{side}: missing checkpoint sidecar (adapter, config, method)")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{side}: unreadable sidecar: {exc}") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or "adapter" not in meta:
        raise CheckpointError(f"{side}: not a {SCHEMA} sidecar (needs 'schema' and 'adapter')")
    return Checkpoint(pt, meta, sha256_file(pt))
