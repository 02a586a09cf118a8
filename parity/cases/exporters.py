"""Exporters: lanes (a replay run's predictions, or a case's GT) -> TuSimple JSON lines / CULane `.lines.txt`,
so the official evaluators can score parity's outputs.

Items are (case, x[T, L, R], rows of x, ms[T] or None); `parity.runs.results.run_lanes` yields them
for a replay run, `case_gt` for a case's own ground truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UsageError
from .format import Case
from .lanes import resample_rows

FORMATS = ("tusimple", "culane")


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
