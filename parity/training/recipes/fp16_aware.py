"""`fp16-aware`: training with the rounding an fp16 engine applies: every conv/linear output rounded to
fp16 in the forward pass (fake quantisation with a straight-through gradient), only while training;
the saved model is the plain fp32 network (the hooks are removed before saving)."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def round_fp16_ste(t):
    """fp16 rounding in the forward pass, identity in the backward pass."""
    return t + (t.half().float() - t).detach()


def add_fp16_rounding(model) -> list:
    import torch

    def hook(module, args, out):
        return round_fp16_ste(out) if module.training else out

    return [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def build(hp):
    def setup(ctx):
        ctx.scratch["fp16_handles"] = add_fp16_rounding(ctx.model)

    def finish(ctx):
        for h in ctx.scratch.pop("fp16_handles", []):
            h.remove()
        return ctx.model

    return Hooks(setup=[setup], finish=[finish])


register(Recipe("fp16-aware", "conv/linear outputs rounded to fp16 while training (straight-through), plain fp32 model saved",
                "fake quantisation (Jacob et al. 2018) applied to fp16", build, {}))
