"""An adapter from another package: examples/adapter-package is pip-installed into this test's
environment, registers `wide-rowanchor` through the `parity.adapters` entry point, and a model of it
is trained and replayed by `parity` knowing nothing else about it (entry points are read at use)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "adapter-package"


@pytest.fixture
def installed():
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-build-isolation: build with this environment's setuptools (nothing is downloaded)
    r = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(PACKAGE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import importlib

    importlib.invalidate_caches()  # the new package's folder in site-packages
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "parity-example-adapter"], capture_output=True, text=True, timeout=300)


def test_an_installed_adapter_package_trains_and_replays(installed, tiny_case, cache_dir, tmp_path):
    r = run_main("train", "--cases", tiny_case, "--adapter", "wide-rowanchor", "--epochs", "1", "--batch-size", "3", "--no-progress",
                "--out", tmp_path / "wide.pt")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "wide.json").read_text())
    assert meta["adapter"] == "wide-rowanchor" and meta["config"]["width"] == 48
    r = run_main("replay", "--cases", tiny_case, "--checkpoint", tmp_path / "wide.pt", "--runners", "torch,ort-fp16",
                "--pipeline", "vehicle", "--cache-dir", cache_dir, "--out", tmp_path / "run", "--no-progress", "--no-report")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = {x["runner"]: x for x in json.loads((tmp_path / "run" / "summary.json").read_text())["results"]}
    assert set(results) == {"torch", "ort-fp16"} and all(x["frames"] == 6 for x in results.values())


def test_without_the_package_its_checkpoints_are_refused_in_one_line(tiny_case, tmp_path):
    from parity.models.checkpoint import save_checkpoint
    from parity.models.rowanchor import RowAnchorAdapter

    save_checkpoint(tmp_path / "orphan.pt", RowAnchorAdapter().build(), {"adapter": "wide-rowanchor", "config": {}, "method": "x"})
    r = run_main("replay", "--cases", tiny_case, "--checkpoint", tmp_path / "orphan.pt", "--runners", "torch", "--out", tmp_path / "r", "--no-progress")
    assert r.returncode == 2 and "adapter 'wide-rowanchor' is not a registered adapter" in r.stderr and "Traceback" not in r.stderr
