"""`cpu-fp16`: real fp16 arithmetic on the CPU, and what each CPU runner can and cannot show."""
import numpy as np
import pytest
import torch

from parity.runners import create, resolve
from parity.runners.artifacts import ArtifactCache
from parity.runners.half import HalfExecutor

from .defects import plant_overflow


def test_cpu_half_kernels_accumulate_in_fp32_and_round_outputs():
    """The fact the runner's label states: 1 + 4096 terms of 2**-12 is 2.0 (fp16 accumulation would stay 1.0)."""
    x = torch.full((1, 4097), 2.0**-12).half()
    x[0, 0] = 1.0
    assert torch.nn.functional.linear(x, torch.ones(1, 4097).half()).item() == 2.0
    xc = torch.full((1, 4097, 1, 1), 2.0**-12).half()
    xc[0, 0] = 1.0
    assert torch.nn.functional.conv2d(xc, torch.ones(1, 4097, 1, 1).half()).item() == 2.0
    xc = torch.full((1, 512, 3, 3), 2.0**-12).half()
    xc[0, 0, 1, 1] = 1.0
    y = torch.nn.functional.conv2d(xc, torch.ones(1, 512, 3, 3).half()).item()
    assert y == 2.125 and y == float(torch.tensor(1 + (512 * 9 - 1) * 2.0**-12).half())  # fp32 sum, rounded once


def _feed(shape=(2, 3, 112, 288)):
    return np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)


def _run(name, checkpoint, cache_dir, x):
    r = create(name, checkpoint, ArtifactCache(cache_dir))
    with r:
        return r.infer({"image": x})["logits"], r


def test_cpu_fp16_is_in_the_default_set_and_matches_torch_to_fp16_precision(random_checkpoint, cache_dir):
    assert "cpu-fp16" in resolve("auto")
    x = _feed()
    ref, _ = _run("torch", random_checkpoint, cache_dir, x)
    out, runner = _run("cpu-fp16", random_checkpoint, cache_dir, x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    scale = np.abs(ref).max()
    assert 0 < np.abs(out - ref).max() < 2e-2 * scale  # rounded (not bit-equal), but only by fp16 precision
    assert "fp32 accumulation" in runner.label and "none" in runner.label  # no op fell back


def test_activation_overflow_shows_in_real_fp16_and_not_in_fp16_weights_only(random_checkpoint, cache_dir, tmp_path):
    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    x = _feed()
    ref, _ = _run("torch", bad, cache_dir, x)
    np.testing.assert_allclose(ref, _run("torch", random_checkpoint, cache_dir, x)[0], rtol=1e-5, atol=1e-5)  # exact in fp32
    assert not np.isfinite(_run("cpu-fp16", bad, cache_dir, x)[0]).all()
    out, runner = _run("ort-fp16", bad, cache_dir, x)
    assert np.isfinite(out).all()  # fp32 activations: blind to the overflow, which is what its label says
    assert "fp32 activations" in runner.label


def test_keeping_the_overflowing_chain_in_fp32_fixes_it(random_checkpoint, tmp_path):
    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    x = torch.from_numpy(_feed())
    ref = bad.build_model()(x)
    with torch.inference_mode():
        assert not torch.isfinite(HalfExecutor(bad.build_model())(x)).all()
        fixed = HalfExecutor(bad.build_model(), keep_fp32=("backbone.3", "backbone.5", "backbone.6"))(x)
    assert torch.isfinite(fixed).all() and (fixed - ref).abs().max() < 2e-2 * ref.abs().max()
    with pytest.raises(ValueError, match="no such node"):
        HalfExecutor(bad.build_model(), keep_fp32=("backbone.99",))


class _NoHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        if x.dtype == torch.float16:
            raise RuntimeError("\"my_op\" not implemented for 'Half'")
        return x * 2


def double_without_half_kernel(x):
    return _NoHalf.apply(x)


torch.fx.wrap("double_without_half_kernel")  # a leaf call in the traced graph


def test_an_op_without_a_half_kernel_falls_back_and_is_named():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return double_without_half_kernel(self.lin(x))

    net = Net().eval()
    ex = HalfExecutor(net)
    x = torch.randn(3, 4)
    with torch.inference_mode():
        y = ex(x)
        assert list(ex.fallback) == ["double_without_half_kernel"]
        assert y.dtype == torch.float32 and torch.allclose(y, net(x), atol=1e-2)
