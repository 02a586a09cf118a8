"""fp16 defects planted on purpose in a copy of a checkpoint: exact in fp32, broken in fp16.

- `plant_overflow`: backbone batch norm `bn` has gamma and beta scaled by 2**17 and the next conv's
  weights by 2**-17. ReLU commutes with a positive scale, so fp32 outputs are unchanged (powers of
  two are exact); in fp16 the activations after that batch norm (or after the conv it is folded into)
  exceed 65504 and become inf: the classic fp16 engine failure. Survives batch-norm folding.
- `plant_precision_loss`: the `pool` conv's bias is raised by about 2048 and head.0's bias takes
  the offset back out (W @ offset). In fp16 the pooled features, O(1) values riding on 2048, are
  rounded to steps of 2 and the lanes move by many pixels; in fp32 nothing is lost. The new biases
  and head.0's weights are made exactly representable in fp16, so the only fp16 damage is the
  rounding of the pooled features, wherever it happens: keeping only `pool` in fp32 does not help
  (its output is rounded when the next op reads it in fp16), and the minimal fix is {pool,
  flatten, head.0}, with `pool`, where the offset enters, as the culprit.
"""
from __future__ import annotations

from pathlib import Path

OVERFLOW_SCALE = 2.0**17
OFFSET = 2048.0


def plant_overflow(checkpoint, out: Path, bn: str = "backbone.4", conv: str = "backbone.6"):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = checkpoint.build_model()
    mods = dict(model.named_modules())
    with torch.no_grad():
        mods[bn].weight.mul_(OVERFLOW_SCALE)
        mods[bn].bias.mul_(OVERFLOW_SCALE)
        mods[conv].weight.div_(OVERFLOW_SCALE)
    meta = {k: v for k, v in checkpoint.meta.items() if k in ("config", "hyperparameters")}
    return save_checkpoint(out, model, {**meta, "method": f"planted-overflow:{bn}"})


def plant_precision_loss(checkpoint, out: Path):
    import torch

    from parity.models.checkpoint import save_checkpoint

    def fp16_exact(t):
        return t.half().float()

    model = checkpoint.build_model()
    with torch.no_grad():
        pool, head = model.pool, model.head[0]
        new_bias = fp16_exact(pool.bias + OFFSET)
        offset = new_bias - pool.bias  # per pooled channel
        pool.bias.copy_(new_bias)
        head.weight.copy_(fp16_exact(head.weight))
        per_channel = head.in_features // pool.out_channels
        head.bias.copy_(fp16_exact(head.bias - head.weight @ offset.repeat_interleave(per_channel)))
    meta = {k: v for k, v in checkpoint.meta.items() if k in ("config", "hyperparameters")}
    return save_checkpoint(out, model, {**meta, "method": "planted-precision-loss:pool"})
