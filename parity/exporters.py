"""Exporters: lanes from a replay run (or a case's GT) -> TuSimple JSON lines / CULane `.lines.txt`,
so the official evaluators can score parity's outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import atomic
from .case import Case, load_case
from .errors import UsageError
from .metrics import resample_rows

FORMATS = ("tusimple", "culane")


def run_lanes(run: str | Path, runner: str, pipeline: str):
    """Yield (case, x[T, L, R_model], model_rows, infer_ms[T]) for one runner x pipeline of a replay run."""
    import pandas as pd

    run = Path(run)
    try:
        summary = json.loads((run / "summary.json").read_text())
        table = pd.read_parquet(run / "frames.parquet")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{run}: not a replay run folder (summary.json + frames.parquet): {exc}") from None
    sel = table[(table.runner == runner) & (table.pipeline == pipeline)]
    if sel.empty:
        have = sorted(set(zip(table.runner, table.pipeline)))
        raise UsageError(f"{run}: no rows for runner {runner!r} on pipeline {pipeline!r} (have {have})")
    for name, info in summary["provenance"]["cases"].items():
        rows_c = sel[sel.case == name].sort_values(["frame", "lane"])
        if rows_c.empty:
            continue
        case = load_case(info["path"])
        T, L = int(rows_c.frame.max()) + 1, int(rows_c.lane.max()) + 1
        x = np.stack(rows_c.x.to_numpy()).reshape(T, L, -1).astype(np.float32)
        ms = rows_c.groupby("frame").infer_ms.first().to_numpy()
        yield case, x, np.asarray(info["model_rows"], dtype=np.float64), ms


def case_gt(case: Case):
    if case.gt is None:
        raise UsageError(f"{case.root}: case has no GT lanes to export")
    return case.gt, case.anchor_rows


def _frames(items, only_labelled: bool):
    """(case, frame index, lanes x[L, R] at the export rows, those rows, ms or None) per exported frame.

    Rows are the case's own GT rows when it has them (what its evaluator expects), else the model's.
    """
    for case, x, rows, ms in items:
        h = case.anchor_rows if case.anchor_rows is not None else rows
        xr = resample_rows(x, rows, h)
        for i in range(len(case)):
            if only_labelled and case.labelled is not None and not case.labelled[i]:
                continue
            yield case, i, xr[i], h, (None if ms is None else ms[i])


def to_tusimple(items, out: str | Path, only_labelled: bool = False) -> int:
    """Items of (case, x[T, L, R], rows_of_x, ms[T] or None) -> JSON lines; returns lines written."""
    lines = []
    for case, i, lanes_x, h, ms in _frames(items, only_labelled):
        lanes = [[round(float(v), 2) if np.isfinite(v) else -2 for v in lane] for lane in lanes_x if np.isfinite(lane).any()]
        rec = {"raw_file": case.frame_label(i), "lanes": lanes, "h_samples": [round(float(r), 2) for r in h]}
        if ms is not None:
            rec["run_time"] = round(float(ms), 3)
        lines.append(json.dumps(rec))
    atomic.write_text(out, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def to_culane(items, out: str | Path, only_labelled: bool = False) -> int:
    """One `<case>/<frame stem>.lines.txt` per frame (x y pairs per lane); returns files written."""
    out = Path(out)
    n = 0
    for case, i, lanes_x, h, _ in _frames(items, only_labelled):
        text = []
        for lane in lanes_x:
            ok = np.isfinite(lane)
            if ok.sum() >= 2:
                text.append(" ".join(f"{xv:.2f} {yv:.1f}" for xv, yv in zip(lane[ok][::-1], h[ok][::-1])))
        atomic.write_text(out / case.name / f"{Path(case.frame_label(i)).stem}.lines.txt", "\n".join(text) + ("\n" if text else ""))
        n += 1
    return n


def export(fmt: str, items, out, only_labelled: bool = False) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    return (to_tusimple if fmt == "tusimple" else to_culane)(items, out, only_labelled)
