"""Writing and reading the results tables (columns declared in `schema`).

Tables are built from numpy columns with no per-row Python objects, so memory stays proportional
to the numbers; each part is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UsageError
from . import schema


def _constant(value: str, n: int):
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([str(value)]))


def lane_table(case_name, frames, t, runner, pipeline, ckpt_name, lane_names, x, lane_cols=None, frame_cols=None,
               infer_ms=None, perturbation="none", severity=0, parity_reference="", bending_jitter_reference=""):
    """Lane-level rows for one case x runner x pipeline x perturbation x severity (schema.LANES).

    x[T, L, R] at case frames `frames` (times t); lane_cols: name -> [T, L]; frame_cols: name -> [T]
    (repeated on each lane's row); infer_ms[T] or None.
    """
    import pyarrow as pa

    T, L, R = x.shape
    n = T * L
    slot = np.repeat(np.arange(T), L)
    lane = np.tile(np.arange(L), T)
    flat = np.ascontiguousarray(x.reshape(n, R), dtype=np.float32)
    data = {
        "checkpoint": _constant(ckpt_name, n), "case": _constant(case_name, n),
        "frame": np.asarray(frames)[slot], "t": np.asarray(t, dtype=np.float64)[slot],
        "runner": _constant(runner, n), "pipeline": _constant(pipeline, n),
        "perturbation": _constant(perturbation, n), "severity": np.full(n, severity),
        "lane": lane, "lane_name": pa.DictionaryArray.from_arrays(pa.array(lane.astype(np.int32)), pa.array(list(lane_names))),
        "exists": np.isfinite(flat).any(axis=1),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), R),
        "parity_reference": _constant(parity_reference, n), "bending_jitter_reference": _constant(bending_jitter_reference, n),
    }
    for name, v in (lane_cols or {}).items():
        data[name] = np.asarray(v).reshape(n)
    for name, v in (frame_cols or {}).items():
        data[name] = np.repeat(np.asarray(v), L)
    if infer_ms is not None:
        data["infer_ms"] = np.repeat(np.asarray(infer_ms, np.float64), L)
    return schema.arrow_table(schema.LANES, data, n, rows=R)


def jitter_table(rows: list[dict]):
    """schema.JITTER rows from per lane x look-ahead dicts."""
    names = [c.name for c in schema.JITTER]
    data = {k: [r.get(k) for r in rows] for k in names if any(k in r for r in rows)}
    return schema.arrow_table(schema.JITTER, data, len(rows))


def write_table(table, path) -> None:
    import pyarrow.parquet as pq

    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def merge_parts(parts: list, path) -> None:
    """Concatenate per-case part files (all of one schema) into one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_table(pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default"), path)


def run_lanes(run: str | Path, runner: str, pipeline: str):
    """Yield (case, x[T, L, R_model], model_rows, infer_ms[T]) for one runner x pipeline of a replay run."""
    import pandas as pd

    from ..cases.format import load_case

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


def read_document(path: str | Path, schemas: tuple[str, ...], missing: str, what: str = "") -> dict:
    """A JSON document of one of `schemas`; every problem is one line naming the file (`missing`
    says what an absent file means)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable{what}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") not in schemas:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise UsageError(f"{path}: schema {got!r}, expected {' or '.join(schemas)}")
    return doc


def read_summary(folder: str | Path, schemas: tuple[str, ...], name: str = "summary.json") -> dict:
    """The summary document of a finished run folder, checked to be one of `schemas`."""
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such run folder")
    return read_document(Path(folder) / name, schemas, "missing (not a finished run folder)")
