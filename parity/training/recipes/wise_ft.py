"""`wise-ft`: robust fine-tuning by weight-space ensembling (Wortsman et al. 2022, "Robust fine-tuning
of zero-shot models"): fine-tune from the parent, then interpolate theta = (1 - alpha) theta_0 +
alpha theta_ft, alpha chosen on the held-out cases (TuSimple accuracy on the vehicle pipeline, the
deployed preprocessing) from a grid; without held-out cases, the configured alpha."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def interpolate(start: dict, end: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * end for floating tensors; integer buffers (BN counters) from `end`."""
    return {k: (1 - alpha) * start[k] + alpha * v if v.is_floating_point() else v.clone() for k, v in end.items()}


def build(hp):
    def finish(ctx):
        from ..loop import evaluate

        end = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        grid = [round(a, 3) for a in hp["grid"]] if ctx.held_out else [hp["alpha"]]
        scores = {}
        for a in grid:
            ctx.model.load_state_dict(interpolate(ctx.start, end, a))
            if ctx.held_out:
                scores[a] = evaluate(ctx.model.eval(), ctx.adapter, ctx.held_out, "vehicle")["overall"]["accuracy"]
        best = max(scores, key=lambda a: (scores[a], -a)) if scores else grid[0]
        ctx.model.load_state_dict(interpolate(ctx.start, end, best))
        ctx.report.update({"alpha": best, "held_out_accuracy_by_alpha": scores})
        return ctx.model

    return Hooks(finish=[finish])


register(Recipe("wise-ft", "fine-tune from --from, then interpolate weights with the start; alpha chosen on held-out cases",
                "Wortsman et al. 2022, Robust fine-tuning of zero-shot models (WiSE-FT)", build,
                {"alpha": 0.5, "grid": (0.0, 0.25, 0.5, 0.75, 1.0)}, needs_parent=True))
