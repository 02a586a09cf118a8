"""`reinit`: re-initialise chosen layers of a trained model and retrain (Zhang, Bengio & Singer 2019,
"Are all layers created equal?"), plus that paper's per-layer re-initialisation robustness
diagnostic: each layer alone set back to its initial weights, the held-out accuracy that is left
(critical layers lose it, robust layers keep it)."""
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


def build(hp):
    layers = [s for s in hp["layers"].split(",") if s]

    def setup(ctx):
        ctx.report["reinitialised"] = reinitialise(ctx.model, layers, hp["seed"])

    def finish(ctx):
        if hp["diagnostic"] and ctx.held_out:
            init = ctx.adapter.build().state_dict()
            ctx.report["layer_robustness_accuracy"] = layer_robustness(ctx.model, ctx.adapter, ctx.held_out, init)
        return ctx.model

    return Hooks(setup=[setup], finish=[finish])


register(Recipe("reinit", "re-initialise the named layers of --from and retrain; per-layer re-init diagnostic",
                "Zhang, Bengio & Singer 2019, Are all layers created equal?", build,
                {"layers": "head.2", "seed": 0, "diagnostic": True}, needs_parent=True))
