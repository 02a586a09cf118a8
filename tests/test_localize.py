"""`parity localize` finds the minimal set of nodes to keep in fp32, culprit first, for fp16 defects
planted on purpose (tests/defects.py): an activation overflow in the backbone and a precision loss
that needs a pool, a flatten and a linear kept together."""
import json

import pytest

from parity.cases.format import load_case
from parity.runners.artifacts import ArtifactCache
from parity.runs.localize import Reduced, localize

from .conftest import run_cli
from .defects import plant_overflow, plant_precision_loss


@pytest.fixture(scope="module")
def fitted(tiny_case, tmp_path_factory):
    """A model fitted to the tiny case, so its lanes are there to move."""
    from parity.training.loop import train

    return train([tiny_case], tmp_path_factory.mktemp("fit") / "fit.pt", epochs=25, batch_size=6, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ArtifactCache(tmp_path_factory.mktemp("loc-cache"))


def _is_minimal(res, ck, case, cache):
    """Dropping any member of the keep-set breaks the tolerance (checked by running it)."""
    from parity.runs.localize import _effect

    red = Reduced(ck, cache, res["runner"])
    pipe = red.adapter.pipelines()[res["pipeline"]]
    x = pipe.prepare(case, res["sample_frames"])
    for n in res["keep_fp32"]:
        rest = [k for k in res["keep_fp32"] if k != n]
        assert _effect(*red.compare([x], case.width, rest)) > res["tolerance_px"], f"{n} could be dropped"


def test_overflow_culprit_first_and_minimal_set(fitted, tiny_case, tmp_path, cache):
    bad = plant_overflow(fitted, tmp_path / "overflow.pt")
    case = load_case(tiny_case)
    res = localize(bad, case, runner="cpu-fp16", frames=4, cache=cache)
    assert res["ranking"][0] == "backbone.3"  # the conv batch norm backbone.4 is folded into: where inf starts
    # the big values must stay fp32 until the conv that scales them back: conv, ReLU, next conv
    assert res["keep_fp32"] == ["backbone.3", "backbone.5", "backbone.6"]
    assert res["nodes_to_exclude"] == ["/backbone/backbone.3/Conv", "/backbone/backbone.5/Relu", "/backbone/backbone.6/Conv"]
    assert res["within_max_keep"] and res["before"]["nonfinite_frames"] == len(case)
    assert res["after"]["nonfinite_frames"] == 0 and res["after"]["dx_max_px"] <= 1.0  # verified on the whole case
    _is_minimal(res, bad, case, cache)


def test_precision_loss_needs_pool_flatten_and_head(fitted, tiny_case, tmp_path, cache):
    bad = plant_precision_loss(fitted, tmp_path / "loss.pt")
    case = load_case(tiny_case)
    res = localize(bad, case, runner="cpu-fp16", frames=4, cache=cache)
    assert res["before"]["dx_max_px"] > 5 and res["before"]["nonfinite_frames"] == 0
    assert res["ranking"][0] == "pool"
    assert res["keep_fp32"] == ["pool", "flatten", "head.0"]
    assert res["nodes_to_exclude"] == ["/pool/Conv", "/Flatten", "/head/head.0/Gemm"]  # a Flatten can be suggested
    assert res["after"]["dx_max_px"] <= 1.0
    _is_minimal(res, bad, case, cache)


def test_healthy_model_needs_nothing(fitted, tiny_case, cache):
    res = localize(fitted, load_case(tiny_case), runner="cpu-fp16", frames=3, cache=cache)
    assert res["keep_fp32"] == [] and res["within_max_keep"] and res["evaluations"] > len(res["nodes"])
    assert {e["node"] for e in res["nodes"]} >= {"backbone.0", "backbone.2", "pool", "flatten", "head.0", "head.1", "view"}
    assert all(e["onnx"] for e in res["nodes"])  # every node type maps to its ONNX node


def test_max_keep_too_small_is_said_and_exits_1(fitted, tiny_case, tmp_path, cache):
    bad = plant_overflow(fitted, tmp_path / "overflow.pt")
    out = tmp_path / "out"
    res = run_cli("localize", "--checkpoint", bad.path, "--case", tiny_case, "--frames", "3", "--max-keep", "2",
                  "--cache-dir", cache.root, "--out", out)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no set within --max-keep 2: the minimal set found has 3 nodes" in res.stdout
    data = json.loads((out / "localize.json").read_text())
    assert data["within_tolerance"] and not data["within_max_keep"]
    from PIL import Image

    assert Image.open(out / "layers.png").size[0] == 760


@pytest.mark.parametrize("args, message", [(["--frames", "0"], "--frames must be at least 1"),
                                           (["--runner", "trt-fp16"], "localize works with cpu-fp16, ort-fp16")])
def test_usage_errors(fitted, tiny_case, tmp_path, args, message):
    res = run_cli("localize", "--checkpoint", fitted.path, "--case", tiny_case, "--out", tmp_path / "o", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
