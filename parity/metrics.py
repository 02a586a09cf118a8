"""Lane metrics on arrays x[frame, lane, row] in source pixels (NaN = absent).

Definitions are written down in docs/metrics.md. This module holds the functions; replay and
later the ranker and gate only call them.
"""
from __future__ import annotations

import numpy as np

TUSIMPLE_WIDTH = 1280.0  # the official evaluator's threshold is 20 px at 1280 px wide
TUSIMPLE_PIXEL_THRESH = 20.0
TUSIMPLE_POINT_THRESH = 0.85


def _lane_angle(xs: np.ndarray, ys: np.ndarray) -> float:
    """Angle of a least-squares fit x = k*y + c over the lane's valid points (official get_angle)."""
    ok = np.isfinite(xs)
    if ok.sum() > 1:
        k = np.polyfit(ys[ok], xs[ok], 1)[0]
        return float(np.arctan(k))
    return 0.0


def tusimple_frame(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> tuple[float, float, float]:
    """(accuracy, FP, FN) of one frame exactly as TuSimple's LaneEval.bench computes them.

    pred, gt: x[lane, row]; lanes with no valid point are not lanes (they would not be listed in
    the TuSimple JSON). Missing points compare as -100 px, as in the official line_accuracy, so a
    point absent in both counts as correct. The 20 px threshold scales with image width.
    """
    gts = [g for g in gt if np.isfinite(g).any()]
    preds = [p for p in pred if np.isfinite(p).any()]
    if len(gts) + 2 < len(preds):
        return 0.0, 0.0, 1.0
    thresh0 = TUSIMPLE_PIXEL_THRESH * image_width / TUSIMPLE_WIDTH
    line_accs, fn, matched = [], 0.0, 0.0
    P = np.where(np.isfinite(np.asarray(preds)), np.asarray(preds), -100.0) if preds else np.zeros((0, len(rows)))
    for g in gts:
        thresh = thresh0 / np.cos(_lane_angle(g, rows))
        gg = np.where(np.isfinite(g), g, -100.0)
        accs = (np.abs(P - gg) < thresh).sum(axis=1) / len(gg) if len(P) else np.zeros(0)
        best = float(accs.max()) if accs.size else 0.0
        if best < TUSIMPLE_POINT_THRESH:
            fn += 1
        else:
            matched += 1
        line_accs.append(best)
    fp = len(preds) - matched
    if len(gts) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gts) > 4:
        s -= min(line_accs)
    denom = max(min(4.0, len(gts)), 1.0)
    return s / denom, (fp / len(preds) if preds else 0.0), fn / denom


def tusimple(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """Per-frame [T, 3] (accuracy, FP, FN) for x[T, lane, row] arrays."""
    return np.array([tusimple_frame(p, g, rows, image_width) for p, g in zip(pred, gt)], dtype=np.float64).reshape(-1, 3)


def lateral_difference(x: np.ndarray, ref: np.ndarray) -> dict:
    """Point-wise |x - ref| where both exist, plus how often existence disagrees."""
    both = np.isfinite(x) & np.isfinite(ref)
    d = np.abs(x[both] - ref[both]).astype(np.float64)
    exist = np.isfinite(x) != np.isfinite(ref)
    return {
        "points": int(d.size),
        "mean_px": float(d.mean()) if d.size else float("nan"),
        "p99_px": float(np.percentile(d, 99)) if d.size else float("nan"),
        "max_px": float(d.max()) if d.size else float("nan"),
        "existence_disagreement": float(exist.mean()) if exist.size else float("nan"),
    }


def resample_rows(x: np.ndarray, rows_from: np.ndarray, rows_to: np.ndarray) -> np.ndarray:
    """Linearly interpolate x[..., rows_from] onto rows_to; NaN where either neighbour is absent."""
    if np.array_equal(rows_from, rows_to):
        return x
    idx = np.clip(np.searchsorted(rows_from, rows_to) - 1, 0, len(rows_from) - 2)
    r0, r1 = rows_from[idx], rows_from[idx + 1]
    w = (rows_to - r0) / (r1 - r0)
    out = x[..., idx] * (1 - w) + x[..., idx + 1] * w
    outside = (rows_to < rows_from[0]) | (rows_to > rows_from[-1])
    out[..., outside] = np.nan
    return out.astype(x.dtype)


# ---- vectorised TuSimple over frames ----------------------------------------------------------------
def tusimple_batch(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """[T, 3] (accuracy, FP, FN) for x[T, lanes, rows]: `tusimple_frame` vectorised over frames.

    Lanes are the lane slots with at least one valid point; empty slots are ignored like lanes
    missing from the TuSimple JSON.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    T, Lg, R = gt.shape
    g_ok = np.isfinite(gt)
    p_ok = np.isfinite(pred)
    g_lane = g_ok.any(axis=2)  # [T, Lg]
    p_lane = p_ok.any(axis=2)  # [T, Lp]
    n_g, n_p = g_lane.sum(axis=1), p_lane.sum(axis=1)
    # Angle of the least-squares line x = k*y + c through each GT lane's valid points.
    y = np.broadcast_to(rows, gt.shape)
    w = g_ok.astype(np.float64)
    n = w.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        my = (w * y).sum(axis=2) / n
        mx = np.where(g_ok, gt, 0).sum(axis=2) / n
        cov = (w * (y - my[..., None]) * (np.where(g_ok, gt, 0) - mx[..., None])).sum(axis=2)
        var = (w * (y - my[..., None]) ** 2).sum(axis=2)
        k = np.where((n > 1) & (var > 0), cov / var, 0.0)
    thresh = TUSIMPLE_PIXEL_THRESH * image_width / TUSIMPLE_WIDTH / np.cos(np.arctan(k))  # [T, Lg]
    G = np.where(g_ok, gt, -100.0)[:, None]  # [T, 1, Lg, R]
    P = np.where(p_ok, pred, -100.0)[:, :, None]  # [T, Lp, 1, R]
    acc = (np.abs(P - G) < thresh[:, None, :, None]).sum(axis=3) / R  # [T, Lp, Lg]
    acc = np.where(p_lane[:, :, None], acc, -np.inf)
    best = np.where(n_p[:, None] > 0, acc.max(axis=1), 0.0)  # [T, Lg]
    best = np.where(g_lane, best, np.nan)
    matched = np.nansum(best >= TUSIMPLE_POINT_THRESH, axis=1)
    fn = n_g - matched
    fn = np.where((n_g > 4) & (fn > 0), fn - 1, fn)
    s = np.nansum(best, axis=1)
    s = np.where(n_g > 4, s - np.nanmin(np.where(g_lane, best, np.inf), axis=1), s)
    denom = np.maximum(np.minimum(4.0, n_g), 1.0)
    out = np.stack([s / denom, np.where(n_p > 0, (n_p - matched) / np.maximum(n_p, 1), 0.0), fn / denom], axis=1)
    out[n_g + 2 < n_p] = (0.0, 0.0, 1.0)
    return out


# ---- CULane-style F1 ----------------------------------------------------------------------------------
CULANE_WIDTH_PX = 30.0
CULANE_IMAGE_WIDTH = 1640.0


def lane_iou(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float) -> np.ndarray:
    """[T, Lp, Lg] IoU of lanes drawn 30 px wide (at 1640 px image width, scaled to this width).

    The drawn mask's IoU is integrated row by row: at each anchor row a lane covers a horizontal
    segment of width w / cos(angle); overlap and union are summed over the rows where either lane
    exists (each row standing for its share of the image height). No rasterisation, so it is exact
    for straight segments between anchor rows and vectorised over frames.
    """
    w = CULANE_WIDTH_PX * image_width / CULANE_IMAGE_WIDTH
    dy = np.gradient(np.asarray(rows, np.float64)).astype(np.float32)

    def half_width(x):
        with np.errstate(invalid="ignore"):
            slope = np.nan_to_num(np.gradient(x.astype(np.float32), axis=-1) / dy, nan=0.0)  # end rows: taken as vertical
        return 0.5 * w * np.sqrt(1 + slope * slope)

    pred, gt = pred.astype(np.float32), gt.astype(np.float32)
    hp, hg = half_width(pred), half_width(gt)
    area_p = (np.where(np.isfinite(pred), 2 * hp, 0) * dy).sum(axis=2)  # [T, Lp]
    area_g = (np.where(np.isfinite(gt), 2 * hg, 0) * dy).sum(axis=2)  # [T, Lg]
    lo = np.maximum((pred - hp)[:, :, None], (gt - hg)[:, None])
    hi = np.minimum((pred + hp)[:, :, None], (gt + hg)[:, None])
    inter = np.nan_to_num(np.clip(hi - lo, 0, None), nan=0.0)  # NaN where either lane is absent
    I = (inter * dy).sum(axis=3)
    U = area_p[:, :, None] + area_g[:, None] - I
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(U > 0, I / U, 0.0)


def culane_counts(pred: np.ndarray, gt: np.ndarray, rows: np.ndarray, image_width: float, iou: float = 0.5) -> np.ndarray:
    """[T, 3] (TP, FP, FN) per frame: Hungarian matching on IoU, a match counts if IoU > `iou`."""
    return culane_counts_at(pred, gt, rows, image_width, (iou,))[0]


def culane_counts_at(pred, gt, rows, image_width: float, ious=(0.5, 0.3)) -> list[np.ndarray]:
    """`culane_counts` at several IoU thresholds from one IoU computation."""
    from scipy.optimize import linear_sum_assignment

    p_lane = np.isfinite(pred).sum(axis=2) >= 2
    g_lane = np.isfinite(gt).sum(axis=2) >= 2
    iou_m = lane_iou(pred, gt, rows, image_width) * (p_lane[:, :, None] & g_lane[:, None, :])
    touch = iou_m > 0
    # Where every lane overlaps at most one lane of the other side, the assignment is forced;
    # only frames with competing overlaps need the Hungarian algorithm.
    contested = np.flatnonzero((touch.sum(axis=2) > 1).any(axis=1) | (touch.sum(axis=1) > 1).any(axis=1))
    pairs = {}
    for t in contested:
        m = iou_m[t][np.ix_(p_lane[t], g_lane[t])]
        r, c = linear_sum_assignment(-m)
        pairs[t] = m[r, c]
    out = []
    for thr in ious:
        tp = (iou_m > thr).sum(axis=(1, 2))
        for t, matched in pairs.items():
            tp[t] = int((matched > thr).sum())
        out.append(np.stack([tp, p_lane.sum(axis=1) - tp, g_lane.sum(axis=1) - tp], axis=1).astype(np.float64))
    return out


def f1(counts: np.ndarray) -> float:
    tp, fp, fn = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


# ---- bending -----------------------------------------------------------------------------------------
KINK_PX = 2.0
KINK_PX_AT_1280 = 20.0  # a kink visible at TuSimple's tolerance: 20 px at 1280 px wide


def kink_threshold(image_width: float) -> float:
    return KINK_PX_AT_1280 * image_width / TUSIMPLE_WIDTH


def chord_deviation(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[..., r] minus the chord between its neighbours at row r (px): the spacing-normalised
    second difference. NaN at the end rows and where a neighbour is missing. A point pushed
    sideways by k px deviates by k; its neighbours by k * (their share of the spacing)."""
    y = np.asarray(rows, np.float64)
    a = (y[1:-1] - y[:-2]) / (y[2:] - y[:-2])
    dev = np.full(x.shape, np.nan)
    dev[..., 1:-1] = x[..., 1:-1] - (x[..., :-2] + a * (x[..., 2:] - x[..., :-2]))
    return dev


def bending(x: np.ndarray, ref: np.ndarray, rows: np.ndarray, kink_px: float = KINK_PX) -> dict:
    """Per lane and frame ([T, L]): `score` = max over rows of |dev(x) - dev(ref)| (px), `row` = the
    anchor-row index where it happens (-1 if none), `kinks` = rows whose excess exceeds kink_px.
    A prediction that follows a genuinely curved reference scores zero."""
    excess = np.abs(chord_deviation(x, rows) - chord_deviation(ref, rows))
    valid = np.isfinite(excess)
    filled = np.where(valid, excess, -1.0)
    row = filled.argmax(axis=-1)
    score = np.take_along_axis(filled, row[..., None], axis=-1)[..., 0]
    has = valid.any(axis=-1)
    return {
        "score": np.where(has, score, np.nan),
        "row": np.where(has, row, -1),
        "kinks": (filled > kink_px).sum(axis=-1),
    }


# ---- jitter ------------------------------------------------------------------------------------------
LOOKAHEAD = {"near": 1.0, "mid": 0.55, "far": 0.2}  # position in the anchor-row index range (1 = bottom row)
OSC_THRESHOLD_PX = 0.05  # |residual change| per frame period below this is not a swing


def lookahead_rows(n_rows: int) -> dict[str, int]:
    return {k: int(round(f * (n_rows - 1))) for k, f in LOOKAHEAD.items()}


def jitter(x: np.ndarray, ref: np.ndarray, t: np.ndarray, threshold: float = OSC_THRESHOLD_PX) -> dict:
    """Left-right swing of x[T, L, K] (K look-ahead rows) against ref over timestamps t[T].

    e_t = x_t - ref_t; its change per nominal frame period de_t = (e_t - e_prev) * dt_nom / (t - t_prev)
    (timestamps, not indices: a dropped frame is not a jump). Per lane and row ([L, K]):
    `rms` of de, `p95` of |de|, `amplitude` = sqrt(2) * std(e) (a sinusoid's amplitude),
    `oscillation_hz` = sign changes of de (|de| > threshold) / (2 * duration),
    `flicker_hz` = existence changes the reference does not make, per second.
    """
    t = np.asarray(t, np.float64)
    e = x - ref
    ok = np.isfinite(e)
    dt = np.diff(t)
    dt_nom = np.median(dt) if dt.size else 1.0
    pair = ok[1:] & ok[:-1]
    de = np.where(pair, (e[1:] - e[:-1]) * (dt_nom / dt)[:, None, None], np.nan)
    duration = max(t[-1] - t[0], dt_nom) if t.size > 1 else np.nan
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean(de * de, axis=0))
        p95 = np.nanpercentile(np.abs(de), 95, axis=0) if de.size else np.full(x.shape[1:], np.nan)
        amplitude = np.sqrt(2) * np.nanstd(e, axis=0)
    # Oscillation: sign changes between successive significant steps.
    sig = np.isfinite(de) & (np.abs(np.nan_to_num(de)) > threshold)
    sign = np.sign(np.nan_to_num(de))
    idx = np.where(sig, np.arange(len(de))[:, None, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    prev = np.concatenate([np.full((1, *de.shape[1:]), -1), last[:-1]], axis=0) if len(de) else last
    prev_sign = np.take_along_axis(sign, np.clip(prev, 0, None), axis=0)
    changes = (sig & (prev >= 0) & (sign != prev_sign)).sum(axis=0)
    ex, exr = np.isfinite(x), np.isfinite(ref)
    flicker = ((ex[1:] != ex[:-1]) & (exr[1:] == exr[:-1])).sum(axis=0)
    return {
        "rms": rms, "p95": p95, "amplitude": amplitude,
        "oscillation_hz": changes / (2 * duration), "flicker_hz": flicker / duration,
    }


# ---- raw tensor parity -------------------------------------------------------------------------------
def tensor_parity(a: np.ndarray, b: np.ndarray) -> dict:
    """Per frame (first axis): max, p99 and mean |a - b| and cosine similarity of the flattened outputs."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    d = np.abs(a - b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(axis=1) / (na * nb)
    return {"max": d.max(axis=1), "p99": np.percentile(d, 99, axis=1), "mean": d.mean(axis=1), "cosine": cos}


def argmax_flips(a: np.ndarray, b: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per frame, the share of row-anchor classifications (argmax over `axis`) that differ."""
    flips = a.argmax(axis=axis) != b.argmax(axis=axis)
    return flips.reshape(len(flips), -1).mean(axis=1)


def metres_per_pixel(camera: dict, rows: np.ndarray, image_width: int) -> np.ndarray | None:
    """Lateral ground metres per pixel at each anchor row (flat ground, the image centre column),
    from the case's camera; None if the case has no mounting height and pitch."""
    if not camera or "height_m" not in camera or "pitch_deg" not in camera:
        return None
    from .synth import Camera

    cam = Camera(width=image_width, height=int(2 * camera["cy"] + 1), fx=camera["fx"], fy=camera["fy"], cx=camera["cx"],
                 cy=camera["cy"], height_m=camera["height_m"], pitch_deg=camera["pitch_deg"], roll_deg=camera.get("roll_deg", 0.0))
    on, _, _, depth = cam.ground(np.full(len(rows), camera["cx"]), np.asarray(rows, np.float64))
    return np.where(on, depth / camera["fx"], np.nan)
