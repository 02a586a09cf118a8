"""The TensorRT runner's orchestration, against a test double of `tensorrt` and `cuda.bindings.runtime`.

The real build and run need TensorRT and a GPU; these tests check every call parity makes and that
the numbers flow through the buffers and addresses it sets up.
"""
import json

import numpy as np
import pytest

from parity.runners.artifacts import ArtifactCache
from parity.cases.format import load_case
from parity.errors import RunnerUnavailable
from parity.runners import RUNNERS, RunnerError, create

from . import fake_tensorrt


@pytest.fixture
def feed(tiny_case, random_checkpoint):
    return {"image": random_checkpoint.adapter().pipelines()["vehicle"].prepare(load_case(tiny_case), range(4))}


def _run(name, ckpt, cache, feed):
    runner = RUNNERS[name].factory(name, ckpt, cache)  # the factory itself: the CUDA probe is the machine's
    with runner:
        return runner.infer(feed)["logits"], runner


def test_fp32_engine_is_strongly_typed_with_tf32_cleared(monkeypatch, random_checkpoint, tmp_path, feed):
    trt, rt = fake_tensorrt.install(monkeypatch)
    cache = ArtifactCache(tmp_path)
    got, runner = _run("trt-fp32", random_checkpoint, cache, feed)
    (_, header), = [e for e in trt.log if e[0] == "build"]
    assert header["network_flags"] == 1 << 5  # 1 << STRONGLY_TYPED
    assert "TF32" not in header["builder_flags"] and header["pools"] == {"WORKSPACE": 1 << 30}
    assert header["profiles"] == [{"image": [[1, 3, 112, 288], [16, 3, 112, 288], [64, 3, 112, 288]]}]
    assert header["profiling_verbosity"] == "DETAILED" and header["timing_cache"]
    ctx = next(e[1] for e in trt.log if e[0] == "context")
    assert ctx.shapes == {"image": (4, 3, 112, 288)} and set(ctx.addresses) == {"image", "logits"}
    assert [k for k, _ in rt.copies] == [1, 2]  # one upload, one download
    with create("ort-fp32", random_checkpoint, cache) as ort:
        np.testing.assert_allclose(got, ort.infer(feed)["logits"], atol=1e-5)
    assert runner.describe()["artifact_key"]["tensorrt"] == "10.9.0" and runner.describe()["artifact_key"]["gpu"] == "Fake GPU"
    assert not rt.allocs  # buffers freed on deactivate


def test_tf32_engine_sets_the_flag(monkeypatch, random_checkpoint, tmp_path, feed):
    trt, _ = fake_tensorrt.install(monkeypatch, version="11.0.0")
    _run("trt-tf32", random_checkpoint, ArtifactCache(tmp_path), feed)
    (_, header), = [e for e in trt.log if e[0] == "build"]
    assert "TF32" in header["builder_flags"]


def test_fp16_engine_comes_from_the_fp16_graph_and_is_checked(monkeypatch, random_checkpoint, tmp_path, feed):
    fake_tensorrt.install(monkeypatch)
    cache = ArtifactCache(tmp_path)
    got, runner = _run("trt-fp16", random_checkpoint, cache, feed)
    prec = runner.describe()["layer_precisions"]
    assert prec["fp16"] > 0 and 0 < prec["share_fp16"] < 1
    assert "fp16" in runner.label and "strongly typed" in runner.label
    with create("ort-fp16", random_checkpoint, cache) as ort:
        np.testing.assert_allclose(got, ort.infer(feed)["logits"], atol=1e-5)


def test_an_engine_without_fp16_layers_is_not_called_fp16(monkeypatch, random_checkpoint, tmp_path):
    from parity.runners.tensorrt_runner import TensorRTRunner, engine_artifact

    fake_tensorrt.install(monkeypatch)
    path, artifact = engine_artifact(random_checkpoint, ArtifactCache(tmp_path), "fp32")
    with pytest.raises(RunnerError, match="no fp16 layer"):
        TensorRTRunner("trt-fp16", path, "fp16", artifact, expect_fp16=True).activate()


def test_engines_are_cached_per_version_and_gpu(monkeypatch, random_checkpoint, tmp_path):
    from parity.runners.tensorrt_runner import engine_artifact

    fake_tensorrt.install(monkeypatch)
    first = ArtifactCache(tmp_path)
    p1, _ = engine_artifact(random_checkpoint, first, "fp16")
    again = ArtifactCache(tmp_path)
    assert engine_artifact(random_checkpoint, again, "fp16")[0] == p1 and again.builds == 0
    fake_tensorrt.install(monkeypatch, gpu="Another GPU")
    other = ArtifactCache(tmp_path)
    assert engine_artifact(random_checkpoint, other, "fp16")[0] != p1 and other.builds == 1


def test_engine_from_another_version_is_refused_clearly(monkeypatch, random_checkpoint, tmp_path):
    from parity.runners.tensorrt_runner import TensorRTRunner, engine_artifact

    fake_tensorrt.install(monkeypatch, version="10.3.0")
    path, _ = engine_artifact(random_checkpoint, ArtifactCache(tmp_path), "fp32")
    fake_tensorrt.install(monkeypatch, version="10.9.0")
    with pytest.raises(RunnerError, match=r"10\.9\.0 cannot load this engine on Fake GPU.*another TensorRT version or for another GPU"):
        TensorRTRunner("trt", path, "fp32").activate()


def test_old_tensorrt_is_refused(monkeypatch, random_checkpoint, tmp_path):
    fake_tensorrt.install(monkeypatch, version="8.6.1")
    with pytest.raises(RunnerUnavailable, match="written for 10.x and 11.x"):
        RUNNERS["trt-fp32"].factory("trt-fp32", random_checkpoint, ArtifactCache(tmp_path))


def test_without_tensorrt_only_that_runner_fails(tiny_case, random_checkpoint, tmp_path):
    import importlib.util

    from .conftest import run_cli

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("tensorrt is installed here")
    res = run_cli("replay", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch,trt-fp16")
    assert res.returncode == 2 and "tensorrt" in res.stderr and "pip install 'parity[gpu]'" in res.stderr
    assert "Traceback" not in res.stderr
    ok = run_cli("replay", "--cases", tiny_case, "--checkpoint", random_checkpoint.path, "--runners", "torch,ort-fp16",
                 "--out", tmp_path / "r", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["errors"] == []


def test_prebuilt_engine_and_timing_cache_from_the_cli(monkeypatch, random_checkpoint, tiny_case, tmp_path, capsys):
    from parity.cli import main
    from parity.runners.tensorrt_runner import engine_artifact

    fake_tensorrt.install(monkeypatch)
    plan, _ = engine_artifact(random_checkpoint, ArtifactCache(tmp_path / "c1"), "fp32", timing_cache=str(tmp_path / "timing.cache"))
    assert (tmp_path / "timing.cache").read_bytes().startswith(b"timing-cache:")
    user = tmp_path / "mine.plan"
    user.write_bytes(plan.read_bytes())
    code = main(["replay", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path), "--runners", "torch",
                 "--engine", str(user), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c2"), "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    r = {x["runner"]: x for x in summary["results"]}
    assert r["trt-engine:mine.plan"]["dx_ref_max_px"] < 0.05 and "engine_sha256" in summary["provenance"]["runners"]["trt-engine:mine.plan"]
    capsys.readouterr()
    assert main(["replay", "--cases", str(tiny_case), "--checkpoint", str(random_checkpoint.path), "--runners", "torch",
                 "--engine", str(tmp_path / "missing.plan"), "--no-progress"]) == 2
    assert "missing.plan: no such engine file" in capsys.readouterr().err
