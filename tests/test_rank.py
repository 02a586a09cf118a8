"""`parity rank`: the leaderboard's statistics on planted candidates, and the cached evaluation units end to end."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from parity.errors import UsageError
from parity.decisions import leaderboard as LB
from parity.runs.units import RATIO_METRICS

from .conftest import _tiny_scenario, run_cli, run_main

CASES = [f"case{i}" for i in range(9)]
PERTS = [("crop_shift_y", 1), ("crop_shift_y", 5), ("yuv_range", 1), ("yuv_range", 5)]


def _units(quality: dict[str, float], seed=0, frames=60) -> pd.DataFrame:
    """Synthetic units: each case has its own difficulty (shared by every checkpoint, as real cases
    are), each checkpoint a quality shift. quality > 0 is better: higher accuracy, lower bend/jitter."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, len(CASES))
    rows = []
    for name, q in quality.items():
        noise = np.random.default_rng(abs(hash(name)) % 2**32).normal(0, 0.05, (len(CASES), 8))
        for c, case in enumerate(CASES):
            for runner in ("torch", "ort-fp16"):
                conds = [("training", "none", 0), ("vehicle", "none", 0)] + [("vehicle", p, s) for p, s in PERTS]
                for k, (pipe, pert, sev) in enumerate(conds):
                    harm = 0.01 * sev + (0.005 if pipe == "vehicle" else 0)
                    acc = np.clip(0.9 - 0.03 * difficulty[c] + 0.02 * q - harm + 0.002 * noise[c, k], 0, 1)
                    bend = max(0.1, 8 + 2 * difficulty[c] - 2 * q + 3 * sev * 0.1 + 0.1 * noise[c, k])
                    jit = max(0.1, 5 + 1.5 * difficulty[c] - 1.5 * q + 0.1 * noise[c, k])
                    rec = {m: (0.0, 0) for m in RATIO_METRICS}
                    rec.update({"accuracy": (acc * frames, frames), "f1": (acc * 100, 100), "bend_px": (bend * 4 * frames, 4 * frames),
                                "kink_rate": (0.1 * frames, frames), "jitter_rms_near": (jit * 4, 4), "dx_torch_px": ((0.0 if runner == "torch" else 0.01) * 100, 100),
                                "nonfinite_rate": (0.0, frames), "oscillation_hz_near": (4.0 * 4, 4)})
                    row = {"checkpoint": name, "case": case, "runner": runner, "pipeline": pipe, "perturbation": pert, "severity": sev}
                    for m, (s, n) in rec.items():
                        row[f"{m}__sum"], row[f"{m}__n"] = float(s), int(n)
                    rows.append(row)
    return pd.DataFrame(rows)


def _board(units, names, baseline="erm", n_boot=1000, weights=None):
    lb = LB.Leaderboard(units, names, baseline, "ort-fp16", "vehicle", ["training"], weights or LB.load_weights(None), n_boot, 0)
    res = lb.compute()
    return res, {r["checkpoint"]: r for r in res["board"]}


def test_planted_better_ranks_first_and_worse_last_with_separate_intervals():
    names = ["erm", "good", "bad", "meh"]
    res, by = _board(_units({"erm": 0.0, "good": 1.0, "bad": -1.0, "meh": 0.1}), names)
    order = [r["checkpoint"] for r in res["board"]]
    assert order[0] == "good" and order[-1] == "bad"
    for m in ("accuracy", "bend_px", "jitter_near", "deploy_score"):
        assert by["good"][m]["vs_baseline"] == "better", m
        assert by["bad"][m]["vs_baseline"] == "worse", m
    # Case difficulty is shared, so the intervals themselves overlap less than the paired ones; the
    # planted shift is large enough that the marginal score intervals separate too.
    assert by["good"]["deploy_score"]["ci"][1] < by["bad"]["deploy_score"]["ci"][0]
    assert by["good"]["first_place_share"] > 0.95
    assert by["erm"]["deploy_score"]["value"] == pytest.approx(100.0)
    assert by["erm"]["mce"]["value"] == pytest.approx(100.0)
    assert by["good"]["mce"]["value"] < 100 < by["bad"]["mce"]["value"]
    assert by["good"]["pareto"] and not by["bad"]["pareto"] and not by["erm"]["pareto"]


def test_candidate_identical_to_baseline_is_no_evidence():
    u = _units({"erm": 0.0})
    twin = u.copy()
    twin["checkpoint"] = "twin"
    res, by = _board(pd.concat([u, twin]), ["erm", "twin"])
    for m in ("accuracy", "bend_px", "jitter_near", "deploy_score", "mce"):
        assert by["twin"][m]["vs_baseline"] == "no evidence", m
    assert by["twin"]["deploy_score"]["value"] == pytest.approx(100.0)
    assert by["twin"]["first_place_share"] == pytest.approx(0.5)  # ties split


def test_metrics_are_ratios_of_sums_over_cases_not_means_of_case_means():
    u = _units({"erm": 0.0})
    sel = u[(u.runner == "ort-fp16") & (u.pipeline == "vehicle") & (u.perturbation == "none")].copy()
    # Give one case ten times the labelled frames: the overall accuracy must weight it accordingly.
    big = sel.case == "case0"
    u.loc[sel.index[big], ["accuracy__sum", "accuracy__n"]] *= 10
    res, by = _board(u, ["erm"])
    s = u.loc[sel.index]
    assert by["erm"]["accuracy"]["value"] == pytest.approx(s["accuracy__sum"].sum() / s["accuracy__n"].sum())
    assert by["erm"]["accuracy"]["value"] != pytest.approx((s["accuracy__sum"] / s["accuracy__n"]).mean())


def test_too_few_cases_give_no_verdict():
    u = _units({"erm": 0.0, "good": 1.0})
    u = u[u.case.isin(CASES[:3])]
    _, by = _board(u, ["erm", "good"])
    assert by["good"]["accuracy"]["vs_baseline"] == "too few cases"


def test_score_weights_from_toml(tmp_path):
    f = tmp_path / "rank.toml"
    f.write_text("[rank.score]\nerror = 0\nbend = 0\njitter = 1\ncorruption = 0\n")
    w = LB.load_weights(str(f))
    assert w["jitter"] == 1 and w["error"] == 0
    names = ["erm", "good"]
    _, by = _board(_units({"erm": 0.0, "good": 1.0}), names, weights=w)
    j = by["good"]["jitter_near"]["value"] / by["erm"]["jitter_near"]["value"]
    assert by["good"]["deploy_score"]["value"] == pytest.approx(100 * j)
    for text, msg in (("[rank.score]\nspeed = 1\n", "not a score term"), ("[rank.score]\nerror = -1\n", ">= 0"),
                      ("[rank.score]\nerror = 0\nbend = 0\njitter = 0\ncorruption = 0\nkink = 0\n", "at least one"),
                      ("[other]\n", "no [rank.score]"), ("not toml [", "not valid TOML")):
        f.write_text(text)
        with pytest.raises(UsageError, match=msg.replace("[", r"\[")):
            LB.load_weights(str(f))


def test_pareto_front():
    front = LB.pareto_front([0.9, 0.95, 0.9, 0.8, np.nan], [5, 6, 6, 4, 1], [3, 3, 3, 3, 1])
    assert front.tolist() == [True, True, False, True, False]


# --- end to end: real units, real cache ---------------------------------------------------------

@pytest.fixture(scope="module")
def six_cases(tmp_path_factory):
    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("rank-cases")
    return [write_case(_tiny_scenario(f"c{i}", seed=10 + i, frames=8), root / f"c{i}") for i in range(6)]


def _twin(ckpt, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{name}.pt"
    shutil.copy(ckpt.path, dst)
    meta = dict(ckpt.meta, name=name)
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return dst


def _perturbed(ckpt, folder, name, scale):
    import torch

    from parity.models.checkpoint import save_checkpoint

    model = ckpt.build_model()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
    return save_checkpoint(folder / f"{name}.pt", model, dict(ckpt.meta, name=name)).path


def _rank(args, out, cache):
    return run_main("rank", *args, "--runners", "torch,ort-fp32", "--perturb", "crop_shift_y", "--severities", "5",
                   "--window-s", "0.5", "--n-boot", "300", "--no-progress", "--cache-dir", cache, "--out", out)


def test_rank_end_to_end_cache_hit_and_miss(six_cases, random_checkpoint, tmp_path):
    folder = tmp_path / "ckpts"
    a = _twin(random_checkpoint, folder, "erm")
    b = _twin(random_checkpoint, folder, "twin")
    c = _perturbed(random_checkpoint, folder, "noisy", 0.05)
    cache = tmp_path / "cache"
    cases = [str(p) for p in six_cases]
    r = _rank(["--checkpoints", str(folder / "*.pt"), "--cases", *cases], tmp_path / "r1", cache)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "r1" / "rank.json").read_text())
    n = 3 * 6 * (2 * 2 + 1)  # checkpoints x cases x (2 runners x 2 unperturbed pipelines + the deployed runner x crop_shift_y 5)
    assert summary["units"] == {"total": n, "cached": 0, "evaluated": n}
    assert {"units.parquet", "rank.parquet", "rank.json", "pareto.png"} <= set(summary["files"])
    board = {row["checkpoint"]: row for row in summary["leaderboard"]}
    assert board["twin"]["accuracy"]["vs_baseline"] == "no evidence"
    assert board["twin"]["deploy_score"]["value"] == pytest.approx(100.0)
    units = pd.read_parquet(tmp_path / "r1" / "units.parquet")
    assert len(units) == n and units.groupby(["checkpoint", "case", "runner", "pipeline", "perturbation", "severity"]).size().max() == 1
    # 0.5 s at 10 fps: 5 consecutive frames per case, centred in the 8
    assert summary["windows"]["c0"] == [1, 5]
    assert (units["frames"] == 5).all()
    torch_rows = units[units.runner == "torch"]
    assert (torch_rows["dx_torch_px"] == 0).all() and set(torch_rows["perturbation"]) == {"none"}
    perturbed = units[units.perturbation != "none"]
    assert set(perturbed["runner"]) == {"ort-fp32"} and perturbed["dx_torch_px"].isna().all()  # torch not run there: absent, not 0
    assert "ort" in r.stdout or "erm" in r.stdout
    # the three share their sidecar's method: a method board of one method, the baseline's, beside the checkpoint board
    mb = summary["method_leaderboard"]
    assert [m["method"] for m in mb["methods"]] == [f"{random_checkpoint.meta.get('method') or 'unknown'} (from scratch)"]
    assert mb["methods"][0]["seeds"] == 3 and mb["cells"] == 0 and "methods (mean over seeds)" in r.stdout

    # Second run: nothing recomputed, same leaderboard.
    r2 = _rank(["--checkpoints", str(folder / "*.pt"), "--cases", *cases], tmp_path / "r2", cache)
    assert r2.returncode == 0, r2.stderr
    s2 = json.loads((tmp_path / "r2" / "rank.json").read_text())
    assert s2["units"] == {"total": n, "cached": n, "evaluated": 0}
    assert s2["leaderboard"] == summary["leaderboard"]

    # Adding one checkpoint evaluates only that one.
    d = _perturbed(random_checkpoint, folder, "noisier", 0.2)
    r3 = _rank(["--checkpoints", str(folder / "*.pt"), "--cases", *cases], tmp_path / "r3", cache)
    assert r3.returncode == 0, r3.stderr
    assert json.loads((tmp_path / "r3" / "rank.json").read_text())["units"] == {"total": n + n // 3, "cached": n, "evaluated": n // 3}

    # One case's bytes change: only that case's units are recomputed.
    frame = sorted((six_cases[0] / "frames").iterdir())[0]
    data = bytearray(frame.read_bytes())
    data[-1] ^= 1
    frame.write_bytes(bytes(data))
    r4 = _rank(["--checkpoints", str(a), str(b), str(c), str(d), "--cases", *cases], tmp_path / "r4", cache)
    assert r4.returncode == 0, r4.stderr
    u4 = json.loads((tmp_path / "r4" / "rank.json").read_text())["units"]
    per_case = 4 * 5
    assert u4 == {"total": 4 * n // 3, "cached": 4 * n // 3 - per_case, "evaluated": per_case}


def test_rank_usage_errors(six_cases, random_checkpoint, tmp_path):
    cases = [str(p) for p in six_cases[:1]]
    for args, msg in (
        (["--checkpoints", str(tmp_path / "none*.pt")], "matches no file"),
        (["--checkpoints", str(random_checkpoint.path), "--baseline", "nope"], "--baseline 'nope'"),
        (["--checkpoints", str(random_checkpoint.path), "--window-s", "-1"], "--window-s"),
        (["--checkpoints", str(random_checkpoint.path), "--perturb", "fgsm"], "fgsm"),
    ):
        r = run_main("rank", *args, "--cases", *cases, "--out", tmp_path / "o", "--no-progress")
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_soup_by_deployment_criterion(six_cases, random_checkpoint, tmp_path):
    from parity.models.checkpoint import load_checkpoint

    folder = tmp_path / "ing"
    ings = [_twin(random_checkpoint, folder, "a"), _perturbed(random_checkpoint, folder, "b", 0.05), _perturbed(random_checkpoint, folder, "c", 0.5)]
    out = tmp_path / "soup.pt"
    r = run_main("soup", "--ingredients", *ings, "--cases", *map(str, six_cases[:2]), "--criterion", "deployed-jitter", "--runner", "ort-fp32",
                "--window-s", "0.5", "--cache-dir", tmp_path / "cache", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(out)
    rep = ck.meta["recipe_report"]
    trail = rep["trail"]
    assert trail[0]["accepted"]
    best = trail[0]["criterion"]
    for t in trail[1:]:  # lower jitter is better: accepted only on strict improvement
        assert t["accepted"] == (t["criterion"] < best)
        if t["accepted"]:
            best = t["criterion"]
    assert trail[0]["criterion"] == min(rep["alone"].values())  # the best ingredient alone starts the soup
    assert [p["sha256"] for p in ck.meta["parents"]] and ck.meta["method"] == "soup-deployed-jitter"
    ck.build_model()  # loads unchanged
