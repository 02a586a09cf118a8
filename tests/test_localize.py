"""`parity localize` finds a layer made deliberately fp16-fragile and fixes the lanes by keeping it fp32."""
import json

import pytest
import torch

from parity.runners.artifacts import ArtifactCache
from parity.cases.format import load_case
from parity.models.checkpoint import save_checkpoint
from parity.runs.localize import localize, module_of
from parity.models.rowanchor import RowAnchorAdapter

K = 1e5  # beyond fp16's 65504


@pytest.fixture(scope="module")
def fragile_checkpoint(tmp_path_factory):
    """The reference architecture where head.0 holds +K and -K on two input features that are always
    equal (pool channel 1 is made a copy of channel 0): exact in fp32, inf - inf in fp16 weights."""
    torch.manual_seed(0)
    adapter = RowAnchorAdapter()
    model = adapter.build().eval()
    with torch.no_grad():
        model.pool.weight[1] = model.pool.weight[0]
        model.pool.bias[1] = model.pool.bias[0]
        per_channel = model.head[0].in_features // model.pool.out_channels
        for p in range(0, per_channel, 9):
            model.head[0].weight[:, per_channel + p] += K
            model.head[0].weight[:, p] -= K
    path = tmp_path_factory.mktemp("fragile") / "fragile.pt"
    return save_checkpoint(path, model, {"method": "fragile-test", "config": adapter.config.to_dict()})


def test_emulated_fp16_localizes_and_fixes_the_fragile_layer(fragile_checkpoint, tiny_case, tmp_path):
    res = localize(fragile_checkpoint, load_case(tiny_case), runner="emu-fp16", frames=6, cache=ArtifactCache(tmp_path))
    assert res["ranking"][0] == "head.0"
    first = next(e for e in res["layers"] if e["layer"] == "head.0")
    assert first["introduced_nonfinite"] and first["node"] == "/head/head.0/Gemm"
    assert res["before"]["nonfinite_frames"] > 0 or res["before"]["dx_max_px"] > 5
    assert res["keep_fp32"] == ["head.0"] and res["nodes_to_exclude"] == ["/head/head.0/Gemm"]
    assert res["within_tolerance"] and res["after"]["dx_max_px"] <= 1.0 and res["after"]["nonfinite_frames"] == 0


def test_healthy_model_needs_nothing_in_fp32(random_checkpoint, tiny_case, tmp_path):
    for runner in ("emu-fp16", "ort-fp16"):
        res = localize(random_checkpoint, load_case(tiny_case), runner=runner, frames=4, cache=ArtifactCache(tmp_path))
        assert res["keep_fp32"] == [] and res["within_tolerance"]
        assert len(res["layers"]) == 10 and all(e["node"] for e in res["layers"])  # every conv/linear maps to its ONNX node
        assert res["before"] == res["after"]


def test_ort_fp16_keeps_blocked_nodes_in_fp32(fragile_checkpoint, tmp_path):
    import onnx

    from parity.runners.artifacts import export_onnx, fp16_onnx

    cache = ArtifactCache(tmp_path)
    path, _ = export_onnx(fragile_checkpoint, cache)
    p16, meta = fp16_onnx(path, cache, ("/head/head.0/Gemm",))
    assert meta["key"]["keep_fp32_nodes"] == ["/head/head.0/Gemm"]
    g = onnx.load(str(p16)).graph
    gemm = next(n for n in g.node if n.name == "/head/head.0/Gemm")
    inits = {i.name: i.data_type for i in g.initializer}
    assert inits[gemm.input[1]] == onnx.TensorProto.FLOAT  # its weights stay fp32 (and unclamped)
    assert fp16_onnx(path, cache)[1]["clamped_initializers"]  # the default conversion clamps the +-K weights, and says so


def test_localize_cli_writes_table_json_and_chart(fragile_checkpoint, tiny_case, tmp_path):
    from .conftest import run_cli

    res = run_cli("localize", "--checkpoint", fragile_checkpoint.path, "--case", tiny_case, "--runner", "emu-fp16",
                  "--frames", "4", "--cache-dir", tmp_path / "c", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "head.0" in res.stdout.splitlines()[1] and "nodes_to_exclude" in res.stdout
    data = json.loads((tmp_path / "out" / "localize.json").read_text())
    assert data["keep_fp32"] == ["head.0"]
    from PIL import Image

    assert Image.open(tmp_path / "out" / "layers.png").size[0] == 760
    bad = run_cli("localize", "--checkpoint", fragile_checkpoint.path, "--case", tiny_case, "--runner", "trt-fp16", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "localize works with" in bad.stderr


def test_module_names_from_onnx_nodes():
    assert module_of("/backbone/backbone.3/Conv") == "backbone.3"
    assert module_of("/pool/Conv") == "pool"
    assert module_of("/Flatten") is None
