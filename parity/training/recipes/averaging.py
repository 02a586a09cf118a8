"""`swa` and `ema`: weight averaging with torch.optim.swa_utils (Izmailov et al. 2018, "Averaging
weights leads to wider optima"; exponential moving average as in Polyak averaging), batch-norm
statistics recomputed on the training data for the averaged weights.

SWA averages iterates taken at SWA's own learning rate: from the epoch before the first snapshot
the run's OneCycle schedule (which anneals to 0: averaging its last iterates is plain training) is
replaced by `SWALR`, annealing to a constant `swa_lr` (a share of the run's peak) in one epoch.
EMA's decay comes from a horizon that fits the run (`horizon`: a share of its steps), so the saved
model is an average of this run's iterates, not mostly the weights it started from."""
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
    def first_snapshot(ctx) -> int:
        return max(1, round(hp["start"] * ctx.epochs))

    def to_swalr(ctx):
        """OneCycle out, SWALR in: a cosine anneal over one epoch's steps to the constant swa_lr."""
        from torch.optim.swa_utils import SWALR

        per_epoch = max(1, ctx.steps // max(ctx.epochs, 1))
        ctx.sched = ctx.scratch["swalr"] = SWALR(ctx.opt, swa_lr=hp["swa_lr"] * ctx.scratch["train_args"]["lr"],
                                                 anneal_epochs=per_epoch, anneal_strategy="cos")

    def after_step(ctx):
        if first_snapshot(ctx) == 1 and "swalr" not in ctx.scratch:  # averaging from the first epoch: SWALR from the start
            to_swalr(ctx)

    def after_epoch(ctx):
        if ctx.epoch + 1 >= first_snapshot(ctx):
            _average(ctx)
            ctx.report.setdefault("lr_at_snapshots", []).append(float(ctx.opt.param_groups[0]["lr"]))
        elif ctx.epoch + 2 == first_snapshot(ctx):  # the epoch before the first snapshot anneals to swa_lr
            to_swalr(ctx)

    return Hooks(after_step=[after_step], after_epoch=[after_epoch], finish=[_finish])


def ema_decay(hp, steps: int) -> float:
    """`decay` if set, else 1 - 1 / (horizon x the run's steps)."""
    if hp["decay"] > 0:
        return hp["decay"]
    return 1.0 - 1.0 / max(1.0, hp["horizon"] * steps)


def build_ema(hp):
    def after_step(ctx):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        decay = ema_decay(hp, ctx.steps)
        ctx.report["decay"] = decay
        ctx.report["first_iterate_share"] = decay ** max(ctx.steps - 1, 0)  # what the first averaged iterate still weighs at the end
        _average(ctx, multi_avg_fn=get_ema_multi_avg_fn(decay))

    return Hooks(after_step=[after_step], finish=[_finish])


register(Recipe("swa", "stochastic weight averaging of one snapshot per epoch from `start` (share of epochs) on, at SWALR's constant "
                "`swa_lr` (share of the peak lr)", "Izmailov et al. 2018, Averaging weights leads to wider optima", build_swa,
                {"start": 0.6, "swa_lr": 0.5}))
register(Recipe("ema", "exponential moving average of the weights after every step, decay 1 - 1/(horizon x steps) unless `decay` > 0",
                "Polyak & Juditsky 1992; torch.optim.swa_utils", build_ema, {"horizon": 0.2, "decay": 0.0}))
