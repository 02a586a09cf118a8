"""`parity localize` finds the minimal set of nodes to keep in fp32, culprit first, for fp16 defects
planted on purpose (tests/defects.py): an activation overflow in the backbone and a precision loss
that needs a pool, a flatten and a linear kept together. Every node type is a candidate and maps to
its node in the exported ONNX graph."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parity.cases.format import load_case
from parity.runners.artifacts import ArtifactCache, export_onnx
from parity.runners.half import HalfExecutor
from parity.runs.localize import (Reduced, candidate_nodes, lane_effect_px, localize, map_to_onnx, minimal_keep_set,
                                  onnx_data_nodes)

from .conftest import run_cli, run_main
from .defects import plant_overflow, plant_precision_loss

FRAMES = 2  # sampled frames of the 6-frame case; the keep-set is then verified on all 6


@pytest.fixture(scope="module")
def fitted(tiny_case, tmp_path_factory):
    """A model fitted to the tiny case, so its lanes are there to move (random weights find no lanes)."""
    from parity.training.loop import train

    return train([tiny_case], tmp_path_factory.mktemp("fit") / "fit.pt", epochs=12, batch_size=6, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ArtifactCache(tmp_path_factory.mktemp("loc-cache"))


@pytest.fixture(scope="module")
def overflow(fitted, tmp_path_factory):
    return plant_overflow(fitted, tmp_path_factory.mktemp("defects") / "overflow.pt")


def _assert_minimal(res, ck, case, cache):
    """The set passes and dropping any member breaks the tolerance: checked by running each, not read from the search."""
    pipe = ck.adapter().pipelines()[res["pipeline"]]
    x = pipe.prepare(case, res["sample_frames"])
    with Reduced(ck, cache, res["runner"], x) as red:
        assert lane_effect_px(*red.compare([x], case.width, res["keep_fp32"])) <= res["tolerance_px"]
        for n in res["keep_fp32"]:
            rest = [k for k in res["keep_fp32"] if k != n]
            assert lane_effect_px(*red.compare([x], case.width, rest)) > res["tolerance_px"], f"{n} could be dropped"


def test_overflow_culprit_first_and_minimal_set(overflow, tiny_case, cache):
    case = load_case(tiny_case)
    res = localize(overflow, case, runner="cpu-fp16", frames=FRAMES, cache=cache)
    assert res["ranking"][0] == "backbone.3"  # the conv batch norm backbone.4 is folded into: where inf starts
    assert res["nodes"][2]["alone_px"] == float("inf") and res["nodes"][0]["alone_px"] < 1.0
    # the big values must stay fp32 until the conv that scales them back: the conv, the ReLU reading them, the next conv
    assert res["keep_fp32"] == ["backbone.3", "backbone.5", "backbone.6"]
    assert res["nodes_to_exclude"] == ["/backbone/backbone.3/Conv", "/backbone/backbone.5/Relu", "/backbone/backbone.6/Conv"]
    assert res["within_max_keep"] and res["ok"] and res["verified_whole_case"]
    b, a = res["before"], res["after"]  # the whole case, not only the sampled frames
    assert b["nonfinite_frames"] == len(case) and a["nonfinite_frames"] == 0
    assert a["dx_max_px"] <= 1.0 and a["lane_presence_disagreements"] == 0 and a["kink_rate"] == 0
    _assert_minimal(res, overflow, case, cache)


def test_precision_loss_needs_pool_flatten_and_head(fitted, tiny_case, tmp_path, cache):
    bad = plant_precision_loss(fitted, tmp_path / "loss.pt")
    case = load_case(tiny_case)
    res = localize(bad, case, runner="cpu-fp16", frames=FRAMES, cache=cache)
    assert res["before"]["dx_max_px"] > 5 and res["before"]["nonfinite_frames"] == 0
    assert res["ranking"][0] == "pool"  # where the offset enters
    assert res["keep_fp32"] == ["pool", "flatten", "head.0"]  # pool alone does not help: flatten would round its output
    assert res["nodes_to_exclude"] == ["/pool/Conv", "/Flatten", "/head/head.0/Gemm"]  # a Flatten can be suggested
    assert res["ok"] and res["after"]["dx_max_px"] <= 1.0
    _assert_minimal(res, bad, case, cache)


def test_healthy_model_needs_nothing(fitted, tiny_case, cache):
    res = localize(fitted, load_case(tiny_case), runner="cpu-fp16", frames=1, cache=cache)
    assert res["keep_fp32"] == [] and res["ok"] and res["evaluations"] == 2 + 2 * len(res["nodes"])
    assert {e["op"] for e in res["nodes"]} == {"Conv2d", "ReLU", "flatten", "Linear", "view"}  # every node type, not only conv/linear
    assert all(e["onnx"] for e in res["nodes"])


def _expected_onnx_op(c):
    module_ops = {"Conv2d": "Conv", "ReLU": "Relu", "Linear": "Gemm", "AdaptiveAvgPool2d": "GlobalAveragePool", "MaxPool2d": "MaxPool",
                  "LayerNorm": "LayerNormalization"}
    functional = {"flatten": "Flatten", "view": "Reshape", "add": "Add", "iadd": "Add", "relu": "Relu", "cat": "Concat", "sigmoid": "Sigmoid", "getitem": "Slice",
                  "mul": "Mul"}
    return module_ops[c["op"]] if c["kind"] == "call_module" else functional[c["op"]]


def _check_mapping(model, onnx_path, probe):
    import onnx

    ex = HalfExecutor(model)
    ex.set_keep(ex.ids)
    with torch.inference_mode():
        ex(probe)
    nodes = candidate_nodes(ex)
    calls = {}
    for n in ex.candidates():
        calls[n.target if n.op == "call_module" else n.name] = calls.get(n.target if n.op == "call_module" else n.name, 0) + 1
    data = onnx_data_nodes(onnx_path)
    mapping = map_to_onnx(nodes, data)
    ops = {n.name: n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    claimed = []
    for c in nodes:  # every node that computes something maps to one existing ONNX node of its op type (one per call)
        assert len(mapping[c["node"]]) == calls.get(c["node"], 1), c
        assert all(ops[n] == _expected_onnx_op(c) for n in mapping[c["node"]]), c
        claimed += mapping[c["node"]]
    assert sorted(claimed) == sorted(n.name for n in data)  # and every ONNX node on the data path is claimed once
    return nodes, mapping


def test_every_node_of_the_reference_model_maps_to_its_exported_onnx_node(random_checkpoint, cache_dir):
    path, _ = export_onnx(random_checkpoint, ArtifactCache(cache_dir))  # the real export, the reference architecture
    nodes, mapping = _check_mapping(random_checkpoint.build_model(), path, torch.zeros(1, 3, 112, 288))
    assert [c["node"] for c in nodes][:4] == ["backbone.0", "backbone.2", "backbone.3", "backbone.5"]  # batch norms folded
    assert mapping["backbone.3"] == ["/backbone/backbone.3/Conv"] and mapping["backbone.5"] == ["/backbone/backbone.5/Relu"]
    assert mapping["flatten"] == ["/Flatten"] and mapping["view"] == ["/Reshape"] and mapping["head.0"] == ["/head/head.0/Gemm"]


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))  # functional ops inside a submodule, a batch norm outside a Sequential


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block, self.side = _Block(8), nn.Conv2d(8, 8, 1)
        self.pool, self.drop, self.fc = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.1), nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.pool(torch.cat([self.block(x), self.side(x)], 1))
        y = y.view(y.size(0), -1)  # Shape/Gather/Concat in ONNX compute the target shape: not data nodes
        return torch.sigmoid(self.fc(self.drop(y))) * 2.0


def test_functional_ops_map_by_scope_op_and_order(tmp_path):
    net = _Branchy().eval()
    path = tmp_path / "branchy.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], output_names=["out"],
                          dynamic_axes={"image": {0: "b"}, "out": {0: "b"}}, opset_version=17, dynamo=False, do_constant_folding=True)
    _, mapping = _check_mapping(net, path, torch.zeros(1, 3, 16, 16))
    assert mapping == {
        "stem.0": ["/stem/stem.0/Conv"], "stem.2": ["/stem/stem.2/Relu"], "block.conv": ["/block/conv/Conv"],
        "add": ["/block/Add"], "relu": ["/block/Relu"], "side": ["/side/Conv"], "cat": ["/Concat"],
        "pool": ["/pool/GlobalAveragePool"], "view": ["/Reshape"], "fc": ["/fc/Gemm"], "sigmoid": ["/Sigmoid"], "mul": ["/Mul"],
    }


def _effect_of(passing):
    calls = []

    def effect(keep):
        calls.append(frozenset(keep))
        return 0.0 if frozenset(keep) in passing else float("inf")

    return effect, calls


def test_search_is_1_minimal_with_forward_budget_and_repeated_backward_passes():
    sets = lambda *xs: {frozenset(x) for x in xs}  # noqa: E731
    effect, _ = _effect_of(sets("abc", "ac"))  # forward adds b on the way; backward drops it
    assert minimal_keep_set(list("abc"), effect, 1.0, budget=8) == ["a", "c"]
    effect, _ = _effect_of(sets("abcd", "bcd", "bd"))  # forward stops at its budget: start from everything, then drop
    trail = []
    assert sorted(minimal_keep_set(list("abcd"), effect, 1.0, budget=2, trail=trail)) == ["b", "d"]
    assert "start from everything fp32" in trail[2]["step"]
    effect, _ = _effect_of(sets("abc", "bc", "c"))  # not monotone: one backward pass leaves [b, c], b droppable
    assert minimal_keep_set(list("abc"), effect, 1.0, budget=8) == ["c"]
    effect, calls = _effect_of(sets(""))
    assert minimal_keep_set(list("abc"), effect, 1.0, budget=8) == [] and calls == [frozenset()]
    effect, _ = _effect_of(set())  # nothing passes, not even everything fp32: every node, said by the caller
    assert minimal_keep_set(list("abc"), effect, 1.0, budget=8) == list("abc")


def test_max_keep_too_small_is_said_and_exits_1_with_table_json_and_chart(overflow, tiny_case, tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli("localize", "--checkpoint", overflow.path, "--case", tiny_case, "--frames", "1", "--max-keep", "2",
                  "--cache-dir", cache.root, "--out", out)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no set within --max-keep 2: the minimal set found has 3 nodes: ['backbone.3', 'backbone.5', 'backbone.6']" in res.stdout
    assert "rank node" in res.stdout and "   1 backbone.3     Conv2d       /backbone/backbone.3/Conv" in res.stdout  # the table
    data = json.loads((out / "localize.json").read_text())
    assert data["within_tolerance"] and not data["within_max_keep"] and data["keep_size"] == 3
    from PIL import Image

    assert Image.open(out / "layers.png").size[1] == 44 + 22 * len(data["nodes"]) + 8


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames must be at least 1, not 0"),
    (["--frames", "-2"], "--frames must be at least 1, not -2"),
    (["--runner", "emu-fp16"], "localize cannot use emu-fp16: emu-fp16 rounds only conv/linear layers"),
    (["--runner", "trt-fp16"], "localize works with cpu-fp16, ort-fp16"),
])
def test_usage_errors(random_checkpoint, tiny_case, tmp_path, args, message):
    res = run_cli("localize", "--checkpoint", random_checkpoint.path, "--case", tiny_case, "--out", tmp_path / "o", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_ort_fp16_finds_weight_rounding_only(overflow, tiny_case, cache):
    """ort-fp16 computes activations in fp32: the overflow is invisible there; what it can find is
    what the fp16 (and clamped) weights do, and only nodes the ONNX graph has are candidates."""
    # 2 px: the weight rounding alone moves this fitted model's lanes by 0.97-1.3 px, depending on the
    # CPU that trained it (an EPYC's fit reached 1.29 px on the whole case, past the 1 px default)
    res = localize(overflow, load_case(tiny_case), runner="ort-fp16", frames=2, cache=cache, tolerance_px=2.0)
    assert res["before"]["nonfinite_frames"] == 0 and res["keep_fp32"] == [] and res["ok"]  # the overflow is invisible there
    assert "fp16 weights, fp32 activations" in res["label"] and all(e["onnx"] for e in res["nodes"])


# -- layer tensors from a target: `localize --capture` ------------------------------------------------

def _export(ck, tiny_case, tmp_path, fmt="npy", batch=2):
    out = tmp_path / f"export-{fmt}"
    res = run_main("export-inputs", "--cases", tiny_case, "--checkpoint", ck.path, "--format", fmt, "--batch-size", batch,
                  "--graphs", "fp16" if fmt == "polygraphy" else "none", "--out", out)
    assert res.returncode == 0, res.stderr
    return out


def _fp16_layer_tensors(ck, x, cache) -> dict:
    """Every node's output of a real fp16 computation of `x` (parity's cpu-fp16: each op in fp16),
    under the ONNX value name TensorRT gives the tensor (the output of the node's last ONNX node)."""
    import onnx

    ex = HalfExecutor(ck.build_model())
    ex.recorded = {}
    with torch.inference_mode():
        ex(torch.from_numpy(x))
    acts = ex.recorded
    path, _ = export_onnx(ck, cache)
    names = map_to_onnx(candidate_nodes(ex), onnx_data_nodes(path))
    outputs = {n.name: n.output[0] for n in onnx.load(str(path)).graph.node}
    return {outputs[names[k][-1]]: v.numpy() for k, v in acts.items() if names.get(k)}


def test_capture_names_the_planted_overflow_layer_first(overflow, tiny_case, tmp_path, cache):
    """trtexec's debug-tensor files (tests/trtexec_files.py) holding a real fp16 computation of the
    overflow model: the conv where inf starts is the first diverging layer, nothing before it is over
    fp16 rounding, and the keep-set search starting there fixes the lanes."""
    from parity.runners.captures.manifest import read_manifest

    from . import trtexec_files

    exp = _export(overflow, tiny_case, tmp_path)
    m = read_manifest(exp)
    x = np.load(exp / m.batches[0].tensor["file"])
    trtexec_files.debug_tensors(tmp_path / "dbg" / "batch_0000", _fp16_layer_tensors(overflow, x, cache), executions=2)
    res = run_main("localize", "--checkpoint", overflow.path, "--capture", tmp_path / "dbg" / "batch_0000", "--inputs", exp,
                  "--out", tmp_path / "out")
    assert res.returncode == 1, res.stderr  # a diverging layer was found
    doc = json.loads((tmp_path / "out" / "localize.json").read_text())
    assert doc["first_diverging"]["node"] == "backbone.3" and doc["first_diverging"]["nonfinite"] > 0
    assert doc["first_diverging"]["lane_effect_px"] is None  # inf: alone, that layer's tensor loses the lanes
    before = [r for r in doc["layers"] if r["compared"] and r["depth"] < next(r["depth"] for r in doc["layers"] if r.get("node") == "backbone.3")]
    assert before and not any(r["exceeds"] for r in before) and all(r["rel_l2"] < r["budget_rel_l2"] for r in before)
    assert "backbone.3" in doc["keep_fp32"] and "/backbone/backbone.3/Conv" in doc["nodes_to_exclude"] and doc["keep_within_tolerance"]
    assert "first diverging layer: backbone.3" in res.stdout


def test_capture_of_a_healthy_model_has_no_diverging_layer(fitted, tiny_case, tmp_path, cache):
    """The same real fp16 computation of the healthy model stays within what fp16 rounding explains."""
    from parity.runners.captures.manifest import read_manifest
    from parity.runs.localize_capture import localize_capture

    from . import trtexec_files

    exp = _export(fitted, tiny_case, tmp_path)
    x = np.load(exp / read_manifest(exp).batches[0].tensor["file"])
    trtexec_files.debug_tensors(tmp_path / "batch_0000", _fp16_layer_tensors(fitted, x, cache))
    res = localize_capture(fitted, str(tmp_path / "batch_0000"), inputs=str(exp), search=False, cache=cache)
    assert res["first_diverging"] is None and res["compared"] >= 10
    assert max(r["rel_l2"] for r in res["layers"] if r["compared"]) > 0  # fp16 rounding is there, and measured


def test_polygraphy_mark_all_outputs_map_node_for_node(fitted, tiny_case, tmp_path, cache):
    """Polygraphy's own `--onnx-outputs mark all` JSON of parity's fp16 graph: every value it saves
    that a torch node computes is compared with that node (onnxruntime's CPU provider computes the
    fp16 graph in fp32, so this checks the format and the mapping, not an overflow)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from parity.runs.localize_capture import localize_capture

    exp = _export(fitted, tiny_case, tmp_path, fmt="polygraphy")
    poly = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    r = subprocess.run([poly, "run", str(exp / "model.fp16.onnx"), "--onnxrt", "--onnx-outputs", "mark", "all", "--load-inputs",
                        str(exp / "inputs.polygraphy.json"), "--save-outputs", str(exp / "layers.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = localize_capture(fitted, str(exp / "layers.json"), batch="batch_0001", search=False, cache=cache)
    ex = HalfExecutor(fitted.build_model())
    with torch.inference_mode():
        ex(torch.from_numpy(np.zeros((1, 3, 112, 288), np.float32)))
    path, _ = export_onnx(fitted, cache)
    expected = {k for k, v in map_to_onnx(candidate_nodes(ex), onnx_data_nodes(path)).items() if v}
    assert {r["node"] for r in res["layers"] if r["compared"]} == expected  # node for node
    assert res["batch"] == "batch_0001" and res["frames"] == [2, 3]
    assert res["first_diverging"] is None and all(r["rel_l2"] < 1e-2 for r in res["layers"] if r["compared"])
