"""Baselines: the metrics of a trusted replay, per case x runner x pipeline and overall, with where
they came from, so a later run can be gated against them (`parity baseline`, `parity gate`).

A baseline is read from a finished replay's summary.json: its `per_case` aggregates (the same
`scoring.aggregate` as the run's own table, one case at a time), its run-level `results` and
pipeline gaps, and its provenance (checkpoint, runner artifacts and labels, case hashes and frame
counts, pipeline specs, versions, machine). Values that could not be computed are stored as null
and read back as NaN.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import atomic
from ..errors import UsageError
from ..provenance import git_sha
from ..runs.tables import read_document, read_summary

SCHEMA = "parity.baseline/1"


@dataclass(frozen=True)
class Gated:
    """A metric a gate can check: its direction, unit, meaning, family and the range a real value
    lies in (a baseline or tolerance outside it is refused when read)."""

    higher_is_better: bool
    unit: str
    meaning: str
    family: str
    upper: float  # the largest value the metric can honestly take
    needs_gt: bool = False  # absent wherever the case has no labelled frame (then "absent in both" is no finding)
    optional: str | None = None  # why "absent in both" is not applicable (measured only where the run has what it needs)


PX_MAX = 1e5  # lateral px: no camera is 100,000 px wide
HZ_MAX = 1e3  # per-second rates: no camera records at 1 kHz

# Families: what a failure means. "deployment" families compare the deployed form with torch fp32 on
# the same frames and pipeline (the engine's own effect); "model" families compare with GT (the
# model's quality); "preprocessing" compares the vehicle with the training pipeline.
FAMILIES = {
    "added-bend": ("deployment", "bend the deployed form adds over torch fp32"),
    "added-jitter": ("deployment", "left-right swing the deployed form adds over torch fp32"),
    "added-flicker": ("deployment", "lane existence flicker the deployed form adds over torch fp32"),
    "parity": ("deployment", "lateral difference from torch fp32"),
    "nonfinite": ("deployment", "NaN/Inf outputs"),
    "batch-invariance": ("deployment", "the same frame gives other outputs at other positions of a batch"),
    "pipeline-gap": ("preprocessing", "vehicle vs training preprocessing, same runner"),
    "accuracy": ("model", "accuracy vs GT"),
    "bend": ("model", "bend vs GT"),
    "jitter": ("model", "jitter vs GT"),
    "drift": ("baseline", "lanes moved from the baseline run's own lanes"),
}
# An engine gate cannot be configured out of these: a rules file leaving one without a rule is refused.
REQUIRED_FAMILIES = ("added-bend", "added-jitter", "added-flicker", "parity", "nonfinite")

_NO_LANES = "the baseline keeps no lanes (made before baselines kept them: make it again with `parity baseline`)"
GATED = {
    "added_bend_p99_px": Gated(False, "px", "bend the runner adds over torch fp32 (same frames and pipeline), p99 over lane-frames", "added-bend", PX_MAX),
    "added_kink_rate": Gated(False, "", "share of lane-frames where the runner adds a kink (> 20 px at 1280 wide) over torch fp32", "added-bend", 1.0),
    "added_jitter_rms_near": Gated(False, "px/frame", "RMS frame-to-frame change of x_runner - x_torch, near row", "added-jitter", PX_MAX),
    "added_jitter_rms_mid": Gated(False, "px/frame", "RMS frame-to-frame change of x_runner - x_torch, mid row", "added-jitter", PX_MAX),
    "added_jitter_rms_far": Gated(False, "px/frame", "RMS frame-to-frame change of x_runner - x_torch, far row", "added-jitter", PX_MAX),
    "added_flicker_hz": Gated(False, "Hz", "lane existence changes torch fp32 does not make, per second", "added-flicker", HZ_MAX),
    "dx_ref_p99_px": Gated(False, "px", "lateral difference vs torch fp32 on the same pipeline, p99 over points", "parity", PX_MAX),
    "dx_ref_max_px": Gated(False, "px", "lateral difference vs torch fp32 on the same pipeline, max", "parity", PX_MAX),
    "nonfinite_rate": Gated(False, "", "share of frames with NaN/Inf output", "nonfinite", 1.0),
    "batch_variance_dx_max_px": Gated(False, "px", "largest lateral spread of one frame's lanes over the rows of a batch repeating it "
                                      "(a capture's batch-invariance probe; inf: a lane lost in some row)", "batch-invariance", PX_MAX,
                                      optional="neither run holds a batch-invariance probe for this runner (parity export-inputs "
                                               "--invariance-probe)"),
    "pipeline_gap_p99_px": Gated(False, "px", "the same runner on the vehicle vs the training pipeline, p99 (vehicle rows only)", "pipeline-gap", PX_MAX,
                                 optional="neither run has this runner on both the vehicle and the training pipeline"),
    "accuracy": Gated(True, "", "TuSimple accuracy vs GT (labelled frames)", "accuracy", 1.0, needs_gt=True),
    "f1_50": Gated(True, "", "CULane F1 at IoU 0.5 vs GT", "accuracy", 1.0, needs_gt=True),
    "bend_p99_px": Gated(False, "px", "bend (excess chord deviation over GT) p99 over lane-frames", "bend", PX_MAX),
    "kink_rate": Gated(False, "", "share of lane-frames with a kink", "bend", 1.0),
    "jitter_rms_near": Gated(False, "px/frame", "RMS frame-to-frame swing of the residual to GT, near row", "jitter", PX_MAX),
    "jitter_rms_mid": Gated(False, "px/frame", "RMS frame-to-frame swing of the residual to GT, mid row", "jitter", PX_MAX),
    "jitter_rms_far": Gated(False, "px/frame", "RMS frame-to-frame swing of the residual to GT, far row", "jitter", PX_MAX),
    "jitter_oscillation_hz_near": Gated(False, "Hz", "left-right swings per second, near row", "jitter", HZ_MAX),
    # The candidate's lanes against the baseline's own (parity.decisions.baseline_lanes); 0 in the baseline.
    **{m: Gated(False, unit, meaning, "drift", upper, optional=_NO_LANES) for m, unit, meaning, upper in (
        ("drift_mean_px", "px", "mean |x_candidate - x_baseline| over the lane points both runs have", PX_MAX),
        ("drift_p99_px", "px", "p99 of |x_candidate - x_baseline| over the lane points both runs have", PX_MAX),
        ("drift_max_px", "px", "largest |x_candidate - x_baseline| over the lane points both runs have", PX_MAX),
        ("drift_existence_rate", "", "share of lane points one run has and the other does not (either direction)", 1.0))},
}
OVERALL = "*"  # the case name of run-level entries
ONLY_ON = {"pipeline_gap_p99_px": "vehicle"}  # metrics defined on one pipeline only (the gap is stored on the vehicle rows)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


@dataclass
class RunView:
    """What a gate compares: metrics per (case, runner, pipeline), the case hashes and frame counts,
    the cases that failed, and the provenance, from a replay's summary or a baseline file."""

    source: str
    entries: dict  # (case, runner, pipeline) -> {"frames": int, metric: float}
    cases: dict  # case -> {"sha256": str, "frames": int}
    errors: dict  # case -> error message
    provenance: dict
    lanes: tuple | None = None  # a baseline's own lanes (keys, x), parity.decisions.baseline_lanes
    drift_worst: list | None = None  # a candidate's: the lane-frames farthest from a baseline's lanes, once compared

    @property
    def runners(self) -> list[str]:
        return sorted({k[1] for k in self.entries})

    @property
    def pipelines(self) -> list[str]:
        return sorted({k[2] for k in self.entries})


def _metrics(row: dict) -> dict:
    return {m: _num(row.get(m)) for m in GATED}


def read_replay(folder: str | os.PathLike) -> RunView:
    """A finished replay folder as a RunView."""
    doc = read_summary(folder, ("parity.replay/1",))
    path = Path(folder) / "summary.json"
    if "per_case" not in doc:
        raise UsageError(f"{path}: no per-case results (made by an older parity); replay again")
    entries = {}
    for r in doc["per_case"]:
        entries[(r["case"], r["runner"], r["pipeline"])] = {"frames": int(r["frames"]), **_metrics(r)}
    gaps = {g["runner"]: g["vehicle_vs_training"].get("p99_px") for g in doc.get("pipeline_gap", [])}
    for r in doc["results"]:
        m = _metrics(r)
        m["pipeline_gap_p99_px"] = _num(gaps.get(r["runner"])) if r["pipeline"] == "vehicle" else float("nan")
        entries[(OVERALL, r["runner"], r["pipeline"])] = {"frames": int(r["frames"]), **m}
    prov = doc["provenance"]
    cases = {n: {"sha256": c["sha256"], "frames": int(c["frames"]), "path": c.get("path"),
                 "labelled_frames": int(c.get("labelled_frames") or 0)} for n, c in prov["cases"].items()}
    errors = {e["case"]: e["error"] for e in doc.get("errors", [])}
    return RunView(str(folder), entries, cases, errors, prov)


def make_baseline(run: str | os.PathLike, name: str) -> dict:
    """The baseline document of a finished replay: refused if a case failed (it would have no entries)."""
    view = read_replay(run)
    if view.errors:
        first = next(iter(view.errors.items()))
        raise UsageError(f"{run}: {len(view.errors)} case(s) failed (first: {first[0]}: {first[1]}); a baseline needs a complete run")
    prov = view.provenance
    entries = []
    for (case, runner, pipeline), m in sorted(view.entries.items()):
        entries.append({"case": case, "runner": runner, "pipeline": pipeline, **m})
    return {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(),
        "source_run": str(run),
        "made_by": {"git_sha": git_sha()},
        "provenance": {
            "run_git_sha": prov.get("git_sha"),
            "versions": prov.get("versions"),
            "machine": prov.get("machine"),
            "checkpoint": {**(prov.get("checkpoint") or {}), "path": _portable((prov.get("checkpoint") or {}).get("path"))},
            "runners": {k: {kk: v[kk] for kk in v if kk != "name"} for k, v in prov.get("runners", {}).items()},
            "pipelines": prov.get("pipelines"),
            "cases": {n: {"sha256": c["sha256"], "frames": c["frames"], "labelled_frames": c["labelled_frames"], "path": _portable(c.get("path"))}
                      for n, c in view.cases.items()},
        },
        "metrics": {m: {"higher_is_better": g.higher_is_better, "unit": g.unit, "meaning": g.meaning, "family": g.family} for m, g in GATED.items()},
        "entries": entries,
    }


def _portable(path: str | None) -> str | None:
    """A case path relative to the working folder when it lies under it, so a committed baseline
    names the same cases on every clone."""
    if not path:
        return path
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(os.getcwd())).as_posix()
    except ValueError:
        return path


def write_baseline(run: str | os.PathLike, out: str | os.PathLike, name: str | None = None) -> dict:
    """The baseline JSON at `out` and its run's lanes beside it (`<stem>.lanes.npz`)."""
    from .baseline_lanes import lanes_path, write_lanes

    doc = make_baseline(run, name or Path(out).stem)
    doc["lanes"] = write_lanes(run, lanes_path(out))
    atomic.write_json(out, doc)
    return doc


def load_baseline(path: str | os.PathLike) -> RunView:
    """A baseline file as a RunView; every problem names the file and the field."""
    p = Path(path)
    doc = read_document(p, (SCHEMA,), f"no such baseline file (make one with `parity baseline --run DIR --out {p}`)", " baseline")
    prov = doc.get("provenance")
    if not isinstance(prov, dict) or not isinstance(prov.get("cases"), dict) or not isinstance(doc.get("entries"), list):
        raise UsageError(f"{p}: needs 'provenance.cases' (an object) and 'entries' (a list)")
    cases = {}
    for n, c in prov["cases"].items():
        if not isinstance(c, dict) or not isinstance(c.get("sha256"), str) or not _count(c.get("frames")):
            raise UsageError(f"{p}: provenance.cases.{n} needs 'sha256' (a string) and 'frames' (a non-negative integer)")
        if "labelled_frames" in c and not (_count(c["labelled_frames"]) and c["labelled_frames"] <= c["frames"]):
            raise UsageError(f"{p}: provenance.cases.{n}.labelled_frames must be an integer in [0, frames], got {c['labelled_frames']!r}")
        cases[n] = {**c, "labelled_frames": c.get("labelled_frames", c["frames"])}
    entries = {}
    for i, e in enumerate(doc["entries"]):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("case", "runner", "pipeline")):
            raise UsageError(f"{p}: entries[{i}] needs 'case', 'runner' and 'pipeline' strings")
        if not _count(e.get("frames")):
            raise UsageError(f"{p}: entries[{i}].frames must be a non-negative integer, got {e.get('frames')!r}")
        vals = {m: _checked_value(p, f"entries[{i}].{m}", m, e.get(m)) for m in GATED}
        key = (e["case"], e["runner"], e["pipeline"])
        if key in entries:
            raise UsageError(f"{p}: entries[{i}] repeats {key}")
        entries[key] = {"frames": e["frames"], **vals}
    lanes = None
    if doc.get("lanes") is not None:
        from .baseline_lanes import DRIFT, read_lanes

        if not isinstance(doc["lanes"], dict):
            raise UsageError(f"{p}: lanes must be an object (file, sha256), got {type(doc['lanes']).__name__}")
        lanes = read_lanes(p, doc["lanes"])
        kept = set(zip(lanes[0].case, lanes[0].runner, lanes[0].pipeline))
        kept |= {(OVERALL, r, q) for _, r, q in kept}
        for key, v in entries.items():  # the baseline's lanes against themselves
            if key in kept:
                v.update({m: 0.0 for m in DRIFT})
    return RunView(str(p), entries, cases, {}, prov, lanes)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def _checked_value(path, field: str, metric: str, v) -> float:
    """A stored baseline value: null is absent (NaN); anything else must be a finite number in the
    metric's range. A baseline is what every candidate is held to, so a value outside it (a NaN, an
    Inf, a negative px, a 1e300 that makes every candidate pass) is refused, not believed."""
    if v is None:
        return float("nan")
    g = GATED[metric]
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(float(v))
    except OverflowError:
        ok = False
    if not ok:
        raise UsageError(f"{path}: {field} must be a finite number or null, got {str(v)[:40]!r}")
    if not 0.0 <= float(v) <= g.upper:
        raise UsageError(f"{path}: {field} = {float(v):.6g} is outside the metric's range [0, {g.upper:g}]"
                         + (f" {g.unit}" if g.unit else ""))
    return float(v)
