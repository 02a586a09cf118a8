"""Replay: every frame of every case through every runner, under each pipeline, into a tidy table.

Identical inputs go to every runner (each batch is preprocessed once per pipeline). The
reference for parity is the `torch` runner on the same pipeline, so backend differences and
preprocessing differences are reported apart; the pipeline gap is its own line.
"""
from __future__ import annotations

import logging
import secrets
import sys
import traceback
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import atomic
from .artifacts import ArtifactCache
from .case import Case, find_cases, load_case
from .checkpoint import load_checkpoint
from .errors import CaseError, ParityError, UsageError
from .metrics import lateral_difference, resample_rows, tusimple
from .provenance import git_sha, versions
from .runners import REFERENCE, create, resolve

log = logging.getLogger(__name__)


@dataclass
class ReplayConfig:
    cases: list[str]
    checkpoint: str
    runners: str | list[str] = "auto"
    pipelines: str | list[str] = "vehicle"
    out: str | None = None
    batch_size: int = 16
    cache_dir: str | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=list)


@dataclass
class ReplayResult:
    out: Path
    summary: dict
    exit_code: int


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def resolve_pipeline(name: str, available: dict):
    """A pipeline of the model by name, or a pipeline file (.json/.toml)."""
    from .pipeline import load_pipeline

    if name in available:
        return available[name]
    if name.endswith((".json", ".toml")):
        return load_pipeline(name)
    raise UsageError(f"unknown pipeline {name!r} (this model has: {', '.join(available)}; or give a .json/.toml file)")


def load_all_cases(paths: list[str]) -> list[Case]:
    """Every case, validated up front; all problems of all cases are reported together."""
    problems, cases = [], []
    for p in find_cases(paths):
        try:
            cases.append(load_case(p))
        except CaseError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CaseError(problems)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CaseError([f"case name {n!r} is used by more than one case folder" for n in dupes])
    return cases


def score_frames(case, x, gt, rows):
    """Per-frame TuSimple [T, 3] on the case's labelled frames, NaN rows elsewhere (None without GT)."""
    if gt is None:
        return None
    out = np.full((len(case), 3), np.nan)
    m = case.labelled
    out[m] = tusimple(x[m], gt[m], rows, case.width)
    return out


def lane_table(case_name, frames, t, runner, pipeline, ckpt_name, lane_names, x, ref, gt_scores, infer_ms, perturbation="none", severity=0):
    """Lane-level tidy rows for one case x runner x pipeline as an Arrow table (x[T, L, R] at `frames`, times `t`).

    Built from numpy columns with no per-row Python objects, so memory stays proportional to the
    numbers themselves (the per-row x is a fixed-size list column).
    """
    import pyarrow as pa

    T, L, R = x.shape
    slot = np.repeat(np.arange(T), L)
    frame = np.asarray(frames)[slot]
    lane = np.tile(np.arange(L), T)
    flat = np.ascontiguousarray(x.reshape(T * L, R), dtype=np.float32)
    diff = np.abs(x - ref).reshape(T * L, R)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a lane absent in either gives NaN, as intended
        dmean = np.nanmean(diff, axis=1)
        dmax = np.nanmax(diff, axis=1)
    n = T * L
    cols = {
        "checkpoint": pa.array(np.full(n, ckpt_name, dtype=object)).dictionary_encode(),
        "case": pa.array(np.full(n, case_name, dtype=object)).dictionary_encode(),
        "frame": pa.array(frame.astype(np.int32)),
        "t": pa.array(np.asarray(t, dtype=np.float64)[slot]),
        "runner": pa.array(np.full(n, runner, dtype=object)).dictionary_encode(),
        "pipeline": pa.array(np.full(n, pipeline, dtype=object)).dictionary_encode(),
        "perturbation": pa.array(np.full(n, perturbation, dtype=object)).dictionary_encode(),
        "severity": pa.array(np.full(n, severity, dtype=np.int8)),
        "lane": pa.array(lane.astype(np.int8)),
        "lane_name": pa.DictionaryArray.from_arrays(pa.array(lane.astype(np.int32)), pa.array(list(lane_names))),
        "exists": pa.array(np.isfinite(flat).any(axis=1)),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), R),
        "dx_ref_mean_px": pa.array(dmean),
        "dx_ref_max_px": pa.array(dmax),
    }
    if infer_ms is not None:
        cols["infer_ms"] = pa.array(np.repeat(infer_ms, L))
    if gt_scores is not None:
        for k, name in enumerate(("frame_accuracy", "frame_fp", "frame_fn")):
            cols[name] = pa.array(np.repeat(gt_scores[:, k], L))
    return pa.table(cols)


def write_table(table, path) -> None:
    import pyarrow.parquet as pq

    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def merge_parts(parts: list, path) -> None:
    """Concatenate per-case part files into one table (schemas unified: GT columns may be absent in some)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in parts]
    write_table(pa.concat_tables(tables, promote_options="default"), path)


def replay(cfg: ReplayConfig) -> ReplayResult:
    import pyarrow as pa

    started = datetime.now(timezone.utc)
    cases = load_all_cases(cfg.cases)
    ckpt = load_checkpoint(cfg.checkpoint)
    adapter = ckpt.adapter()
    available = adapter.pipelines()
    pipe_names = cfg.pipelines if isinstance(cfg.pipelines, list) else [p.strip() for p in cfg.pipelines.split(",") if p.strip()]
    pipelines = [resolve_pipeline(p, available) for p in pipe_names]
    pipe_names = [p.name for p in pipelines]
    names = resolve(cfg.runners)
    if REFERENCE not in names:
        names = [REFERENCE] + names  # parity is measured against it
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    cache = ArtifactCache(cfg.cache_dir)
    runners = [create(n, ckpt, cache) for n in names]

    run_id = new_run_id()
    out = Path(cfg.out) if cfg.out else Path("reports") / run_id
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)

    preds: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    times: dict[tuple[str, str], float] = {}
    frames_done: dict[tuple[str, str], int] = {}
    errors: list[dict] = []
    exit_code = 0
    total = sum(len(c) for c in cases) * len(pipelines)
    from tqdm import tqdm

    bar = tqdm(total=total, desc="replay", unit="frame", disable=None if cfg.progress else True, file=sys.stderr)
    with ExitStack() as stack:
        for r in runners:
            stack.enter_context(r)
        for case in cases:
            rows = adapter.anchor_rows(case.height)
            gt = resample_rows(case.gt, case.anchor_rows, rows) if case.gt is not None else None
            try:
                case_preds = {}
                case_ms = {}
                for pipe in pipelines:
                    outs = {r.name: [] for r in runners}
                    ms = {r.name: [] for r in runners}
                    for start in range(0, len(case), cfg.batch_size):
                        idx = range(start, min(start + cfg.batch_size, len(case)))
                        feed = {adapter.input_name: pipe.prepare(case, idx)}
                        for r in runners:
                            logits = r.infer(feed)[adapter.output_name]
                            if not np.isfinite(logits).all():
                                raise ParityError(f"runner {r.name} produced NaN/Inf logits on {case.name} frames {idx.start}..{idx.stop - 1}")
                            outs[r.name].append(adapter.decode(logits, case.width))
                            ms[r.name].append(np.full(len(idx), r.last_inference_time * 1e3 / len(idx)))
                        bar.update(len(idx))
                    for r in runners:
                        case_preds[(r.name, pipe.name)] = np.concatenate(outs[r.name])
                        case_ms[(r.name, pipe.name)] = np.concatenate(ms[r.name])
                frames = []
                for (rname, pname), x in case_preds.items():
                    ref = case_preds[(REFERENCE, pname)]
                    scores = score_frames(case, x, gt, rows)
                    frames.append(lane_table(case.name, np.arange(len(case)), case.timestamps, rname, pname, ckpt.name,
                                             adapter.lane_names, x, ref, scores, case_ms[(rname, pname)]))
                write_table(pa.concat_tables(frames), parts / f"{case.name}.parquet")
                for key, x in case_preds.items():
                    preds.setdefault(key, {})[case.name] = x
                    times[key] = times.get(key, 0.0) + float(case_ms[key].sum()) / 1e3
                    frames_done[key] = frames_done.get(key, 0) + len(x)
            except Exception as exc:  # one bad case never kills the run; it is recorded and fails the exit code
                code = exc.exit_code if isinstance(exc, ParityError) else 1
                exit_code = max(exit_code, code)
                errors.append({"case": case.name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)})
                log.error("case %s failed: %s", case.name, exc)
        bar.close()
        runner_info = {r.name: r.describe() for r in runners}

    part_files = sorted(parts.glob("*.parquet"))
    if part_files:
        merge_parts(part_files, out / "frames.parquet")
    summary = {
        "schema": "parity.replay/1",
        "run_id": run_id,
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "command": cfg.argv,
        "reference": {"runner": REFERENCE, "pipeline": "same as the row", "meaning": "lateral difference is runner vs torch fp32 on the same input"},
        "accuracy_reference": "ground truth (TuSimple accuracy/FP/FN, 20 px threshold scaled to image width)",
        "provenance": {
            "git_sha": git_sha(),
            "versions": versions(),
            "checkpoint": {"path": str(ckpt.path), "sha256": ckpt.sha256, "name": ckpt.name, "method": ckpt.meta.get("method")},
            "cases": {
                c.name: {
                    "path": str(c.root.resolve()), "sha256": c.content_hash(), "frames": len(c),
                    "labelled_frames": int(c.labelled.sum()) if c.labelled is not None else 0,
                    "model_rows": adapter.anchor_rows(c.height).round(4).tolist(),
                }
                for c in cases
            },
            "pipelines": {p.name: p.to_dict() for p in pipelines},
            "runners": runner_info,
        },
        "results": _aggregate(preds, times, frames_done, cases, adapter, runner_info),
        "pipeline_gap": _pipeline_gap(preds, pipe_names),
        "errors": errors,
    }
    atomic.write_json(out / "summary.json", summary)
    return ReplayResult(out, summary, exit_code)


def _aggregate(preds, times, frames_done, cases, adapter, runner_info) -> list[dict]:
    by_case = {c.name: c for c in cases}
    results = []
    for (rname, pname), per_case in preds.items():
        acc_rows = []
        xs, refs = [], []
        for cname, x in per_case.items():
            case = by_case[cname]
            rows = adapter.anchor_rows(case.height)
            if case.gt is not None:
                scores = score_frames(case, x, resample_rows(case.gt, case.anchor_rows, rows), rows)
                acc_rows.append(scores[case.labelled])
            xs.append(x.ravel())
            refs.append(preds[(REFERENCE, pname)][cname].ravel())
        acc = np.concatenate(acc_rows).mean(axis=0) if acc_rows else [float("nan")] * 3
        diff = lateral_difference(np.concatenate(xs), np.concatenate(refs))
        results.append(
            {
                "runner": rname,
                "pipeline": pname,
                "label": runner_info[rname]["label"],
                "frames": frames_done[(rname, pname)],
                "accuracy": float(acc[0]),
                "fp": float(acc[1]),
                "fn": float(acc[2]),
                "dx_ref_mean_px": diff["mean_px"],
                "dx_ref_p99_px": diff["p99_px"],
                "dx_ref_max_px": diff["max_px"],
                "existence_disagreement": diff["existence_disagreement"],
                "fps": frames_done[(rname, pname)] / times[(rname, pname)] if times[(rname, pname)] > 0 else float("nan"),
            }
        )
    return results


def _pipeline_gap(preds, pipe_names) -> list[dict]:
    """Each runner's lanes on the vehicle pipeline vs the same runner on the training pipeline."""
    if not {"vehicle", "training"} <= set(pipe_names):
        return []
    out = []
    for (rname, pname), per_case in preds.items():
        if pname != "vehicle" or (rname, "training") not in preds:
            continue
        other = preds[(rname, "training")]
        common = [c for c in per_case if c in other]
        if not common:
            continue
        d = lateral_difference(np.concatenate([per_case[c].ravel() for c in common]), np.concatenate([other[c].ravel() for c in common]))
        out.append({"runner": rname, "vehicle_vs_training": d})
    return out


def format_table(summary: dict) -> str:
    """The per-runner table printed at the end of a replay."""
    head = f"{'runner':<10} {'pipeline':<9} {'frames':>6} {'acc':>6} {'FP':>6} {'FN':>6} {'dx mean':>8} {'dx p99':>7} {'dx max':>7} {'exist!=':>7} {'fps':>7}"
    lines = [head, "-" * len(head)]

    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    for r in summary["results"]:
        lines.append(
            f"{r['runner']:<10} {r['pipeline']:<9} {r['frames']:>6} {f(r['accuracy'], '.4f'):>6} {f(r['fp'], '.3f'):>6} "
            f"{f(r['fn'], '.3f'):>6} {f(r['dx_ref_mean_px'], '.3f'):>8} {f(r['dx_ref_p99_px'], '.2f'):>7} "
            f"{f(r['dx_ref_max_px'], '.2f'):>7} {f(r['existence_disagreement'], '.4f'):>7} {f(r['fps'], '.0f'):>7}"
        )
    lines.append("dx: lateral difference vs torch fp32 on the same pipeline, px in source image; exist!=: share of points where existence differs")
    lines.append("fps: runner inference alone (no preprocessing), batches of the run's --batch-size")
    labels = {r["runner"]: r["label"] for r in summary["results"]}
    for name, label in labels.items():
        lines.append(f"  {name}: {label}")
    for g in summary.get("pipeline_gap", []):
        d = g["vehicle_vs_training"]
        lines.append(
            f"pipeline gap ({g['runner']}, vehicle vs training): mean {f(d['mean_px'], '.2f')} px, p99 {f(d['p99_px'], '.2f')} px, "
            f"max {f(d['max_px'], '.2f')} px, existence differs at {f(d['existence_disagreement'], '.4f')} of points"
        )
    for e in summary.get("errors", []):
        lines.append(f"FAILED case {e['case']}: {e['error']}")
    return "\n".join(lines)
