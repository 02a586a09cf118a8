"""Severity sweeps: every case x perturbation x severity x runner, against the unperturbed output.

Each case contributes one window of consecutive frames (parity.runs.windows; 3 s by default), so
jitter and oscillation under a perturbation are frame-to-frame quantities as in replay. The
unperturbed (severity 0) output of each runner is computed once per case and is the
reference for that runner's perturbed outputs, so `dx_ref_*` in the table is what the
perturbation moved. Each batch is preprocessed once and the same tensor goes to every runner
(FGSM included). A sequence perturbation (frames dropped, repeated, re-timed) feeds the clean
frames again, so its outputs are the clean pass's: it moves only what time does. The table holds
no timings, so the same sweep gives the same table.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import atomic
from ..cases.lanes import resample_rows
from ..errors import UsageError
from ..metrics import scoring
from ..metrics.lateral import metres_per_pixel
from ..models.checkpoint import load_checkpoint
from ..preprocessing import perturb
from ..preprocessing.pipeline import DecodedFrames
from ..progress import tick
from ..provenance import git_sha, machine, sha256_json, source_hash, versions
from ..runners import REFERENCE, create, resolve
from ..runners.artifacts import ArtifactCache
from .batch import RunnerBatches, RunnerOutputs, nonfinite_findings
from .inputs import case_ref, keep_cases, load_all_cases, load_captures, new_run_id, resolve_pipeline, unit_case
from .executor import ExecutorSpec, active_runners, release_runners
from .folder import RunFolder
from .tables import CaseParts, lane_table, output_parity, output_table, read_groups, unit_result
from .windows import DEFAULT_WINDOW_S, check_window, window_frames

log = logging.getLogger(__name__)


@dataclass
class SweepConfig:
    cases: list[str]
    checkpoint: str
    runners: str = "torch"
    pipeline: str = "vehicle"
    perturb: str = "deploy"
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    window_s: float | None = DEFAULT_WINDOW_S  # seconds of consecutive frames per case (None or 0: all)
    resume: bool = False
    overwrite: bool = False
    executor: str | None = None
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    seed: int = 0
    out: str | None = None
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # captures of `export-inputs --perturb` (parity.runners.captures)


def parse_severities(spec: str) -> list[int]:
    """'1..5', '1,3,5' or '3' -> sorted list within 1..5."""
    try:
        if ".." in spec:
            a, b = spec.split("..")
            out = list(range(int(a), int(b) + 1))
        else:
            out = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--severities: expected e.g. 1..5 or 1,3,5, got {spec!r}") from None
    if not out or any(not 1 <= s <= 5 for s in out):
        raise UsageError(f"--severities must lie in 1..5, got {spec!r}")
    return sorted(set(out))


CODE = ("metrics", "preprocessing", "runners", "models", "cases", "colour.py", "runs/batch.py", "runs/sweep.py", "runs/tables.py",
        "runs/schema.py", "runs/windows.py")


def sweep(cfg: SweepConfig):
    started = datetime.now(timezone.utc)
    spec = ExecutorSpec.from_options(cfg.executor, cfg.workers, cfg.threads, cfg.ray_address).start()  # workers start beside the set-up
    check_window(cfg.window_s)
    if not cfg.perturb or not cfg.perturb.strip():
        raise UsageError("--perturb names no perturbation (give a suite: deploy, corruptions, all; or names)")
    cases = load_all_cases(cfg.cases)
    windows = {c.name: window_frames(c.timestamps, cfg.window_s) for c in cases}
    ckpt = load_checkpoint(cfg.checkpoint)
    adapter = ckpt.adapter()
    pipe = resolve_pipeline(cfg.pipeline, adapter.pipelines())
    names = resolve(cfg.runners)
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    perts = [perturb.get(n) for n in perturb.resolve(cfg.perturb)]
    if not perts:
        raise UsageError(f"--perturb {cfg.perturb!r} names no perturbation")
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    cache = ArtifactCache(cfg.cache_dir)
    [create(n, ckpt, cache) for n in names]  # every runner available here, before anything runs
    captures = load_captures(cfg.outputs, names, [pipe])

    out = Path(cfg.out) if cfg.out else Path("reports") / f"sweep-{new_run_id()}"
    run_key = sha256_json({
        "kind": "sweep", "checkpoint": ckpt.sha256, "runners": names, "pipeline": pipe.to_dict(),
        "perturbations": [(p.name, [str(v) for v in p.values]) for p in perts], "severities": cfg.severities, "window_s": cfg.window_s,
        "seed": cfg.seed, "batch_size": cfg.batch_size, "threads": spec.threads, "code": source_hash(CODE), "versions": versions(),
        "captures": [c.content_sha256() for c in captures],
    })
    describe = {"checkpoint": ckpt.name, "runners": ",".join(names), "perturb": cfg.perturb, "severities": cfg.severities}
    errors = []
    from ..progress import progress, ticking

    with RunFolder(out, "sweep", run_key, resume=cfg.resume, describe=describe, replace=cfg.overwrite) as folder:
        conditions = len(perts) * len(cfg.severities)
        parts = CaseParts(folder, run_key, cases, pieces=pieces_for(conditions))
        runner_info = folder.recall("runners", {})

        def piece_frames(case, k):  # each piece runs the clean pass (its reference) and its share of the conditions
            return len(windows[case.name]) * (1 + len(piece_conditions(conditions, k, parts.pieces)))

        bar = progress(sum(piece_frames(c, k) for c, k in parts.todo_parts), "sweep", "frame", cfg.progress)
        # Absolute paths: a worker may start elsewhere (a Ray worker's folder is its session's).
        unit = {"checkpoint": os.path.abspath(ckpt.path), "runners": names, "pipeline": pipe.to_dict(), "perturbations": [p.name for p in perts],
                "severities": cfg.severities, "window_s": cfg.window_s, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "cache_dir": os.path.abspath(cache.root), "captures": [c.spec.to_dict() for c in captures]}
        try:
            with ticking(bar) as ticks:
                keep_cases(parts.todo)  # a unit run here takes them; a worker loads each once
                errors = parts.compute(spec, sweep_unit, {c.name: {**unit, **case_ref(c)} for c in parts.todo},
                                       lambda case, k, result: ticks.finish(parts.part(case.name, k), piece_frames(case, k)))
        finally:
            release_runners()
        if parts.runner_info:
            runner_info = parts.runner_info
            folder.remember("runners", runner_info)
        bar.close()
        done, by_output, written = parts.collect("sweep.parquet")
        results = _summarise(_items(read_groups(lt, jt)) for _, lt, jt in done)
        per_output = output_parity(by_output, ("perturbation", "severity", "runner"))
        for r in results:
            r["raw_by_output"] = per_output.get((r["perturbation"], r["severity"], r["runner"]), {})
        summary = {
            "schema": "parity.sweep/1",
            "started": started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "command": cfg.argv,
            "reference": {
                "dx": "each runner's own unperturbed output on the same pipeline and frames",
                "accuracy": "ground truth on labelled frames",
                "bending_jitter": "gt where a case has GT on every frame in the model's lane slots, else the runner's unperturbed output",
            },
            "provenance": {
                "git_sha": git_sha(), "versions": versions(), "machine": machine(),
                "checkpoint": {"path": str(ckpt.path), "sha256": ckpt.sha256, "name": ckpt.name},
                "cases": {c.name: {"path": os.path.abspath(c.root), "sha256": c.content_hash()} for c in cases},
                "pipeline": pipe.to_dict(), "seed": cfg.seed, "window_s": cfg.window_s,
                "windows": {k: [int(v[0]), int(v[-1])] for k, v in windows.items() if len(v)},
                "perturbations": {p.name: {"family": p.family, "stage": p.stage, "values": list(p.values), "unit": p.unit} for p in perts},
                "runners": runner_info,
            },
            "results": results,
            "findings": nonfinite_findings(results),
            "errors": errors,
            "files": written + ["summary.csv", "summary.json"],
        }
        atomic.write_json(out / "summary.json", summary)
        _write_csv(results, out / "summary.csv")
        folder.finish(summary["files"])
        code = max([e["exit_code"] for e in errors] + [1 if summary["findings"] else 0], default=0)
    return out, summary, code


# A sweep's case is split into pieces of about this many perturbation x severity conditions (one unit
# of work each): the full suite's 150 make 4, so 9 cases keep 2 workers busy to the end (36 units, not
# 9 of which the last runs alone). Each piece runs the clean pass again as its reference (1 / 38 more).
PIECE_CONDITIONS = 38


def pieces_for(conditions: int) -> int:
    return max(1, round(conditions / PIECE_CONDITIONS))


def piece_conditions(conditions: int, piece: int, pieces: int) -> range:
    """The conditions (indices into perturbation-major order) of piece `piece` of `pieces`: contiguous,
    so the pieces read back in order give the rows of the whole case."""
    bounds = np.linspace(0, conditions, pieces + 1).round().astype(int)
    return range(int(bounds[piece]), int(bounds[piece + 1]))


def _run(runners, adapter, feed_fn, idx, width, batch, pipe=None, perturbation="none", severity=0, unit=None):
    """Every runner's outputs for frames `idx`, each batch prepared once and fed to all of them (a
    capture only where it holds this pipeline and perturbation: export-inputs --perturb)."""
    if pipe is not None:
        runners = _holding(runners, pipe, perturbation, severity)
    batches = RunnerBatches(runners, adapter, width, keep_logits={REFERENCE})
    for s in range(0, len(idx), batch):
        batches.feed(feed_fn(idx[s : s + batch]))
        if unit is not None:
            tick(unit, len(idx[s : s + batch]))  # a terminal bar moves per batch (parity.progress)
    return batches.outputs()


def _holding(runners, pipe, perturbation: str, severity: int) -> list:
    """The runners that answer for this condition: all but a capture that does not hold it."""
    spec = sha256_json(pipe.to_dict())
    return [r for r in runners if not hasattr(r, "covers") or r.covers(spec, perturbation, severity)]


def _fed_again(clean: dict, names: list[str], src: np.ndarray, order: dict[int, int], run, unit: str) -> dict:
    """A sequence perturbation feeds clean frames again (dropped, repeated, re-timed): each runner's
    outputs for frames `src` are its clean pass's, not a second inference of the same tensors that
    would differ only in which frames share a batch (torch's CPU kernels round a frame differently
    in a batch of another size). Frames outside the clean window (a repeat of the frame before it)
    are `run`. `names`: the runners that hold the condition (a capture may not)."""
    pos = np.array([order.get(int(f), -1) for f in src], dtype=int)
    outside = np.unique(src[pos < 0])
    extra = run(outside) if len(outside) else None
    at = {int(f): len(order) + k for k, f in enumerate(outside)}
    pos = np.where(pos >= 0, pos, [at.get(int(f), -1) for f in src])
    tick(unit, int((pos < len(order)).sum()))
    return {n: RunnerOutputs.concat([clean[n]] + ([extra[n]] if extra is not None else [])).rows(pos) for n in names}


def sweep_unit(payload: dict) -> dict:
    """One case's window under every perturbation x severity (the unit every executor runs)."""
    from ..preprocessing.pipeline import Pipeline

    ckpt, runners = active_runners(payload["checkpoint"], payload["runners"], payload["cache_dir"], captures=payload.get("captures", ()))
    perts = [perturb.get(n) for n in payload["perturbations"]]
    case = unit_case(payload["case"], payload["case_sha256"])
    idx = window_frames(case.timestamps, payload["window_s"])
    conditions = [(p, sev) for p in perts for sev in payload["severities"]]
    piece = piece_conditions(len(conditions), payload.get("piece", 0), payload.get("pieces", 1))
    mine = [conditions[i] for i in piece]
    fgsm_model = ckpt.build_model() if any(p.stage == "tensor" and p.name == "fgsm" for p, _ in mine) else None
    tables, jitter_rows, outputs = _sweep_case(case, idx, payload, ckpt, ckpt.adapter(), Pipeline.from_dict(payload["pipeline"]), runners,
                                               mine, fgsm_model, with_clean=piece.start == 0, unit=payload.get("part", case.name))
    return unit_result(tables, jitter_rows, outputs, runners)


def _sweep_case(case, idx, cfg: dict, ckpt, adapter, pipe, runners, conditions, fgsm_model, with_clean: bool,
                unit: str) -> tuple[list, list[dict], list]:
    """The case's window under `conditions` [(perturbation, severity)], each against the clean pass
    (computed here; its own rows written only `with_clean`: by the first piece of a split case).
    `unit`: the name its progress ticks count under (the case, or its piece)."""
    rows = adapter.anchor_rows(case.height)
    gt = resample_rows(case.gt, case.anchor_rows, rows) if case.gt is not None else None
    mpp = metres_per_pixel(case.meta.get("camera"), rows, case.width)
    track_gt = scoring.gt_usable_for_tracking(case, adapter)
    decoded = DecodedFrames()  # each frame decoded once for every perturbation that decodes it the same way
    clean = _run(runners, adapter, lambda f: pipe.prepare(case, f, decoded=decoded), idx, case.width, cfg["batch_size"], pipe, unit=unit)
    # FGSM pushes away from the GT where a frame is labelled, else from the clean prediction.
    targets = {int(f): c for f, c in zip(idx, clean[REFERENCE].logits.argmax(axis=1))}
    if gt is not None:
        gt_cells = adapter.targets(gt, case.width)
        for f in idx:
            if case.labelled[f]:
                targets[int(f)] = gt_cells[f]

    def tensor_context(frames):
        return {"model": fgsm_model, "targets": np.stack([targets[int(f)] for f in frames]), "std": pipe.std}

    tables, jitter_rows, by_output = [], [], []

    def record(pname, sev, r, o, frames, t, ref):
        by_output.append(output_table(case.name, frames, t, r.name, pipe.name, ckpt.name, o.raw_by_output, pname, sev))
        metric_ref, ref_name = (gt[frames], "gt") if track_gt else (ref, f"{r.name} unperturbed")
        sc = scoring.score(case, o.x, frames, t, ref, metric_ref, ref_name, rows, mpp)
        sc.frame_cols.update(o.raw, nonfinite=o.nonfinite)
        tables.append(lane_table(case.name, frames, t, r.name, pipe.name, ckpt.name, adapter.lane_names, o.x,
                                 sc.lane_cols, sc.frame_cols, None, perturbation=pname, severity=sev,
                                 parity_reference=f"{r.name} unperturbed", bending_jitter_reference=ref_name))
        for row in sc.jitter_rows:
            jitter_rows.append({"checkpoint": ckpt.name, "case": case.name, "runner": r.name, "pipeline": pipe.name, "perturbation": pname,
                                "severity": sev, "lane_name": adapter.lane_names[row["lane"]], "reference": ref_name, **row})

    for r in runners:
        if r.name in clean and with_clean:
            record("none", 0, r, clean[r.name], idx, case.timestamps[idx], clean[r.name].x)
    order = {int(f): k for k, f in enumerate(idx)}
    for p, sev in conditions:
        applied = perturb.Applied(p, sev, cfg["seed"], case.name, tensor_context)
        ppipe = applied.pipeline(pipe)
        fed, ts = applied.schedule(case.timestamps)
        keep = fed[idx] >= 0
        slots, src = idx[keep], fed[idx][keep]
        ref_pos = np.array([order[int(f)] for f in slots], dtype=int)
        hooks = applied.hooks()

        def run(frames):
            return _run([r for r in runners if r.name in clean], adapter, lambda f: ppipe.prepare(case, f, hooks=hooks, decoded=decoded),
                        frames, case.width, cfg["batch_size"], pipe, p.name, sev, unit=unit)

        if p.stage == "sequence":
            outs = _fed_again(clean, [r.name for r in _holding(runners, pipe, p.name, sev) if r.name in clean], src, order, run, unit)
        else:
            outs = run(src)
        for r in (r for r in runners if r.name in outs):
            record(p.name, sev, r, outs[r.name], slots, ts[slots], clean[r.name].x[ref_pos])
    return tables, jitter_rows, by_output


def _items(groups: dict) -> dict[tuple, list[dict]]:
    """One case's scored groups as aggregate items per (perturbation, severity, runner); the parity
    reference of each is the runner's own unperturbed lanes at the same frames."""
    out = {}
    for (case, runner, _pipe, pname, sev), g in groups.items():
        clean = groups[(case, runner, _pipe, "none", 0)]
        ref = clean["x"][np.searchsorted(clean["frames"], g["frames"])]
        out[(pname, sev, runner)] = [{"x": g["x"], "dx_ref": ref, "scored": g["scored"], "case": case, "frames": g["frames"],
                                      "lane_names": g["lane_names"]}]
    return out


def _summarise(per_case) -> list[dict]:
    agg: dict[tuple, list] = {}
    for items in per_case:
        for k, v in items.items():
            agg.setdefault(k, []).extend(v)
    out, base = [], {}
    for (pname, sev, runner), items in sorted(agg.items(), key=lambda kv: (kv[0][0] != "none", kv[0])):
        res = scoring.aggregate(items)
        if pname == "none":
            base[runner] = res
        b = base.get(runner, {})
        out.append({
            "perturbation": pname, "severity": sev, "runner": runner, "frames": int(sum(len(i["x"]) for i in items)),
            "accuracy_drop": b.get("accuracy", float("nan")) - res["accuracy"],
            "bend_increase_px": res["bend_mean_px"] - b.get("bend_mean_px", float("nan")),
            **{k: v for k, v in res.items() if k != "bend_worst"},
        })
    return out


def _write_csv(results, path) -> None:
    import pandas as pd

    with atomic.atomic_path(path) as tmp:
        pd.DataFrame([{k: v for k, v in r.items() if k != "raw_by_output"} for r in results]).to_csv(tmp, index=False, float_format="%.5g")


def format_summary(summary: dict, runner: str = REFERENCE) -> str:
    """Per perturbation, lateral shift and accuracy drop at each severity for one runner."""
    res = [r for r in summary["results"] if r["runner"] == runner]
    sevs = sorted({r["severity"] for r in res if r["severity"] > 0})
    by = {}
    for r in res:
        by.setdefault(r["perturbation"], {})[r["severity"]] = r
    head = f"{'perturbation':<20}" + "".join(f"{'sev ' + str(s):>16}" for s in sevs) + f"{'worst acc drop':>16}"
    lines = [f"runner {runner}: mean lateral shift vs unperturbed (px) / accuracy drop, per severity", head, "-" * len(head)]

    def f(v, fmt):
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)

    ranked = sorted((k for k in by if k != "none"), key=lambda k: -np.nan_to_num(max(by[k][s]["accuracy_drop"] for s in by[k]), nan=-1))
    for k in ranked:
        cells = "".join(f"{f(by[k][s]['dx_ref_mean_px'], '.2f') + ' / ' + f(by[k][s]['accuracy_drop'], '+.3f'):>16}" if s in by[k] else f"{'':>16}" for s in sevs)
        worst = max(by[k][s]["accuracy_drop"] for s in by[k])
        lines.append(f"{k:<20}{cells}{f(worst, '+.3f'):>16}")
    if "none" in by:
        lines.append(f"unperturbed accuracy: {f(by['none'][0]['accuracy'], '.4f')}")
    return "\n".join(lines)
