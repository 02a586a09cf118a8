"""`swalp`: SWA with low-precision training (Yang et al. 2019, "SWALP: Stochastic weight averaging in
low-precision training"): weights, activations, weight gradients and back-propagated errors all in
`bits`-bit block floating point (one shared exponent per tensor, the floor of log2 of its largest
magnitude as in the authors' `block_quantize`, stochastic rounding) at every step; the average of
the low-precision iterates is kept in full precision, batch-norm statistics recomputed."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register
from .averaging import _average, _finish


def block_quantise(t, bits: int, gen=None):
    """Block floating point: scale = 2^(floor(log2 max|t|) - bits + 2), t rounded stochastically to that grid and clipped
    to [-2^(bits-1), 2^(bits-1) - 1] steps (the authors' block_quantize: the largest value uses the top half of the levels)."""
    import torch

    m = float(t.abs().max())
    if m == 0 or not torch.isfinite(torch.tensor(m)):
        return t.clone()
    scale = 2.0 ** (torch.floor(torch.log2(torch.tensor(m))).item() - bits + 2)
    noise = torch.rand(t.shape, generator=gen) if gen is not None else torch.rand(t.shape)
    q = torch.floor(t / scale + noise)
    lim = 2 ** (bits - 1)
    return torch.clamp(q, -lim, lim - 1) * scale


def quantiser(bits_activation: int, bits_error: int):
    """An autograd function: the activation quantised going forward, the error (its gradient) quantised going back."""
    import torch

    class Quantise(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return block_quantise(x, bits_activation)

        @staticmethod
        def backward(ctx, g):
            return block_quantise(g, bits_error)

    return Quantise.apply


def add_activation_quantisers(model, bits_activation: int, bits_error: int) -> dict:
    """Every conv/linear output quantised (and its error on the way back) while the model trains and
    `state["on"]`; the SWA average is a deep copy that carries the hooks, so finishing turns them off."""
    import torch

    q = quantiser(bits_activation, bits_error)
    state = {"on": True}

    def hook(module, args, out):
        return q(out) if module.training and state["on"] else out

    state["handles"] = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return state


def build(hp):
    def setup(ctx):
        bits = hp["bits"]
        for p in ctx.model.parameters():
            p.register_hook(lambda g, bits=bits: block_quantise(g, bits))
        ctx.scratch["swalp"] = add_activation_quantisers(ctx.model, bits, bits)
        ctx.report["quantised_layers"] = len(ctx.scratch["swalp"]["handles"])

    def after_step(ctx):
        import torch

        with torch.no_grad():
            for p in ctx.model.parameters():
                p.copy_(block_quantise(p, hp["bits"], ctx.gen))

    def after_epoch(ctx):
        if ctx.epoch + 1 >= max(1, round(hp["start"] * ctx.epochs)):
            _average(ctx)

    def finish(ctx):
        state = ctx.scratch.pop("swalp")
        state["on"] = False  # the average's batch-norm statistics and everything after are full precision
        for h in state["handles"]:
            h.remove()
        return _finish(ctx)

    return Hooks(setup=[setup], after_step=[after_step], after_epoch=[after_epoch], finish=[finish])


register(Recipe("swalp", "weights, activations, gradients and errors in 8-bit block floating point while training, SWA of the "
                "iterates in fp32", "Yang et al. 2019, SWALP", build, {"bits": 8, "start": 0.6}))
