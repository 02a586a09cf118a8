"""`fgsm`: fast adversarial training with a random start (Wong, Rice & Kolter, "Fast is better than free", 2020).

The perturbation lives in the camera image: epsilon is in 8-bit pixel levels before normalisation,
so it is epsilon / 255 * scale-adjusted / std per channel in input units, and the adversarial image
is clipped to the range a real 8-bit frame can produce.
"""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def input_units(pipeline, levels: float, device=None):
    """(per-channel size of `levels` 8-bit levels, lowest, highest) in the normalised input, shaped [1, 3, 1, 1]."""
    import torch

    std = torch.tensor(pipeline.std, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(pipeline.mean, dtype=torch.float32).view(1, 3, 1, 1)
    unit = pipeline.scale / std  # one 0-255 level in input units
    return levels * unit, (0 - mean) / std, (255 * pipeline.scale - mean) / std


def fgsm_example(model, x, y, pipeline, eps_levels: float, alpha_levels: float, gen=None):
    """x + delta: delta starts uniform in [-eps, eps], takes one step of alpha * sign(grad), is clipped
    to [-eps, eps] and x + delta to the valid pixel range."""
    import torch
    import torch.nn.functional as F

    eps, lo, hi = input_units(pipeline, eps_levels)
    alpha, _, _ = input_units(pipeline, alpha_levels)
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    delta = (torch.clamp(x + delta, lo, hi) - x).requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = torch.clamp(delta.detach() + alpha * grad.sign(), -eps, eps)
    return torch.clamp(x + delta, lo, hi).detach()


def build(hp):
    def transform(ctx, x, y):
        return fgsm_example(ctx.model, x, y, ctx.pipeline, hp["epsilon"], hp["alpha"], ctx.gen), y

    return Hooks(transform=[transform])


register(Recipe("fgsm", "FGSM adversarial training with a random start, epsilon in 8-bit pixel levels",
                "Wong et al. 2020, Fast is better than free", build, {"epsilon": 4.0, "alpha": 5.0}))
