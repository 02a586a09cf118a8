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


def output_table(case_name, frames, t, runner, pipeline, ckpt_name, by_output: dict, perturbation="none", severity=0):
    """schema.OUTPUTS rows for one case x runner x pipeline x perturbation x severity: each named
    output's raw parity per frame (by_output: output name -> figure -> [T])."""
    import pyarrow as pa

    names = list(by_output)
    T = len(frames)
    n = T * len(names)
    slot = np.tile(np.arange(T), len(names))
    data = {
        "checkpoint": _constant(ckpt_name, n), "case": _constant(case_name, n),
        "frame": np.asarray(frames)[slot], "t": np.asarray(t, dtype=np.float64)[slot],
        "runner": _constant(runner, n), "pipeline": _constant(pipeline, n),
        "perturbation": _constant(perturbation, n), "severity": np.full(n, severity),
        "output": pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(names), dtype=np.int32), T)), pa.array(names)),
    }
    for col in schema.OUTPUTS[len(data):]:
        data[col.name] = np.concatenate([np.asarray(by_output[k][col.name], np.float64) for k in names])
    return schema.arrow_table(schema.OUTPUTS, data, n)


def output_parity(df, keys: tuple[str, ...]) -> dict[tuple, dict[str, dict]]:
    """From an outputs table (pandas): per `keys` group, each output's run-level raw parity, aggregated
    as the lane table's raw_* are (metrics.scoring.raw_aggregate)."""
    from ..metrics.scoring import raw_aggregate

    out: dict[tuple, dict[str, dict]] = {}
    if df is None or not len(df):
        return out
    for key, g in df.groupby(list(keys) + ["output"], observed=True, sort=False):
        *k, name = key
        out.setdefault(tuple(k), {})[str(name)] = raw_aggregate(g)
    return out


def jitter_table(rows: list[dict]):
    """schema.JITTER rows from per lane x look-ahead dicts."""
    names = [c.name for c in schema.JITTER]
    data = {k: [r.get(k) for r in rows] for k in names if any(k in r for r in rows)}
    return schema.arrow_table(schema.JITTER, data, len(rows))


def unit_result(tables: list, jitter_rows: list[dict], outputs: list, runners) -> dict:
    """What a replay or sweep unit returns: its lane rows, jitter rows and per-output parity each as
    one table in one piece, and the provenance of the runners that made them. One piece because a
    pool worker's result is pickled on its way to the parent: a sweep case's 62 + 62 small tables
    took 0.18 s to pickle and 0.17 s to unpickle, one table each 0.005 s in all."""
    import pyarrow as pa

    return {"tables": pa.concat_tables(tables).combine_chunks(), "jitter": jitter_table(jitter_rows),
            "outputs": pa.concat_tables(outputs).combine_chunks(), "runners": {r.name: r.describe() for r in runners}}


def write_table(table, path) -> None:
    import pyarrow.parquet as pq

    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def write_part(table, path, unit: str, key: str) -> None:
    """A run part: the table with its unit and content key in the file's metadata (runs.folder verifies both)."""
    from .folder import PART_METADATA

    meta = dict(table.schema.metadata or {})
    meta[PART_METADATA] = json.dumps({"unit": unit, "key": key}).encode()
    write_table(table.replace_schema_metadata(meta), path)


def read_part(path):
    """A verified part's table (page checksums checked), without the part's own metadata."""
    import pyarrow.parquet as pq

    from .folder import PART_METADATA

    try:  # one file read as such: read_table goes through the pyarrow.dataset layer (its import alone 30 ms)
        with pq.ParquetFile(path, page_checksum_verification=True) as part:
            table = part.read()
    except Exception as exc:  # pyarrow's errors for a damaged page vary by type
        raise UsageError(f"{path}: damaged run part ({type(exc).__name__}: {exc}); run the same command again to recompute it") from None
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != PART_METADATA}
    return table.replace_schema_metadata(meta or None)


def run_lanes(run: str | Path, runner: str, pipeline: str):
    """Yield (case, x[T, L, R_model], model_rows, infer_ms[T]) for one runner x pipeline of a replay run."""
    import pandas as pd

    from ..cases.format import load_case

    run = Path(run)
    summary = read_summary(run, ("parity.replay/1",))
    try:
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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer of 5000 digits
        raise UsageError(f"{path}: unreadable{what}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") not in schemas:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise UsageError(f"{path}: schema {got!r}, expected {' or '.join(schemas)}")
    return doc


def read_summary(folder: str | Path, schemas: tuple[str, ...], name: str = "summary.json") -> dict:
    """The summary document of a finished run folder, checked to be one of `schemas`."""
    from .folder import check_finished

    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such run folder")
    check_finished(folder)
    return read_document(Path(folder) / name, schemas, "missing (not a finished run folder)")


# Scored columns of the lane table: per frame (repeated on each lane's row) and per lane-frame.
FRAME_COLUMNS = ("frame_accuracy", "frame_fp", "frame_fn", "culane_tp", "culane_fp", "culane_fn", "culane30_tp", "culane30_fp",
                 "culane30_fn", "raw_max", "raw_p99", "raw_mean", "raw_cosine", "argmax_flip_rate", "nonfinite")
LANE_COLUMNS = ("dx_ref_mean_px", "dx_ref_max_px", "dx_ref_mean_m", "bend_px", "bend_row", "kinks", "added_bend_px", "added_kinks")
INT_LANE_COLUMNS = ("bend_row", "kinks", "added_kinks")
GROUP = ("case", "runner", "pipeline", "perturbation", "severity")


def read_groups(lanes, jitter=None) -> dict[tuple, dict]:
    """The scored results of a lane table (and its jitter table), back as the pieces the metrics
    aggregate: (case, runner, pipeline, perturbation, severity) -> {frames, t, x[T, L, R], scored
    (parity.metrics.scoring.Scored), lane_names, infer_ms}. Rows are taken in the order written.

    A run's summary is always made from its parts through this, so a resumed run (whose earlier
    parts come from disk) and an uninterrupted one give the same numbers by construction."""
    import pyarrow as pa

    from ..metrics.scoring import ADDED_JITTER, Scored

    if isinstance(lanes, pa.Table):
        table = lanes
    else:
        table = pa.Table.from_pandas(lanes, preserve_index=False)
    n = table.num_rows
    order = _group_rows(table, GROUP)
    x_all = table.column("x").combine_chunks()
    R = x_all.type.list_size
    x_flat = x_all.flatten().to_numpy(zero_copy_only=False).reshape(n, R) if n else np.zeros((0, R), np.float32)

    def numeric(name):
        c = table.column(name)
        if c.null_count == len(c):
            return None
        return c.to_numpy(zero_copy_only=False).astype(np.float64) if c.null_count == 0 else \
            np.asarray(c.to_pandas().to_numpy(dtype=np.float64, na_value=np.nan))

    num = {c: numeric(c) for c in FRAME_COLUMNS + LANE_COLUMNS + ("infer_ms", "frame", "t", "lane")}
    lane_name, ref = table.column("lane_name"), table.column("bending_jitter_reference")
    jit: dict[tuple, list[dict]] = {}
    if jitter is not None and len(jitter):
        jdf = jitter if not isinstance(jitter, pa.Table) else jitter.to_pandas()
        fields = ["lane", "lookahead", "row", "jitter_rms", "jitter_p95", "jitter_amplitude", "jitter_oscillation_hz", "jitter_flicker_hz"]
        fields += [f"added_{m}" for m in ADDED_JITTER if f"added_{m}" in jdf.columns]
        cols = [jdf[k].astype(str).tolist() if k in ("case", "runner", "pipeline", "perturbation") else jdf[k].tolist() for k in GROUP]
        keys = list(zip(*cols))  # column by column: a DataFrame's rows as dicts cost more than the rest of the read
        lanes, looks, rows = (jdf[k].tolist() for k in ("lane", "lookahead", "row"))
        values = list(zip(*(jdf[f].astype(float).tolist() for f in fields[3:])))
        for key, lane, look, row, vals in zip(keys, lanes, looks, rows, values):
            jit.setdefault(key, []).append({"lane": int(lane), "lookahead": look, "row": int(row), **dict(zip(fields[3:], vals))})
    out = {}
    for key, idx in order.items():
        lanes_of = num["lane"][idx].astype(int)
        L = int(lanes_of.max()) + 1
        T = len(idx) // L
        sc = Scored(reference=ref[int(idx[0])].as_py())
        for c in FRAME_COLUMNS:
            if num[c] is not None:
                sc.frame_cols[c] = num[c][idx].reshape(T, L)[:, 0]
        for c in LANE_COLUMNS:
            if num[c] is not None:
                v = num[c][idx].reshape(T, L)
                sc.lane_cols[c] = v.astype(np.int16) if c in INT_LANE_COLUMNS else v
        sc.jitter_rows = jit.get(key, [])
        out[key] = {
            "frames": num["frame"][idx].reshape(T, L)[:, 0].astype(np.int64), "t": num["t"][idx].reshape(T, L)[:, 0],
            "x": x_flat[idx].reshape(T, L, R), "scored": sc, "lane_names": lane_name.take(idx[:L]).to_pylist(),
            "infer_ms": None if num["infer_ms"] is None else num["infer_ms"][idx].reshape(T, L)[:, 0],
        }
    return out


def _group_rows(table, columns) -> dict[tuple, np.ndarray]:
    """Key (the row's values of `columns`) -> its row indices in table order, keys in order of first
    appearance (a replay's table has tens of thousands of rows: no Python loop over them)."""
    import pyarrow.compute as pc

    if not table.num_rows:
        return {}
    codes, values = [], []
    for k in columns:
        enc = pc.dictionary_encode(table.column(k)).combine_chunks()
        codes.append(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        values.append(enc.dictionary.to_pylist())
    _, first, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[rows], np.arange(len(first) + 1))
    groups = {}
    for g in np.argsort(first, kind="stable"):  # the order a row of each key first appears
        idx = rows[bounds[g] : bounds[g + 1]]
        groups[tuple(v[c[idx[0]]] for v, c in zip(values, codes))] = idx
    return groups


class CaseParts:
    """A run's per-case parts in its RunFolder (parity.runs.folder): each case's lane table, jitter
    table and per-output parity table, written the moment the case finishes and recorded in the manifest under a content key (the
    run key, the case's name and the hash of its bytes). The final tables are always made by reading
    every part back, whoever computed it, so a resumed run and an uninterrupted one agree.

    `pieces` > 1 computes each case as that many units (piece k of n; a sweep splits its conditions),
    so the workers of a pool stay busy to the end instead of waiting on the last case: 9 equal
    cases on 2 workers take 5 case-times whole, 4.5 in quarters. The pieces of a case are read back
    in order, one table per case, as if it had been one unit."""

    SUFFIXES = (".parquet", ".jitter.parquet", ".outputs.parquet")

    def __init__(self, folder, run_key: str, cases: list, pieces: int = 1):
        from ..provenance import sha256_json

        self.folder, self.cases, self.pieces = folder, cases, pieces
        self.keys, self.todo_parts = {}, []
        for c in cases:
            for k in range(pieces):
                name, piece = self.part(c.name, k), ({"piece": k, "pieces": pieces} if pieces > 1 else {})
                self.keys[name] = sha256_json({"run": run_key, "case": c.name, "content": c.content_hash(), **piece})
                if folder.finished(name, self.keys[name]) is None:
                    self.todo_parts.append((c, k))
        todo = {c.name for c, _ in self.todo_parts}
        self.todo = [c for c in cases if c.name in todo]  # the cases with a piece still to compute
        self.runner_info: dict = {}  # the runners' provenance, from the first unit computed here

    def part(self, case: str, piece: int) -> str:
        """The unit name of a case's piece (the case's own name when it is one piece)."""
        return case if self.pieces == 1 else f"{case}~{piece + 1}of{self.pieces}"

    @property
    def reused(self) -> list[str]:
        todo = {c.name for c in self.todo}
        return [c.name for c in self.cases if c.name not in todo]

    def compute(self, spec, unit, payloads: dict, on_done=None) -> list[dict]:
        """Run `unit(payload)` for every case piece still to do on the executor `spec`
        (parity.runs.executor; a case's payload gets "piece", "pieces" and "part" when it is split);
        each result (`unit_result`) is written as that piece's part the moment it arrives and
        `on_done(case, piece, result)` called. A piece that fails is recorded (error, exit code,
        traceback) and the others go on."""
        import logging

        from .executor import run_units

        todo = [(c, k) for c, k in self.todo_parts if c.name in payloads]
        errors = []

        def done(i, result, error):
            case, k = todo[i]
            name = self.part(case.name, k)
            if error is None:
                try:
                    files = self.folder.part_files(name, self.SUFFIXES)
                    key = self.keys[name]
                    write_part(result["tables"], files[".parquet"], name, key)
                    write_part(result["jitter"], files[".jitter.parquet"], name, key)
                    write_part(result["outputs"], files[".outputs.parquet"], name, key)
                    self.folder.add(name, key, files)
                    self.runner_info = self.runner_info or result.get("runners", {})
                except OSError as exc:  # a full disk fails this case, said with the file
                    error = {"error": f"{type(exc).__name__}: {exc}", "exit_code": 1, "traceback": ""}
            if error is not None:
                errors.append({"case": case.name, **({"piece": f"{k + 1} of {self.pieces}"} if self.pieces > 1 else {}), **error})
                logging.getLogger(__name__).error("case %s failed: %s", name, error["error"])
            if on_done is not None:
                on_done(case, k, result)

        sent = [payloads[c.name] if self.pieces == 1 else {**payloads[c.name], "piece": k, "pieces": self.pieces, "part": self.part(c.name, k)}
                for c, k in todo]
        run_units(spec, unit, sent, done)
        return errors

    def collect(self, lanes_name: str) -> tuple[list, object, list[str]]:
        """[(case, lane table, jitter DataFrame)] of every case whose pieces all finished, the merged
        per-output parity (a DataFrame, None when no case finished), and the run's merged tables
        (`lanes_name`, jitter.parquet, outputs.parquet) written beside them."""
        import pyarrow as pa

        done = []
        for c in self.cases:
            files = [self.folder.finished(self.part(c.name, k), self.keys[self.part(c.name, k)]) for k in range(self.pieces)]
            if all(f is not None for f in files):
                done.append((c, *(pa.concat_tables([read_part(f[s]) for f in files]) for s in self.SUFFIXES)))
        if not done:
            return [], None, []
        merged = [pa.concat_tables([d[i] for d in done]) for i in (1, 2, 3)]
        written = [lanes_name, "jitter.parquet", "outputs.parquet"]
        for table, name in zip(merged, written):
            write_table(table, self.folder.path / name)
        return [(c, lt, jt.to_pandas()) for c, lt, jt, _ in done], merged[2].to_pandas(), written
