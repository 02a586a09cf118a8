"""`parity score`: score lane predictions from any source (TuSimple JSON lines) against cases' GT."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..cases.format import Case
from ..cases.lanes import resample_rows
from ..errors import UsageError
from .bending import bending, kink_threshold
from .culane import culane_counts_at, f1
from .jitter import jitter, lookahead_rows
from .tusimple import tusimple_batch


def read_tusimple_predictions(path: str | Path) -> dict[str, dict]:
    """raw_file -> {"lanes": [[x or -2 per h_sample]], "h_samples": [...]}."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such prediction file")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            lanes, h = rec["lanes"], rec["h_samples"]
            if not all(len(lane) == len(h) for lane in lanes):
                raise ValueError("every lane needs one x per h_sample")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{path}:{n}: not a TuSimple prediction line: {exc}") from None
        out[rec["raw_file"]] = rec
    return out


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


def score_case(case: Case, preds: dict[str, dict]) -> dict | None:
    """Metrics of the predictions that name this case's frames (by their source file names)."""
    if case.gt is None:
        raise UsageError(f"{case.root}: case has no GT to score against")
    rows = case.anchor_rows
    frames, P, A = [], [], []
    width = case.width
    max_lanes = max((len(r["lanes"]) for r in preds.values()), default=0)
    for i in range(len(case)):
        rec = preds.get(case.frame_label(i))
        if rec is None or not case.labelled[i]:
            continue
        h = np.asarray(rec["h_samples"], np.float64)
        lanes = np.asarray(rec["lanes"], np.float64).reshape(-1, len(h))
        lanes = np.where(lanes >= 0, lanes, np.nan)
        x = resample_rows(lanes, h, rows) if len(lanes) else np.zeros((0, len(rows)))
        pad = np.full((max(max_lanes, 1), len(rows)), np.nan)
        pad[: len(x)] = x
        frames.append(i)
        P.append(pad)
        A.append(_align(x, case.gt[i]))
    if not frames:
        return None
    frames = np.asarray(frames)
    P, A, G = np.stack(P), np.stack(A), case.gt[frames]
    tus = tusimple_batch(P, G, rows, width)
    b = bending(A, G, rows, kink_px=kink_threshold(width))
    out = {
        "frames": int(len(frames)),
        "accuracy": float(tus[:, 0].mean()), "fp": float(tus[:, 1].mean()), "fn": float(tus[:, 2].mean()),
    }
    c50, c30 = culane_counts_at(P, G, rows, width, (0.5, 0.3))
    out["f1_50"], out["f1_30"] = f1(c50), f1(c30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["bend_mean_px"] = float(np.nanmean(b["score"]))
        out["kink_rate"] = float((b["kinks"][np.isfinite(b["score"])] > 0).mean()) if np.isfinite(b["score"]).any() else float("nan")
        consecutive = len(frames) > 1 and np.all(np.diff(frames) == 1)
        if consecutive:  # jitter needs a time series, not TuSimple's one labelled frame in twenty
            look = lookahead_rows(len(rows))
            j = jitter(A[:, :, list(look.values())], G[:, :, list(look.values())], case.timestamps[frames])
            for k, name in enumerate(look):
                out[f"jitter_rms_{name}"] = float(np.nanmean(j["rms"][:, k]))
                out[f"jitter_oscillation_hz_{name}"] = float(np.nanmean(j["oscillation_hz"][:, k]))
    return out


def format_scores(scores: dict[str, dict]) -> str:
    keys = [("frames", "d"), ("accuracy", ".4f"), ("fp", ".4f"), ("fn", ".4f"), ("f1_50", ".4f"), ("f1_30", ".4f"),
            ("bend_mean_px", ".2f"), ("kink_rate", ".2%"), ("jitter_rms_near", ".3f"), ("jitter_rms_mid", ".3f"), ("jitter_rms_far", ".3f")]
    head = f"{'case':<24}" + "".join(f"{k:>17}" for k, _ in keys)
    lines = [head, "-" * len(head)]
    for name, s in scores.items():
        cells = "".join(f"{(format(s[k], f) if k in s and s[k] == s[k] else '-'):>17}" for k, f in keys)
        lines.append(f"{name:<24}{cells}")
    return "\n".join(lines)
