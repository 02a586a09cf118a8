"""A baseline's own lanes, and the drift of a candidate's lanes from them.

Aggregates can stay put while lanes move (a decoder reading NV12 as full range shifts lanes by
0.7 px on average and passes every per-case mean), so a baseline keeps every lane point of the run
it was made from: `<baseline>.lanes.npz` beside the JSON (case x frame x runner x pipeline x lane,
x at each model row, float32, compressed), its sha256 and size recorded in the baseline and
checked when read. The gate compares the candidate's points with them, per case x runner x pipeline
and over all cases:

- `drift_mean_px`, `drift_p99_px`, `drift_max_px`: |x_candidate - x_baseline| over the points both
  have (source px);
- `drift_existence_rate`: the share of points that one of the two has and the other does not (a
  lane or its end appearing or vanishing, both directions), over the points either has.

A baseline compared with itself drifts by 0, so the rules are limits on the candidate's value.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..errors import UsageError

SCHEMA = "parity.baseline-lanes/1"
KEYS = ("case", "runner", "pipeline")
DRIFT = ("drift_mean_px", "drift_p99_px", "drift_max_px", "drift_existence_rate")


def lanes_path(baseline_path: str | Path) -> Path:
    p = Path(baseline_path)
    return p.with_name(p.stem + ".lanes.npz")


def run_points(run: str | Path):
    """The unperturbed lane rows of a replay's frames.parquet: (keys table, x [rows, R] float32)."""
    import pandas as pd

    try:
        t = pd.read_parquet(Path(run) / "frames.parquet", columns=["case", "frame", "runner", "pipeline", "perturbation", "lane", "x"])
    except (OSError, ValueError) as exc:
        raise UsageError(f"{run}: cannot read frames.parquet: {exc}") from None
    t = t[t.perturbation.astype(str) == "none"].drop(columns="perturbation")
    x = np.stack(t.x.to_numpy()).astype(np.float32) if len(t) else np.zeros((0, 0), np.float32)
    keys = t.drop(columns="x").reset_index(drop=True)
    for k in KEYS:
        keys[k] = keys[k].astype(str)
    return keys, x


def write_lanes(run: str | Path, path: str | Path) -> dict:
    """Write the run's lanes to `path`; what the baseline records of the file."""
    from .. import atomic

    keys, x = run_points(run)
    names = {k: sorted(set(keys[k])) for k in KEYS}
    codes = {k: np.searchsorted(names[k], keys[k].to_numpy()).astype(np.int32) for k in KEYS}
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, frame=keys.frame.to_numpy(np.int32), lane=keys.lane.to_numpy(np.int16),
                        **{f"{k}_code": v for k, v in codes.items()},
                        names=np.frombuffer(json.dumps({"schema": SCHEMA, **names}).encode(), np.uint8))
    data = buf.getvalue()
    atomic.write_bytes(path, data)
    return {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "points": int(x.size)}


def read_lanes(baseline_path: str | Path, record: dict):
    """The baseline's lanes as (keys table, x), after checking the file is the one it recorded."""
    import pandas as pd

    path = Path(baseline_path).with_name(str(record.get("file", "")))
    if not record.get("file") or Path(str(record["file"])).name != record["file"]:
        raise UsageError(f"{baseline_path}: lanes.file must be a file name beside the baseline, got {record.get('file')!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: the baseline's lanes are missing or unreadable ({exc.strerror or exc}); make the baseline again") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise UsageError(f"{path}: not the lanes file this baseline recorded (sha256 differs); make the baseline again")
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        names = json.loads(z["names"].tobytes())
        keys = pd.DataFrame({k: np.asarray(names[k], dtype=object)[z[f"{k}_code"]] for k in KEYS})
        keys["frame"], keys["lane"] = z["frame"].astype(np.int64), z["lane"].astype(np.int64)
        x = z["x"]
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise UsageError(f"{path}: unreadable lanes file: {exc}") from None
    if names.get("schema") != SCHEMA or x.ndim != 2 or len(x) != len(keys):
        raise UsageError(f"{path}: not a {SCHEMA} file (schema {names.get('schema')!r}, {x.shape} points for {len(keys)} rows)")
    return keys, x


def _aligned(base, cand, rename):
    """The baseline's rows with the candidate's points beside them: (rows table, x_base, x_cand)."""
    (bk, bx), (ck, cx) = base, cand
    rename = rename or {}
    ck = ck.assign(runner=ck.runner.map(lambda r: rename.get(r, r)), pipeline=ck.pipeline.map(lambda p: rename.get(p, p)))
    m = bk.assign(_b=np.arange(len(bk))).merge(ck.assign(_c=np.arange(len(ck))), on=[*KEYS, "frame", "lane"], how="left")
    R = bx.shape[1]
    cxx = np.full((len(m), R), np.nan, np.float32)
    hit = m._c.notna().to_numpy()
    if cx.size and cx.shape[1] == R:
        cxx[hit] = cx[m._c[hit].astype(int).to_numpy()]
    return m, bx[m._b.to_numpy()], cxx


def drift(base, cand, rename: dict[str, str] | None = None, overall: str = "*") -> dict[tuple, dict[str, float]]:
    """(case, runner, pipeline) -> the drift metrics of the candidate's lanes from the baseline's, with
    (overall, runner, pipeline) over all cases. `base`, `cand`: (keys, x) as `run_points` gives them;
    candidate runners and pipelines renamed by `rename` first. A point one side lacks entirely (a
    missing frame or lane row) counts as absent there."""
    m, bxx, cxx = _aligned(base, cand, rename)
    both = np.isfinite(bxx) & np.isfinite(cxx)
    either = np.isfinite(bxx) | np.isfinite(cxx)
    d = np.where(both, np.abs(cxx.astype(np.float64) - bxx), np.nan)
    out = {}
    groups = {**m.groupby(list(KEYS), sort=True, observed=True).indices,
              **{(overall, r, p): v for (r, p), v in m.groupby(["runner", "pipeline"], sort=True, observed=True).indices.items()}}
    for key, rows in groups.items():
        dv = d[rows][both[rows]]
        n_either = int(either[rows].sum())
        out[key] = {
            "drift_mean_px": float(dv.mean()) if dv.size else float("nan"),
            "drift_p99_px": float(np.percentile(dv, 99)) if dv.size else float("nan"),
            "drift_max_px": float(dv.max()) if dv.size else float("nan"),
            "drift_existence_rate": float((either[rows] & ~both[rows]).sum() / n_either) if n_either else float("nan"),
        }
    return out


def worst_lane_frames(base, cand, rename: dict[str, str] | None = None, k: int = 4) -> list[dict]:
    """The k lane-frames whose points moved most from the baseline's (largest |dx|, one per frame and
    runner), for the report to draw: case, frame, runner, pipeline, lane, drift_px."""
    m, bxx, cxx = _aligned(base, cand, rename)
    with np.errstate(invalid="ignore"):
        d = np.abs(cxx.astype(np.float64) - bxx)
    worst = np.max(np.where(np.isfinite(d), d, -1.0), axis=1) if d.size else np.zeros(0)
    t = m[[*KEYS, "frame", "lane"]].assign(drift_px=worst)
    t = t[t.drift_px > 0].sort_values("drift_px", ascending=False).drop_duplicates(["case", "frame", "runner"]).head(k)
    return [{c: (int(v) if c in ("frame", "lane") else float(v) if c == "drift_px" else str(v)) for c, v in r.items()}
            for r in t.to_dict("records")]
