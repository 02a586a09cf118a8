"""Applying the metrics to a run's lanes: which reference each metric uses, and the tables.

References (docs/metrics.md):
- `dx_*` (parity) compares a runner with the torch fp32 runner on the same pipeline and input;
- `added_*` (deployment deltas) are the bend, kinks, jitter and existence flicker a runner adds
  over that same parity reference: what the deployed form does to the lanes, GT or not;
- accuracy (TuSimple, CULane F1) compares with GT on labelled frames;
- bending and jitter compare with GT when the case has GT on every frame with the model's own
  lane slots, else with torch fp32 on the training pipeline (if the run has it), else with torch
  fp32 on the same pipeline. The chosen reference is written next to the numbers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..cases.lanes import resample_rows
from .bending import bending, kink_rate, kink_threshold
from .culane import culane_counts_at, f1
from .jitter import LOOKAHEAD, jitter, lookahead_rows
from .lateral import lateral_difference
from .tusimple import tusimple_batch

LOOKAHEAD_NAMES = list(LOOKAHEAD)
# jitter() outputs kept for the residual to the parity reference (jitter.parquet `added_<name>`)
ADDED_JITTER = ("jitter_rms", "jitter_p95", "amplitude", "oscillation_hz", "flicker_hz")
_ADDED_JITTER_FROM = {"jitter_rms": "rms", "jitter_p95": "p95"}


@dataclass
class Scored:
    lane_cols: dict = field(default_factory=dict)  # name -> [T, L]
    frame_cols: dict = field(default_factory=dict)  # name -> [T]
    jitter_rows: list = field(default_factory=list)  # per lane x look-ahead
    reference: str = ""


def gt_usable_for_tracking(case, adapter) -> bool:
    """GT can stand in for a reference time series: every frame labelled, lanes in the model's slots."""
    return case.gt is not None and bool(case.labelled.all()) and list(case.lane_names) == list(adapter.lane_names)


def score(case, x, frames, t, dx_ref, metric_ref, metric_ref_name, rows, mpp, culane: bool = True) -> Scored:
    """Metrics of lanes x[T, L, R] at the model's rows `rows`, case frames `frames` (times t).

    dx_ref: the parity reference at the same frames; metric_ref: the bending/jitter reference;
    mpp: metres per pixel per row or None; culane=False leaves CULane F1 out (it rasterises every
    lane: the costliest metric by far). Accuracy is scored at the case's own GT rows with the
    predictions moved onto them, exactly what the exporters write for the official evaluators.
    """
    s = Scored(reference=metric_ref_name)
    diff = np.abs(x - dx_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a lane absent in either gives NaN, as intended
        s.lane_cols["dx_ref_mean_px"] = np.nanmean(diff, axis=2)
        s.lane_cols["dx_ref_max_px"] = np.nanmax(diff, axis=2)
        if mpp is not None:
            s.lane_cols["dx_ref_mean_m"] = np.nanmean(diff * mpp, axis=2)
    kink_px = kink_threshold(case.width)
    b = bending(x, metric_ref, rows, kink_px=kink_px)
    s.lane_cols["bend_px"] = b["score"]
    s.lane_cols["bend_row"] = b["row"].astype(np.int16)
    s.lane_cols["kinks"] = b["kinks"].astype(np.int16)
    added = bending(x, dx_ref, rows, kink_px=kink_px)
    s.lane_cols["added_bend_px"] = added["score"]
    s.lane_cols["added_kinks"] = added["kinks"].astype(np.int16)
    if case.gt is not None:
        g = case.gt[frames]
        gt_rows = case.anchor_rows
        xg = resample_rows(x, rows, gt_rows)
        lab = case.labelled[frames]
        tus = np.full((len(frames), 3), np.nan)
        c50 = np.full((len(frames), 3), np.nan)
        c30 = np.full((len(frames), 3), np.nan)
        if lab.any():
            tus[lab] = tusimple_batch(xg[lab], g[lab], gt_rows, case.width)
        if lab.any() and culane:
            c50[lab], c30[lab] = culane_counts_at(xg[lab], gt_rows, g[lab], gt_rows, case.width, case.height, (0.5, 0.3))
        for k, name in enumerate(("frame_accuracy", "frame_fp", "frame_fn")):
            s.frame_cols[name] = tus[:, k]
        for k, name in enumerate(("culane_tp", "culane_fp", "culane_fn")):
            s.frame_cols[name] = c50[:, k]
        for k, name in enumerate(("culane30_tp", "culane30_fp", "culane30_fn")):
            s.frame_cols[name] = c30[:, k]
    look = lookahead_rows(len(rows))
    idx = list(look.values())
    if len(frames) > 1:
        j = jitter(x[:, :, idx], metric_ref[:, :, idx], t)
        d = jitter(x[:, :, idx], dx_ref[:, :, idx], t)  # the swing of x - x_parity_reference: what the runner adds
        for lane in range(x.shape[1]):
            for k, name in enumerate(look):
                s.jitter_rows.append({
                    "lane": lane, "lookahead": name, "row": int(idx[k]),
                    **{f"jitter_{m}": float(j[m][lane, k]) for m in ("rms", "p95", "amplitude", "oscillation_hz", "flicker_hz")},
                    **{f"added_{m}": float(d[_ADDED_JITTER_FROM.get(m, m)][lane, k]) for m in ADDED_JITTER},
                })
    return s


def metric_reference(case, adapter, outputs: dict, runner: str, pipeline: str, gt):
    """(name, x[T, L, R]) of the bending/jitter reference for `runner` on `pipeline` (see module doc)."""
    if gt_usable_for_tracking(case, adapter):
        return "gt", gt
    for key in (("torch", "training"), ("torch", pipeline)):
        if key in outputs:
            return f"{key[0]}@{key[1]}", outputs[key]
    return f"{runner}@{pipeline}", outputs[(runner, pipeline)]


def raw_aggregate(fc) -> dict:
    """Run-level raw-output parity from per-frame columns (raw_max, raw_p99, raw_mean, raw_cosine,
    argmax_flip_rate, nonfinite: arrays or pandas columns): max of max, mean of p99 and mean, min
    cosine, mean flip rate, and how many frames had any NaN/Inf."""
    arr = {k: np.asarray(fc[k], np.float64) for k in ("raw_max", "raw_p99", "raw_mean", "raw_cosine", "argmax_flip_rate", "nonfinite")}
    nf = arr["nonfinite"][np.isfinite(arr["nonfinite"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "raw_max": float(np.nanmax(arr["raw_max"])) if np.isfinite(arr["raw_max"]).any() else float("nan"),
            "raw_mean": float(np.nanmean(arr["raw_mean"])), "raw_p99": float(np.nanmean(arr["raw_p99"])),
            "raw_cosine_min": float(np.nanmin(arr["raw_cosine"])) if np.isfinite(arr["raw_cosine"]).any() else float("nan"),
            "argmax_flip_rate": float(np.nanmean(arr["argmax_flip_rate"])),
            "nonfinite_frames": int((nf > 0).sum()),
            "nonfinite_rate": float((nf > 0).mean()) if nf.size else float("nan"),  # share of frames with any NaN/Inf output
        }


def aggregate(items: list[dict]) -> dict:
    """Run-level figures for one runner x pipeline from its per-case `Scored` pieces.

    items: dicts with x, dx_ref, scored (Scored), case, frames, lane_names.
    """
    out = {}
    diffs = lateral_difference(np.concatenate([i["x"].ravel() for i in items]), np.concatenate([i["dx_ref"].ravel() for i in items]))
    out.update({f"dx_ref_{k}": v for k, v in diffs.items() if k != "points"})
    fc = {k: np.concatenate([i["scored"].frame_cols.get(k, np.full(len(i["x"]), np.nan)) for i in items]) for k in
          ("frame_accuracy", "frame_fp", "frame_fn", "culane_tp", "culane_fp", "culane_fn", "culane30_tp", "culane30_fp", "culane30_fn",
           "raw_max", "raw_p99", "raw_mean", "raw_cosine", "argmax_flip_rate", "nonfinite")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["accuracy"] = float(np.nanmean(fc["frame_accuracy"]))
        out["fp"] = float(np.nanmean(fc["frame_fp"]))
        out["fn"] = float(np.nanmean(fc["frame_fn"]))
        for name, pre in (("f1_50", "culane"), ("f1_30", "culane30")):
            cnt = np.stack([fc[f"{pre}_tp"], fc[f"{pre}_fp"], fc[f"{pre}_fn"]], axis=1)
            cnt = cnt[np.isfinite(cnt[:, 0])]
            out[name] = f1(cnt) if len(cnt) else float("nan")
        out.update(raw_aggregate(fc))
        m = [i["scored"].lane_cols.get("dx_ref_mean_m") for i in items]
        if all(v is not None for v in m):
            out["dx_ref_mean_m"] = float(np.nanmean(np.concatenate([v.ravel() for v in m])))
        bend = np.concatenate([i["scored"].lane_cols["bend_px"].ravel() for i in items])
        kinks = np.concatenate([i["scored"].lane_cols["kinks"].ravel() for i in items])
        has = np.isfinite(bend)
        out["bend_mean_px"] = float(np.nanmean(bend)) if has.any() else float("nan")
        out["bend_p99_px"] = float(np.nanpercentile(bend, 99)) if has.any() else float("nan")
        out["kink_rate"] = kink_rate({"score": bend, "kinks": kinks})
        if has.any():
            k = int(np.nanargmax(np.where(has, bend, -1)))
            worst = float(bend[k])
            for i in items:
                n = i["x"].shape[0] * i["x"].shape[1]
                if k < n:
                    f, lane = divmod(k, i["x"].shape[1])
                    out["bend_worst"] = {
                        "case": i["case"], "frame": int(i["frames"][f]), "lane": i["lane_names"][lane],
                        "row": int(i["scored"].lane_cols["bend_row"][f, lane]), "px": worst,
                    }
                    break
                k -= n
        jr = [r for i in items for r in i["scored"].jitter_rows]
        for look in LOOKAHEAD_NAMES:
            sel = [r for r in jr if r["lookahead"] == look]
            for m in ("rms", "p95", "oscillation_hz", "flicker_hz"):
                out[f"jitter_{m}_{look}"] = float(np.nanmean([r[f"jitter_{m}"] for r in sel])) if sel else float("nan")
        out.update(_added(items, jr))
    out["bending_jitter_reference"] = sorted({i["scored"].reference for i in items})
    return out


def _added(items: list[dict], jitter_rows: list[dict]) -> dict:
    """The deployment deltas of a runner x pipeline: the bend, kinks, swing and existence flicker it
    adds over its parity reference (torch fp32 on the same frames and pipeline in a replay). A lane
    absent in either is no value; a run whose rows predate these columns gets NaN, never 0."""
    out = {}
    cols = [i["scored"].lane_cols.get("added_bend_px") for i in items]
    if any(c is None for c in cols):
        bend = np.full(1, np.nan)
        kinks = np.zeros(1)
    else:
        bend = np.concatenate([c.ravel() for c in cols])
        kinks = np.concatenate([i["scored"].lane_cols["added_kinks"].ravel() for i in items])
    has = np.isfinite(bend)
    out["added_bend_mean_px"] = float(np.nanmean(bend)) if has.any() else float("nan")
    out["added_bend_p99_px"] = float(np.nanpercentile(bend, 99)) if has.any() else float("nan")
    out["added_kink_rate"] = kink_rate({"score": bend, "kinks": kinks})
    for look in LOOKAHEAD_NAMES:
        sel = [r for r in jitter_rows if r["lookahead"] == look and "added_jitter_rms" in r]
        for m in ("jitter_rms", "jitter_p95"):
            out[f"added_{m}_{look}"] = float(np.nanmean([r[f"added_{m}"] for r in sel])) if sel else float("nan")
    fl = [r["added_flicker_hz"] for r in jitter_rows if "added_flicker_hz" in r]
    out["added_flicker_hz"] = float(np.nanmean(fl)) if fl and np.isfinite(fl).any() else float("nan")
    return out
