import json
import shutil

import numpy as np
import pandas as pd
import pytest

from parity.cli import main

from .conftest import run_cli


def test_replay_end_to_end(tiny_case, random_checkpoint, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "replay", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path),
        "--runners", "torch,ort-fp32,ort-fp16", "--pipeline", "vehicle,training",
        "--out", str(out), "--cache-dir", str(cache_dir), "--batch-size", "4", "--no-progress",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    df = pd.read_parquet(out / "frames.parquet")
    assert len(df) == 6 * 3 * 2 * 4  # frames x runners x pipelines x lanes
    assert set(df.runner) == {"torch", "ort-fp32", "ort-fp16"} and set(df.pipeline) == {"vehicle", "training"}
    assert {"case", "frame", "t", "lane", "x", "infer_ms", "perturbation", "severity", "checkpoint"} <= set(df.columns)
    assert all(len(x) == 18 for x in df.x)
    torch_rows = df[df.runner == "torch"]
    assert np.nanmax(torch_rows.dx_ref_max_px.to_numpy(dtype=float), initial=0.0) == 0.0
    assert (torch_rows.raw_max == 0).all() and (torch_rows.argmax_flip_rate == 0).all()
    assert {"bend_px", "bend_row", "kinks", "dx_ref_mean_m", "culane_tp", "raw_cosine"} <= set(df.columns)
    jit = pd.read_parquet(out / "jitter.parquet")
    assert len(jit) == 3 * 2 * 4 * 3 and set(jit.lookahead) == {"near", "mid", "far"}  # runners x pipelines x lanes x rows

    summary = json.loads((out / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["checkpoint"]["sha256"] == random_checkpoint.sha256
    assert len(prov["cases"]["tiny"]["sha256"]) == 64
    assert {"torch", "onnxruntime", "numpy"} <= set(prov["versions"])
    assert "git_sha" in prov and set(prov["runners"]) == {"torch", "ort-fp32", "ort-fp16"}
    assert len(summary["results"]) == 6 and summary["errors"] == []
    r = {(x["runner"], x["pipeline"]): x for x in summary["results"]}
    assert r[("ort-fp32", "vehicle")]["dx_ref_max_px"] < 0.05
    assert 0 <= r[("torch", "vehicle")]["accuracy"] <= 1
    assert summary["pipeline_gap"] and summary["pipeline_gap"][0]["vehicle_vs_training"]["points"] > 0
    assert r[("ort-fp16", "vehicle")]["raw_max"] > 0 and r[("torch", "vehicle")]["bending_jitter_reference"] == ["gt"]
    assert 0 <= r[("torch", "vehicle")]["f1_50"] <= 1
    for name in ("torch", "ort-fp32", "ort-fp16", "fps", "pipeline gap", "bend", "jit near"):
        assert name in printed
    # per case x runner x pipeline aggregates (what a gate baseline stores): with one case they are the run's
    per_case = {(x["runner"], x["pipeline"]): x for x in summary["per_case"]}
    assert set(per_case) == set(r) and all(x["case"] == "tiny" and x["frames"] == 6 for x in per_case.values())
    for k in ("accuracy", "f1_50", "dx_ref_p99_px", "bend_p99_px", "kink_rate", "jitter_rms_near", "nonfinite_rate"):
        assert per_case[("ort-fp16", "vehicle")][k] == pytest.approx(r[("ort-fp16", "vehicle")][k], nan_ok=True)
    frame_acc = df[(df.runner == "ort-fp16") & (df.pipeline == "vehicle")].groupby("frame").frame_accuracy.first()
    assert per_case[("ort-fp16", "vehicle")]["accuracy"] == pytest.approx(frame_acc.mean())
    gap = next(g for g in summary["pipeline_gap"] if g["runner"] == "ort-fp16")["vehicle_vs_training"]
    assert per_case[("ort-fp16", "vehicle")]["pipeline_gap_p99_px"] == pytest.approx(gap["p99_px"])
    assert "pipeline_gap_p99_px" not in per_case[("ort-fp16", "training")]
    assert "report: " in printed and (out / "report.html").is_file()  # the replay's HTML report, beside summary.json


def test_reference_runner_is_added_when_missing(tiny_case, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["replay", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path), "--runners", "ort-fp16",
                 "--out", str(out), "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [x["runner"] for x in summary["results"]] == ["torch", "ort-fp16"]


def test_one_bad_case_does_not_kill_the_run(tiny_case, random_checkpoint, cache_dir, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(tiny_case, suite / "good")
    shutil.copytree(tiny_case, suite / "bad")
    meta = json.loads((suite / "bad" / "case.json").read_text())
    meta["name"] = "bad"
    (suite / "bad" / "case.json").write_text(json.dumps(meta))
    jpg = suite / "bad" / "jpeg" / "000004.jpg"
    jpg.write_bytes(jpg.read_bytes()[:2000])  # the header still validates; decoding fails mid-run
    out = tmp_path / "run"
    code = main(["replay", "--cases", str(suite), "--checkpoint", str(random_checkpoint.path), "--runners", "torch",
                 "--pipeline", "training", "--out", str(out), "--cache-dir", str(cache_dir), "--no-progress"])
    assert code == 2
    summary = json.loads((out / "summary.json").read_text())
    assert [e["case"] for e in summary["errors"]] == ["bad"] and "000004.jpg" in summary["errors"][0]["error"]
    df = pd.read_parquet(out / "frames.parquet")
    assert set(df.case) == {"tiny"}  # the good case's results survive


def test_missing_path_is_one_line_exit_2(random_checkpoint, tiny_case, tmp_path):
    for extra in (["--checkpoint", random_checkpoint.path], []):  # the cases are checked before the checkpoint
        res = run_cli("replay", "--cases", "/nonexistent", *extra, cwd=tmp_path)
        assert res.returncode == 2
        assert res.stderr.strip() == "parity: error: /nonexistent: no such file or directory"
    res = run_cli("replay", "--cases", tiny_case, cwd=tmp_path)
    assert res.returncode == 2 and "checkpoints/reference.pt: no such checkpoint file" in res.stderr


def test_corrupt_case_json_exit_2(case_copy, random_checkpoint):
    (case_copy / "case.json").write_text("{ not json")
    res = run_cli("replay", "--cases", case_copy, "--checkpoint", random_checkpoint.path)
    assert res.returncode == 2
    assert str(case_copy / "case.json") in res.stderr and "invalid JSON" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runners", "tensorrt-fp16"], "unknown runner 'tensorrt-fp16'"),
        (["--pipeline", "car"], "unknown pipeline 'car'"),
        (["--checkpoint", "/nope.pt"], "/nope.pt: no such checkpoint file"),
    ],
)
def test_usage_errors_exit_2(tiny_case, random_checkpoint, args, message):
    base = {"--checkpoint": str(random_checkpoint.path)}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["replay", "--cases", str(tiny_case)] + [x for kv in base.items() for x in kv]
    res = run_cli(*argv)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_activation_overflow_is_a_finding_caught_by_the_default_runners(tiny_case, random_checkpoint, cache_dir, tmp_path):
    """A backbone layer overflows fp16 (tests/defects.py): the default runner set sees it, the run exits 1
    with the non-finite rate in the tables, and torch's results (and every other runner's) are kept."""
    from .defects import plant_overflow

    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    out = tmp_path / "run"
    res = run_cli("replay", "--cases", tiny_case, "--checkpoint", bad.path, "--runners", "auto", "--pipeline", "vehicle",
                  "--out", out, "--cache-dir", cache_dir, "--no-progress")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "FINDING" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == [] and summary["findings"]
    r = {x["runner"]: x for x in summary["results"]}
    overflowing = {n for n, x in r.items() if x["nonfinite_rate"] > 0}
    assert overflowing and "torch" not in overflowing and "ort-fp32" not in overflowing
    assert r["torch"]["nonfinite_frames"] == 0 and np.isfinite(r["torch"]["accuracy"])
    df = pd.read_parquet(out / "frames.parquet")
    assert set(df.runner) == set(r)  # every runner's rows are kept
    for name in overflowing:
        rows = df[df.runner == name]
        assert (rows.nonfinite > 0).all() and not rows.exists.any()  # failed frames: no lane
        assert r[name]["fn"] > 0 or r[name]["accuracy"] == 0
    for f in summary["files"]:
        assert (out / f).is_file() and str(out / f) in res.stdout


def test_wrote_lists_only_files_written(tiny_case, random_checkpoint, cache_dir, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(tiny_case, suite / "bad")
    jpg = suite / "bad" / "jpeg" / "000001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:2000])
    res = run_cli("replay", "--cases", suite, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--pipeline", "training",
                  "--out", tmp_path / "run", "--cache-dir", cache_dir, "--no-progress")
    assert res.returncode == 2 and "frames.parquet" not in res.stdout and "summary.json" in res.stdout


def test_a_closed_pipe_is_not_a_traceback():
    """`parity runners | head`: the reader goes away before parity writes."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "parity", "runners"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # closed before the child has imported anything, let alone printed
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_help_names_the_runners_and_pipeline_files(capsys):
    from parity.cli import build_parser
    from parity.runners import RUNNERS

    for cmd in ("replay", "sweep", "rank"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text.replace("- ", "-") for name in RUNNERS), cmd
    with pytest.raises(SystemExit):
        build_parser().parse_args(["replay", "--help"])
    assert "pipeline file" in capsys.readouterr().out
