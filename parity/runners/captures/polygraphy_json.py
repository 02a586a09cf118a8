"""Polygraphy's JSON (polygraphy/json/serde.py, polygraphy/comparator/struct.py), written and read
without importing Polygraphy.

Every custom object is a dict tagged `"polygraphy_class"` (older files: the type name as a key with
the value "polygraphy_serialized_json_type"). An `ndarray` is `{"array": base64(np.save bytes)}`; a
`LazyArray` (alias `LazyNumpyArray`) is `{"values": <ndarray>}`; an `IterationResult` is
`{"outputs": {name: array}, "runtime", "runner_name"}`; `RunResults` is `{"lst": [[runner_name,
[IterationResult, ...]], ...]}`. `--load-inputs` takes a plain list of feed dicts `{name: ndarray}`.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from ...errors import UsageError

MARKER = "polygraphy_class"
LEGACY_MARKER = "polygraphy_serialized_json_type"


def encode_array(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return {"array": base64.b64encode(buf.getvalue()).decode(), MARKER: "ndarray"}


def write_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """A `polygraphy run --load-inputs` file: one feed dict per iteration, in order."""
    from ... import atomic

    atomic.write_text(path, json.dumps([{k: encode_array(v) for k, v in f.items()} for f in feeds]))


def _kind(d: dict) -> str | None:
    if MARKER in d:
        return d[MARKER]
    return next((k for k, v in d.items() if v == LEGACY_MARKER), None)


def _decode(obj, where: str):
    if isinstance(obj, list):
        return [_decode(v, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    kind = _kind(obj)
    if kind == "ndarray":
        try:
            return np.load(io.BytesIO(base64.b64decode(obj["array"].encode(), validate=True)), allow_pickle=False)
        except Exception as exc:  # a truncated or foreign payload: name it, never a traceback
            raise UsageError(f"{where}: an array is not a valid base64 np.save payload ({type(exc).__name__}: {exc})") from None
    if kind in ("LazyArray", "LazyNumpyArray"):
        return _decode(obj["values"], where)
    if kind == "IterationResult":
        return {"outputs": _decode(obj.get("outputs", {}), where), "runner_name": obj.get("runner_name")}
    if kind == "RunResults":
        return {"runs": [(name, _decode(iters, where)) for name, iters in obj.get("lst", [])]}
    if kind is not None and kind not in ("ndarray",):
        raise UsageError(f"{where}: holds a Polygraphy {kind!r} object, not run results or arrays")
    return {k: _decode(v, where) for k, v in obj.items()}


def read_json(path: Path):
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable Polygraphy JSON file: {exc}") from None
    return _decode(raw, str(path))


def read_run_results(path: Path, runner: str | None = None) -> tuple[str, list[dict[str, np.ndarray]]]:
    """(runner name, one {output name: array} per iteration) of a `--save-outputs` file; a file with
    several runners needs `runner` to say which."""
    doc = read_json(path)
    if not isinstance(doc, dict) or "runs" not in doc:
        raise UsageError(f"{path}: not Polygraphy RunResults (made by `polygraphy run ... --save-outputs`)")
    runs = doc["runs"]
    if not runs:
        raise UsageError(f"{path}: RunResults hold no runner")
    if runner is None and len(runs) > 1:
        raise UsageError(f"{path}: RunResults of {len(runs)} runners ({', '.join(n for n, _ in runs)}); say which with runner=NAME")
    chosen = [r for r in runs if runner is None or r[0] == runner]
    if not chosen:
        raise UsageError(f"{path}: no runner {runner!r} (it has {', '.join(n for n, _ in runs)})")
    name, iters = chosen[0]
    out = []
    for k, it in enumerate(iters):
        outs = it.get("outputs") if isinstance(it, dict) else None
        if not isinstance(outs, dict) or not all(isinstance(v, np.ndarray) for v in outs.values()):
            raise UsageError(f"{path}: runner {name!r} iteration {k} holds no arrays")
        out.append(outs)
    return name, out
