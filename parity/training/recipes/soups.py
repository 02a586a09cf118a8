"""`soup-uniform` and `soup-greedy`: model soups (Wortsman et al. 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference time"). Ingredients are
fine-tuned from the one parent checkpoint with different seeds and learning rates (this run is the
first; the others are trained by the same loop as `erm` fine-tunes and kept beside the output in
`<name>.ingredients/`). Uniform: the mean of all ingredients. Greedy: ingredients sorted by
accuracy on the selection cases (`--select-cases`, vehicle pipeline), each added only if the soup's accuracy there
strictly improves."""
from __future__ import annotations

from pathlib import Path

from ..loop import Hooks
from . import Recipe, register


def average(states: list[dict]) -> dict:
    import torch

    return {k: (torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) if states[0][k].is_floating_point()
                else states[0][k].clone()) for k in states[0]}


def greedy_soup(states: list[dict], score) -> tuple[dict, list[int], list[dict]]:
    """(soup, accepted ingredient indices, trail). `score(state) -> float`, higher is better."""
    scores = [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    accepted, best = [order[0]], scores[order[0]]
    trail = [{"ingredient": order[0], "score": best, "accepted": True}]
    for i in order[1:]:
        trial = average([states[j] for j in accepted + [i]])
        s = score(trial)
        ok = s > best
        trail.append({"ingredient": i, "score": s, "accepted": ok})
        if ok:
            accepted.append(i)
            best = s
    return average([states[j] for j in accepted]), accepted, trail


def _ingredients(ctx, hp) -> list[dict]:
    from ..loop import train

    args = dict(ctx.scratch["train_args"])
    states = [{k: v.detach().clone() for k, v in ctx.model.state_dict().items()}]
    factors = [float(f) for f in hp["lr_factors"].split(",")]
    folder = Path(args.pop("out")).with_suffix(".ingredients")
    for i in range(1, hp["ingredients"]):
        ck = train(args["train_cases"], folder / f"ingredient{i}.pt", eval_cases=[], epochs=args["epochs"],
                   batch_size=args["batch_size"], lr=args["lr"] * factors[i % len(factors)], weight_decay=args["weight_decay"],
                   seed=args["seed"] + i, threads=args["threads"], progress=False, method="erm", parent=args["parent"])
        states.append(ck.build_model().state_dict())
    ctx.report["ingredients"] = hp["ingredients"]
    return states


def build(greedy: bool):
    def make(hp):
        def setup(ctx):
            if greedy and not ctx.select:  # before any training: the choice needs cases of its own
                from ...errors import UsageError

                raise UsageError("soup-greedy chooses ingredients on selection cases: give --select-cases (the validation "
                                 "suite: make validation-cases), never the cases a rank evaluates")

        def finish(ctx):
            from ..loop import evaluate

            states = _ingredients(ctx, hp)
            if greedy:
                def score(state):
                    ctx.model.load_state_dict(state)
                    return evaluate(ctx.model.eval(), ctx.adapter, ctx.select, "vehicle")["overall"]["accuracy"]

                soup, accepted, trail = greedy_soup(states, score)
                ctx.report.update({"accepted": accepted, "trail": trail, "chosen_on": [c.name for c in ctx.select]})
            else:
                soup = average(states)
            ctx.model.load_state_dict(soup)
            return ctx.model

        return Hooks(setup=[setup], finish=[finish])

    return make


SETTINGS = {"ingredients": 3, "lr_factors": "1,0.5,2"}
register(Recipe("soup-uniform", "mean of ingredients fine-tuned from --from with different seeds and learning rates",
                "Wortsman et al. 2022, Model soups (uniform)", build(False), dict(SETTINGS), needs_parent=True))
register(Recipe("soup-greedy", "ingredients added by accuracy on the selection cases, each only if the soup improves",
                "Wortsman et al. 2022, Model soups (greedy)", build(True), dict(SETTINGS), needs_parent=True))
