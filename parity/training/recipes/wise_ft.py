"""`wise-ft`: robust fine-tuning by weight-space ensembling (Wortsman et al. 2022, "Robust fine-tuning
of zero-shot models"): fine-tune from the parent, then interpolate theta = (1 - alpha) theta_0 +
alpha theta_ft, alpha chosen from a grid on the selection cases (`--select-cases`, the validation
suite: never the cases a rank evaluates; TuSimple accuracy on the vehicle pipeline, the deployed
preprocessing), ties going to the alpha nearest the configured one (0.5, the paper's usual mix, not
the end that is the parent); without selection cases, the configured alpha."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def interpolate(start: dict, end: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * end for floating tensors; integer buffers (BN counters) from `end`."""
    return {k: (1 - alpha) * start[k] + alpha * v if v.is_floating_point() else v.clone() for k, v in end.items()}


def choose_alpha(scores: dict[float, float], preferred: float) -> float:
    """The best-scoring alpha; among equals, the one nearest `preferred`."""
    return max(scores, key=lambda a: (scores[a], -abs(a - preferred)))


def build(hp):
    def finish(ctx):
        from ..loop import evaluate

        end = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        grid = [round(a, 3) for a in hp["grid"]] if ctx.select else [hp["alpha"]]
        scores = {}
        for a in grid:
            ctx.model.load_state_dict(interpolate(ctx.start, end, a))
            if ctx.select:
                scores[a] = evaluate(ctx.model.eval(), ctx.adapter, ctx.select, "vehicle")["overall"]["accuracy"]
        best = choose_alpha(scores, hp["alpha"]) if scores else grid[0]
        ctx.model.load_state_dict(interpolate(ctx.start, end, best))
        ctx.report.update({"alpha": best, "selection_accuracy_by_alpha": scores,
                           "chosen_on": [c.name for c in ctx.select] or "configured alpha (no --select-cases)"})
        return ctx.model

    return Hooks(finish=[finish])


register(Recipe("wise-ft", "fine-tune from --from, then interpolate weights with the start; alpha chosen on the selection cases",
                "Wortsman et al. 2022, Robust fine-tuning of zero-shot models (WiSE-FT)", build,
                {"alpha": 0.5, "grid": (0.0, 0.25, 0.5, 0.75, 1.0)}, needs_parent=True))
