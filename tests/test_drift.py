"""Drift: a baseline keeps its run's lanes and the gate compares the candidate's lanes with them, point
by point; candidates whose aggregates stay but whose lanes move fail with a drift line first."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from parity.decisions import baseline_lanes as BL

from .test_gate import _doc, _failing, _gate, world  # noqa: F401  (the fixture)


def _points(rng, cases=("a", "b"), runners=("torch", "fp16"), frames=5, lanes=3, rows=6):
    keys = pd.DataFrame([(c, f, r, p, ln) for c in cases for f in range(frames) for r in runners for p in ("vehicle",)
                         for ln in range(lanes)], columns=["case", "frame", "runner", "pipeline", "lane"])
    x = rng.uniform(50, 600, (len(keys), rows)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    return keys, x


def _plain_drift(bk, bx, ck, cx, case, runner):
    """The rules written out point by point: matched by (case, frame, runner, pipeline, lane, row)."""
    cand = {tuple(k): row for k, row in zip(ck.itertuples(index=False), cx)}
    d, exist, either = [], 0, 0
    for k, row in zip(bk.itertuples(index=False), bx):
        if (case != "*" and k.case != case) or k.runner != runner:
            continue
        other = cand.get(tuple(k), np.full(len(row), np.nan))
        for a, b in zip(row, other):
            fa, fb = math.isfinite(a), math.isfinite(b)
            either += fa or fb
            exist += fa != fb
            if fa and fb:
                d.append(abs(float(b) - float(a)))
    return {"drift_mean_px": sum(d) / len(d), "drift_p99_px": float(np.percentile(d, 99)), "drift_max_px": max(d),
            "drift_existence_rate": exist / either}


def test_drift_recovers_a_planted_shift_and_lanes_that_appear_or_vanish():
    rng = np.random.default_rng(3)
    bk, bx = _points(rng)
    cx = bx.copy()
    fp16 = (bk.runner == "fp16").to_numpy()
    in_a = fp16 & (bk.case == "a").to_numpy()
    cx[in_a] += 0.5  # a planted 0.5 px shift of one runner on one case
    cx[in_a & (bk.lane == 1).to_numpy() & (bk.frame == 2).to_numpy()] = np.nan  # a lane that vanished
    cx[fp16 & (bk.case == "b").to_numpy() & np.isnan(bx).any(axis=1)] = 300.0  # points that appeared where the baseline had none
    ck = bk.sample(frac=1.0, random_state=1)  # row order does not matter
    cx = cx[ck.index.to_numpy()]
    ck = ck.reset_index(drop=True)
    got = BL.drift((bk, bx), (ck, cx))
    assert got[("a", "fp16", "vehicle")]["drift_mean_px"] == pytest.approx(0.5, abs=1e-4)
    assert got[("a", "torch", "vehicle")] == {"drift_mean_px": 0.0, "drift_p99_px": 0.0, "drift_max_px": 0.0, "drift_existence_rate": 0.0}
    for case in ("a", "b", "*"):
        want = _plain_drift(bk, bx, ck, cx, case, "fp16")
        have = got[(case, "fp16", "vehicle")]
        for m in BL.DRIFT:
            assert have[m] == pytest.approx(want[m], abs=1e-5), (case, m)
    assert got[("b", "fp16", "vehicle")]["drift_existence_rate"] > 0.05 and got[("a", "fp16", "vehicle")]["drift_existence_rate"] > 0


def test_a_candidate_without_some_rows_drifts_by_their_existence():
    rng = np.random.default_rng(4)
    bk, bx = _points(rng, cases=("a",), runners=("torch",))
    keep = (bk.frame != 4).to_numpy()  # the candidate lost its last frame
    got = BL.drift((bk, bx), (bk[keep].reset_index(drop=True), bx[keep]))[("a", "torch", "vehicle")]
    assert got["drift_mean_px"] == 0.0
    assert got["drift_existence_rate"] == pytest.approx(np.isfinite(bx[~keep]).sum() / np.isfinite(bx).sum())


def test_the_same_checkpoint_again_has_no_drift_and_the_baseline_keeps_its_lanes(world, tmp_path):  # noqa: F811
    doc = json.loads(world["baseline"].read_text())
    lanes = world["baseline"].with_name("baseline.lanes.npz")
    assert doc["lanes"]["file"] == lanes.name and doc["lanes"]["bytes"] == lanes.stat().st_size
    r = _gate(world, tmp_path / "g")
    assert r.returncode == 0, r.stdout
    drift = [c for c in _doc(tmp_path / "g")["checks"] if c["rule"].startswith("drift_")]
    assert drift and all(c["status"] == "pass" and c["measured"] == 0.0 for c in drift)


def _noisy(world, tmp_path, scale):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = world["fitted"].build_model()
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
    return save_checkpoint(tmp_path / "noisy.pt", model, dict(world["fitted"].meta)).path


@pytest.mark.parametrize("candidate", ["full-range NV12", "weight noise 1e-2"])
def test_drifting_candidates_fail_with_a_drift_line_first(world, tmp_path, candidate):  # noqa: F811
    if candidate == "full-range NV12":
        spec = json.loads((world["run"] / "summary.json").read_text())["provenance"]["pipelines"]["vehicle"]
        spec["yuv_range"] = "full"
        path = tmp_path / "vehicle-full.json"
        path.write_text(json.dumps(spec))
        args = ["--pipeline", f"training,{path}"]
    else:
        args = ["--checkpoint", _noisy(world, tmp_path, 1e-2)]
    r = _gate(world, tmp_path / "g", *args)
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert "torch fp32 moved: torch on " in first and ": drift_" in first.split("torch fp32 moved:")[1].split(";")[0], first
    assert any(f[3].startswith("drift_") and f[1] == "torch" for f in _failing(_doc(tmp_path / "g")))


def test_lanes_that_are_not_the_recorded_file_are_refused(world, tmp_path):  # noqa: F811
    import shutil

    base = tmp_path / "b.json"
    shutil.copy(world["baseline"], base)
    lanes = tmp_path / "b.lanes.npz"
    doc = json.loads(base.read_text())
    doc["lanes"]["file"] = lanes.name
    base.write_text(json.dumps(doc))
    r = _gate({**world, "baseline": base}, tmp_path / "g", "--run", world["run"])
    assert r.returncode == 2 and "b.lanes.npz: the baseline's lanes are missing" in r.stderr, r.stderr
    data = bytearray(world["baseline"].with_name("baseline.lanes.npz").read_bytes())
    data[len(data) // 2] ^= 1
    lanes.write_bytes(bytes(data))
    r = _gate({**world, "baseline": base}, tmp_path / "g2", "--run", world["run"])
    assert r.returncode == 2 and "b.lanes.npz: not the lanes file this baseline recorded (sha256 differs)" in r.stderr, r.stderr
    del doc["lanes"]  # a baseline made before lanes were kept: drift is not applicable, the rest is checked
    base.write_text(json.dumps(doc))
    r = _gate({**world, "baseline": base}, tmp_path / "g3", "--run", world["run"])
    assert r.returncode == 0, r.stdout + r.stderr
    drift = [c for c in _doc(tmp_path / "g3")["checks"] if c["rule"].startswith("drift_")]
    assert drift and all(c["message"].startswith("not applicable: the baseline keeps no lanes") for c in drift)
