"""`parity rank`: every candidate checkpoint through the same cases, runners, pipelines and
perturbations, into cached evaluation units and a leaderboard with case-level intervals.

Conditions: each of `pipelines` unperturbed, plus every perturbation x severity on
`perturb_pipeline` (the vehicle's). Each case contributes one window of consecutive frames
(parity.runs.windows), so jitter means what it means in replay. CULane F1 is scored on the
unperturbed conditions only (it rasterises every lane; TuSimple accuracy is scored everywhere).
The statistics and the leaderboard are parity.decisions.leaderboard's.
"""
from __future__ import annotations

import glob
import logging
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import atomic
from ..errors import ParityError, UsageError
from ..models.checkpoint import load_checkpoint
from ..preprocessing import perturb
from ..provenance import git_sha, machine, sha256_json, versions
from ..runners import REFERENCE, resolve
from ..runners.artifacts import ArtifactCache
from ..runs import units as U
from ..runs.inputs import case_ref, keep_cases, load_all_cases, new_run_id, resolve_pipeline, unit_case
from ..runs.executor import ExecutorSpec, active_runners, release_runners, run_units
from ..runs.folder import RunFolder
from ..runs.prepared import PreparedInputs
from ..runs.tables import write_table
from ..runs.windows import DEFAULT_WINDOW_S, check_window, window_frames

log = logging.getLogger(__name__)


@dataclass
class RankConfig:
    checkpoints: list[str]
    cases: list[str]
    runners: str = "torch,ort-fp16"
    deployed: str | None = None  # default: the last runner given
    pipelines: str = "training,vehicle"
    perturb_pipeline: str = "vehicle"
    perturb: str = "deploy"
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    window_s: float | None = DEFAULT_WINDOW_S
    baseline: str | None = None  # a checkpoint name; default: `erm` if ranked, else the first
    config: str | None = None  # TOML with a [rank.score] section
    n_boot: int = 2000
    seed: int = 0
    out: str | None = None
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = True
    overwrite: bool = False  # replace the files of a different rank found in `out`
    executor: str | None = None
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    argv: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # LABEL=PATTERN[,PATTERN]: group these checkpoints (by name) as one method


def expand_checkpoints(specs: list[str]) -> list[Path]:
    """Paths and glob patterns -> .pt files, in the order given, each once."""
    out: list[Path] = []
    for s in specs:
        # a glob skips checkpoint-0 files (<name>.init.pt beside a from-scratch checkpoint: weights, not a checkpoint)
        hits = sorted(h for h in glob.glob(s) if not h.endswith(".init.pt")) if any(c in s for c in "*?[") else [s]
        if not hits:
            raise UsageError(f"--checkpoints: {s!r} matches no file")
        for h in hits:
            p = Path(h)
            p = p.with_suffix(".pt") if p.suffix == ".json" else p
            if p not in out:
                out.append(p)
    return out


def plan(cfg: RankConfig):
    """Validated inputs: checkpoints, cases, runner names, pipelines, conditions."""
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_window(cfg.window_s)
    ckpts = [load_checkpoint(p) for p in expand_checkpoints(cfg.checkpoints)]
    if not ckpts:
        raise UsageError("no checkpoints to rank")
    names = [c.name for c in ckpts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"checkpoint name {dupes[0]!r} is used by more than one file; a leaderboard needs unique names")
    cases = load_all_cases(cfg.cases)
    given = resolve(cfg.runners)
    deployed = cfg.deployed or [n for n in given if n != REFERENCE][-1:] or [REFERENCE]
    deployed = deployed if isinstance(deployed, str) else deployed[0]
    runner_names = [REFERENCE] + [n for n in given if n != REFERENCE]
    if deployed not in runner_names:
        raise UsageError(f"--deployed {deployed!r} is not among --runners ({', '.join(runner_names)})")
    available = ckpts[0].adapter().pipelines()
    pipes = {p.name: p for p in (resolve_pipeline(s.strip(), available) for s in cfg.pipelines.split(",") if s.strip())}
    if cfg.perturb_pipeline not in pipes:
        raise UsageError(f"--perturb-pipeline {cfg.perturb_pipeline!r} is not among --pipelines ({', '.join(pipes)})")
    if not (cfg.perturb or "").strip():
        raise UsageError("--perturb names nothing; give a suite or names, or 'none' for no perturbations")
    perts = [perturb.get(n) for n in perturb.resolve(cfg.perturb)] if cfg.perturb.strip() != "none" else []
    model_bound = [p.name for p in perts if p.stage == "tensor" and p.name == "fgsm"]
    if model_bound:
        raise UsageError("rank cannot use fgsm: it attacks each checkpoint's own gradients, so its input is not shared; "
                         "run `parity sweep --perturb fgsm` per checkpoint")
    conditions = [U.Condition(p) for p in pipes]
    conditions += [U.Condition(cfg.perturb_pipeline, p.name, s) for p in perts for s in cfg.severities]
    return ckpts, cases, runner_names, deployed, pipes, {p.name: p for p in perts}, conditions


def rank(cfg: RankConfig):
    """Evaluate every missing unit, then build the leaderboard. Returns (out, summary, exit code)."""
    import pandas as pd
    import pyarrow as pa

    from . import leaderboard as LB

    started = datetime.now(timezone.utc)
    spec = ExecutorSpec.from_options(cfg.executor, cfg.workers, cfg.threads, cfg.ray_address).start()  # workers start beside the set-up
    ckpts, cases, runner_names, deployed, pipes, perts, conditions = plan(cfg)
    weights = LB.load_weights(cfg.config)
    by_name = {c.name: c for c in ckpts}
    baseline = cfg.baseline or ("erm" if "erm" in by_name else ckpts[0].name)
    if baseline not in by_name:
        raise UsageError(f"--baseline {baseline!r} is not a ranked checkpoint ({', '.join(by_name)})")
    out = Path(cfg.out) if cfg.out else Path("reports") / f"rank-{new_run_id()}"
    windows = {c.name: window_frames(c.timestamps, cfg.window_s) for c in cases}
    # The expensive part, the units, is cached and resumable on its own; the folder holds what is made from them.
    run_key = sha256_json({"kind": "rank", "checkpoints": [c.sha256 for c in ckpts], "cases": [c.name for c in cases],
                           "runners": runner_names, "deployed": deployed, "pipelines": {k: p.to_dict() for k, p in pipes.items()},
                           "conditions": [c.__dict__ for c in conditions], "window_s": cfg.window_s, "baseline": baseline,
                           "weights": weights, "n_boot": cfg.n_boot, "seed": cfg.seed, "methods": cfg.methods, "code": U.code_version()})
    folder = RunFolder(out, "rank", run_key, describe={"checkpoints": len(ckpts), "cases": len(cases)}, replace=cfg.overwrite)
    with folder:
        ev = UnitEvaluator(ArtifactCache(cfg.cache_dir), cfg.seed, cfg.window_s, cfg.batch_size, cfg.progress,
                           spec)
        rows, errors = ev.collect(ckpts, cases, runner_names, pipes, perts, conditions, windows)
        cache, keys = ev.cache, ev.keys

        table = pd.DataFrame(rows)
        board = LB.Leaderboard(table, [c.name for c in ckpts], baseline, deployed, cfg.perturb_pipeline,
                               [p for p in pipes if p != cfg.perturb_pipeline], weights, cfg.n_boot, cfg.seed)
        result = board.compute()
        methods = method_board(board, ckpts, baseline, parse_method_groups(cfg.methods, [c.name for c in ckpts]))
        written = []
        if len(table):
            write_table(pa.Table.from_pandas(table.sort_values(["checkpoint", "case", "runner", "pipeline", "perturbation", "severity"]),
                                             preserve_index=False), out / "units.parquet")
            written.append("units.parquet")
        write_table(pa.Table.from_pandas(result["long"], preserve_index=False), out / "rank.parquet")
        written.append("rank.parquet")
        summary = {
            "schema": "parity.rank/1",
            "started": started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "command": cfg.argv,
            "baseline": baseline,
            "deployed_runner": deployed,
            "conditions": [c.__dict__ for c in conditions],
            "window_s": cfg.window_s,
            "windows": {k: [int(v[0]), int(v[-1])] for k, v in windows.items() if len(v)},
            "units": {"total": len(table), "cached": int(cache.hits), "evaluated": int(cache.misses)},
            "score_weights": weights,
            "score_terms": result["score_terms"],
            "leaderboard": result["board"],
            "pareto_front": result["pareto"],
            "first_place_share": result["first_place_share"],
            "method_leaderboard": methods,
            # What rebuilds this board from units.parquet (parity claims compares methods on it).
            "board": {"vehicle": cfg.perturb_pipeline, "other_pipelines": [p for p in pipes if p != cfg.perturb_pipeline],
                      "n_boot": cfg.n_boot, "seed": cfg.seed},
            "definitions": LB.DEFINITIONS,
            "provenance": {
                "git_sha": git_sha(), "versions": versions(), "machine": machine(), "code_version": U.code_version(),
                "checkpoints": {c.name: {"path": str(c.path), "sha256": c.sha256, "method": c.meta.get("method")} for c in ckpts},
                "cases": {c.name: {"path": os.path.abspath(c.root), "sha256": keys.case_hash(c)} for c in cases},
                "pipelines": {k: p.to_dict() for k, p in pipes.items()},
                "runners": runner_names,
            },
            "errors": errors,
            "files": written + ["rank.json"],
        }
        atomic.write_json(out / "rank.json", summary)
        try:
            from .figures import pareto

            atomic.write_bytes(out / "pareto.png", pareto(result["board"]))
            summary["files"].append("pareto.png")
            atomic.write_json(out / "rank.json", summary)
        except Exception as exc:  # a plot is not worth a failed rank
            log.warning("pareto plot not written: %s", exc)
        folder.finish(summary["files"])
    code = 1 if errors else 0
    return out, summary, code


def parse_method_groups(specs: list[str], names: list[str]) -> dict[str, str]:
    """--methods LABEL=PATTERN[,PATTERN] ... -> {checkpoint name: label}; patterns are fnmatch globs on checkpoint names."""
    import fnmatch

    out: dict[str, str] = {}
    for spec in specs:
        label, eq, pats = spec.partition("=")
        if not eq or not label.strip() or not pats.strip():
            raise UsageError(f"--methods expects LABEL=PATTERN[,PATTERN] (checkpoint names, globs allowed), got {spec!r}")
        hits = [n for n in names if any(fnmatch.fnmatchcase(n, p.strip()) for p in pats.split(","))]
        if not hits:
            raise UsageError(f"--methods {spec!r}: no ranked checkpoint matches ({', '.join(names)})")
        for n in hits:
            if n in out and out[n] != label:
                raise UsageError(f"--methods: checkpoint {n!r} matches both {out[n]!r} and {label!r}")
            out[n] = label.strip()
    return out


def method_board(board, ckpts, baseline: str, labels: dict[str, str] | None = None) -> dict | None:
    """The method-level board (parity.decisions.methods) when some method has several checkpoints
    (seeds) on the board; None otherwise (a team comparing its own candidates needs only theirs).
    A checkpoint's method is its sidecar's, or the label `--methods` gives it."""
    from .methods import MethodBoard, method_of

    groups: dict[str, list[str]] = {}
    for c in ckpts:
        groups.setdefault((labels or {}).get(c.name) or method_of(c.meta), []).append(c.name)
    if max(len(v) for v in groups.values()) < 2:
        return None
    base = next(g for g, names in groups.items() if baseline in names)
    return MethodBoard(board, groups, base).compute()


class UnitEvaluator:
    """Finds each unit in the cache or evaluates it: every case x condition is one unit of work
    (parity.runs.executor), prepared once and fed to every checkpoint that misses a unit there.
    Failures are recorded per unit; the others go on."""

    def __init__(self, artifacts: ArtifactCache, seed: int, window_s, batch_size: int, progress: bool = False, executor=None):
        self.artifacts, self.seed, self.batch_size, self.progress = artifacts, seed, batch_size, progress
        self.executor = executor or ExecutorSpec()
        self.cache = U.UnitCache(artifacts.root)
        self.keys = U.UnitKeys(seed, window_s, self.executor.threads)

    def collect(self, ckpts, cases, runner_names, pipes, perts, conditions, windows) -> tuple[list[dict], list[dict]]:
        """Rows of every unit (from the cache or evaluated) and the errors. Unperturbed conditions run
        every runner (torch is the parity reference); perturbed ones only the deployed forms (every
        runner but torch, or torch alone if it is the only one): the leaderboard reads perturbations
        on the deployed runner, and this halves a rank's cost."""
        from ..progress import progress

        cache, keys = self.cache, self.keys
        deployed_forms = [r for r in runner_names if r != REFERENCE] or [REFERENCE]
        rows, errors = [], []
        groups: dict[tuple, list] = {}  # (case, condition) -> [(ckpt, {runner: key})] whose units are not all cached
        for case in cases:
            w = windows[case.name]
            span = (int(w[0]), int(w[-1])) if len(w) else (0, -1)
            for cond in conditions:
                pspec, pert = pipes[cond.pipeline].to_dict(), perts.get(cond.perturbation)
                names = runner_names if cond.clean else deployed_forms
                for ck in ckpts:
                    ks = {r: keys.key(ck.sha256, case, r, pspec, U.perturbation_spec(pert), cond.severity, span) for r in names}
                    recs = {r: cache.get(k) for r, k in ks.items()}
                    if all(v is not None for v in recs.values()):
                        cache.hits += len(recs)
                        rows.extend(_row(ck, case, r, cond, recs[r], ks[r], True) for r in names)
                    else:
                        groups.setdefault((case.name, cond), []).append((case, ck, ks))
        order = list(groups)
        bar = progress(sum(len(ks) for items in groups.values() for _, _, ks in items), "rank", "unit", self.progress)
        root = os.path.abspath(self.artifacts.root)
        payloads = [{**case_ref(items[0][0]), "window": [int(f) for f in windows[cname]],
                     "pipeline": pipes[cond.pipeline].to_dict(), "perturbation": cond.perturbation if not cond.clean else None,
                     "severity": cond.severity, "seed": self.seed, "batch_size": self.batch_size, "with_f1": cond.clean,
                     "cache_dir": root, "runners": runner_names,
                     "prepared_key": keys.prepared_key(items[0][0], pipes[cond.pipeline].to_dict(), U.perturbation_spec(perts.get(cond.perturbation)),
                                                       cond.severity, windows[cname], self.batch_size),
                     "checkpoints": [{"path": os.path.abspath(ck.path), "runners": list(ks)} for _, ck, ks in items]}
                    for (cname, cond), items in ((k, groups[k]) for k in order)]

        def done(i, result, error):
            cname, cond = order[i]
            items = groups[order[i]]
            for j, (case, ck, ks) in enumerate(items):
                err = error or (result[j].get("error") if result else None)
                if err is not None:  # recorded; the unit stays missing and the leaderboard says so
                    log.error("%s on %s (%s %s %s) failed: %s", ck.name, cname, cond.pipeline, cond.perturbation, cond.severity, err["error"])
                    errors.append({"checkpoint": ck.name, "case": cname, "pipeline": cond.pipeline, "perturbation": cond.perturbation,
                                   "severity": cond.severity, **err})
                else:
                    recs = result[j]["records"]
                    for r in ks:
                        cache.put(ks[r], recs[r])
                        cache.misses += 1
                        rows.append(_row(ck, case, r, cond, recs[r], ks[r], False))
                bar.update(len(ks))

        keep_cases(cases)  # a unit run here takes them; a worker loads each once
        try:
            run_units(self.executor, rank_unit, payloads, done)
        finally:
            release_runners()
        bar.close()
        return rows, errors


def rank_unit(payload: dict) -> list[dict]:
    """One case x condition for every checkpoint that misses it (the unit every executor runs): the
    condition's batches are prepared once, or read back from the last rank that prepared them
    (parity.runs.prepared); per checkpoint, {"records": {runner: unit record}} or {"error": ...}.
    A condition that cannot be prepared fails the whole unit."""
    import numpy as np

    from ..preprocessing.pipeline import Pipeline

    case = unit_case(payload["case"], payload["case_sha256"])
    pipe = Pipeline.from_dict(payload["pipeline"])
    store = PreparedInputs(payload["cache_dir"])
    prepared = store.get(payload["prepared_key"], pipe)
    if prepared is None:
        pert = perturb.get(payload["perturbation"]) if payload["perturbation"] else None
        prepared = U.prepare_condition(case, np.asarray(payload["window"], dtype=int), pipe, pert,
                                       payload["severity"], payload["seed"], payload["batch_size"])
        store.put(payload["prepared_key"], pipe, *prepared)
    batches, slots, ts = prepared
    out = []
    for ck in payload["checkpoints"]:
        try:
            ckpt, runners = active_runners(ck["path"], payload["runners"], payload["cache_dir"])
            rs = [r for r in runners if r.name in ck["runners"]]
            out.append({"records": U.evaluate(rs, ckpt.adapter(), case, batches, slots, ts, with_f1=payload["with_f1"])})
        except Exception as exc:  # this checkpoint's units stay missing; the other checkpoints go on
            out.append({"error": {"error": f"{type(exc).__name__}: {exc}", "exit_code": exc.exit_code if isinstance(exc, ParityError) else 1,
                                  "traceback": traceback.format_exc(limit=6)}})
    return out


def _row(ck, case, runner, cond, rec, key, cached) -> dict:
    return {"checkpoint": ck.name, "case": case.name, "runner": runner, "pipeline": cond.pipeline,
            "perturbation": cond.perturbation, "severity": cond.severity, **U.flatten(rec), "unit_key": key, "cached": cached}
