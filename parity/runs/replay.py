"""Replay: every frame of every case through every runner, under each pipeline, into a tidy table.

Identical inputs go to every runner (each batch is preprocessed once per pipeline). The
reference for parity is the `torch` runner on the same pipeline, so backend differences and
preprocessing differences are reported apart; the pipeline gap is its own line.
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
from ..errors import CaptureError, CaseError, UsageError
from ..progress import tick
from ..metrics import scoring
from ..metrics.lateral import lateral_difference, metres_per_pixel
from ..models.onnx_only import load_model
from ..provenance import git_sha, machine, sha256_file, sha256_json, source_hash, versions
from ..runners import REFERENCE, RUNNERS, create, prebuilt_engine, resolve
from ..runners.artifacts import ArtifactCache
from ..runners.captured import CaptureMismatch, CaptureRunner
from .batch import RunnerBatches, nonfinite_findings
from .capture_checks import batch_invariance, realised_precision
from . import ahead
from .executor import ExecutorSpec, active_runners, release_runners, upcoming_payload
from .folder import RunFolder
from .inputs import case_ref, keep_cases, load_all_cases, load_captures, new_run_id, resolve_pipeline, unit_case
from .tables import CaseParts, lane_table, output_parity, output_table, read_groups, unit_result

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
    engines: list[str] = field(default_factory=list)  # prebuilt TensorRT engines, run as extra runners
    trt_timing_cache: str | None = None
    resume: bool = False  # insist on continuing a run in `out` (the same command re-run continues one anyway)
    overwrite: bool = False  # replace a different run found in `out`
    executor: str | None = None  # serial | local | ray (parity.runs.executor)
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    outputs: list[str] = field(default_factory=list)  # captures: NAME=PATH[,inputs=DIR][,precision=P] (parity.runners.captures)
    onnx_spec: dict | None = None  # {"adapter", "config"}: `checkpoint` is an ONNX-only model (parity.models.onnx_only)


@dataclass
class ReplayResult:
    out: Path
    summary: dict
    exit_code: int


# Modules whose source decides a replay's numbers: a change to any of them is a different run.
CODE = ("metrics", "preprocessing", "runners", "models", "cases", "colour.py", "runs/batch.py", "runs/replay.py", "runs/tables.py",
        "runs/capture_checks.py",
        "runs/schema.py")


def streams_read(case, pipelines) -> dict[str, str | None]:
    """pipeline name -> the stream of `case` it reads (None: none it can read; the case fails there)."""
    out = {}
    for p in pipelines:
        try:
            out[p.name] = p.stream_for(case)
        except CaseError:
            out[p.name] = None
    return out


def replay(cfg: ReplayConfig) -> ReplayResult:
    started = datetime.now(timezone.utc)
    spec = ExecutorSpec.from_options(cfg.executor, cfg.workers, cfg.threads, cfg.ray_address).start()  # workers start beside the set-up
    cases = load_all_cases(cfg.cases)
    ckpt = load_model(cfg.checkpoint, cfg.onnx_spec)
    adapter = ckpt.adapter()
    available = adapter.pipelines()
    pipe_names = cfg.pipelines if isinstance(cfg.pipelines, list) else [p.strip() for p in cfg.pipelines.split(",") if p.strip()]
    if not pipe_names:
        raise UsageError("--pipeline names no pipeline")
    pipelines = [resolve_pipeline(p, available) for p in pipe_names]
    pipe_names = [p.name for p in pipelines]
    if len(set(pipe_names)) < len(pipe_names):
        raise UsageError(f"--pipeline: two pipelines share a name ({', '.join(pipe_names)}); results are keyed by it")
    streams = {c.name: streams_read(c, pipelines) for c in cases}
    for c in cases:
        for p in pipelines:
            stream = streams[c.name][p.name]
            if stream not in (None, "nv12") and p.streams and p.streams[0] == "nv12":  # e.g. a video import (RGB) under the vehicle pipeline
                log.warning("%s: pipeline %s reads the %s stream (the case has no nv12 stream): its YUV matrix, range and chroma "
                            "are not exercised (the stream each pipeline read is in summary.json, provenance.cases)", c.name, p.name, stream)
    names = resolve(cfg.runners)
    if cfg.runners == "auto" and not getattr(ckpt, "has_weights", True):  # what an ONNX-only model can run
        names = [n for n in names if not RUNNERS[n].needs_weights]
    names = [REFERENCE] + [n for n in names if n != REFERENCE]  # parity is measured against it: it runs first
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    cache = ArtifactCache(cfg.cache_dir)
    runners = [create(n, ckpt, cache, trt_timing_cache=cfg.trt_timing_cache) for n in names]  # every runner available, up front
    runners += [prebuilt_engine(p) for p in cfg.engines]
    captures = load_captures(cfg.outputs, [r.name for r in runners], pipelines)
    runners += [CaptureRunner(c) for c in captures]
    runner_names = [r.name for r in runners]

    run_id = new_run_id()
    out = Path(cfg.out) if cfg.out else Path("reports") / run_id
    run_key = sha256_json({
        "kind": "replay", "checkpoint": ckpt.sha256, "runners": runner_names, "engines": [sha256_file(e) for e in cfg.engines],
        "pipelines": [p.to_dict() for p in pipelines], "batch_size": cfg.batch_size, "threads": spec.threads,
        "captures": [c.content_sha256() for c in captures], "code": source_hash(CODE), "versions": versions(),
    })
    describe = {"checkpoint": ckpt.name, "runners": ",".join(runner_names), "pipelines": ",".join(pipe_names)}
    errors: list[dict] = []
    with RunFolder(out, "replay", run_key, resume=cfg.resume, describe=describe, replace=cfg.overwrite) as folder:
        parts = CaseParts(folder, run_key, cases)
        runner_info = folder.recall("runners", {})
        from ..progress import progress, ticking

        bar = progress(sum(len(c) for c in parts.todo) * len(pipelines), "replay", "frame", cfg.progress)
        # Absolute paths: a worker may start elsewhere (a Ray worker's folder is its session's).
        unit = {"checkpoint": os.path.abspath(ckpt.path), "runners": names, "engines": [os.path.abspath(e) for e in cfg.engines], "pipelines": [p.to_dict() for p in pipelines],
                "batch_size": cfg.batch_size, "cache_dir": os.path.abspath(cache.root), "trt_timing_cache": cfg.trt_timing_cache and os.path.abspath(cfg.trt_timing_cache),
                "captures": [c.spec.to_dict() for c in captures], "onnx_spec": cfg.onnx_spec}
        keep_cases(parts.todo)  # a unit run here takes them; a worker loads its own
        try:
            with ticking(bar) as ticks:
                errors = parts.compute(spec, replay_unit, {c.name: {**unit, **case_ref(c)} for c in parts.todo},
                                       lambda case, _piece, result: ticks.finish(case.name, len(case) * len(pipelines)))
        finally:
            ahead.drop()
            release_runners()
        runner_info = parts.runner_info or runner_info
        if parts.runner_info:
            folder.remember("runners", runner_info)
        bar.close()
        exit_code = max([e["exit_code"] for e in errors], default=0)
        # Everything below reads the parts back, whether this run computed them or a killed one did.
        done, by_output, written = parts.collect("frames.parquet")
        results, per_case, gaps = _summarise([(c, read_groups(lt, jt)) for c, lt, jt in done], runner_names, pipe_names, runner_info)
        per_output = output_parity(by_output, ("runner", "pipeline"))
        for r in results:
            r["raw_by_output"] = per_output.get((r["runner"], r["pipeline"]), {})
        capture_runners = [r for r in runners if isinstance(r, CaptureRunner)]
        _add_batch_invariance(results, per_case, batch_invariance(capture_runners, adapter, pipelines))
        summary = {
            "schema": "parity.replay/1",
            "run_id": run_id,
            "started": started.isoformat(),
            "finished": datetime.now(timezone.utc).isoformat(),
            "command": cfg.argv,
            "reused_cases": parts.reused,  # parts a killed or earlier run finished
            "reference": {
                "parity": "dx_*, raw_*, argmax_flip_rate: the runner vs torch fp32 on the same pipeline and input (raw_*: the worst over "
                          "the model's outputs; raw_by_output and outputs.parquet: each output's own)",
                "accuracy": "ground truth on labelled frames (TuSimple accuracy/FP/FN; CULane-style F1 at IoU 0.5 and 0.3)",
                "bending_jitter": "gt where a case has GT on every frame in the model's lane slots, else torch fp32 on the training pipeline if run, else on the same pipeline (per result: bending_jitter_reference)",
            },
            "provenance": {
                "git_sha": git_sha(),
                "versions": versions(),
                "machine": machine(),
                "checkpoint": {"path": str(ckpt.path), "sha256": ckpt.sha256, "name": ckpt.name, "method": ckpt.meta.get("method")},
                "cases": {
                    c.name: {
                        "path": os.path.abspath(c.root), "sha256": c.content_hash(), "frames": len(c),
                        "labelled_frames": int(c.labelled.sum()) if c.labelled is not None else 0,
                        "model_rows": adapter.anchor_rows(c.height).tolist(),
                        "streams": streams[c.name],
                    }
                    for c in cases
                },
                "pipelines": {p.name: p.to_dict() for p in pipelines},
                "runners": runner_info,
            },
            "results": results,
            "pipeline_gap": gaps,
            "per_case": per_case,
            "errors": errors,
        }
        summary["findings"] = nonfinite_findings(summary["results"]) + realised_precision(capture_runners, summary["results"])
        summary["files"] = written + ["summary.json"]
        if summary["findings"]:
            exit_code = max(exit_code, 1)
        atomic.write_json(out / "summary.json", summary)
        folder.finish(summary["files"])
    return ReplayResult(out, summary, exit_code)


def replay_unit(payload: dict) -> dict:
    """One case through every runner on every pipeline (the unit every executor runs): its lane
    table, jitter rows and the provenance of the runners that made them."""
    from ..preprocessing.pipeline import Pipeline

    ckpt, runners = active_runners(payload["checkpoint"], payload["runners"], payload["cache_dir"], payload["engines"],
                                   payload["trt_timing_cache"], payload.get("captures", ()), payload.get("onnx_spec"))
    pipelines = [Pipeline.from_dict(p) for p in payload["pipelines"]]
    prepared = ahead.take(payload["case"], payload["case_sha256"])
    case = unit_case(payload["case"], payload["case_sha256"])
    tables, jitter_rows, outputs = _replay_case(case, ckpt, ckpt.adapter(), pipelines, runners, payload["batch_size"], prepared)
    return unit_result(tables, jitter_rows, outputs, runners)


def _replay_case(case, ckpt, adapter, pipelines, runners, batch_size, prepared: dict) -> tuple[list, list[dict], list]:
    """Every runner on every pipeline for one case: its lane tables, jitter rows and per-output parity tables.
    `prepared`: batches prepared ahead (runs.ahead); the next unit's are begun once this case's inference is done."""
    rows = adapter.anchor_rows(case.height)
    gt = resample_rows(case.gt, case.anchor_rows, rows) if case.gt is not None else None  # as a bending/jitter reference
    mpp = metres_per_pixel(case.meta.get("camera"), rows, case.width)
    outputs: dict[tuple[str, str], object] = {}
    for pipe in pipelines:
        pipe_spec = pipe.to_dict()
        spec_sha = sha256_json(pipe_spec)
        fed = [r for r in runners if not isinstance(r, CaptureRunner) or r.covers(spec_sha)]
        batches = RunnerBatches(fed, adapter, case.width)
        pkey = ahead.pipeline_key(pipe_spec)
        for start in range(0, len(case), batch_size):
            idx = np.arange(start, min(start + batch_size, len(case)))
            x = prepared.pop((pkey, start, int(idx[-1]) + 1), None)
            try:
                batches.feed(pipe.prepare(case, idx) if x is None else x)
            except CaptureMismatch as exc:
                raise capture_mismatch(exc, next(r for r in fed if r.name == exc.capture), case, pipe.name, spec_sha, idx) from None
            tick(case.name, len(idx))
        for name, o in batches.outputs().items():
            outputs[(name, pipe.name)] = o
    ahead.start(upcoming_payload())
    lanes = {k: o.x for k, o in outputs.items()}
    tables, jitter_rows, by_output = [], [], []
    frames_all = np.arange(len(case))
    for (rname, pname), o in outputs.items():
        by_output.append(output_table(case.name, frames_all, case.timestamps, rname, pname, ckpt.name, o.raw_by_output))
        ref_name, metric_ref = scoring.metric_reference(case, adapter, lanes, rname, pname, gt)
        sc = scoring.score(case, o.x, frames_all, case.timestamps, lanes[(REFERENCE, pname)], metric_ref, ref_name, rows, mpp)
        sc.frame_cols.update(o.raw, nonfinite=o.nonfinite)
        tables.append(lane_table(case.name, frames_all, case.timestamps, rname, pname, ckpt.name, adapter.lane_names,
                                 o.x, sc.lane_cols, sc.frame_cols, o.ms, parity_reference=f"{REFERENCE}@{pname}",
                                 bending_jitter_reference=ref_name))
        for row in sc.jitter_rows:
            jitter_rows.append({"checkpoint": ckpt.name, "case": case.name, "runner": rname, "pipeline": pname,
                                "perturbation": "none", "severity": 0, "lane_name": adapter.lane_names[row["lane"]],
                                "reference": ref_name, **row})
    return tables, jitter_rows, by_output


def capture_mismatch(exc, runner, case, pipeline: str, spec_sha: str, idx):
    """The CaptureMismatch of one batch as a one-line refusal naming the case and the first frame that differs."""
    frame = int(idx[exc.rows[0]])
    expected = runner.capture.manifest.expected(case.name, spec_sha)
    if frame in expected:
        why = (f"its input differs from the one exported (sha256 {exc.hashes[0][:12]} here, {expected[frame][:12]} in "
               f"{runner.capture.manifest.path}): the case or the pipeline changed since the export")
    else:
        why = f"{runner.capture.manifest.path} has no frame {frame} of {case.name} on this pipeline"
    return CaptureError(f"capture {exc.capture!r} ({runner.capture.path}) was made from other inputs: case {case.name} frame {frame} "
                        f"({pipeline} pipeline): {why}; export the inputs again and capture again")


def _add_batch_invariance(results, per_case, found: dict) -> None:
    """The probes' figures on the rows of their case x runner x pipeline, and each runner's worst over cases."""
    for row in per_case:
        row.update(found.get((row["case"], row["runner"], row["pipeline"]), {}))
    for r in results:
        vals = [v for (c, rn, pn), v in found.items() if rn == r["runner"] and pn == r["pipeline"]]
        if vals:
            for k in ("batch_variance_raw_max", "batch_variance_dx_max_px"):
                r[k] = max(v[k] for v in vals)


def _summarise(per_case_groups, runner_names, pipe_names, runner_info):
    """(results per runner x pipeline, per-case aggregates, pipeline gaps) from the parts' scored groups."""
    per_key: dict[tuple[str, str], list] = {}
    preds: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    times: dict[tuple[str, str], float] = {}
    per_case = []
    for case, groups in per_case_groups:
        lanes = {(k[1], k[2]): g["x"] for k, g in groups.items()}
        gaps = _case_pipeline_gaps(lanes)
        for pname in pipe_names:
            for rname in runner_names:
                g = groups.get((case.name, rname, pname, "none", 0))
                if g is None:
                    continue
                key = (rname, pname)
                item = {"x": g["x"], "dx_ref": lanes[(REFERENCE, pname)], "scored": g["scored"], "case": case.name,
                        "frames": g["frames"], "lane_names": g["lane_names"]}
                per_key.setdefault(key, []).append(item)
                preds.setdefault(key, {})[case.name] = g["x"]
                times[key] = times.get(key, 0.0) + float(np.nansum(g["infer_ms"])) / 1e3
                per_case.append({"case": case.name, "runner": rname, "pipeline": pname, "frames": len(g["x"]),
                                 **scoring.aggregate([item]), **gaps.get(key, {})})
    results = []
    for (rname, pname), items in per_key.items():
        frames = sum(len(i["x"]) for i in items)
        results.append({"runner": rname, "pipeline": pname, "label": runner_info.get(rname, {}).get("label", rname), "frames": frames,
                        **scoring.aggregate(items), "fps": frames / times[(rname, pname)] if times[(rname, pname)] > 0 else float("nan")})
    return results, per_case, _pipeline_gap(preds, pipe_names)


def _case_pipeline_gaps(lanes: dict) -> dict[tuple[str, str], dict]:
    """(runner, "vehicle") -> pipeline_gap_{mean,p99,max}_px of one case: the runner's lanes on the
    vehicle vs the training pipeline (only where the run has both)."""
    out = {}
    for (rname, pname), x in lanes.items():
        if pname == "vehicle" and (rname, "training") in lanes:
            d = lateral_difference(x.ravel(), lanes[(rname, "training")].ravel())
            out[(rname, pname)] = {f"pipeline_gap_{k}": d[k] for k in ("mean_px", "p99_px", "max_px")}
    return out


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


DELTA_COLUMNS = (
    ("runner", "runner", "<10", None), ("pipeline", "pipeline", "<9", None),
    ("bend+ p99", "added_bend_p99_px", ">9", ".3f"), ("bend+ mean", "added_bend_mean_px", ">10", ".4f"),
    ("kinks+", "added_kink_rate", ">7", ".3%"),
    ("jit+ near", "added_jitter_rms_near", ">9", ".4f"), ("mid", "added_jitter_rms_mid", ">6", ".4f"),
    ("far", "added_jitter_rms_far", ">6", ".4f"), ("p95 near", "added_jitter_p95_near", ">8", ".4f"),
    ("flicker+ Hz", "added_flicker_hz", ">11", ".4f"),
)


def format_deltas(summary: dict) -> list[str]:
    """The deployment deltas of every runner but torch: what the deployed form adds to the lanes over
    torch fp32 on the same frames and pipeline (no GT needed)."""
    rows = [r for r in summary["results"] if r["runner"] != REFERENCE]
    if not rows:
        return []

    def f(v, fmt):
        if fmt is None:
            return str(v)
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    head = " ".join(format(h, a) for h, _, a, _ in DELTA_COLUMNS)
    lines = ["deployment deltas: what each deployed form adds over torch fp32 on the same frames and pipeline (GT not needed)",
             head, "-" * len(head)]
    lines += [" ".join(format(f(r.get(k), fmt), a) for _, k, a, fmt in DELTA_COLUMNS) for r in rows]
    lines.append("bend+: excess chord deviation over torch's per lane-frame (px; kinks+: lane-frames where it exceeds 20 px at 1280 wide); "
                 "jit+: RMS frame-to-frame change of x_runner - x_torch at near/mid/far rows (px per frame), p95 near its 95th "
                 "percentile; flicker+: lane existence changes torch does not make, per second")
    return lines


def has_gt(summary: dict) -> bool:
    """Whether any case of a replay carries GT on some frame (without, the deployment deltas lead)."""
    return any(c.get("labelled_frames", 0) for c in ((summary.get("provenance") or {}).get("cases") or {}).values())


def format_outputs(summary: dict) -> list[str]:
    """Raw parity of each named output on its own, for models with more than one (the main table's
    flips and the raw_* figures are the worst over outputs)."""
    rows = [(r, name, o) for r in summary["results"] if r["runner"] != REFERENCE and len(r.get("raw_by_output", {})) > 1
            for name, o in r["raw_by_output"].items()]
    if not rows:
        return []

    def f(v, fmt):
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)

    lines = ["raw parity per output vs torch fp32 (same pipeline and input): max / p99 (mean over frames) / cosine min / argmax flips / NaN frames"]
    for r, name, o in rows:
        lines.append(f"  {r['runner']:<10} {r['pipeline']:<9} {name:<12} max {f(o['raw_max'], '.3g'):>8}  p99 {f(o['raw_p99'], '.3g'):>8}  "
                     f"cos {f(o['raw_cosine_min'], '.6f'):>8}  flips {f(o['argmax_flip_rate'], '.5f'):>7}  nonfin {o['nonfinite_frames']}")
    return lines


def format_table(summary: dict) -> str:
    """The per-runner table printed at the end of a replay."""
    cols = [
        ("runner", "runner", "<10", None), ("pipeline", "pipeline", "<9", None), ("frames", "frames", ">6", None),
        ("acc", "accuracy", ">6", ".4f"), ("F1", "f1_50", ">6", ".4f"),
        ("dx mean", "dx_ref_mean_px", ">7", ".3f"), ("dx p99", "dx_ref_p99_px", ">6", ".2f"), ("dx max", "dx_ref_max_px", ">6", ".2f"),
        ("flips", "argmax_flip_rate", ">7", ".5f"), ("bend", "bend_mean_px", ">5", ".2f"), ("bend99", "bend_p99_px", ">6", ".2f"),
        ("kink%", "kink_rate", ">6", ".2%"),
        ("jit near", "jitter_rms_near", ">8", ".3f"), ("mid", "jitter_rms_mid", ">5", ".3f"), ("far", "jitter_rms_far", ">5", ".3f"),
        ("osc Hz", "jitter_oscillation_hz_near", ">6", ".2f"), ("nonfin", "nonfinite_rate", ">6", ".3f"), ("fps", "fps", ">6", ".0f"),
    ]

    def f(v, fmt):
        if fmt is None:
            return str(v)
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    head = " ".join(format(h, a) for h, _, a, _ in cols)
    lines = [head, "-" * len(head)]
    for r in summary["results"]:
        lines.append(" ".join(format(f(r.get(k), fmt), a) for _, k, a, fmt in cols))
    refs = sorted({x for r in summary["results"] for x in r.get("bending_jitter_reference", [])})
    lines += [
        "acc: TuSimple accuracy; F1: CULane F1 at IoU 0.5 (both vs GT on labelled frames, official rules)",
        "dx: lateral difference vs torch fp32 on the same pipeline (px, source image); flips: row-anchor argmax flips vs torch",
        f"bend: excess chord deviation per lane-frame (px; bend99 its p99, kink%: lane-frames with a kink > 20 px at 1280 wide); "
        f"jit: RMS frame-to-frame swing of the residual at near/mid/far rows (px per frame); osc: swings per second (near). "
        f"Reference for bend/jitter: {', '.join(refs) or '-'}",
        "fps: runner inference alone (no preprocessing), batches of the run's --batch-size",
    ]
    if has_gt(summary):
        lines += ["", *format_deltas(summary), ""]
    else:  # no GT anywhere (drive logs): the deltas lead
        lines = [*format_deltas(summary), "", "(no case has GT: accuracy and F1 are absent)", "", *lines, ""]
    if per_output := format_outputs(summary):
        lines += [*per_output, ""]
    labels = {r["runner"]: r["label"] for r in summary["results"]}
    for name, label in labels.items():
        lines.append(f"  {name}: {label}")
    for g in summary.get("pipeline_gap", []):
        d = g["vehicle_vs_training"]
        lines.append(
            f"pipeline gap ({g['runner']}, vehicle vs training): mean {f(d['mean_px'], '.2f')} px, p99 {f(d['p99_px'], '.2f')} px, "
            f"max {f(d['max_px'], '.2f')} px, existence differs at {f(d['existence_disagreement'], '.4f')} of points"
        )
    for r in summary["results"]:
        w = r.get("bend_worst")
        if w:
            lines.append(f"worst bend ({r['runner']}, {r['pipeline']}): {w['px']:.1f} px at {w['case']} frame {w['frame']} lane {w['lane']} row {w['row']}")
    for f_ in summary.get("findings", []):
        lines.append(f"FINDING: {f_}")
    for e in summary.get("errors", []):
        lines.append(f"FAILED case {e['case']}: {e['error']}")
    return "\n".join(lines)
