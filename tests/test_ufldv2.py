"""The `ufldv2` adapter: the authors' v2 network (four named outputs) key for key and output for
output, their pred2coords decoding, and the four outputs through every CPU runner, the ONNX export,
localize's mapping and a capture."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from parity.models.checkpoint import load_checkpoint
from parity.models.foreign import import_checkpoint
from parity.models.ufldv2 import CONFIGS, OUTPUTS, UfldV2Adapter, UfldV2Config

from . import ufld_authors
from .conftest import run_main

# the authors' architecture at a size a 2-core test runs: their fields, fewer anchors and cells, a small input
SMALL = {"name": "small", "backbone": "18", "num_row": 8, "num_col": 10, "num_cell_row": 20, "num_cell_col": 16, "train_width": 320,
         "train_height": 160, "crop_ratio": 0.6, "fc_norm": True, "row_anchor": [0.42, 1.0]}


def authors_net(seed=0):
    torch.manual_seed(seed)
    net = ufld_authors.parsingNetV2(pretrained=False, backbone="18", num_grid_row=20, num_cls_row=8, num_grid_col=16, num_cls_col=10,
                                    num_lane_on_row=4, num_lane_on_col=4, input_height=160, input_width=320, fc_norm=True)
    with torch.no_grad():
        last = net.cls[3]
        last.bias.normal_(0, 2)
        d1, d2, d3 = net.dim1, net.dim2, net.dim3
        last.bias[d1 + d2 : d1 + d2 + d3].view(2, 8, 4)[1] += 4  # "exists" wins on the row anchors...
        last.bias[-net.dim4:].view(2, 10, 4)[1] += 4  # ...and on the column anchors, so every lane is decoded
    return net.eval()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ufldv2")
    net = authors_net()
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}, "optimizer": {}}, d / "model_best.pth")
    return net, import_checkpoint("ufldv2", SMALL, d / "model_best.pth", d / "v2.pt")


def test_their_v2_network_key_for_key_and_output_for_output(imported):
    net, ck = imported
    mine = ck.build_model()
    assert list(mine.state_dict()) == list(net.state_dict())
    x = torch.randn(2, 3, 160, 320)
    with torch.inference_mode():
        theirs, ours = net(x), mine(x)
    for name, o in zip(OUTPUTS, ours):
        np.testing.assert_allclose(o.numpy(), theirs[name].numpy(), atol=1e-6, rtol=0)
    assert ours[0].shape == (2, 20, 8, 4) and ours[3].shape == (2, 2, 10, 4)


def test_decoding_is_their_pred2coords(imported):
    net, ck = imported
    adapter = ck.adapter()
    torch.manual_seed(5)
    with torch.inference_mode():
        pred = net(torch.randn(1, 3, 160, 320))
    x = adapter.decode({k: v.numpy() for k, v in pred.items()}, 1640)[0]
    coords = ufld_authors.pred2coords({k: v.clone() for k, v in pred.items()}, adapter.row_fractions(), adapter.col_fractions(),
                                      original_image_width=1640, original_image_height=590)
    assert set(coords) == {0, 1, 2, 3}
    rows = adapter.anchor_rows(590)
    for i in (1, 2):  # row lanes: their point at each valid anchor row
        for px, py in coords[i]:
            k = int(np.argmin(np.abs(rows - py)))
            assert x[i, k] == pytest.approx(px, abs=1e-3)
    for i in (0, 3):  # column lanes: their points resampled to the anchor rows inside the lane's y range
        pts = sorted(coords[i], key=lambda p: p[1])
        ys, xs = np.array([p[1] for p in pts]), np.array([p[0] for p in pts])
        inside = (rows >= ys[0]) & (rows <= ys[-1])
        np.testing.assert_allclose(x[i][inside], np.interp(rows[inside], ys, xs), atol=1e-2)
        assert np.isnan(x[i][~inside]).all()


def test_configs_are_the_authors():
    c = UfldV2Config.from_dict({"name": "culane-r18"})
    assert (c.num_row, c.num_col, c.num_cell_row, c.num_cell_col, c.train_width, c.train_height, c.fc_norm) == (72, 81, 200, 100, 1600, 320, True)
    assert c.input_dim == 4000 and sum(c.dims) == 91224
    t = UfldV2Config.from_dict({"name": "tusimple-r34"})
    assert t.input_dim == 2000 and sum(t.dims) == 39576 and t.backbone == "34" and not t.fc_norm
    a = UfldV2Adapter(t)
    assert a.row_fractions()[0] == pytest.approx(160 / 720) and a.row_fractions()[-1] == pytest.approx(710 / 720)
    assert set(CONFIGS) == {"culane-r18", "culane-r34", "tusimple-r18", "tusimple-r34"}


def test_four_outputs_through_every_cpu_runner_localize_and_a_capture(imported, tiny_case, cache_dir, tmp_path):
    from parity.runners.artifacts import ArtifactCache, export_onnx
    from parity.runners.captures.manifest import read_manifest

    from .test_localize import _check_mapping

    net, ck = imported
    base = ["--cases", tiny_case, "--checkpoint", ck.path, "--pipeline", "vehicle", "--batch-size", "3", "--cache-dir", cache_dir]
    exp = tmp_path / "exp"
    assert run_main("export-inputs", *base, "--format", "npy", "--graphs", "fp32", "--out", exp).returncode == 0
    m = read_manifest(exp)
    assert m.output_names == list(OUTPUTS)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exp / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(OUTPUTS)
    captured = {b.id: dict(zip(OUTPUTS, sess.run(None, {m.input_name: np.load(exp / b.tensor["file"])}))) for b in m.batches}
    np.savez(tmp_path / "cap.npz", **{f"{bid}/{n}": o for bid, outs in captured.items() for n, o in outs.items()})
    res = run_main("replay", *base, "--runners", "torch,ort-fp32,ort-fp16,cpu-fp16", "--outputs", f"cap-fp32={tmp_path / 'cap.npz'},inputs={exp}",
                   "--out", tmp_path / "run", "--no-progress", "--no-report")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = {x["runner"]: x for x in json.loads((tmp_path / "run" / "summary.json").read_text())["results"]}
    assert set(r) == {"torch", "ort-fp32", "ort-fp16", "cpu-fp16", "cap-fp32"} and all(x["frames"] == 6 for x in r.values())
    assert r["ort-fp32"]["raw_max"] < 1e-3 and r["cpu-fp16"]["raw_max"] > r["ort-fp32"]["raw_max"]
    for k in ("dx_ref_mean_px", "raw_max", "argmax_flip_rate"):
        assert r["cap-fp32"][k] == pytest.approx(r["ort-fp32"][k], abs=1e-6, nan_ok=True), k
    assert np.isfinite(r["torch"]["bend_mean_px"])  # lanes were decoded from the four outputs
    # Each output's parity on its own, against a plain recomputation: the authors' module on the exported tensors vs the capture.
    per = pd.read_parquet(tmp_path / "run" / "outputs.parquet")
    assert set(per["output"]) == set(OUTPUTS) and len(per[per.runner == "cap-fp32"]) == 6 * len(OUTPUTS)
    cap = per[per.runner == "cap-fp32"].set_index(["frame", "output"])
    for b in m.batches:
        with torch.inference_mode():
            theirs = net(torch.from_numpy(np.load(exp / b.tensor["file"])))
        for name in OUTPUTS:
            diff = np.abs(captured[b.id][name].astype(np.float64) - theirs[name].numpy()).reshape(b.size, -1)
            flips = (captured[b.id][name].argmax(1) != theirs[name].numpy().argmax(1)).reshape(b.size, -1).mean(1)
            for k, f in enumerate(b.frames):
                row = cap.loc[(f, name)]
                assert row["raw_max"] == pytest.approx(diff[k].max(), rel=1e-3, abs=1e-7), (f, name)
                assert row["raw_mean"] == pytest.approx(diff[k].mean(), rel=1e-3, abs=1e-8) and row["argmax_flip_rate"] == pytest.approx(flips[k])
    lanes = pd.read_parquet(tmp_path / "run" / "frames.parquet").groupby(["runner", "frame"]).raw_max.first()
    worst = per.groupby(["runner", "frame"]).raw_max.max()
    np.testing.assert_allclose(lanes.loc[worst.index].to_numpy(), worst.to_numpy(), rtol=0, atol=0)  # the lane table: the worst output
    by_out = r["cpu-fp16"]["raw_by_output"]
    assert set(by_out) == set(OUTPUTS) and max(o["raw_max"] for o in by_out.values()) == pytest.approx(r["cpu-fp16"]["raw_max"])
    assert "raw parity per output" in res.stdout and "exist_col" in res.stdout
    path, _ = export_onnx(ck, ArtifactCache(cache_dir))
    nodes, _ = _check_mapping(ck.build_model(), path, torch.zeros(1, 3, 160, 320))
    assert {"Conv2d", "MaxPool2d", "add", "LayerNorm", "Linear"} <= {c["op"] for c in nodes}


def test_training_a_model_without_targets_is_refused(imported, tiny_case, tmp_path):
    _, ck = imported
    res = run_main("train", "--cases", tiny_case, "--from", ck.path, "--epochs", "1", "--batch-size", "3", "--no-progress", "--out", tmp_path / "t.pt")
    assert res.returncode == 2 and "provides no training targets" in res.stderr


def test_an_onnx_only_v2_model_with_its_four_named_outputs(imported, tiny_case, cache_dir, tmp_path):
    net, _ = imported

    class Tupled(torch.nn.Module):  # the authors' ONNX export names the dict's four values
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            d = self.net(x)
            return tuple(d[k] for k in OUTPUTS)

    torch.onnx.export(Tupled().eval(), (torch.zeros(1, 3, 160, 320),), str(tmp_path / "v2.onnx"), input_names=["input"],
                      output_names=list(OUTPUTS), opset_version=17, dynamo=False)
    res = run_main("replay", "--onnx", tmp_path / "v2.onnx", "--adapter", "ufldv2", "--config", "culane-r18", "--cases", tiny_case,
                   "--runners", "torch", "--out", tmp_path / "r0", "--no-progress", "--no-report")
    assert res.returncode == 2 and "the ufldv2 adapter feeds N x 3 x 320 x 1600" in res.stderr  # the config decides the input
    from parity.runs.replay import ReplayConfig, replay

    out = replay(ReplayConfig(cases=[str(tiny_case)], checkpoint=str(tmp_path / "v2.onnx"), runners="torch,ort-fp16", pipelines="vehicle",
                              out=str(tmp_path / "r1"), batch_size=3, cache_dir=str(cache_dir), progress=False,
                              onnx_spec={"adapter": "ufldv2", "config": SMALL}))
    assert out.exit_code == 0
    r = {x["runner"]: x for x in out.summary["results"]}
    assert "ONNX-only" in r["torch"]["label"] and r["ort-fp16"]["frames"] == 6 and np.isfinite(r["torch"]["bend_mean_px"])
