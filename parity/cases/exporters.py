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
    """(case, frame index, export name, lanes x[L, R] at the export rows, those rows, ms or None) per exported frame.

    Rows are the case's own GT rows when it has them (what its evaluator expects), else the model's.
    Export names are unique across cases; a name seen twice (the same recording given twice, two
    imports naming frames alike) is refused rather than scored against the wrong frame.
    """
    seen: dict[str, str] = {}
    for case, x, rows, ms in items:
        h = case.anchor_rows if case.anchor_rows is not None else rows
        xr = resample_rows(x, rows, h)
        for i in range(len(case)):
            if only_labelled and case.labelled is not None and not case.labelled[i]:
                continue
            name = case.export_name(i)
            if name in seen:
                raise UsageError(f"{case.root}: frame {i} exports as {name!r}, a name already used by case {seen[name]!r}; "
                                 "export the cases separately (or rename one)")
            seen[name] = case.name
            yield case, i, name, xr[i], h, (None if ms is None else ms[i])


def to_tusimple(items, out: str | Path, only_labelled: bool = False) -> int:
    """Items of (case, x[T, L, R], rows_of_x, ms[T] or None) -> JSON lines; returns lines written.

    Coordinates are written at full precision (no rounding: a point 0.004 px from the 20 px threshold
    must score as it did in the replay); absent points are -2 as in TuSimple's files; lanes with no
    point are not listed.
    """
    lines = []
    for _, _, name, lanes_x, h, ms in _frames(items, only_labelled):
        lanes = [[float(v) if np.isfinite(v) else -2 for v in lane] for lane in lanes_x if np.isfinite(lane).any()]
        rec = {"raw_file": name, "lanes": lanes, "h_samples": [float(r) for r in h]}
        if ms is not None:
            rec["run_time"] = float(ms)
        lines.append(json.dumps(rec))
    atomic.write_text(out, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def to_culane(items, out: str | Path, only_labelled: bool = False) -> int:
    """One `<export name without suffix>.lines.txt` per frame (x y pairs per lane, bottom-up, lanes with
    at least 2 points, as CULane's files); returns files written."""
    out = Path(out)
    n = 0
    for _, _, name, lanes_x, h, _ in _frames(items, only_labelled):
        text = []
        order = np.argsort(-np.asarray(h, np.float64), kind="stable")  # bottom-up
        for lane in lanes_x:
            lane, hh = np.asarray(lane, np.float64)[order], np.asarray(h, np.float64)[order]
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(lane) & (lane >= 0)
            if ok.sum() >= 2:
                text.append(" ".join(f"{xv!r} {yv!r}" for xv, yv in zip(lane[ok].tolist(), hh[ok].tolist())))
        target = (out / Path(name).with_suffix(".lines.txt")).resolve()
        if not target.is_relative_to(out.resolve()):  # load_case refuses such names; this holds whatever the items are
            raise UsageError(f"export name {name!r} would write outside {out}")
        atomic.write_text(target, "\n".join(text) + ("\n" if text else ""))
        n += 1
    return n


def export(fmt: str, items, out, only_labelled: bool = False) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    return (to_tusimple if fmt == "tusimple" else to_culane)(items, out, only_labelled)
