"""Severity sweeps: every case x perturbation x severity x runner, against the unperturbed output.

Each case contributes one window of consecutive frames (parity.runs.windows; 3 s by default), so
jitter and oscillation under a perturbation are frame-to-frame quantities as in replay. The
unperturbed (severity 0) output of each runner is computed once per case and is the
reference for that runner's perturbed outputs, so `dx_ref_*` in the table is what the
perturbation moved. Each batch is preprocessed once and the same tensor goes to every runner
(FGSM included). The table holds no timings, so the same sweep gives the same table.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import atomic
from ..cases.lanes import resample_rows
from ..errors import ParityError, UsageError
from ..metrics import scoring
from ..metrics.lateral import metres_per_pixel
from ..models.checkpoint import load_checkpoint
from ..preprocessing import perturb
from ..provenance import git_sha, machine, versions
from ..runners import REFERENCE, create, resolve
from ..runners.artifacts import ArtifactCache
from .batch import RunnerBatches, nonfinite_findings
from .inputs import load_all_cases, new_run_id, resolve_pipeline
from .tables import jitter_table, lane_table, merge_parts, write_table
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
    seed: int = 0
    out: str | None = None
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=list)


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


def sweep(cfg: SweepConfig):
    import pyarrow as pa

    started = datetime.now(timezone.utc)
    check_window(cfg.window_s)
    cases = load_all_cases(cfg.cases)
    windows = {c.name: window_frames(c.timestamps, cfg.window_s) for c in cases}
    ckpt = load_checkpoint(cfg.checkpoint)
    adapter = ckpt.adapter()
    pipe = resolve_pipeline(cfg.pipeline, adapter.pipelines())
    names = resolve(cfg.runners)
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    perts = [perturb.get(n) for n in perturb.resolve(cfg.perturb)]
    cache = ArtifactCache(cfg.cache_dir)
    runners = [create(n, ckpt, cache) for n in names]
    fgsm_model = ckpt.build_model() if any(p.stage == "tensor" and p.name == "fgsm" for p in perts) else None

    out = Path(cfg.out) if cfg.out else Path("reports") / f"sweep-{new_run_id()}"
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    errors, agg, jitter_rows = [], {}, []
    from tqdm import tqdm

    n_frames = sum(len(w) for w in windows.values())
    bar = tqdm(total=n_frames * (1 + len(perts) * len(cfg.severities)), desc="sweep", unit="frame",
               disable=None if cfg.progress else True, file=sys.stderr)
    with ExitStack() as stack:
        for r in runners:
            stack.enter_context(r)
        for case in cases:
            try:
                tables = _sweep_case(case, windows[case.name], cfg, ckpt, adapter, pipe, runners, perts, fgsm_model, agg, jitter_rows, bar)
                write_table(pa.concat_tables(tables), parts / f"{case.name}.parquet")
            except Exception as exc:  # recorded, fails the exit code, the other cases go on
                errors.append({"case": case.name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)})
                log.error("case %s failed: %s", case.name, exc)
    bar.close()
    part_files = sorted(parts.glob("*.parquet"))
    written = []
    if part_files:
        merge_parts(part_files, out / "sweep.parquet")
        written.append("sweep.parquet")
    if jitter_rows:
        write_table(jitter_table(jitter_rows), out / "jitter.parquet")
        written.append("jitter.parquet")
    results = _summarise(agg)
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
            "runners": {r.name: r.describe() for r in runners},
        },
        "results": results,
        "findings": nonfinite_findings(results),
        "errors": errors,
        "files": written + ["summary.csv", "summary.json"],
    }
    atomic.write_json(out / "summary.json", summary)
    _write_csv(results, out / "summary.csv")
    code = max([2 if "CaseError" in e["error"] else 1 for e in errors] + [1 if summary["findings"] else 0], default=0)
    return out, summary, code


def _run(runners, adapter, feed_fn, idx, width, batch):
    """Every runner's outputs for frames `idx`, each batch prepared once and fed to all of them."""
    batches = RunnerBatches(runners, adapter, width, keep_logits={REFERENCE})
    for s in range(0, len(idx), batch):
        batches.feed(feed_fn(idx[s : s + batch]))
    return batches.outputs()


def _sweep_case(case, idx, cfg, ckpt, adapter, pipe, runners, perts, fgsm_model, agg, jitter_rows, bar):
    rows = adapter.anchor_rows(case.height)
    gt = resample_rows(case.gt, case.anchor_rows, rows) if case.gt is not None else None
    mpp = metres_per_pixel(case.meta.get("camera"), rows, case.width)
    track_gt = scoring.gt_usable_for_tracking(case, adapter)
    clean = _run(runners, adapter, lambda f: pipe.prepare(case, f), idx, case.width, cfg.batch_size)
    bar.update(len(idx))
    # FGSM pushes away from the GT where a frame is labelled, else from the clean prediction.
    targets = {int(f): c for f, c in zip(idx, clean[REFERENCE].logits.argmax(axis=1))}
    if gt is not None:
        gt_cells = adapter.targets(gt, case.width)
        for f in idx:
            if case.labelled[f]:
                targets[int(f)] = gt_cells[f]

    def tensor_context(frames):
        return {"model": fgsm_model, "targets": np.stack([targets[int(f)] for f in frames]), "std": pipe.std}

    tables = []

    def record(pname, sev, r, o, frames, t, ref):
        metric_ref, ref_name = (gt[frames], "gt") if track_gt else (ref, f"{r.name} unperturbed")
        sc = scoring.score(case, o.x, frames, t, ref, metric_ref, ref_name, rows, mpp)
        sc.frame_cols.update(o.raw, nonfinite=o.nonfinite)
        tables.append(lane_table(case.name, frames, t, r.name, pipe.name, ckpt.name, adapter.lane_names, o.x,
                                 sc.lane_cols, sc.frame_cols, None, perturbation=pname, severity=sev,
                                 parity_reference=f"{r.name} unperturbed", bending_jitter_reference=ref_name))
        agg.setdefault((pname, sev, r.name), []).append(
            {"x": o.x, "dx_ref": ref, "scored": sc, "case": case.name, "frames": frames, "lane_names": adapter.lane_names})
        for row in sc.jitter_rows:
            jitter_rows.append({"checkpoint": ckpt.name, "case": case.name, "runner": r.name, "pipeline": pipe.name, "perturbation": pname,
                                "severity": sev, "lane_name": adapter.lane_names[row["lane"]], "reference": ref_name, **row})

    for r in runners:
        record("none", 0, r, clean[r.name], idx, case.timestamps[idx], clean[r.name].x)
    order = {int(f): k for k, f in enumerate(idx)}
    for p in perts:
        for sev in cfg.severities:
            applied = perturb.Applied(p, sev, cfg.seed, case.name, tensor_context)
            ppipe = applied.pipeline(pipe)
            fed, ts = applied.schedule(case.timestamps)
            keep = fed[idx] >= 0
            slots, src = idx[keep], fed[idx][keep]
            ref_pos = np.array([order[int(f)] for f in slots], dtype=int)
            hooks = applied.hooks()
            outs = _run(runners, adapter, lambda f: ppipe.prepare(case, f, hooks=hooks), src, case.width, cfg.batch_size)
            for r in runners:
                record(p.name, sev, r, outs[r.name], slots, ts[slots], clean[r.name].x[ref_pos])
            bar.update(len(idx))
    return tables


def _summarise(agg) -> list[dict]:
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
        pd.DataFrame(results).to_csv(tmp, index=False, float_format="%.5g")


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
