"""The pictures of a report, each returned as PNG bytes: lane position over time, lane overlays on
camera frames, sweep curves, leaderboard intervals. matplotlib draws the plots (Agg, no display),
OpenCV the overlays."""
from __future__ import annotations

import io
from contextlib import contextmanager

import numpy as np

SOURCE_COLOURS = {"gt": (0, 200, 255), "reference": (40, 220, 40), "deployed": (255, 40, 40)}  # RGB; GT is not white: the paint is


@contextmanager
def _figure(*args, **kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kw)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def _png(fig, dpi: int = 90, tight: bool = True) -> bytes:
    """`tight`: crop to what is drawn (matplotlib draws the figure twice for it); a figure laid out
    with fixed margins is drawn once."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def lane_over_time(title: str, t: np.ndarray, series: dict[str, np.ndarray], gt: np.ndarray | None, reference: str,
                   looks: dict[str, int]) -> bytes:
    """Top row: the lane's x at the near/mid/far rows over time for GT and every runner; bottom row:
    each runner minus the reference runner, where a backend's jitter shows.

    series: runner -> x[T, R] of one lane; gt: x[T, R] or None; looks: look-ahead name -> row index."""
    with _figure(2, len(looks), figsize=(4.2 * len(looks), 5.4), sharex=True, squeeze=False) as (fig, axes):
        for k, (look, row) in enumerate(looks.items()):
            top, bottom = axes[0, k], axes[1, k]
            if gt is not None:
                top.plot(t, gt[:, row], color="black", lw=2.2, alpha=0.35, label="GT")
            for i, (name, x) in enumerate(series.items()):
                top.plot(t, x[:, row], lw=1.1, color=f"C{i}", label=name)
                if name != reference and reference in series:
                    bottom.plot(t, x[:, row] - series[reference][:, row], lw=1.0, color=f"C{i}", label=f"{name} - {reference}")
            top.set_title(f"{look} row {row}")
            top.set_ylabel("x (px)")
            bottom.set_ylabel(f"minus {reference} (px)")
            bottom.set_xlabel("t (s)")
            bottom.axhline(0, color="grey", lw=0.6)
            for ax in (top, bottom):
                ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7, loc="best")
        if len(series) > 1:
            axes[1, 0].legend(fontsize=7, loc="best")
        fig.suptitle(title, fontsize=10)
        # Fixed margins, not a tight crop: a report draws one of these per case and pipeline, and
        # the crop's second drawing was most of a gate report's time.
        fig.subplots_adjust(left=0.25 / len(looks), right=0.99, top=0.9, bottom=0.09, wspace=0.3, hspace=0.12)
        return _png(fig, tight=False)


def overlay(rgb: np.ndarray, rows: np.ndarray, lanes: dict[str, tuple[np.ndarray, str]], caption: str, width: int = 640) -> bytes:
    """JPEG bytes of the camera frame with lanes drawn: lanes maps a legend label to (x[L, R], source
    kind in SOURCE_COLOURS); the frame is scaled to `width` and the caption written on a bar at the
    top. JPEG, not PNG: a noisy camera frame is ten times smaller and a reviewer sees no difference."""
    import cv2

    img = np.ascontiguousarray(rgb[..., ::-1])  # OpenCV draws in BGR
    scale = width / img.shape[1]
    img = cv2.resize(img, (width, round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    thick = {"gt": 3, "reference": 5, "deployed": 2}  # torch drawn wide under the deployed runner: where they agree, green edges
    for label, (x, kind) in lanes.items():
        colour = SOURCE_COLOURS[kind][::-1]
        for lane in np.atleast_2d(x):
            ok = np.isfinite(lane)
            pts = np.stack([lane[ok] * scale, np.asarray(rows, np.float64)[ok] * scale], 1)
            if len(pts) >= 2:
                cv2.polylines(img, [np.round(pts * 4).astype(np.int32)], False, colour, thick[kind], cv2.LINE_AA, shift=2)
    bar = 18 + 16 * len(lanes)
    cv2.rectangle(img, (0, 0), (width, bar), (0, 0, 0), -1)
    cv2.putText(img, caption, (6, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    for i, (label, (_, kind)) in enumerate(lanes.items()):
        y = 30 + 16 * i
        cv2.line(img, (8, y - 4), (30, y - 4), SOURCE_COLOURS[kind][::-1], 2, cv2.LINE_AA)
        cv2.putText(img, label, (36, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay")
    return jpg.tobytes()


def sweep_curves(title: str, results: list[dict], metrics: dict[str, str]) -> bytes:
    """metric vs severity, one line per perturbation (the unperturbed value at severity 0)."""
    by_p: dict[str, dict[int, dict]] = {}
    base = None
    for r in results:
        if r["perturbation"] == "none":
            base = r
        else:
            by_p.setdefault(r["perturbation"], {})[int(r["severity"])] = r
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    with _figure(rows, cols, figsize=(6.2 * cols, 3.6 * rows), squeeze=False) as (fig, axes):
        for ax, (m, label) in zip(axes.ravel(), metrics.items()):
            for i, (p, sev) in enumerate(sorted(by_p.items())):
                s = sorted(sev)
                xs = ([0] if base else []) + s
                ys = ([_f(base.get(m))] if base else []) + [_f(sev[k].get(m)) for k in s]
                ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=p)
            ax.set_xlabel("severity")
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(metrics):]:
            ax.axis("off")
        axes.ravel()[0].legend(fontsize=6, ncol=2)
        fig.suptitle(title, fontsize=10)
        return _png(fig)


def interval_bars(board: list[dict], metrics: dict[str, str]) -> bytes:
    """Per checkpoint, each metric's value with its 95% interval, the baseline's value dashed."""
    names = [r["checkpoint"] for r in board]
    with _figure(1, len(metrics), figsize=(3.3 * len(metrics), 0.32 * len(names) + 1.6), sharey=True, squeeze=False) as (fig, axes):
        y = np.arange(len(names))
        for ax, (m, label) in zip(axes[0], metrics.items()):
            v = np.array([_f(r[m]["value"]) for r in board])
            lo = np.array([_f(r[m]["ci"][0]) for r in board])
            hi = np.array([_f(r[m]["ci"][1]) for r in board])
            colours = ["C2" if r[m]["vs_baseline"] == "better" else "C3" if r[m]["vs_baseline"] == "worse" else "C0" for r in board]
            ax.errorbar(v, y, xerr=[np.nan_to_num(v - lo), np.nan_to_num(hi - v)], fmt="none", ecolor="grey", capsize=2, lw=1)
            ax.scatter(v, y, c=colours, s=18, zorder=3)
            base = [r for r in board if r[m]["vs_baseline"] == "baseline"]
            if base:
                ax.axvline(_f(base[0][m]["value"]), color="grey", ls="--", lw=0.8)
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.3, axis="x")
        axes[0, 0].set_yticks(y, names, fontsize=8)
        axes[0, 0].invert_yaxis()
        fig.suptitle("value and 95% case-bootstrap interval; green better / red worse than the baseline (paired), dashed: the baseline",
                     fontsize=9)
        return _png(fig)


def pareto(board: list[dict]) -> bytes:
    """Accuracy against deployed bending and jitter, intervals as bars, the Pareto front in red."""
    with _figure(1, 2, figsize=(11, 4.5)) as (fig, axes):
        for ax, m, label in ((axes[0], "bend_px", "deployed bend (px)"), (axes[1], "jitter_near", "deployed near jitter (px/frame)")):
            for r in board:
                x, y = r[m], r["accuracy"]
                if not (np.isfinite(_f(x["value"])) and np.isfinite(_f(y["value"]))):
                    continue
                ax.errorbar(x["value"], y["value"], xerr=[[x["value"] - _f(x["ci"][0])], [_f(x["ci"][1]) - x["value"]]],
                            yerr=[[y["value"] - _f(y["ci"][0])], [_f(y["ci"][1]) - y["value"]]], fmt="o" if r["pareto"] else "x",
                            color="C3" if r["pareto"] else "C0", alpha=0.8, capsize=2)
                ax.annotate(r["checkpoint"], (x["value"], y["value"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy (deployed, vehicle)")
            ax.grid(alpha=0.3)
        fig.suptitle("Pareto front (red): accuracy vs deployed bending and jitter, 95% case-bootstrap intervals")
        fig.tight_layout()
        return _png(fig, dpi=110)


def _f(v) -> float:
    return float("nan") if v is None else float(v)
