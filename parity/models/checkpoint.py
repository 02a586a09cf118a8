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
REFERENCE_ADAPTER = "rowanchor"


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


# Adapters come from this registry (a name -> module:object inside parity) or from an installed
# package's `parity.adapters` entry point, never from a module path written in a data file: a
# checkpoint folder that shipped a module of that name would otherwise run its code.
ADAPTERS = {"rowanchor": "parity.models.rowanchor:RowAnchorAdapter", "ufld": "parity.models.ufld:UfldAdapter",
            "ufldv2": "parity.models.ufldv2:UfldV2Adapter"}
ALIASES = {"parity.models.rowanchor:RowAnchorAdapter": "rowanchor"}  # what sidecars said before the registry
ENTRY_POINT_GROUP = "parity.adapters"


def adapter_class(name, where: Path):
    if not isinstance(name, str):
        raise CheckpointError(f"{where}: adapter must be a registered adapter name, got {name!r}")
    key = ALIASES.get(name, name)
    if key in ADAPTERS:
        module, _, obj = ADAPTERS[key].partition(":")
        return getattr(importlib.import_module(module), obj)
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == key]
    if found:
        try:
            return found[0].load()
        except Exception as exc:  # an installed plug-in that does not import: say which
            raise CheckpointError(f"{where}: adapter {key!r} (entry point {found[0].value}) cannot be loaded: {exc}") from None
    known = sorted(ADAPTERS) + sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise CheckpointError(f"{where}: adapter {name!r} is not a registered adapter ({', '.join(known)}); adapters come from "
                          f"parity's registry or an installed package's {ENTRY_POINT_GROUP!r} entry point, not from a path in a sidecar")


def make_adapter(ref: str, config: dict, where: Path):
    cls = adapter_class(ref, where)
    cfg_cls = getattr(cls, "config_class", None)
    if cfg_cls is None:
        raise CheckpointError(f"{where}: adapter {ref!r} has no config_class")
    fields = getattr(cfg_cls, "__dataclass_fields__", None)
    if isinstance(config, dict) and fields is not None:
        unknown = sorted(k for k in config if k not in fields and k != "name")
        if unknown:  # a misspelt setting would otherwise be dropped and the default used in its place
            raise CheckpointError(f"{sidecar_path(Path(where))}: config.{unknown[0]}: not a setting of the {ref} adapter "
                                  f"({', '.join(sorted(fields))})")
    try:
        return cls(cfg_cls.from_dict(config))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{sidecar_path(Path(where))}: {exc}") from None


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


_WEIGHTS_SHA256: dict[str, tuple[tuple, str]] = {}  # absolute path -> (the file's stamp when hashed, its sha256)


def _weights_sha256(pt: Path) -> str:
    """The weights' sha256, hashed once in a process while the file's (size, mtime, ctime, inode) stay
    as they were (every unit of a run loads the same checkpoint; a file rewritten in place changes its
    ctime, which user space cannot set back)."""
    st = pt.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    key = os.path.abspath(pt)
    known = _WEIGHTS_SHA256.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    sha = sha256_file(pt)
    _WEIGHTS_SHA256[key] = (stamp, sha)
    return sha


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Accepts the .pt file or its .json sidecar."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        raise CheckpointError(f"{p}: an ONNX file, not a checkpoint: an ONNX-only model runs with --onnx FILE --adapter NAME "
                              "(replay, export-inputs); localize, cpu-fp16 and training need its PyTorch weights (parity import-checkpoint)")
    pt = p.with_suffix(".pt") if p.suffix == ".json" else p
    side = sidecar_path(pt)
    if not pt.is_file():
        raise CheckpointError(f"{pt}: no such checkpoint file")
    if not side.is_file():
        raise CheckpointError(f"{side}: missing checkpoint sidecar (adapter, config, method)")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{side}: unreadable sidecar: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{side}: nested too deeply to be a sidecar") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or "adapter" not in meta:
        raise CheckpointError(f"{side}: not a {SCHEMA} sidecar (needs 'schema' and 'adapter')")
    if "config" in meta and not isinstance(meta["config"], dict):
        raise CheckpointError(f"{side}: config must be an object, got {type(meta['config']).__name__}")
    if "name" in meta and not isinstance(meta["name"], str):
        raise CheckpointError(f"{side}: name must be a string")
    sha = _weights_sha256(pt)
    claimed = meta.get("weights_sha256")
    if claimed is not None and claimed != sha:
        raise CheckpointError(f"{side}: weights_sha256 {str(claimed)[:16]}... does not match {pt.name} ({sha[:16]}...): "
                              "the weights were replaced or the sidecar belongs to another file")
    return Checkpoint(pt, meta, sha)
