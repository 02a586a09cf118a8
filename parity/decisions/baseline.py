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

# What a gate can check: metric -> (higher is better, unit, meaning). Names are the run's own.
GATED = {
    "accuracy": (True, "", "TuSimple accuracy vs GT (labelled frames)"),
    "f1_50": (True, "", "CULane F1 at IoU 0.5 vs GT"),
    "dx_ref_p99_px": (False, "px", "lateral difference vs torch fp32 on the same pipeline, p99 over points"),
    "dx_ref_max_px": (False, "px", "lateral difference vs torch fp32 on the same pipeline, max"),
    "bend_p99_px": (False, "px", "bend (excess chord deviation) p99 over lane-frames"),
    "kink_rate": (False, "", "share of lane-frames with a kink"),
    "jitter_rms_near": (False, "px/frame", "RMS frame-to-frame swing of the residual, near row"),
    "jitter_rms_mid": (False, "px/frame", "RMS frame-to-frame swing of the residual, mid row"),
    "jitter_rms_far": (False, "px/frame", "RMS frame-to-frame swing of the residual, far row"),
    "jitter_oscillation_hz_near": (False, "Hz", "left-right swings per second, near row"),
    "nonfinite_rate": (False, "", "share of frames with NaN/Inf output"),
    "pipeline_gap_p99_px": (False, "px", "the same runner on the vehicle vs the training pipeline, p99 (vehicle rows only)"),
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
    cases = {n: {"sha256": c["sha256"], "frames": int(c["frames"]), "path": c.get("path")} for n, c in prov["cases"].items()}
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
            "cases": {n: {"sha256": c["sha256"], "frames": c["frames"], "path": _portable(c.get("path"))} for n, c in view.cases.items()},
        },
        "metrics": {m: {"higher_is_better": h, "unit": u, "meaning": d} for m, (h, u, d) in GATED.items()},
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
    doc = make_baseline(run, name or Path(out).stem)
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
        if not isinstance(c, dict) or not isinstance(c.get("sha256"), str) or not isinstance(c.get("frames"), int):
            raise UsageError(f"{p}: provenance.cases.{n} needs 'sha256' (a string) and 'frames' (an integer)")
        cases[n] = c
    entries = {}
    for i, e in enumerate(doc["entries"]):
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("case", "runner", "pipeline")):
            raise UsageError(f"{p}: entries[{i}] needs 'case', 'runner' and 'pipeline' strings")
        if not isinstance(e.get("frames"), int):
            raise UsageError(f"{p}: entries[{i}].frames must be an integer")
        vals = {}
        for m in GATED:
            v = e.get(m)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v)):
                raise UsageError(f"{p}: entries[{i}].{m} must be a number or null, got {v!r}")
            vals[m] = _num(v)
        key = (e["case"], e["runner"], e["pipeline"])
        if key in entries:
            raise UsageError(f"{p}: entries[{i}] repeats {key}")
        entries[key] = {"frames": e["frames"], **vals}
    return RunView(str(p), entries, cases, {}, prov)
