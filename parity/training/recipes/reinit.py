"""`reinit`: re-initialise chosen layers of a trained model and retrain (Zhang, Bengio & Singer 2019,
"Are all layers created equal?"), plus that paper's per-layer robustness analysis: each layer alone
set back to its checkpoint-0 weights (re-initialisation: the lineage's own initial weights,
parity.training.initial) and, beside it, to a fresh random draw (re-randomisation), with the
held-out accuracy that is left. The paper's finding is that the two differ: many layers survive
re-initialisation, few survive re-randomisation, and the lower layers are the critical ones."""
from __future__ import annotations

from ..loop import Hooks
from . import Recipe, register


def reinitialise(model, layers, gen_seed: int = 0) -> list[str]:
    """Reset the named modules' parameters (their own reset_parameters), seeded; returns what was reset."""
    import torch

    mods = dict(model.named_modules())
    unknown = [n for n in layers if n not in mods or not hasattr(mods[n], "reset_parameters")]
    if unknown:
        from ...errors import UsageError

        raise UsageError(f"reinit: no resettable layer named {unknown[0]!r} (layers: {', '.join(n for n, m in mods.items() if hasattr(m, 'reset_parameters'))})")
    state = torch.random.get_rng_state()
    torch.manual_seed(gen_seed)
    try:
        for n in layers:
            mods[n].reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return list(layers)


def layer_robustness(model, adapter, cases, init_state: dict, pipeline: str = "vehicle") -> dict[str, float]:
    """Held-out accuracy with each conv/linear layer alone set back to `init_state` (the others trained)."""
    import torch

    from ..loop import evaluate

    trained = {k: v.clone() for k, v in model.state_dict().items()}
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            state = dict(trained)
            for k in (f"{name}.weight", f"{name}.bias"):
                if k in init_state:
                    state[k] = init_state[k]
            model.load_state_dict(state)
            out[name] = evaluate(model.eval(), adapter, cases, pipeline)["overall"]["accuracy"]
    model.load_state_dict(trained)
    return out


def _parent_zero(ctx) -> dict:
    from ...models.checkpoint import load_checkpoint
    from ..initial import checkpoint_zero

    return checkpoint_zero(load_checkpoint(ctx.scratch["train_args"]["parent"]))


def build(hp):
    layers = [s for s in hp["layers"].split(",") if s]
    if hp["to"] not in ("checkpoint-0", "random"):
        from ...errors import UsageError

        raise UsageError(f"reinit: to={hp['to']!r}; expected checkpoint-0 (the layer's own initial weights) or random (a fresh draw)")

    def draw_seed(ctx, k: int = 0) -> int:
        """The fresh draw's seed: the recipe's own and the run's, so each training seed re-randomises differently."""
        return hp["seed"] + 1000 * ctx.scratch["train_args"]["seed"] + k

    def setup(ctx):
        if hp["to"] == "random":
            ctx.report["reinitialised"] = reinitialise(ctx.model, layers, draw_seed(ctx))
            return
        zero = _parent_zero(ctx)
        reinitialise(ctx.model, layers, hp["seed"])  # checks the names; the weights come next
        state = ctx.model.state_dict()
        state.update({k: zero[k] for k in state if any(k.startswith(n + ".") for n in layers) and k in zero})
        ctx.model.load_state_dict(state)
        ctx.report["reinitialised"] = layers
        ctx.report["reinitialised_to"] = "checkpoint-0"

    def finish(ctx):
        if hp["diagnostic"] and ctx.held_out:
            ctx.report["layer_reinit_accuracy"] = layer_robustness(ctx.model, ctx.adapter, ctx.held_out, _parent_zero(ctx))
            from ..initial import seeded_build

            fresh = seeded_build(ctx.adapter, draw_seed(ctx, 1))  # re-randomisation: a new draw, not checkpoint 0
            ctx.report["layer_rerandom_accuracy"] = layer_robustness(ctx.model, ctx.adapter, ctx.held_out, fresh)
        return ctx.model

    return Hooks(setup=[setup], finish=[finish])


register(Recipe("reinit", "re-initialise the named layers of --from to checkpoint 0 (or a fresh draw: to=random) and retrain; "
                "per-layer re-initialisation vs re-randomisation analysis",
                "Zhang, Bengio & Singer 2019, Are all layers created equal?", build,
                {"layers": "head.2", "seed": 0, "diagnostic": True, "to": "checkpoint-0"}, needs_parent=True))
