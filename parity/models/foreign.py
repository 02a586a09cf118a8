"""`parity import-checkpoint`: a checkpoint trained elsewhere (the authors' `.pth`) made a parity checkpoint.

The file is read with `torch.load(weights_only=True)` (tensors and plain containers only, never code),
unwrapped by the adapter (`import_state_dict`: `{'model': ...}`, DDP's `module.` prefix, training-only
heads), and loaded strictly: a state dict that does not fit is refused naming its first missing,
unexpected and mis-shaped keys. The sidecar records the adapter, its config and the source file's sha256.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from ..provenance import sha256_file

SHOWN = 5


def mismatch(expected: dict, got: dict) -> list[str]:
    """What keeps `got` from loading into a module whose state dict is `expected`: missing, unexpected, mis-shaped."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shaped = [f"{k} {tuple(got[k].shape)} (the model has {tuple(expected[k].shape)})" for k in expected
              if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(expected[k].shape)]
    out = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if keys:
            more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
            out.append(f"{len(keys)} {what}: {', '.join(keys[:SHOWN])}{more}")
    return out


def import_checkpoint(adapter_name: str, config: dict, weights: str | os.PathLike, out: str | os.PathLike):
    import torch

    from .checkpoint import make_adapter, save_checkpoint

    src = Path(weights)
    if not src.is_file():
        raise CheckpointError(f"{src}: no such weights file")
    adapter = make_adapter(adapter_name, config, src)
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a weights file torch can read safely"
        raise CheckpointError(f"{src}: not a weights file torch.load(weights_only=True) can read: {type(exc).__name__}: {exc}") from None
    unwrap = getattr(adapter, "import_state_dict", None)
    state = unwrap(raw) if unwrap else raw
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: holds no state dict of tensors (found {type(state).__name__})")
    model = adapter.build()
    problems = mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{src}: does not fit the {adapter_name} {getattr(adapter.config, 'name', '')} network: " + "; ".join(problems))
    model.load_state_dict(state)
    return save_checkpoint(out, model, {"adapter": adapter_name, "config": adapter.config.to_dict(), "method": "imported",
                                        "source": {"file": os.path.abspath(src), "sha256": sha256_file(src)}})
