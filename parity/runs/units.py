"""Evaluation units: one checkpoint x case x runner x pipeline x perturbation x severity, scored once
and cached by content.

A unit's result is a set of sufficient statistics (sum and count of each metric over the case's
window), so any aggregate over cases, and every bootstrap resample of cases, is exact without the
frames (parity.decisions.bootstrap). Its key holds everything that decides the numbers: the weights'
hash, the case's content hash, the pipeline's spec, the runner and the versions of the libraries it
runs on, the perturbation (name, values, severity, seed), the window, and the source of every module
that computes the result (`code_version`). A changed byte in any of them is a different unit.

Cost: preprocessing does not depend on the checkpoint, so each case x condition is prepared once
and fed to every checkpoint that still misses a unit there; a fully cached condition is not even
decoded, and the prepared inputs are kept on disk (parity.runs.prepared) for the checkpoint added next.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..cases.lanes import resample_rows
from ..metrics import scoring
from ..metrics.lateral import metres_per_pixel
from ..preprocessing import perturb
from ..provenance import sha256_json, source_hash, versions
from ..runners import REFERENCE
from .batch import RunnerBatches

# What a unit records: metric -> (sum, count); the per-case value is sum / count (NaN at count 0).
RATIO_METRICS = (
    "accuracy", "fp", "fn", "f1", "bend_px", "kink_rate", "dx_torch_px", "argmax_flip_rate", "nonfinite_rate",
    "jitter_rms_near", "jitter_rms_mid", "jitter_rms_far", "oscillation_hz_near",
)
MAX_METRICS = ("dx_torch_max_px",)
# The modules whose source decides a unit's numbers (not the CLI, the ranking statistics or training).
_CODE = ("metrics", "preprocessing", "runners", "models", "cases", "colour.py", "runs/units.py", "runs/batch.py", "runs/windows.py")
_LIBS = ("numpy", "torch", "onnx", "onnxruntime", "onnxconverter-common", "opencv-python-headless", "pillow")


def code_version() -> str:
    return source_hash(_CODE)


@dataclass(frozen=True)
class Condition:
    pipeline: str
    perturbation: str = "none"
    severity: int = 0

    @property
    def clean(self) -> bool:
        return self.perturbation == "none"


class UnitCache:
    """One small JSON file per unit under `<root>/<folder>/`, written atomically (an interrupted rank
    leaves only whole units, so a rerun resumes where it stopped)."""

    def __init__(self, root: str | os.PathLike, folder: str = "units"):
        self.root = Path(root) / folder
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):  # absent, or not ours: recompute
            return None
        return rec if isinstance(rec, dict) and rec.get("key") == key else None

    def put(self, key: str, record: dict) -> None:
        atomic.write_json(self.path(key), {**record, "key": key})


class UnitKeys:
    """Content keys of units; what is shared by many units is hashed once."""

    def __init__(self, seed: int, window_s: float | None, threads: int | None = None):
        v = versions()
        # threads: torch's CPU kernels sum in a thread-count-dependent order (parity.runs.executor)
        self.base = {"code": code_version(), "libs": {k: v.get(k) for k in _LIBS}, "seed": seed, "window_s": window_s, "threads": threads}
        self._case: dict[str, str] = {}

    def case_hash(self, case) -> str:
        if case.name not in self._case:
            self._case[case.name] = case.content_hash()
        return self._case[case.name]

    def key(self, ckpt_sha: str, case, runner: str, pipe_spec: dict, pert_spec: dict | None, severity: int, window: tuple[int, int]) -> str:
        return sha256_json({**self.base, "checkpoint": ckpt_sha, "case": self.case_hash(case), "runner": runner,
                            "pipeline": pipe_spec, "perturbation": pert_spec, "severity": severity, "window": list(window)})[:32]

    def prepared_key(self, case, pipe_spec: dict, pert_spec: dict | None, severity: int, frames, batch_size: int) -> str:
        """The key of a case x condition's prepared inputs (parity.runs.prepared): what decides them, not the checkpoint."""
        base = {k: self.base[k] for k in ("code", "libs", "seed")}
        return sha256_json({**base, "case": self.case_hash(case), "pipeline": pipe_spec, "perturbation": pert_spec,
                            "severity": severity, "frames": [int(f) for f in frames], "batch_size": batch_size})[:32]


def perturbation_spec(p) -> dict | None:
    return None if p is None else {"name": p.name, "family": p.family, "stage": p.stage, "values": [str(v) for v in p.values]}


def prepare_condition(case, frames: np.ndarray, pipe, pert, severity: int, seed: int, batch_size: int):
    """(batches of model input, output slots, their timestamps) for a window of `case` under one condition."""
    applied = perturb.Applied(pert, severity, seed, case.name)
    ppipe = applied.pipeline(pipe)
    fed, ts = applied.schedule(case.timestamps)
    keep = fed[frames] >= 0
    slots, src = frames[keep], fed[frames][keep]
    hooks = applied.hooks()
    batches = [ppipe.prepare(case, src[s : s + batch_size], hooks=hooks) for s in range(0, len(src), batch_size)]
    return batches, slots, ts[slots]


def _pair(values: np.ndarray) -> list[float]:
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    return [float(v.sum()), int(v.size)]


def unit_record(case, adapter, o, torch_x: np.ndarray, slots: np.ndarray, ts: np.ndarray, with_f1: bool) -> dict:
    """Sufficient statistics of one runner's outputs `o` (RunnerOutputs) on one case window."""
    rows = adapter.anchor_rows(case.height)
    if scoring.gt_usable_for_tracking(case, adapter):
        ref_name, ref = "gt", resample_rows(case.gt, case.anchor_rows, rows)[slots]
    else:  # the same for every checkpoint, so a ranking stays fair: absolute bending and swing
        ref_name, ref = "absolute (no full GT)", np.zeros_like(o.x)
    mpp = metres_per_pixel(case.meta.get("camera"), rows, case.width)
    sc = scoring.score(case, o.x, slots, ts, o.x if torch_x is None else torch_x, ref, ref_name, rows, mpp, culane=with_f1)
    fc, lc = sc.frame_cols, sc.lane_cols
    lab = np.isfinite(fc["frame_accuracy"]) if "frame_accuracy" in fc else np.zeros(len(slots), bool)
    rec = {"frames": int(len(slots)), "labelled": int(lab.sum()), "bending_jitter_reference": ref_name}
    for m, col in (("accuracy", "frame_accuracy"), ("fp", "frame_fp"), ("fn", "frame_fn")):
        rec[m] = _pair(fc[col]) if col in fc else [0.0, 0]
    if with_f1 and "culane_tp" in fc:
        tp, fp, fn = (np.nansum(fc[k]) for k in ("culane_tp", "culane_fp", "culane_fn"))
        rec["f1"] = [float(2 * tp), int(2 * tp + fp + fn)]
    else:
        rec["f1"] = [0.0, 0]
    bend = lc["bend_px"]
    has = np.isfinite(bend)
    rec["bend_px"] = _pair(bend)
    rec["kink_rate"] = [float((lc["kinks"][has] > 0).sum()), int(has.sum())]
    d = np.abs(o.x - torch_x) if torch_x is not None else np.full(1, np.nan)  # torch not run: no backend gap here
    rec["dx_torch_px"] = _pair(d)
    fin = d[np.isfinite(d)]
    rec["dx_torch_max_px"] = float(fin.max()) if fin.size else float("nan")
    rec["argmax_flip_rate"] = _pair(o.raw["argmax_flip_rate"])
    rec["nonfinite_rate"] = [float((o.nonfinite > 0).sum()), int(len(o.nonfinite))]
    for look in ("near", "mid", "far"):
        rec[f"jitter_rms_{look}"] = _pair([r["jitter_rms"] for r in sc.jitter_rows if r["lookahead"] == look])
    rec["oscillation_hz_near"] = _pair([r["jitter_oscillation_hz"] for r in sc.jitter_rows if r["lookahead"] == "near"])
    return rec


def evaluate(runners: list, adapter, case, batches: list[np.ndarray], slots, ts, with_f1: bool) -> dict[str, dict]:
    """runner name -> unit record for one checkpoint's runners on prepared batches; torch, when among
    them, comes first and is the parity reference (without it the backend gap is absent, NaN)."""
    rb = RunnerBatches(runners, adapter, case.width)
    for b in batches:
        rb.feed(b)
    outs = rb.outputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = outs[REFERENCE].x if REFERENCE in outs else None
        return {name: unit_record(case, adapter, o, ref, slots, ts, with_f1) for name, o in outs.items()}


def flatten(record: dict) -> dict:
    """A unit record as table columns: `<m>` (the case's value), `<m>__sum`, `<m>__n`."""
    out = {k: v for k, v in record.items() if not isinstance(v, list)}
    for m in RATIO_METRICS:
        s, n = record[m]
        out[f"{m}__sum"], out[f"{m}__n"] = float(s), int(n)
        out[m] = s / n if n else float("nan")
    return out
