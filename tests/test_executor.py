"""Executors (parity/runs/executor.py): a local process pool and a local Ray instance give the same
tables as the serial run; a failing unit is reported and the others finish."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from parity.errors import UsageError
from parity.runs.executor import ExecutorSpec

from .conftest import _tiny_scenario, assert_same_run_tables, run_cli, run_main


@pytest.fixture(scope="module")
def three_cases(tmp_path_factory):
    from parity.cases.synth import write_case

    root = tmp_path_factory.mktemp("exec-cases")
    return [write_case(_tiny_scenario(f"e{i}", seed=80 + i, frames=8), root / f"e{i}") for i in range(3)]


def _sweep(cases, ckpt, out, cache, *extra):
    run = run_main if "--workers" not in extra else run_cli  # the serial reference in this process; pools as commands
    return run("sweep", "--cases", *cases, "--checkpoint", ckpt.path, "--runners", "torch,ort-fp16", "--perturb",
                   "crop_shift_x,roll", "--severities", "5", "--window-s", "0.5", "--cache-dir", cache,
                   "--no-progress", "--out", out, *extra)


def _replay(cases, ckpt, out, cache, *extra):
    run = run_main if "--workers" not in extra else run_cli
    return run("replay", "--cases", *cases, "--checkpoint", ckpt.path, "--runners", "torch,ort-fp16", "--pipeline", "vehicle,training",
                   "--cache-dir", cache, "--no-progress", "--no-report", "--out", out, *extra)


def test_local_pool_and_ray_give_the_serial_tables(three_cases, random_checkpoint, cache_dir, tmp_path):
    cases = list(map(str, three_cases))
    # The local pool runs the replay's units, Ray the sweep's: both executors take any unit, and one pass each keeps
    # this test inside make test's budget.
    serial = ["--threads", "1"]
    assert (r := _sweep(cases, random_checkpoint, tmp_path / "sweep-serial", cache_dir, *serial)).returncode == 0, r.stderr
    for name, extra in (("serial", serial), ("pool", ["--workers", "2", "--threads", "1"])):
        r = _replay(cases, random_checkpoint, tmp_path / f"replay-{name}", cache_dir, *extra)
        assert r.returncode == 0, r.stderr
    assert_same_run_tables(tmp_path / "replay-serial", tmp_path / "replay-pool")

    pytest.importorskip("ray", reason="Ray is the optional extra parity[ray]")
    r = _sweep(cases, random_checkpoint, tmp_path / "sweep-ray", cache_dir, "--executor", "ray", "--workers", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert_same_run_tables(tmp_path / "sweep-serial", tmp_path / "sweep-ray", "sweep.parquet")


def test_a_sweep_split_into_pieces_gives_the_whole_cases_tables(three_cases, random_checkpoint, cache_dir, tmp_path, monkeypatch):
    """A case computed as pieces of its conditions (what keeps a pool's workers busy to the end) reads
    back as the rows, order and summary of the case computed whole; each piece is its own resumable part."""
    from parity.runs import sweep

    assert sweep.pieces_for(150) == 4 and sweep.piece_conditions(150, 3, 4) == range(112, 150) and sweep.pieces_for(31) == 1
    cases = list(map(str, three_cases[:2]))
    assert (r := _sweep(cases, random_checkpoint, tmp_path / "whole", cache_dir, "--threads", "1")).returncode == 0, r.stderr
    monkeypatch.setattr(sweep, "PIECE_CONDITIONS", 1)  # 2 conditions: 2 pieces per case
    assert (r := _sweep(cases, random_checkpoint, tmp_path / "pieces", cache_dir, "--threads", "1")).returncode == 0, r.stderr
    assert_same_run_tables(tmp_path / "whole", tmp_path / "pieces", "sweep.parquet")
    from parity.runs.folder import MANIFEST

    parts = json.loads((tmp_path / "pieces" / MANIFEST).read_text())["parts"]
    assert sorted(parts) == sorted(f"{c.name}~{k}of2" for c in three_cases[:2] for k in (1, 2))


def test_a_failing_unit_is_reported_and_the_others_finish(three_cases, random_checkpoint, cache_dir, tmp_path):
    import shutil

    from PIL import Image

    broken = tmp_path / "cases"
    for c in three_cases:
        shutil.copytree(c, broken / c.name)
    # a JPEG whose header is whole (validation passes) but whose data is cut: it fails only when decoded
    jpg = sorted((broken / "e1" / "jpeg").glob("*.jpg"))[2]
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 3])
    with Image.open(jpg) as im:
        assert im.size  # the header still reads
    cases = [str(broken / c.name) for c in three_cases]
    r = run_cli("replay", "--cases", *cases, "--checkpoint", random_checkpoint.path, "--runners", "torch", "--pipeline", "training",
                "--cache-dir", cache_dir, "--no-progress", "--no-report", "--workers", "2", "--out", tmp_path / "o")
    assert r.returncode in (1, 2), r.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [e["case"] for e in summary["errors"]] == ["e1"] and "Traceback" not in r.stderr
    assert set(pd.read_parquet(tmp_path / "o" / "frames.parquet").case) == {"e0", "e2"}
    assert "FAILED case e1" in r.stdout


def test_executor_options_are_checked():
    assert ExecutorSpec.from_options(None, None, None, None).kind == "serial"
    spec = ExecutorSpec.from_options(None, 2, None, None)
    assert spec.kind == "local" and spec.threads >= 1
    for args, msg in (((None, 0, None, None), "--workers"), ((None, 1, 0, None), "--threads"), (("gpu", 1, None, None), "--executor"),
                      (("local", 2, 1, "ray://x:1"), "--ray-address")):
        with pytest.raises(UsageError, match=msg):
            ExecutorSpec.from_options(*args)


def test_rank_units_from_a_pool_equal_the_serial_ones(three_cases, random_checkpoint, tmp_path):
    import shutil

    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("erm", "other"):
        shutil.copy(random_checkpoint.path, ck / f"{name}.pt")
        (ck / f"{name}.json").write_text(json.dumps(dict(random_checkpoint.meta, name=name)))
    outs = {}
    for name, extra in (("serial", ["--threads", "1"]), ("pool", ["--workers", "2", "--threads", "1"])):
        r = run_cli("rank", "--checkpoints", ck / "*.pt", "--cases", *map(str, three_cases), "--runners", "torch,ort-fp32",
                    "--perturb", "crop_shift_y", "--severities", "5", "--window-s", "0.4", "--n-boot", "100", "--no-progress",
                    "--cache-dir", tmp_path / f"cache-{name}", "--out", tmp_path / name, *extra)
        assert r.returncode == 0, r.stderr
        outs[name] = pd.read_parquet(tmp_path / name / "units.parquet").drop(columns=["cached"])
    pd.testing.assert_frame_equal(outs["serial"], outs["pool"])


def test_a_thread_count_set_before_torch_is_imported_reaches_torch():
    """set_compute_threads does not import torch (2 s a run on an ONNX-only model never needs); torch,
    imported later, still computes with the count the run set (also after a lookup of what is installed
    that does not import it), and a later None restores its default."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom parity.runners.base import set_compute_threads\nset_compute_threads(1)\n"
            "import importlib.util\nassert importlib.util.find_spec('torch') and 'torch' not in sys.modules\nimport torch\nn = torch.get_num_threads()\nset_compute_threads(None)\n"
            "print(n, torch.get_num_threads())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["1", "2"]


def _worker_probe(name):
    import os
    import sys

    preloaded = "torch" in sys.modules  # before this unit imports anything
    import torch

    return {"preloaded": preloaded, "threads": torch.get_num_threads(), "cwd": os.getcwd(), "env": os.environ.get(name),
            "parent": os.getppid()}


def test_pool_workers_come_with_torch_imported_and_the_parents_directory_and_environment(tmp_path, monkeypatch):
    """Workers fork from a server that imported torch once (each spawned worker paid ~1.2 s of CPU
    for it), yet take the thread count, working directory and environment the parent has when the
    pool starts, not those the server started with."""
    import os

    from parity.runs.executor import run_units

    spec = ExecutorSpec.from_options("local", 2, 1, None).start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARITY_PROBE", "set after the server started")
    got = {}
    run_units(spec, _worker_probe, ["PARITY_PROBE"] * 2, lambda i, result, error: got.update({i: (result, error)}))
    for result, error in got.values():
        assert error is None, error
        assert result == {**result, "preloaded": True, "threads": 1, "cwd": str(tmp_path), "env": "set after the server started"}
        assert result["parent"] != os.getpid()  # forked by the server, not by this process


def test_a_units_case_is_loaded_once_a_process_and_never_taken_once_its_files_change(three_cases, tmp_path, monkeypatch):
    """unit_case hands a unit the case the run (or an earlier unit here) loaded, keyed by the run's
    content hash: a rank's ~30 units a case do not read and check every frame file again, and a case
    whose files changed since is not taken (its hash differs: loaded anew; files changed while a run
    uses them: an error naming the case)."""
    import shutil

    import numpy as np

    import parity.runs.inputs as IN
    from parity.cases.format import load_case
    from parity.errors import CaseError

    three_cases = [shutil.copytree(c, tmp_path / c.name) for c in three_cases]  # one is changed below
    loads = []
    monkeypatch.setattr(IN, "load_case", lambda p: loads.append(p) or load_case(p))
    monkeypatch.setattr(IN, "_CASES", IN.collections.OrderedDict())
    first = load_case(three_cases[0])
    IN.keep_cases([first])
    assert IN.unit_case(str(three_cases[0]), first.content_hash()) is first and loads == []
    other = IN.unit_case(str(three_cases[1]), load_case(three_cases[1]).content_hash())
    assert IN.unit_case(str(three_cases[1]), other.content_hash()) is other and len(loads) == 1  # loaded once, then kept
    gt = three_cases[1] / "lanes.npy"
    np.save(gt, np.load(gt) + 1.0)  # the case changes: the run that found its new hash loads it anew
    changed = load_case(three_cases[1]).content_hash()
    assert changed != other.content_hash()
    assert IN.unit_case(str(three_cases[1]), changed) is not other and len(loads) == 2
    with pytest.raises(CaseError, match="changed while the run"):
        IN.unit_case(str(three_cases[2]), "0" * 64)
    monkeypatch.setattr(IN, "_KEPT_CASES", 2)
    IN.unit_case(str(three_cases[0]), first.content_hash())  # now the most recently used
    IN.unit_case(str(three_cases[2]), load_case(three_cases[2]).content_hash())
    assert [k[0] for k in IN._CASES] == [str(three_cases[0]), str(three_cases[2])]  # bounded: the least recently used dropped
