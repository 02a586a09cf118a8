"""The `ufld` adapter against the authors' own module definitions (tests/ufld_authors.py): their
checkpoints load key for key, the logits and the demo's decoding agree, and UFLD-R18 goes through
every CPU runner and localisation."""
import json

import numpy as np
import pytest
import torch

from parity.errors import CheckpointError
from parity.models.checkpoint import load_checkpoint
from parity.models.foreign import import_checkpoint
from parity.models.ufld import CONFIGS, CULANE_ROW_ANCHOR, UfldAdapter, UfldConfig
from parity.runners import create
from parity.runners.artifacts import ArtifactCache, export_onnx

from . import ufld_authors
from .conftest import run_main


def authors_training_net(backbone="18", griding=200, rows=18, seed=0):
    """parsingNet as their train.py builds it (use_aux=True), its batch-norm statistics moved off
    their initial values so the comparison exercises them."""
    torch.manual_seed(seed)
    net = ufld_authors.parsingNet(pretrained=False, backbone=backbone, cls_dim=(griding + 1, rows, 4), use_aux=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        net.cls[2].bias.normal_(0, 1)  # so argmax picks lanes, not always the same cell
    return net


def save_like_their_train_py(net, path, ddp=True):
    """utils/common.py save_model: {'model': state_dict, 'optimizer': ...}; under DDP every key has 'module.'."""
    sd = {("module." if ddp else "") + k: v for k, v in net.state_dict().items()}
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}}, path)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ufld")
    net = authors_training_net()
    save_like_their_train_py(net, d / "ep049.pth")
    res = run_main("import-checkpoint", "--adapter", "ufld", "--config", "culane-r18", "--weights", d / "ep049.pth", "--out", d / "ufld.pt")
    assert res.returncode == 0, res.stderr
    return net, load_checkpoint(d / "ufld.pt")


def test_their_checkpoint_loads_key_for_key_and_gives_their_logits(imported):
    net, ck = imported
    theirs = ufld_authors.parsingNet(pretrained=False, backbone="18", cls_dim=(201, 18, 4), use_aux=False)
    # demo.py: strip 'module.', load with strict=False (the aux head's keys are ignored there)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in net.state_dict().items()}
    theirs.load_state_dict(state, strict=False)
    theirs.eval()
    mine = ck.build_model()
    assert list(mine.state_dict()) == list(theirs.state_dict())  # key for key, in order
    x = torch.randn(2, 3, 288, 800)
    with torch.inference_mode():
        a, b = theirs(x).numpy(), mine(x).numpy()
    assert a.shape == (2, 201, 18, 4)
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
    runner = create("torch", ck, None)
    with runner:
        out = runner.infer({"image": x.numpy()})["logits"]
    np.testing.assert_allclose(out, a, atol=1e-6, rtol=0)
    meta = json.loads(ck.path.with_suffix(".json").read_text())
    assert meta["adapter"] == "ufld" and meta["config"]["name"] == "culane-r18" and len(meta["source"]["sha256"]) == 64


def test_decoding_is_their_demo(imported):
    net, ck = imported
    adapter = ck.adapter()
    torch.manual_seed(3)
    with torch.inference_mode():
        logits = net.eval()(torch.randn(3, 3, 288, 800))[0].numpy()
    x = adapter.decode(logits, 1640)
    rows = adapter.anchor_rows(590)
    n = 0
    for b in range(3):
        pts = ufld_authors.demo_points(logits[b], 200, CULANE_ROW_ANCHOR, 18, 1640, 590)
        want = np.full((4, 18), np.nan)
        for (lane, k), (px, py) in pts.items():
            want[lane, k] = px
            assert py == pytest.approx(rows[k], abs=1e-9)
        np.testing.assert_allclose(x[b], want, atol=1e-3, equal_nan=True)
        n += len(pts)
    assert n > 20  # lanes were found, so the comparison compared something


def test_a_state_dict_that_does_not_fit_is_refused_naming_keys(tmp_path):
    net = authors_training_net(griding=100, rows=56)  # a TuSimple model
    save_like_their_train_py(net, tmp_path / "tusimple.pth", ddp=False)
    with pytest.raises(CheckpointError, match=r"2 mis-shaped: cls\.2\.weight \(22624, 2048\) \(the model has \(14472, 2048\)\)"):
        import_checkpoint("ufld", {"name": "culane-r18"}, tmp_path / "tusimple.pth", tmp_path / "x.pt")
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("model.layer4.1.")}
    torch.save({"model": sd}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing: model\.layer4\.1\.conv1\.weight"):
        import_checkpoint("ufld", {"name": "tusimple-r18"}, tmp_path / "cut.pth", tmp_path / "y.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    res = run_main("import-checkpoint", "--adapter", "ufld", "--config", "culane-r18", "--weights", tmp_path / "junk.pth", "--out", tmp_path / "z.pt")
    assert res.returncode == 2 and "not a weights file" in res.stderr and "Traceback" not in res.stderr
    res = run_main("import-checkpoint", "--adapter", "ufld", "--config", "culane-r50", "--weights", tmp_path / "cut.pth", "--out", tmp_path / "z.pt")
    assert res.returncode == 2 and "config.name" in res.stderr


def test_configs_are_the_authors():
    assert set(CONFIGS) == {"culane-r18", "culane-r34", "tusimple-r18", "tusimple-r34"}
    c = UfldConfig.from_dict({"name": "tusimple-r34"})
    assert c.cls_dim == (101, 56, 4) and c.row_anchor[0] == 64 and c.row_anchor[-1] == 284 and c.backbone == "34"
    assert UfldConfig.from_dict({"name": "culane-r18"}).cls_dim == (201, 18, 4)
    p = UfldAdapter().pipelines()["training"]
    assert p.size == (288, 800) and p.crop[0] == 0.0 and p.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.fixture(scope="module")
def two_frames(tmp_path_factory):
    from parity.cases.synth import write_case

    from .conftest import _tiny_scenario

    return write_case(_tiny_scenario(frames=2), tmp_path_factory.mktemp("ufld-case") / "tiny2")


def test_ufld_r18_through_every_cpu_runner_and_localize_mapping(imported, two_frames, cache_dir, tmp_path):
    """torch, ort-fp32, ort-fp16 and cpu-fp16 (its residual Adds and the stem's MaxPool computed in
    fp16) on the same frames; every fx node of the network maps to its node in the exported ONNX."""
    from .test_localize import _check_mapping

    _, ck = imported
    res = run_main("replay", "--cases", two_frames, "--checkpoint", ck.path, "--runners", "torch,ort-fp32,ort-fp16,cpu-fp16",
                   "--pipeline", "vehicle", "--batch-size", "2", "--cache-dir", cache_dir, "--out", tmp_path / "run", "--no-progress", "--no-report")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    results = {r["runner"]: r for r in json.loads((tmp_path / "run" / "summary.json").read_text())["results"]}
    assert set(results) == {"torch", "ort-fp32", "ort-fp16", "cpu-fp16"} and all(r["frames"] == 2 for r in results.values())
    assert results["ort-fp32"]["raw_max"] < 1e-3 and 0 < results["cpu-fp16"]["raw_max"] < 1.0
    path, _ = export_onnx(ck, ArtifactCache(cache_dir))
    nodes, mapping = _check_mapping(ck.build_model(), path, torch.zeros(1, 3, 288, 800))
    ops = {c["op"] for c in nodes}
    assert {"Conv2d", "MaxPool2d", "add", "Linear"} <= ops, ops
    assert mapping["model.maxpool"] == ["/model/maxpool/MaxPool"]
    adds = [c for c in nodes if c["op"] == "add"]
    assert len(adds) == 8 and mapping[adds[0]["node"]] == ["/model/layer1/layer1.0/Add"]


def test_same_keys_and_outputs_as_torchvision_where_it_imports():
    try:
        import torchvision
    except Exception as exc:  # the CUDA wheel beside the CPU torch fails here (libtorch_cuda missing)
        pytest.skip(f"torchvision does not import here ({type(exc).__name__}); the transcription in tests/ufld_authors.py stands in")
    for depth in ("18", "34"):
        models = {"18": torchvision.models.resnet18, "34": torchvision.models.resnet34}
        torch.manual_seed(1)
        theirs = ufld_authors.parsingNet(pretrained=False, backbone=depth, cls_dim=(201, 18, 4), models=models).eval()
        mine = UfldAdapter(UfldConfig.from_dict({"name": f"culane-r{depth}"})).build().eval()
        assert list(mine.state_dict()) == list(theirs.state_dict())
        mine.load_state_dict(theirs.state_dict())
        x = torch.randn(1, 3, 288, 800)
        with torch.inference_mode():
            np.testing.assert_allclose(mine(x).numpy(), theirs(x).numpy(), atol=1e-6, rtol=0)


def test_a_few_training_steps_of_ufld_from_scratch_and_from_an_import(imported, two_frames, tmp_path):
    """The training loop and a recipe with the ufld adapter: its targets and the loop's cross-entropy,
    from scratch (--adapter ufld --config) and fine-tuning an imported checkpoint (--from)."""
    res = run_main("train", "--cases", two_frames, "--adapter", "ufld", "--config", "tusimple-r18", "--epochs", "1", "--batch-size", "2",
                   "--threads", "2", "--no-progress", "--out", tmp_path / "scratch.pt")
    assert res.returncode == 0, res.stderr
    ck = load_checkpoint(tmp_path / "scratch.pt")
    assert ck.meta["adapter"] == "ufld" and ck.meta["config"]["griding"] == 100 and len(ck.meta["loss_history"]) >= 1
    assert all(np.isfinite(h) for h in ck.meta["loss_history"])
    _, parent = imported
    res = run_main("train", "--cases", two_frames, "--method", "l2-sp", "--from", parent.path, "--epochs", "1", "--batch-size", "2",
                   "--no-progress", "--out", tmp_path / "tuned.pt")
    assert res.returncode == 0, res.stderr
    tuned = load_checkpoint(tmp_path / "tuned.pt")
    assert tuned.meta["adapter"] == "ufld" and tuned.meta["config"]["name"] == "culane-r18"
    tuned.build_model()  # the sidecar names the family its weights belong to


def test_an_onnx_only_model_replays_with_onnxruntime_as_its_reference(imported, two_frames, cache_dir, tmp_path):
    """The graph a deployment team is handed (exported with batch 1 fixed and its own tensor names, as
    community exports of UFLD are): replayed with the ufld adapter's pipeline and decoding; the reference
    is ONNX Runtime fp32 on it, labelled so; what needs PyTorch says so in one line."""
    net, ck = imported
    theirs = ufld_authors.parsingNet(pretrained=False, backbone="18", cls_dim=(201, 18, 4), use_aux=False)
    theirs.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("aux")})
    torch.onnx.export(theirs.eval(), (torch.zeros(1, 3, 288, 800),), str(tmp_path / "ufld.onnx"), input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False)
    base = ["--cases", two_frames, "--pipeline", "vehicle", "--cache-dir", cache_dir, "--no-progress", "--no-report"]
    res = run_main("replay", "--onnx", tmp_path / "ufld.onnx", "--adapter", "ufld", "--config", "culane-r18", "--runners", "torch",
                   "--out", tmp_path / "onnx-run", *base)  # ort-fp16 on an ONNX-only model: tests/test_ufldv2.py
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads((tmp_path / "onnx-run" / "summary.json").read_text())
    r = {x["runner"]: x for x in doc["results"]}
    assert "ONNX-only model" in r["torch"]["label"] and doc["provenance"]["checkpoint"]["method"] == "onnx-only"
    assert r["torch"]["frames"] == 2
    import pandas as pd

    from parity.cases.format import load_case

    case = load_case(two_frames)  # the authors' module on the same pipeline input, decoded by the adapter
    with torch.inference_mode():
        want = ck.adapter().decode(theirs(torch.from_numpy(ck.adapter().pipelines()["vehicle"].prepare(case, [0, 1]))).numpy(), case.width)
    got = pd.read_parquet(tmp_path / "onnx-run" / "frames.parquet").query("runner == 'torch'").sort_values(["frame", "lane"])
    np.testing.assert_allclose(np.stack(got["x"].to_numpy()).astype(float).reshape(want.shape), want, atol=0.05, equal_nan=True)
    res = run_main("replay", "--onnx", tmp_path / "ufld.onnx", "--adapter", "ufld", "--runners", "cpu-fp16", "--out", tmp_path / "x", *base)
    assert res.returncode == 2 and "runs the PyTorch module" in res.stderr and "ONNX-only" in res.stderr
    res = run_main("localize", "--checkpoint", tmp_path / "ufld.onnx", "--case", two_frames, "--out", tmp_path / "loc")
    assert res.returncode == 2 and "an ONNX file, not a checkpoint" in res.stderr
    res = run_main("replay", "--onnx", tmp_path / "ufld.onnx", "--adapter", "rowanchor", "--out", tmp_path / "y", *base)
    assert res.returncode == 2 and "the rowanchor adapter feeds N x 3 x 112 x 288" in res.stderr
