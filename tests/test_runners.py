import numpy as np
import pytest

from parity.runners.artifacts import ArtifactCache
from parity.cases.format import load_case
from parity.errors import RunnerUnavailable, UsageError
from parity.runners import RUNNERS, RunnerEntry, RunnerError, create, resolve


@pytest.fixture(scope="module")
def feed(tiny_case, random_checkpoint):
    adapter = random_checkpoint.adapter()
    return {"image": adapter.pipelines()["vehicle"].prepare(load_case(tiny_case), range(4))}


def _logits(name, ckpt, cache, feed):
    with create(name, ckpt, cache) as r:
        return r.infer(feed)["logits"], r


def test_ort_fp32_matches_torch(random_checkpoint, cache_dir, feed):
    cache = ArtifactCache(cache_dir)
    ref, _ = _logits("torch", random_checkpoint, cache, feed)
    got, runner = _logits("ort-fp32", random_checkpoint, cache, feed)
    assert ref.shape == got.shape == (4, 65, 18, 4)
    assert np.abs(ref - got).max() < 1e-4
    assert runner.last_inference_time > 0


def test_ort_fp16_is_close_and_labelled_honestly(random_checkpoint, cache_dir, feed):
    cache = ArtifactCache(cache_dir)
    ref, _ = _logits("torch", random_checkpoint, cache, feed)
    got, runner = _logits("ort-fp16", random_checkpoint, cache, feed)
    err = np.abs(ref - got).max()
    assert 0 < err < 0.05 * np.abs(ref).max()  # fp16 weights: close, but not bit-equal
    assert "fp16 weights, fp32 activations" in runner.label
    info = runner.describe()
    assert info["artifact_key"]["keep_io_types"] is True and "clamped_initializers" in info


def test_artifacts_are_cached_by_content(random_checkpoint, tmp_path):
    first = ArtifactCache(tmp_path)
    a = create("ort-fp16", random_checkpoint, first)
    assert first.builds == 2  # fp32 export + fp16 conversion
    second = ArtifactCache(tmp_path)
    b = create("ort-fp16", random_checkpoint, second)
    assert second.builds == 0 and a.onnx_path == b.onnx_path


def test_a_process_that_only_reads_cached_artifacts_never_imports_torch(random_checkpoint, tmp_path):
    """A pool's parent checks every runner before the workers start, and reads what they describe back:
    neither imports torch (~2.5 s) where the export is cached, so the workers' imports run in parallel.
    The export's key names the torch version from its metadata: the same string torch reports."""
    import pickle
    import subprocess
    import sys

    import torch

    from parity.runners.artifacts import export_onnx

    cache = ArtifactCache(tmp_path)
    create("ort-fp16", random_checkpoint, cache)
    assert export_onnx(random_checkpoint, cache)[1]["key"]["torch"] == torch.__version__
    with create("torch", random_checkpoint, cache) as r:
        described = pickle.dumps(r.describe())
    code = (f"import pickle, sys\nfrom parity.models.checkpoint import load_checkpoint\nfrom parity.runners import create\n"
            f"from parity.runners.artifacts import ArtifactCache\nck = load_checkpoint({str(random_checkpoint.path)!r})\n"
            f"[create(n, ck, ArtifactCache({str(tmp_path)!r})) for n in ('torch', 'ort-fp32', 'ort-fp16')]\n"
            f"pickle.loads({described!r})\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"


def test_runner_contract(random_checkpoint, cache_dir, feed):
    r = create("ort-fp32", random_checkpoint, ArtifactCache(cache_dir))
    with pytest.raises(RunnerError, match="before activate"):
        r.infer(feed)
    with r:
        spec = r.io_spec()
        assert spec["image"].shape == (None, 3, 112, 288) and spec["image"].dtype == "float32"
        with pytest.raises(RunnerError, match="dtype float64"):
            r.infer({"image": feed["image"].astype(np.float64)})
        with pytest.raises(RunnerError, match="shape 4x3x100x288"):
            r.infer({"image": feed["image"][:, :, :100]})
        with pytest.raises(RunnerError, match="missing input 'image'"):
            r.infer({"input": feed["image"]})
    assert not r.is_active


def test_registry_names():
    assert resolve("auto") == ["torch", "ort-fp32", "ort-fp16", "cpu-fp16", "emu-fp16", "emu-tf32"]
    with pytest.raises(UsageError, match="did you mean 'ort-fp16'"):
        resolve("ort-f16")


def test_missing_dependency_gives_install_hint(random_checkpoint, cache_dir, monkeypatch):
    fake = RunnerEntry("needs-nothing-here", "test", ("no_such_module_xyz",), "pip install xyz", lambda *a: None)
    monkeypatch.setitem(RUNNERS, fake.name, fake)
    assert fake.name not in resolve("auto")
    with pytest.raises(RunnerUnavailable, match="no_such_module_xyz.*pip install xyz"):
        create(fake.name, random_checkpoint, ArtifactCache(cache_dir))


def test_precision_emulation(random_checkpoint, cache_dir, feed):
    import torch

    from parity.runners.emulation import fold_batchnorm, round_tf32

    cache = ArtifactCache(cache_dir)
    ref, _ = _logits("torch", random_checkpoint, cache, feed)
    ort16, _ = _logits("ort-fp16", random_checkpoint, cache, feed)
    emu16, r16 = _logits("emu-fp16", random_checkpoint, cache, feed)
    emu32, r32 = _logits("emu-tf32", random_checkpoint, cache, feed)
    e16, e32, eo = (np.abs(x - ref).max() for x in (emu16, emu32, ort16))
    assert 0 < e32 < e16  # same 10-bit mantissa, but TF32 layers write fp32 outputs where fp16 layers round them
    assert 0.2 < e16 / eo < 5  # the emulation lands on the same scale of error as the fp16 graph
    assert "emulated" in r16.label and "fp16" in r16.label and "tf32" in r32.label
    model = random_checkpoint.build_model()
    x = torch.from_numpy(feed["image"])
    with torch.no_grad():
        assert (fold_batchnorm(model)(x) - model(x)).abs().max() < 1e-4  # folding BN alone changes nothing
    v = torch.tensor([1.0 + 2**-11, 1.0 + 3 * 2**-11, -2.5])
    assert round_tf32(v).tolist() == [1.0, 1.0 + 4 * 2**-11, -2.5]  # round half to even at 10 mantissa bits


def test_fp16_graph_uses_modelopt_autocast_when_installed(random_checkpoint, tmp_path, monkeypatch):
    """With nvidia-modelopt importable, the fp16 graph comes from AutoCast with exact node patterns."""
    import sys
    import types

    import onnx
    from onnxconverter_common import float16

    from parity.runners.artifacts import export_onnx, fp16_onnx

    calls = []

    def convert_to_mixed_precision(onnx_path, low_precision_type, keep_io_types, nodes_to_exclude):
        import warnings

        calls.append(dict(low_precision_type=low_precision_type, keep_io_types=keep_io_types, nodes_to_exclude=nodes_to_exclude))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float16.convert_float_to_float16(onnx.load(onnx_path), keep_io_types=True)

    autocast = types.ModuleType("modelopt.onnx.autocast")
    autocast.convert_to_mixed_precision = convert_to_mixed_precision
    autocast.__spec__ = types.SimpleNamespace(name="modelopt.onnx.autocast")
    modelopt = types.ModuleType("modelopt")
    modelopt.__version__ = "0.99"
    modelopt.onnx = types.ModuleType("modelopt.onnx")
    modelopt.onnx.autocast = autocast
    for name, mod in (("modelopt", modelopt), ("modelopt.onnx", modelopt.onnx), ("modelopt.onnx.autocast", autocast)):
        monkeypatch.setitem(sys.modules, name, mod)
    cache = ArtifactCache(tmp_path)
    path, _ = export_onnx(random_checkpoint, cache)
    _, meta = fp16_onnx(path, cache, ("/head/head.0/Gemm",))
    assert calls == [{"low_precision_type": "fp16", "keep_io_types": True, "nodes_to_exclude": ["^/head/head\\.0/Gemm$"]}]
    assert meta["converter"] == "modelopt-autocast" and meta["key"]["converter"] == "nvidia-modelopt 0.99"


def test_emulation_folds_batch_norms_inside_residual_blocks():
    import torch

    from parity.runners.emulation import emulate, fold_every_batchnorm, unfolded_batchnorms

    class Block(torch.nn.Module):  # torchvision's BasicBlock shape: attributes, not a Sequential
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False), torch.nn.BatchNorm2d(3)
            self.conv2, self.bn2 = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False), torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    torch.manual_seed(0)
    block = Block()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = fold_every_batchnorm(block)
    assert unfolded_batchnorms(block) == 2 and unfolded_batchnorms(folded) == 0
    with torch.no_grad():
        assert torch.allclose(folded(x), block(x), atol=1e-5)
        assert torch.allclose(emulate(block, "tf32")(x), block(x), atol=1e-2)
    assert unfolded_batchnorms(emulate(block, "fp16")) == 0
