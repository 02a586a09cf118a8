"""Checkpoint 0: the weights a checkpoint's lineage started from, for re-initialisation (Zhang,
Bengio & Singer 2019: a layer set back to its *own* initial weights, not a fresh random draw).

`parity train` from scratch saves them beside the checkpoint (`<name>.init.pt`, sha256 in the
sidecar's `init_weights`). A fine-tune's checkpoint 0 is its parent's. A checkpoint trained before
that file existed (the committed reference) is rebuilt from its recorded seed, as the loop builds
it, and accepted only if it reproduces the sidecar's laziness record (each layer's ||W - W0|| /
||W0||, 6 digits): another draw, or a seed that is not the one trained with, is refused.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ..provenance import sha256_file

INIT_SUFFIX = ".init.pt"


def laziness(model, start: dict) -> dict[str, float]:
    """Per-layer relative weight change ||W - W0|| / ||W0|| from where training started (weights only)."""
    import torch

    out = {}
    for name, p in model.state_dict().items():
        if name.endswith("weight") and p.dim() > 1 and name in start:
            w0 = start[name].float()
            denom = float(torch.linalg.vector_norm(w0))
            out[name[: -len(".weight")]] = round(float(torch.linalg.vector_norm(p.float() - w0)) / denom, 6) if denom else float("nan")
    return out


def save_initial(out: Path, state: dict) -> dict:
    """Write checkpoint 0 beside the checkpoint being trained; the sidecar entry that names it."""
    import io

    import torch

    from .. import atomic

    path = Path(out).with_suffix(INIT_SUFFIX)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    atomic.write_bytes(path, buf.getvalue())
    return {"file": path.name, "sha256": sha256_file(path)}


def checkpoint_zero(ck, _depth: int = 0) -> dict:
    """The state dict checkpoint `ck`'s lineage started from, verified (see the module docstring)."""
    import torch

    from ..models.checkpoint import load_checkpoint

    if _depth > 16:
        raise CheckpointError(f"{ck.path}: more than 16 parents; a cycle in the sidecars?")
    rec = ck.meta.get("init_weights")
    if rec:
        path = Path(ck.path).with_name(rec["file"])
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint 0 of {ck.path} is missing (its sidecar's init_weights names it)")
        if sha256_file(path) != rec["sha256"]:
            raise CheckpointError(f"{path}: sha256 differs from the one {ck.path}'s sidecar recorded: not its checkpoint 0")
        return torch.load(path, weights_only=True)
    parents = ck.meta.get("parents") or []
    if parents:
        parent = load_checkpoint(parents[0]["path"])
        if parent.sha256 != parents[0].get("sha256"):
            raise CheckpointError(f"{parent.path}: not the parent {ck.path} was trained from (sha256 differs from its sidecar's)")
        return checkpoint_zero(parent, _depth + 1)
    return _rebuilt(ck)


def seeded_build(adapter, seed: int) -> dict:
    """The state dict `adapter.build()` gives after torch.manual_seed(seed), as `parity train` builds a model
    from scratch; the global RNG is left as it was."""
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return adapter.build().state_dict()
    finally:
        torch.random.set_rng_state(state)


def _rebuilt(ck) -> dict:
    seed = (ck.meta.get("hyperparameters") or {}).get("seed")
    record = (ck.meta.get("laziness") or {}).get("relative_weight_change") or {}
    if seed is None or not record or (ck.meta.get("laziness") or {}).get("reference") != "initialisation":
        raise CheckpointError(f"{ck.path}: no checkpoint 0 (no init_weights file, no parent, and no seed with a laziness record to "
                              "rebuild and verify it)")
    init = seeded_build(ck.adapter(), int(seed))
    got = laziness(ck.build_model(), init)
    off = [k for k in record if k not in got or abs(got[k] - record[k]) > 2e-6]
    if off:
        raise CheckpointError(f"{ck.path}: the initialisation rebuilt from seed {seed} does not reproduce the sidecar's laziness record "
                              f"(layer {off[0]}: {got.get(off[0])} vs {record[off[0]]}): not this checkpoint's checkpoint 0")
    return init
