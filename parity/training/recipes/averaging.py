"""`swa` and `ema`: weight averaging with torch.optim.swa_utils (Izmailov et al. 2018, "Averaging
weights leads to wider optima"; exponential moving average as in Polyak averaging), batch-norm
statistics recomputed on the training data for the averaged weights."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def _finish(ctx):
    import torch
    from torch.optim.swa_utils import update_bn

    avg = ctx.scratch["average"]
    loader = [ctx.X[i : i + 64] for i in range(0, len(ctx.X), 64)]
    with torch.no_grad():
        update_bn(loader, avg)
    ctx.report["averaged"] = int(avg.n_averaged)
    return avg.module


def _average(ctx, **kw):
    from torch.optim.swa_utils import AveragedModel

    if "average" not in ctx.scratch:
        ctx.scratch["average"] = AveragedModel(ctx.model, **kw)
    ctx.scratch["average"].update_parameters(ctx.model)


def build_swa(hp):
    def after_epoch(ctx):
        if ctx.epoch + 1 >= max(1, round(hp["start"] * ctx.epochs)):
            _average(ctx)

    return Hooks(after_epoch=[after_epoch], finish=[_finish])


def build_ema(hp):
    def after_step(ctx):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        _average(ctx, multi_avg_fn=get_ema_multi_avg_fn(hp["decay"]))

    return Hooks(after_step=[after_step], finish=[_finish])


register(Recipe("swa", "stochastic weight averaging of one snapshot per epoch from `start` (share of epochs) on",
                "Izmailov et al. 2018, Averaging weights leads to wider optima", build_swa, {"start": 0.6}))
register(Recipe("ema", "exponential moving average of the weights after every step",
                "Polyak & Juditsky 1992; torch.optim.swa_utils", build_ema, {"decay": 0.998}))
