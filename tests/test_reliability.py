"""What a careless or hostile user, or a killed process, does to parity: the run folder is owned (lock,
in-progress marker, manifest, resume), names never become paths outside it, data never names code to
import, every bad value is refused where it is read with the file and field named, and the CLI never
answers with a traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from parity.cli import main
from parity.errors import CaseError, CheckpointError, UsageError
from parity.runs.folder import MANIFEST, MARKER, RunFolder, part_stem

from .conftest import _tiny_scenario, assert_same_run_tables, run_cli


def _no_traceback(r):
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


@pytest.fixture(scope="module")
def four_cases(tmp_path_factory):
    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("rel-cases")
    return [write_case(_tiny_scenario(f"k{i}", seed=60 + i, frames=12), root / f"k{i}") for i in range(4)]


def _replay_args(cases, ckpt, out, cache, runners="torch,ort-fp32"):
    return ["replay", "--cases", *map(str, cases), "--checkpoint", str(ckpt.path), "--runners", runners, "--pipeline", "vehicle,training",
            "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-report"]


# ---- the run owns its folder ----------------------------------------------------------------------

def test_kill_9_then_the_same_command_resumes_and_equals_an_uninterrupted_run(four_cases, random_checkpoint, cache_dir, tmp_path):
    clean = tmp_path / "clean"
    assert main(_replay_args(four_cases, random_checkpoint, clean, cache_dir)) == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "parity", *_replay_args(four_cases, random_checkpoint, out, cache_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    parts = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            parts = len(json.loads((out / MANIFEST).read_text())["parts"])
        except (OSError, ValueError, KeyError):
            parts = 0
        if parts >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= parts < len(four_cases), f"the kill came too late to test a resume ({parts} parts)"
    assert (out / MARKER).exists() and not (out / "summary.json").exists()
    # a reader refuses the half-finished folder
    r = run_cli("report", out)
    assert r.returncode == 2 and "has not finished" in r.stderr
    # the same command again: finished parts reused, the rest computed, the tables those of a clean run
    r = run_cli(*_replay_args(four_cases, random_checkpoint, out, cache_dir))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["reused_cases"]) == parts and not (out / MARKER).exists()
    assert_same_run_tables(out, clean)


def test_sigterm_says_so_and_leaves_a_resumable_folder(four_cases, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "parity", *_replay_args(four_cases, random_checkpoint, out, cache_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (out / MARKER).exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert main(_replay_args(four_cases, random_checkpoint, out, cache_dir)) == 0


def test_a_second_run_into_the_same_folder_is_refused(four_cases, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "busy"
    with RunFolder(out, "replay", "some-key"):
        r = run_cli(*_replay_args(four_cases[:1], random_checkpoint, out, cache_dir))
    assert r.returncode == 2 and "another parity run is writing to this folder" in r.stderr and f"pid {os.getpid()}" in r.stderr
    _no_traceback(r)
    # two real runs at once: one writes, the other is refused
    a = tmp_path / "both"
    procs = [subprocess.Popen([sys.executable, "-m", "parity", *_replay_args(four_cases, random_checkpoint, a, cache_dir, runners="torch")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    assert any("another parity run is writing" in e for _, e in outs)


def test_another_run_in_the_folder_is_refused_and_overwrite_replaces_it(four_cases, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "o"
    assert main(_replay_args(four_cases[:2], random_checkpoint, out, cache_dir, runners="torch")) == 0
    r = run_cli(*_replay_args(four_cases[:2], random_checkpoint, out, cache_dir, runners="torch,ort-fp32"))
    assert r.returncode == 2 and "holds another replay run" in r.stderr and "--overwrite" in r.stderr
    r = run_cli(*_replay_args(four_cases[:2], random_checkpoint, out, cache_dir, runners="torch,ort-fp32"), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert set(pd.read_parquet(out / "frames.parquet").runner) == {"torch", "ort-fp32"}
    # fewer cases than the run in the folder: only this run's cases are in its tables
    assert main(_replay_args(four_cases[:1], random_checkpoint, out, cache_dir, runners="torch,ort-fp32")) == 0
    assert set(pd.read_parquet(out / "frames.parquet").case) == {"k0"}


def test_stray_files_are_never_merged_and_a_foreign_folder_is_refused(four_cases, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "o"
    assert main(_replay_args(four_cases[:1], random_checkpoint, out, cache_dir, runners="torch")) == 0
    other = tmp_path / "other"
    assert main(_replay_args(four_cases[1:2], random_checkpoint, other, cache_dir, runners="torch")) == 0
    for f in (other / "parts").iterdir():  # another run's part dropped into this folder
        shutil.copy(f, out / "parts" / f"zz-{f.name}")
    assert main(_replay_args(four_cases[:1], random_checkpoint, out, cache_dir, runners="torch")) == 0
    assert set(pd.read_parquet(out / "frames.parquet").case) == {"k0"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = run_cli(*_replay_args(four_cases[:1], random_checkpoint, foreign, cache_dir, runners="torch"))
    assert r.returncode == 2 and "no parity run here made" in r.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
    r = run_cli(*_replay_args(four_cases[:1], random_checkpoint, tmp_path / "new", cache_dir, runners="torch"), "--resume")
    assert r.returncode == 2 and "no run to resume" in r.stderr


def test_readers_refuse_an_unfinished_folder(four_cases, random_checkpoint, cache_dir, tmp_path):
    out = tmp_path / "r"
    assert main(_replay_args(four_cases[:1], random_checkpoint, out, cache_dir, runners="torch")) == 0
    assert run_cli("baseline", "--run", out, "--out", tmp_path / "b.json").returncode == 0
    (out / MARKER).write_text("{}")
    for args in (["report", out], ["baseline", "--run", out, "--out", tmp_path / "c.json"],
                 ["gate", "--baseline", tmp_path / "b.json", "--run", out, "--out", tmp_path / "g"],
                 ["export", "--format", "tusimple", "--run", out, "--runner", "torch", "--pipeline", "vehicle", "--out", tmp_path / "e.json"]):
        r = run_cli(*args)
        assert r.returncode == 2 and "has not finished" in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("how", ["file", "under-a-file", "unwritable"])
def test_bad_out_folders_are_one_line(four_cases, random_checkpoint, cache_dir, tmp_path, how):
    target = {"file": tmp_path / "f", "under-a-file": tmp_path / "f" / "run", "unwritable": Path("/proc/parity-test-run")}[how]
    (tmp_path / "f").write_text("x")
    r = run_cli(*_replay_args(four_cases[:1], random_checkpoint, target, cache_dir, runners="torch"))
    assert r.returncode == 2 and "--out" in r.stderr, r.stderr
    _no_traceback(r)


def test_a_full_disk_is_a_message_not_a_traceback(four_cases, random_checkpoint, cache_dir, tmp_path, monkeypatch, capsys):
    import errno

    import pyarrow.parquet as pq

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "parts" / "x.parquet"))

    monkeypatch.setattr(pq, "write_table", full)
    code = main(_replay_args(four_cases[:1], random_checkpoint, tmp_path / "o", cache_dir, runners="torch"))
    out = capsys.readouterr()
    # the case's part cannot be written: the case fails (recorded, named), the run writes what it can and exits 1
    assert code == 1 and "FAILED case k0: OSError: [Errno 28] No space left on device" in out.out
    assert "Traceback" not in out.out + out.err


def test_an_internal_error_is_said_and_logged_not_shown(monkeypatch, capsys, tmp_path):
    import parity.cli as cli

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "_cmd_runners", bug)  # build_parser binds the command when main() runs
    assert cli.main(["runners"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug" in err and "Traceback" not in err
    log = Path(err.split("the traceback is in ")[1].strip())
    assert log.is_file() and "RuntimeError: a bug" in log.read_text() and "Traceback" in log.read_text()


# ---- names never become paths outside, data never names code ---------------------------------------

def test_part_names_stay_inside_whatever_the_case_is_called():
    for name in ("../../etc/passwd", "/abs/path", "a/b", "..", "", "x" * 300, "ok name"):
        stem = part_stem(name)
        assert "/" not in stem and not stem.startswith(".") and len(stem) <= 64
    assert part_stem("a/b") != part_stem("a_b")  # two names never share a file


@pytest.mark.parametrize("name", ["../../outside", "/etc/evil", "a/b", ".hidden", "x" * 200, "tab\tname"])
def test_a_case_name_that_is_not_a_plain_name_is_refused(case_copy, name):
    from parity.cases.format import load_case

    meta = json.loads((case_copy / "case.json").read_text())
    meta["name"] = name
    (case_copy / "case.json").write_text(json.dumps(meta))
    with pytest.raises(CaseError, match="name"):
        load_case(case_copy)
    r = run_cli("cases", "validate", case_copy)
    assert r.returncode == 2 and "case.json: name:" in r.stderr


def test_a_source_file_that_escapes_is_refused(case_copy):
    from parity.cases.format import load_case

    meta = json.loads((case_copy / "case.json").read_text())
    meta["frames"][0]["source_file"] = "../../../tmp/x.jpg"
    (case_copy / "case.json").write_text(json.dumps(meta))
    with pytest.raises(CaseError, match="source_file"):
        load_case(case_copy)


def test_a_sidecar_cannot_name_a_module_to_import(random_checkpoint, tiny_case, tmp_path):
    """A checkpoint folder that ships `evil_adapter.py` and a sidecar naming it: the module never runs."""
    folder = tmp_path / "ck"
    folder.mkdir()
    shutil.copy(random_checkpoint.path, folder / "m.pt")
    sentinel = tmp_path / "pwned"
    (folder / "evil_adapter.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\nclass A:\n    config_class = dict\n")
    meta = dict(random_checkpoint.meta, adapter="evil_adapter:A")
    (folder / "m.json").write_text(json.dumps(meta))
    r = run_cli("replay", "--cases", tiny_case, "--checkpoint", folder / "m.pt", "--runners", "torch", "--out", tmp_path / "o", cwd=folder)
    assert r.returncode == 2 and "not a registered adapter" in r.stderr and not sentinel.exists()
    _no_traceback(r)
    from parity.models.checkpoint import load_checkpoint

    old = dict(random_checkpoint.meta, adapter="parity.models.rowanchor:RowAnchorAdapter")  # sidecars from before the registry
    (folder / "m.json").write_text(json.dumps(old))
    assert load_checkpoint(folder / "m.pt").adapter().lane_names


@pytest.mark.parametrize("config, field", [
    ("not an object", "config must be an object"),
    ({"griding": "64"}, "config.griding"),
    ({"hidden": 10 ** 9}, "config.hidden"),
    ({"channels": [64] * 8, "strides": [1] * 8, "input_size": [4096, 4096], "hidden": 16384}, "more than 200 M"),
    ({"anchor_rows": [0.5, float("nan")]}, "config.anchor_rows"),
    ({"strides": [2, 2]}, "config.strides"),
])
def test_a_sidecar_config_is_checked_before_anything_is_allocated(random_checkpoint, tmp_path, config, field):
    from parity.models.checkpoint import load_checkpoint

    shutil.copy(random_checkpoint.path, tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps(dict(random_checkpoint.meta, config=config)))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "m.pt").adapter()
    assert field in str(e.value) and "m.json" in str(e.value)


def test_weights_that_contradict_their_sidecar_are_refused(random_checkpoint, tmp_path):
    import torch

    from parity.models.checkpoint import load_checkpoint

    shutil.copy(random_checkpoint.path, tmp_path / "m.pt")
    shutil.copy(random_checkpoint.path.with_suffix(".json"), tmp_path / "m.json")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="weights_sha256 .* does not match m.pt"):
        load_checkpoint(tmp_path / "m.pt")


def test_a_checkpoint_is_hashed_once_while_untouched_and_again_once_rewritten(random_checkpoint, tmp_path, monkeypatch):
    """Every unit of a run loads the checkpoint: its weights are hashed once in a process while the file
    is untouched, and a file rewritten in place (the same size, other weights) is hashed again and refused."""
    from parity.models import checkpoint as C
    from parity.provenance import sha256_file

    shutil.copy(random_checkpoint.path, tmp_path / "m.pt")
    shutil.copy(random_checkpoint.path.with_suffix(".json"), tmp_path / "m.json")
    hashed = []
    monkeypatch.setattr(C, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    assert C.load_checkpoint(tmp_path / "m.pt").sha256 == C.load_checkpoint(tmp_path / "m.pt").sha256 == random_checkpoint.sha256
    assert len(hashed) == 1
    size = (tmp_path / "m.pt").stat().st_size
    with open(tmp_path / "m.pt", "r+b") as f:  # one byte of the weights, in place: the same size and inode
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="weights_sha256 .* does not match m.pt"):
        C.load_checkpoint(tmp_path / "m.pt")
    assert len(hashed) == 2


# ---- every value checked where it is read -----------------------------------------------------------

def _edit_case(case_dir: Path, edit):
    meta = json.loads((case_dir / "case.json").read_text())
    edit(meta)
    (case_dir / "case.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(camera={"fx": 500, "fy": 500}), "camera.cx"),
    (lambda m: m.update(camera={"fx": 500, "fy": 500, "cx": 320, "cy": 180, "height_m": 1.5}), "camera.height_m and pitch_deg"),
    (lambda m: m.update(camera={"fx": -1, "fy": 500, "cx": 320, "cy": 180}), "camera.fx"),
    (lambda m: m.update(camera=[1, 2]), "camera"),
    (lambda m: m["lanes"].update(labelled_frames=[True, False]), "lanes.labelled_frames"),
    (lambda m: m["lanes"].update(labelled_frames="0,1"), "lanes.labelled_frames"),
    (lambda m: m["lanes"]["anchor_rows"].__setitem__(2, float("nan")), "lanes.anchor_rows"),
    (lambda m: m.update(isp={"yuv_matrix": "bt2020"}), "isp.yuv_matrix"),
    (lambda m: m.update(isp="bt601"), "isp"),
])
def test_case_values_are_checked_with_the_field_named(case_copy, edit, field):
    from parity.cases.format import load_case

    _edit_case(case_copy, edit)
    with pytest.raises(CaseError) as e:
        load_case(case_copy)
    assert any(f"case.json: {field}" in p for p in e.value.problems), e.value.problems


def test_a_case_with_a_bad_camera_is_named_and_the_run_does_not_start(case_copy, tiny_case, random_checkpoint, cache_dir, tmp_path):
    _edit_case(case_copy, lambda m: m.update(camera={"fx": 500}))
    r = run_cli(*_replay_args([tiny_case, case_copy], random_checkpoint, tmp_path / "o", cache_dir, runners="torch"))
    assert r.returncode == 2 and "camera.cx" in r.stderr and str(case_copy) in r.stderr
    _no_traceback(r)


def test_deeply_nested_json_is_an_error_not_a_recursion_traceback(case_copy, random_checkpoint, tmp_path):
    from parity.cases.format import load_case

    deep = "[" * 100_000 + "]" * 100_000
    (case_copy / "case.json").write_text('{"schema_version": 1, "name": "x", "camera": ' + deep + "}")
    with pytest.raises(CaseError, match="nested too deeply|invalid JSON"):
        load_case(case_copy)
    pred = tmp_path / "p.json"
    pred.write_text('{"raw_file": ' + deep + "}\n")
    r = run_cli("score", "--pred", pred, "--gt", case_copy)
    assert r.returncode == 2
    _no_traceback(r)


@pytest.mark.parametrize("line, msg", [
    ('{"lanes": [], "h_samples": []}', "raw_file"),
    ('{"raw_file": "tiny/frames/000000.nv12", "lanes": [["a"]], "h_samples": [1]}', "not a TuSimple prediction line"),
    ('{"raw_file": "x", "lanes": [[1, 2]], "h_samples": [1]}', "one x per h_sample"),
])
def test_score_input_errors_name_the_line(tiny_case, tmp_path, line, msg):
    pred = tmp_path / "p.json"
    pred.write_text(line + "\n")
    r = run_cli("score", "--pred", pred, "--gt", tiny_case)
    assert r.returncode == 2 and msg in r.stderr and f"{pred}:1" in r.stderr
    _no_traceback(r)
    pred.write_bytes(b"\xff\xfe\x00 not utf-8")
    r = run_cli("score", "--pred", pred, "--gt", tiny_case)
    assert r.returncode == 2 and "not UTF-8" in r.stderr


@pytest.mark.parametrize("change, msg", [
    ({"std": [0.229, 0.0, 0.225]}, "std must be 3 numbers > 0"),
    ({"resize": "bilinear"}, "resize must be a table"),
    ({"size": [112]}, "size must be [height, width]"),
    ({"size": "big"}, "size must be [height, width]"),
    ({"mean": [0.5, "x", 0.5]}, "mean must be 3 finite numbers"),
    ({"crop": [0.3, 1.0, 0.0]}, "crop must be"),
    ({"yuv_range": [16, 0, 224]}, "yuv_range"),
])
def test_pipeline_files_are_checked_when_loaded(tmp_path, tiny_case, random_checkpoint, change, msg):
    from parity.preprocessing.pipeline import load_pipeline, vehicle_pipeline

    spec = vehicle_pipeline().to_dict()
    spec.update(change)
    f = tmp_path / "p.json"
    f.write_text(json.dumps(spec))
    with pytest.raises(UsageError) as e:
        load_pipeline(f)
    assert msg in str(e.value) and str(f) in str(e.value)
    r = run_cli("replay", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--pipeline", f,
                "--out", tmp_path / "o")
    assert r.returncode == 2 and msg in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, msg", [
    (["cases", "synth", "--scenario", "straight_day", "--frames", "-3"], "--frames must be at least 1"),
    (["sweep", "--cases", "{case}", "--checkpoint", "{ckpt}", "--perturb", ""], "--perturb names no perturbation"),
    (["sweep", "--cases", "{case}", "--checkpoint", "{ckpt}", "--window-s", "-1"], "--window-s"),
    (["rank", "--checkpoints", "{ckpt}", "--cases", "{case}", "--perturb", ""], "--perturb names nothing"),
    (["perturb", "show", "roll", "--case", "{case}", "--frame", "999"], "--frame 999"),
    (["localize", "--checkpoint", "{ckpt}", "--case", "{case}", "--frames", "0"], "--frames must be at least 1"),
])
def test_silently_wrong_options_are_refused(tiny_case, random_checkpoint, tmp_path, args, msg):
    args = [a.format(case=tiny_case, ckpt=random_checkpoint.path) for a in args] + ["--out", str(tmp_path / "o")]
    r = run_cli(*args)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    _no_traceback(r)
    assert not (tmp_path / "o" / "case.json").exists()


def test_a_frame_that_links_outside_the_case_is_refused(case_copy, tmp_path):
    from parity.cases.format import load_case

    frame = sorted((case_copy / "frames").glob("*.nv12"))[1]
    outside = tmp_path / "elsewhere.nv12"
    outside.write_bytes(frame.read_bytes())
    frame.unlink()
    frame.symlink_to(outside)
    with pytest.raises(CaseError, match="escapes the case folder"):
        load_case(case_copy)


def test_a_part_is_hashed_once_while_untouched_and_again_once_changed(tmp_path, monkeypatch):
    import pyarrow as pa

    import parity.runs.folder as F
    from parity.runs.tables import write_part

    calls = []
    real = F.part_problem
    monkeypatch.setattr(F, "part_problem", lambda *a: calls.append(a[0]) or real(*a))
    with RunFolder(tmp_path / "r", "replay", "k") as rf:
        files = rf.part_files("case-a", (".parquet",))
        write_part(pa.table({"x": [1.0, 2.0]}), files[".parquet"], "case-a", "key1")
        rf.add("case-a", "key1", files)
        assert rf.finished("case-a", "key1") and rf.finished("case-a", "key1") and len(calls) == 1
        assert rf.finished("case-a", "key2") is None  # another key is never the memoised part
        write_part(pa.table({"x": [9.0, 9.0, 9.0]}), files[".parquet"], "case-a", "key1")  # rewritten behind the run's back
        assert rf.finished("case-a", "key1") is None and len(calls) == 2
        files[".parquet"].unlink()
        assert rf.finished("case-a", "key1") is None
