"""`parity soup`: greedy model soup (Wortsman et al. 2022) whose held-out criterion is a deployment
metric on the deployed runner, not accuracy alone.

Greedy soup as the paper: ingredients (fine-tuned from one shared start) sorted by their own
criterion, best first; each is added only if the soup of those accepted plus it strictly improves
the criterion. The criterion is measured by the same evaluation units as `parity rank` (the deployed
runner and torch, the vehicle pipeline, unperturbed, one window per case), so every candidate soup
is a checkpoint written to `<out>.candidates/` and its units are cached like any other.

Criteria (all on the deployed runner, vehicle pipeline, the `--cases` given: choose on the validation
suite, `make validation-cases`, not on the cases you rank on):
- `accuracy`: TuSimple accuracy (higher is better): the usual greedy soup, measured deployed;
- `deployed-jitter`: RMS near jitter (lower is better);
- `deployment-score`: rank's composite score without the corruption term (no perturbations are run
  here), relative to the first ingredient given (lower is better).
Selecting on cases and then ranking on the same cases favours the selected soup; the zoo's
`soup-greedy` and `wise-ft` choose on the validation suite (`--select-cases`), and `make rank`'s
deployed soup does too.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..provenance import git_sha
from ..runners import REFERENCE, resolve
from ..runners.artifacts import ArtifactCache
from ..runs import units as U
from ..runs.inputs import load_all_cases, resolve_pipeline
from .rank import UnitEvaluator, expand_checkpoints
from ..runs.windows import DEFAULT_WINDOW_S, window_frames

CRITERIA = {"accuracy": True, "deployed-jitter": False, "deployment-score": False}  # name -> higher is better


@dataclass
class SoupConfig:
    ingredients: list[str]
    cases: list[str]
    out: str
    criterion: str = "deployment-score"
    runner: str = "ort-fp16"
    pipeline: str = "vehicle"
    window_s: float | None = DEFAULT_WINDOW_S
    config: str | None = None
    seed: int = 0
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = False
    argv: list[str] = field(default_factory=list)


def _ratio(units, runner, metric) -> float:
    sel = units[units["runner"] == runner]
    n = sel[f"{metric}__n"].sum()
    return float(sel[f"{metric}__sum"].sum() / n) if n else float("nan")


def soup(cfg: SoupConfig):
    import pandas as pd

    from .leaderboard import load_weights
    from ..training.recipes.soups import average

    if cfg.criterion not in CRITERIA:
        raise UsageError(f"--criterion must be one of {', '.join(CRITERIA)}, not {cfg.criterion!r}")
    paths = expand_checkpoints(cfg.ingredients)
    if len(paths) < 2:
        raise UsageError("a soup needs at least 2 ingredients")
    ingredients = [load_checkpoint(p) for p in paths]
    weights = load_weights(cfg.config)
    deployed = resolve([cfg.runner])[0]
    runner_names = [REFERENCE] + ([deployed] if deployed != REFERENCE else [])
    cases = load_all_cases(cfg.cases)
    adapter = ingredients[0].adapter()
    pipes = {cfg.pipeline: resolve_pipeline(cfg.pipeline, adapter.pipelines())}
    cond = U.Condition(next(iter(pipes)))
    windows = {c.name: window_frames(c.timestamps, cfg.window_s) for c in cases}
    ev = UnitEvaluator(ArtifactCache(cfg.cache_dir), cfg.seed, cfg.window_s, cfg.batch_size, cfg.progress)
    out = Path(cfg.out)
    work = out.with_suffix(".candidates")
    work.mkdir(parents=True, exist_ok=True)

    def measure(ck) -> dict:
        rows, errors = ev.collect([ck], cases, runner_names, pipes, {}, [cond], windows)
        if errors:
            raise UsageError(f"soup: {ck.path} failed on {errors[0]['case']}: {errors[0]['error']}")
        u = pd.DataFrame(rows)
        return {"error": 1 - _ratio(u, deployed, "accuracy"), "bend": _ratio(u, deployed, "bend_px"),
                "jitter": _ratio(u, deployed, "jitter_rms_near"), "kink": _ratio(u, deployed, "kink_rate")}

    first = measure(ingredients[0])
    used = {t: w for t, w in weights.items() if w > 0 and t != "corruption"}

    def criterion(m: dict) -> float:
        if cfg.criterion == "accuracy":
            return 1 - m["error"]
        if cfg.criterion == "deployed-jitter":
            return m["jitter"]
        return 100 * sum(w * m[t] / first[t] for t, w in used.items()) / sum(used.values())

    sign = 1 if CRITERIA[cfg.criterion] else -1
    states = [ck.build_model().state_dict() for ck in ingredients]
    alone = [criterion(first)] + [criterion(measure(ck)) for ck in ingredients[1:]]
    order = sorted(range(len(ingredients)), key=lambda i: -sign * np.nan_to_num(alone[i], nan=-sign * np.inf))
    accepted, best = [order[0]], alone[order[0]]
    trail = [{"ingredient": ingredients[order[0]].name, "criterion": best, "accepted": True}]
    model = ingredients[0].build_model()
    for i in order[1:]:
        model.load_state_dict(average([states[j] for j in accepted + [i]]))
        cand = save_checkpoint(work / f"soup-{'-'.join(str(j) for j in sorted(accepted + [i]))}.pt", model, _meta(ingredients, accepted + [i], cfg))
        value = criterion(measure(cand))
        ok = bool(np.isfinite(value) and sign * (value - best) > 0)  # strictly better, as the paper's greedy soup
        trail.append({"ingredient": ingredients[i].name, "criterion": value, "accepted": ok})
        if ok:
            accepted.append(i)
            best = value
    model.load_state_dict(average([states[j] for j in accepted]))
    meta = _meta(ingredients, accepted, cfg)
    meta["recipe_report"] = {"criterion": cfg.criterion, "deployed_runner": deployed, "alone": dict(zip([c.name for c in ingredients], alone)),
                             "accepted": [ingredients[j].name for j in accepted], "trail": trail,
                             "held_out_cases": [c.name for c in cases], "window_s": cfg.window_s,
                             "score_terms": used if cfg.criterion == "deployment-score" else None}
    ck = save_checkpoint(out, model, meta)
    shutil.rmtree(work, ignore_errors=True)  # the candidates' units stay cached; their weights are not needed
    return ck, meta["recipe_report"]


def _meta(ingredients, idx, cfg) -> dict:
    base = ingredients[0].meta
    return {"adapter": base["adapter"], "config": base.get("config", {}), "method": f"soup-{cfg.criterion}",
            "hyperparameters": {"criterion": cfg.criterion, "runner": cfg.runner, "pipeline": cfg.pipeline, "window_s": cfg.window_s},
            "parents": [{"path": str(ingredients[j].path), "sha256": ingredients[j].sha256, "method": ingredients[j].meta.get("method")} for j in idx],
            "git_sha": git_sha()}
