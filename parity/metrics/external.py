"""`parity score`: score lane predictions from any source (TuSimple JSON lines) against cases' GT."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..cases.format import Case
from ..cases.lanes import resample_rows
from ..errors import UsageError
from .bending import bending, kink_rate, kink_threshold
from .culane import culane_counts_at, f1
from .jitter import jitter, lookahead_rows
from .tusimple import TUSIMPLE_MAX_RUN_TIME_MS, tusimple_batch


def read_tusimple_predictions(path: str | Path) -> dict[str, dict]:
    """raw_file -> {"lanes": [[x or -2 per h_sample]], "h_samples": [...], "run_time": ms?, "line": n}.

    A raw_file listed twice is refused (which line would be scored is a guess); so is a line that is
    not a TuSimple prediction (no raw_file, lanes of the wrong length, values that are not numbers).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such prediction file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a line must be a JSON object")
            name, lanes, h = rec["raw_file"], rec["lanes"], rec["h_samples"]
            if not isinstance(name, str):
                raise ValueError("raw_file must be a string")
            h = np.asarray(h, np.float64).reshape(-1)
            if len(np.unique(h)) != len(h):
                raise ValueError("h_samples repeats a row (each row once)")
            if not isinstance(lanes, list) or not all(isinstance(lane, list) and len(lane) == len(h) for lane in lanes):
                raise ValueError("every lane needs one x per h_sample")
            lanes = np.asarray(lanes, np.float64).reshape(len(lanes), len(h))
            if not (np.isfinite(h).all() and np.isfinite(lanes).all()):
                raise ValueError("h_samples and lanes must be finite numbers (an absent point is -2)")
            run_time = rec.get("run_time")
            if run_time is not None and (isinstance(run_time, bool) or not isinstance(run_time, (int, float)) or not np.isfinite(run_time)):
                raise ValueError("run_time must be a number (ms)")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise UsageError(f"{path}:{n}: not a TuSimple prediction line: {type(exc).__name__}: {exc}") from None
        if name in out:
            raise UsageError(f"{path}:{n}: raw_file {name!r} already given on line {out[name]['line']}; one line per frame")
        out[name] = {"lanes": lanes, "h_samples": h, "run_time": run_time, "line": n}
    return out


def match_predictions(cases: list[Case], preds: dict[str, dict], path: str | Path = "predictions") -> dict:
    """Which frame each prediction scores, as the official evaluator demands: every labelled frame has
    a prediction, every prediction names a frame of the given cases. Predictions for unlabelled
    frames are skipped and counted. Returns {case name: [(frame index, record)]} and the counts."""
    known, missing = {}, []
    for case in cases:
        for i in range(len(case)):
            known[case.export_name(i)] = (case, i)
    unknown = sorted(set(preds) - set(known))
    if unknown:
        raise UsageError(f"{path}: {len(unknown)} raw_file names are no frame of the given cases, e.g. {unknown[:3]} "
                         f"(a frame's name is its dataset path for imported cases, else <case>/<file>, as `parity export` writes)")
    per_case, skipped = {}, 0
    for case in cases:
        if case.gt is None:
            raise UsageError(f"{case.root}: case has no GT to score against")
        for i in range(len(case)):
            name = case.export_name(i)
            if not case.labelled[i]:
                skipped += name in preds
                continue
            if name not in preds:
                missing.append(name)
                continue
            per_case.setdefault(case.name, []).append((i, preds[name]))
    if missing:
        raise UsageError(f"{path}: no prediction for {len(missing)} labelled frames, e.g. {missing[:3]} "
                         "(the official evaluator refuses an incomplete submission)")
    return {"frames": per_case, "skipped_unlabelled": int(skipped)}


def _align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Predicted lanes [Lp, R] -> [Lg, R] in the GT's lane slots (Hungarian on mean |dx| over shared rows)."""
    from scipy.optimize import linear_sum_assignment

    out = np.full(gt.shape, np.nan)
    if not len(pred):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cost = np.nanmean(np.abs(pred[:, None] - gt[None]), axis=2)
    cost = np.where(np.isfinite(cost), cost, 1e9)
    r, c = linear_sum_assignment(cost)
    for i, j in zip(r, c):
        if cost[i, j] < 1e9:
            out[j] = pred[i]
    return out


def score_case(case: Case, records: list[tuple[int, dict]], apply_run_time_rule: bool = True) -> dict:
    """Metrics of one case's matched predictions [(frame index, record)] (see `match_predictions`).

    Lanes are moved onto the GT rows by row value (any order of h_samples; rows within ROW_TOL are
    the same row), a listed lane stays listed even when all its points are -2 (the official count of
    lanes compares listed lanes), and a frame whose run_time exceeds 200 ms scores (0, 0, 1) as in
    the official evaluator.
    """
    rows = case.anchor_rows
    width = case.width
    frames = np.asarray([i for i, _ in records])
    max_lanes = max(max((len(r["lanes"]) for _, r in records), default=0), 1)
    P = np.full((len(frames), max_lanes, len(rows)), np.nan)
    slow = np.zeros(len(frames), bool)
    for k, (_, rec) in enumerate(records):
        lanes = rec["lanes"]
        x = resample_rows(np.where(lanes >= 0, lanes, np.nan), rec["h_samples"], rows) if len(lanes) else np.zeros((0, len(rows)))
        x = np.where(np.isfinite(x), x, -2.0)  # listed lanes keep their slot; -2 is the official "no point"
        P[k, : len(x)] = x
        slow[k] = apply_run_time_rule and rec.get("run_time") is not None and rec["run_time"] > TUSIMPLE_MAX_RUN_TIME_MS
    G = case.gt[frames]
    tus = tusimple_batch(P, G, rows, width)
    tus[slow] = (0.0, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        pts = np.where(P >= 0, P, np.nan)  # points only: for the drawn and aligned metrics
    A = np.stack([_align(p[np.isfinite(p).any(axis=1)], g) for p, g in zip(pts, G)])
    b = bending(A, G, rows, kink_px=kink_threshold(width))
    out = {
        "frames": int(len(frames)), "frames_over_run_time": int(slow.sum()),
        "accuracy": float(tus[:, 0].mean()), "fp": float(tus[:, 1].mean()), "fn": float(tus[:, 2].mean()),
    }
    c50, c30 = culane_counts_at(pts, rows, G, rows, width, case.height, (0.5, 0.3))
    out["f1_50"], out["f1_30"] = f1(c50), f1(c30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["bend_mean_px"] = float(np.nanmean(b["score"]))
        out["kink_rate"] = kink_rate(b)
        consecutive = len(frames) > 1 and np.all(np.diff(frames) == 1)
        if consecutive:  # jitter needs a time series, not TuSimple's one labelled frame in twenty
            look = lookahead_rows(len(rows))
            j = jitter(A[:, :, list(look.values())], G[:, :, list(look.values())], case.timestamps[frames])
            for k, name in enumerate(look):
                out[f"jitter_rms_{name}"] = float(np.nanmean(j["rms"][:, k]))
                out[f"jitter_oscillation_hz_{name}"] = float(np.nanmean(j["oscillation_hz"][:, k]))
    return out


def score_predictions(cases: list[Case], path: str | Path, apply_run_time_rule: bool = True) -> dict:
    """`parity score`: {"cases": {name: metrics}, "overall": metrics over every frame, "skipped_unlabelled": n}."""
    preds = read_tusimple_predictions(path)
    matched = match_predictions(cases, preds, path)
    by_name = {c.name: c for c in cases}
    scores = {name: score_case(by_name[name], recs, apply_run_time_rule) for name, recs in matched["frames"].items()}
    if not scores:
        raise UsageError(f"{path}: the given cases have no labelled frames to score")
    n = sum(s["frames"] for s in scores.values())
    overall = {"frames": n, "frames_over_run_time": sum(s["frames_over_run_time"] for s in scores.values())}
    for k in ("accuracy", "fp", "fn"):  # the official figures: means over all frames
        overall[k] = sum(s[k] * s["frames"] for s in scores.values()) / n
    return {"cases": scores, "overall": overall, "skipped_unlabelled": matched["skipped_unlabelled"]}


def format_scores(scores: dict[str, dict]) -> str:
    keys = [("frames", "d"), ("accuracy", ".4f"), ("fp", ".4f"), ("fn", ".4f"), ("f1_50", ".4f"), ("f1_30", ".4f"),
            ("bend_mean_px", ".2f"), ("kink_rate", ".2%"), ("jitter_rms_near", ".3f"), ("jitter_rms_mid", ".3f"), ("jitter_rms_far", ".3f")]
    head = f"{'case':<24}" + "".join(f"{k:>17}" for k, _ in keys)
    lines = [head, "-" * len(head)]
    for name, s in scores.items():
        cells = "".join(f"{(format(s[k], f) if k in s and s[k] == s[k] else '-'):>17}" for k, f in keys)
        lines.append(f"{name:<24}{cells}")
    return "\n".join(lines)
