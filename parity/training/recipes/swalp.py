"""`swalp`: SWA with low-precision training (Yang et al. 2019, "SWALP: Stochastic weight averaging in
low-precision training"): weights and gradients quantised to `bits`-bit block floating point (one
shared exponent per tensor, stochastic rounding) at every step; the average of the low-precision
iterates is kept in full precision, batch-norm statistics recomputed."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register
from .averaging import _average, _finish


def block_quantise(t, bits: int, gen=None):
    """Block floating point: scale = 2^(ceil(log2 max|t|) - bits + 2), t rounded stochastically to that grid and clipped."""
    import torch

    m = float(t.abs().max())
    if m == 0:
        return t.clone()
    scale = 2.0 ** (torch.ceil(torch.log2(torch.tensor(m))).item() - bits + 2)
    noise = torch.rand(t.shape, generator=gen) if gen is not None else torch.rand(t.shape)
    q = torch.floor(t / scale + noise)
    lim = 2 ** (bits - 1)
    return torch.clamp(q, -lim, lim - 1) * scale


def build(hp):
    def setup(ctx):
        bits = hp["bits"]
        for p in ctx.model.parameters():
            p.register_hook(lambda g, bits=bits: block_quantise(g, bits))

    def after_step(ctx):
        import torch

        with torch.no_grad():
            for p in ctx.model.parameters():
                p.copy_(block_quantise(p, hp["bits"], ctx.gen))

    def after_epoch(ctx):
        if ctx.epoch + 1 >= max(1, round(hp["start"] * ctx.epochs)):
            _average(ctx)

    return Hooks(setup=[setup], after_step=[after_step], after_epoch=[after_epoch], finish=[_finish])


register(Recipe("swalp", "weights and gradients in 8-bit block floating point while training, SWA of the iterates in fp32",
                "Yang et al. 2019, SWALP", build, {"bits": 8, "start": 0.6}))
