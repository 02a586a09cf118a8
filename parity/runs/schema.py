"""The results tables' columns, declared once: name, type, unit and meaning.

`frames.parquet` (replay) and `sweep.parquet` (sweep) share the lane table: one row per checkpoint
x case x frame x runner x pipeline x perturbation x severity x lane. `jitter.parquet` has one row
per case x runner x pipeline x perturbation x severity x lane x look-ahead row; `outputs.parquet` one
row per case x frame x runner x pipeline x perturbation x severity x named output. Writers build their
tables through `arrow_table`, which refuses an undeclared column and fills a declared one that does
not apply with nulls, so every table of a kind has the same columns and types; reports/README.md
shows `markdown()` of each (a test keeps them equal).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string (dictionary-encoded) | bool | int8 | int16 | int32 | float32 | float64 | float32[rows]
    unit: str
    meaning: str


def _cols(*rows: tuple[str, str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*r) for r in rows)


KEYS = _cols(
    ("checkpoint", "string", "", "checkpoint name (its file stem)"),
    ("case", "string", "", "case name"),
    ("frame", "int32", "", "frame index in the case"),
    ("t", "float64", "s", "the frame's timestamp (after a temporal perturbation: the time it was fed)"),
    ("runner", "string", "", "runner name (`parity runners`)"),
    ("pipeline", "string", "", "preprocessing pipeline name"),
    ("perturbation", "string", "", "perturbation name; `none` when unperturbed"),
    ("severity", "int8", "", "perturbation severity 1..5; 0 when unperturbed"),
)

LANES = KEYS + _cols(
    ("lane", "int8", "", "lane slot index of the model"),
    ("lane_name", "string", "", "lane slot name (left_left, left, right, right_right for the reference model)"),
    ("exists", "bool", "", "the lane has at least one point in this frame"),
    ("x", "float32[rows]", "px", "the lane's x at every anchor row of the model, source-image pixels, NaN = absent"),
    ("parity_reference", "string", "", "what dx_ref_* compares with: `torch@<pipeline>` in replay, `<runner> unperturbed` in a sweep"),
    ("dx_ref_mean_px", "float32", "px", "mean |x - x_ref| over the rows where both have the lane"),
    ("dx_ref_max_px", "float32", "px", "max |x - x_ref| over the rows where both have the lane"),
    ("dx_ref_mean_m", "float64", "m", "dx_ref_mean_px in metres on the flat ground (null when the case has no camera height and pitch)"),
    ("bending_jitter_reference", "string", "", "what bend_* and jitter compare with: `gt`, or `<runner>@<pipeline>`"),
    ("bend_px", "float64", "px", "largest excess chord deviation over the rows of this lane-frame"),
    ("bend_row", "int16", "", "anchor-row index of bend_px; -1 when the lane is absent"),
    ("kinks", "int16", "", "rows whose excess chord deviation exceeds the kink threshold (20 px at 1280 wide)"),
    ("added_bend_px", "float64", "px", "deployment delta: largest excess chord deviation over the parity reference's (torch@<pipeline> in replay), this lane-frame"),
    ("added_kinks", "int16", "", "deployment delta: rows whose excess chord deviation over the parity reference exceeds the kink threshold"),
    ("infer_ms", "float64", "ms", "the runner's inference time per frame (batch time / batch size); null in sweeps, whose tables are reproducible"),
    ("frame_accuracy", "float64", "", "TuSimple accuracy of the frame vs GT (null on unlabelled frames; repeated on each lane row)"),
    ("frame_fp", "float64", "", "TuSimple false-positive rate of the frame"),
    ("frame_fn", "float64", "", "TuSimple false-negative rate of the frame"),
    ("culane_tp", "float64", "lanes", "CULane true positives of the frame at IoU 0.5"),
    ("culane_fp", "float64", "lanes", "CULane false positives at IoU 0.5"),
    ("culane_fn", "float64", "lanes", "CULane false negatives at IoU 0.5"),
    ("culane30_tp", "float64", "lanes", "CULane true positives at IoU 0.3"),
    ("culane30_fp", "float64", "lanes", "CULane false positives at IoU 0.3"),
    ("culane30_fn", "float64", "lanes", "CULane false negatives at IoU 0.3"),
    ("raw_max", "float64", "logit", "max |logits - logits of torch on the same input| over the frame's outputs"),
    ("raw_p99", "float64", "logit", "99th percentile of that difference"),
    ("raw_mean", "float64", "logit", "mean of that difference"),
    ("raw_cosine", "float64", "", "cosine similarity of the frame's flattened logits with torch's"),
    ("argmax_flip_rate", "float64", "", "share of (row, lane) classifications whose argmax differs from torch's"),
    ("nonfinite", "float64", "", "share of the frame's raw output values that are NaN/Inf; above 0 the frame's lanes are failed (absent)"),
)

_SHARED = {c.name: c for c in LANES}

JITTER = tuple(_SHARED[n] for n in ("checkpoint", "case", "runner", "pipeline", "perturbation", "severity", "lane", "lane_name")) + _cols(
    ("lookahead", "string", "", "near, mid or far"),
    ("row", "int16", "", "anchor-row index of the look-ahead"),
    ("reference", "string", "", "what the residual is taken against: `gt`, or `<runner>@<pipeline>` / `<runner> unperturbed`"),
    ("jitter_rms", "float64", "px/frame", "RMS of the residual's change per nominal frame period"),
    ("jitter_p95", "float64", "px/frame", "95th percentile of |that change|"),
    ("jitter_amplitude", "float64", "px", "sqrt(2) x standard deviation of the residual (a sinusoid's amplitude)"),
    ("jitter_oscillation_hz", "float64", "Hz", "sign changes of the residual's change, above 0.05 px, per second / 2"),
    ("jitter_flicker_hz", "float64", "Hz", "existence changes the reference does not make, per second"),
    ("added_jitter_rms", "float64", "px/frame", "deployment delta: RMS change per frame period of x minus the parity reference (torch@<pipeline> in replay)"),
    ("added_jitter_p95", "float64", "px/frame", "deployment delta: 95th percentile of |that change|"),
    ("added_amplitude", "float64", "px", "deployment delta: sqrt(2) x standard deviation of x minus the parity reference"),
    ("added_oscillation_hz", "float64", "Hz", "deployment delta: sign changes of that residual's change, above 0.05 px, per second / 2"),
    ("added_flicker_hz", "float64", "Hz", "deployment delta: existence changes the parity reference does not make, per second"),
)

# Raw-output parity of each named output on its own (the lane table's raw_* are the worst over them).
OUTPUTS = tuple(_SHARED[n] for n in ("checkpoint", "case", "frame", "t", "runner", "pipeline", "perturbation", "severity")) + _cols(
    ("output", "string", "", "the model's output tensor name (the adapter's output_names: one for the reference model, four for ufldv2)"),
    ("raw_max", "float64", "logit", "max |output - torch's same output on the same input| over the frame"),
    ("raw_p99", "float64", "logit", "99th percentile of that difference"),
    ("raw_mean", "float64", "logit", "mean of that difference"),
    ("raw_cosine", "float64", "", "cosine similarity of the frame's flattened output with torch's"),
    ("argmax_flip_rate", "float64", "", "share of the output's classifications (argmax over its axis 1) that differ from torch's"),
    ("nonfinite", "float64", "", "share of this output's values that are NaN/Inf"),
)

TABLES = {"frames.parquet / sweep.parquet": LANES, "jitter.parquet": JITTER, "outputs.parquet": OUTPUTS}


def arrow_type(col: Column, rows: int | None = None):
    import pyarrow as pa

    if col.type == "float32[rows]":
        if rows is None:
            raise ValueError(f"column {col.name!r} needs the number of anchor rows")
        return pa.list_(pa.float32(), rows)
    if col.type == "string":
        return pa.dictionary(pa.int32(), pa.string())
    return {"bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(),
            "float32": pa.float32(), "float64": pa.float64()}[col.type]


def arrow_table(columns: tuple[Column, ...], data: dict, n: int, rows: int | None = None):
    """A table with exactly the declared columns in order: arrays from `data` cast to their declared
    type, nulls for declared columns `data` lacks. An undeclared key is a programming error."""
    import pyarrow as pa

    unknown = sorted(set(data) - {c.name for c in columns})
    if unknown:
        raise ValueError(f"columns {unknown} are not declared in parity/runs/schema.py")
    arrays = []
    for c in columns:
        typ = arrow_type(c, rows)
        v = data.get(c.name)
        if v is None:
            arrays.append(pa.nulls(n, typ))
            continue
        if not isinstance(v, (pa.Array, pa.ChunkedArray)):
            if c.type == "string":
                v = pa.array(v, pa.string()).dictionary_encode()
            else:
                v = pa.array(v, type=typ, from_pandas=False)
        if v.type != typ:
            v = v.cast(typ)
        if len(v) != n:
            raise ValueError(f"column {c.name!r} has {len(v)} values, the table {n} rows")
        arrays.append(v)
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(c.name, arrow_type(c, rows)) for c in columns]))


def markdown(columns: tuple[Column, ...]) -> str:
    lines = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.unit or '-'} | {c.meaning} |" for c in columns]
    return "\n".join(lines)
