import os
import sys
from pathlib import Path

import pytest

from parity.cases.synth import Scenario, write_case


def _tiny_scenario(name="tiny", **kw):
    params = dict(seed=7, frames=6, fps=10.0, curvature=((0.0, 1 / 500),), drift_amp_m=0.4)
    params.update(kw)
    return Scenario(name, **params)


@pytest.fixture(scope="session")
def tiny_scenario():
    return _tiny_scenario()


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory, tiny_scenario) -> Path:
    """A 6-frame case with NV12 + JPEG streams and GT."""
    return write_case(tiny_scenario, tmp_path_factory.mktemp("cases") / "tiny")


@pytest.fixture
def case_copy(tmp_path, tiny_case) -> Path:
    """A private copy of the tiny case that a test may break."""
    import shutil

    dst = tmp_path / "tiny"
    shutil.copytree(tiny_case, dst)
    return dst


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """The reference architecture with seeded random weights: enough to test every stage's plumbing."""
    import torch

    from parity.models.checkpoint import save_checkpoint
    from parity.models.rowanchor import RowAnchorAdapter

    torch.manual_seed(0)
    adapter = RowAnchorAdapter()
    model = adapter.build().eval()
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    return save_checkpoint(path, model, {"method": "random-init", "config": adapter.config.to_dict(), "hyperparameters": {}})


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifact-cache")


def assert_same_run_tables(a, b, table="frames.parquet") -> None:
    """Two run folders hold the same computed results: the lane table, jitter.parquet and the summary's
    results, each output's raw parity (outputs.parquet) (and, for replays, per-case results and the pipeline gap). Timings are measured, not
    computed: infer_ms and fps are left out."""
    import json

    import pandas as pd

    ta, tb = pd.read_parquet(a / table), pd.read_parquet(b / table)
    pd.testing.assert_frame_equal(ta.drop(columns=["infer_ms"]), tb.drop(columns=["infer_ms"]))
    for name in ("jitter.parquet", "outputs.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "fps"} for r in rs]  # noqa: E731
    assert strip(sa["results"]) == strip(sb["results"])
    assert sa.get("per_case") == sb.get("per_case") and sa.get("pipeline_gap") == sb.get("pipeline_gap")


def rerecord_run(folder) -> None:
    """After a test edits a finished run's tables or summary to stage a state: record the edited files
    as the run's own (readers refuse a final table that changed since its run finished)."""
    import json

    from parity.provenance import sha256_file
    from parity.runs.folder import MANIFEST

    mf = Path(folder) / MANIFEST
    doc = json.loads(mf.read_text())
    doc["file_sha256"] = {f: sha256_file(Path(folder) / f) for f in doc.get("file_sha256", {})}
    mf.write_text(json.dumps(doc))


def run_cli(*args, cwd=None):
    """Run `python -m parity` in a subprocess: real exit code, real stderr."""
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "parity", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def run_main(*args):
    """`parity ...` in this process (no interpreter start-up): the exit code, stdout and stderr, as run_cli returns them."""
    import contextlib
    import io
    import subprocess

    from parity.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(["parity", *map(str, args)], code, out.getvalue(), err.getvalue())


def pytest_terminal_summary(terminalreporter):
    """Skipped browser tests are easy to miss in a long log: say once, at the end, why and how to run them."""
    from . import browser

    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "browser" in str(getattr(r, "longrepr", "")) or
               "chromium" in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} browser test(s) skipped: {browser.missing() or 'see their skip reason'}. To run them: "
            "apt-get install chromium chromium-driver, then `make test` (CI sets PARITY_REQUIRE_BROWSER=1, where a missing "
            "browser fails instead of skipping).", yellow=True)
