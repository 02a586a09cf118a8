"""`fp16-aware`: training with the rounding an fp16 deployment applies. The weights of every conv and
linear layer are what an fp16 engine stores (rounded to fp16 in the forward pass; ORT fp16 and
TensorRT fp16 both convert them), and with `activations` (engines that compute in fp16: TensorRT
fp16 kernels, `cpu-fp16`) every conv/linear output is rounded too. Fake quantisation with a
straight-through gradient, only while training: the fp32 weights are the ones updated, and the saved
model is the plain fp32 network (parametrisations and hooks removed before saving)."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def round_fp16_ste(t):
    """fp16 rounding in the forward pass, identity in the backward pass."""
    return t + (t.half().float() - t).detach()


def _layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def add_fp16_rounding(model, activations: bool = True) -> list:
    """Weights seen through fp16 (a parametrisation: `module.weight` is the rounded value, the fp32
    original is what trains) and, with `activations`, outputs rounded while training. Returns the
    activation hooks' handles; `remove_fp16_rounding` undoes both."""
    import torch
    from torch.nn.utils import parametrize

    class RoundFp16(torch.nn.Module):
        def forward(self, w):
            return round_fp16_ste(w)

    for m in _layers(model):
        parametrize.register_parametrization(m, "weight", RoundFp16())
    if not activations:
        return []

    def hook(module, args, out):
        return round_fp16_ste(out) if module.training else out

    return [m.register_forward_hook(hook) for m in _layers(model)]


def remove_fp16_rounding(model, handles) -> None:
    """The plain fp32 network back: the trained fp32 weights (not their fp16 rounding), no hooks."""
    from torch.nn.utils import parametrize

    for h in handles:
        h.remove()
    for m in _layers(model):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def build(hp):
    def setup(ctx):
        ctx.scratch["fp16_handles"] = add_fp16_rounding(ctx.model, hp["activations"])

    def finish(ctx):
        remove_fp16_rounding(ctx.model, ctx.scratch.pop("fp16_handles", []))
        return ctx.model

    return Hooks(setup=[setup], finish=[finish])


register(Recipe("fp16-aware", "conv/linear weights (and, with activations, outputs) rounded to fp16 while training "
                "(straight-through), plain fp32 model saved", "fake quantisation (Jacob et al. 2018) applied to fp16", build,
                {"activations": True}))
