"""`cpu-fp16`: real fp16 arithmetic on the CPU, and what each CPU runner can and cannot show."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from parity.runners import RUNNERS, create, resolve
from parity.runners.artifacts import ArtifactCache
from parity.runners.half import HalfExecutor

from .defects import plant_overflow


def _fp16_sequential_sum(terms: np.ndarray) -> float:
    s = np.float16(0)
    for t in terms.astype(np.float16):
        s = np.float16(s + t)
    return float(s)


def test_cpu_half_kernels_accumulate_in_fp32_and_round_each_output_once():
    """The probe behind the runner's label (torch 2.13 CPU): half linear/conv2d return the exact sum of
    their 4608 products rounded once to fp16, which fp16 accumulation cannot do."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(8, 4608, generator=g).half(), torch.rand(16, 4608, generator=g).half()
    exact = x.double() @ w.double().T  # products of fp16 values are exact in fp32 and float64
    got = F.linear(x, w)
    assert torch.equal(got, exact.half())  # every output: one rounding of the exact sum
    seq = _fp16_sequential_sum((x[0].double() * w[0].double()).numpy())
    assert abs(seq - exact[0, 0].item()) > 20 * abs(got[0, 0].item() - exact[0, 0].item()) + 20  # fp16 accumulation is far off
    for xs, ws in (((2, 4608, 2, 2), (8, 4608, 1, 1)), ((2, 512, 5, 5), (8, 512, 3, 3))):  # 1x1 and 3x3 conv, 4608 terms
        xc, wc = torch.rand(*xs, generator=g).half(), torch.rand(*ws, generator=g).half()
        assert torch.equal(F.conv2d(xc, wc), F.conv2d(xc.double(), wc.double()).half())
    # and the smallest witness: 1 + 4096 x 2**-12 is 2.0 in fp32 accumulation, 1.0 in fp16
    x1 = torch.full((1, 4097), 2.0**-12).half()
    x1[0, 0] = 1.0
    assert F.linear(x1, torch.ones(1, 4097).half()).item() == 2.0
    assert F.conv2d(x1[:, :, None, None], torch.ones(1, 4097, 1, 1).half()).item() == 2.0


def test_conv_and_linear_nodes_compute_what_the_half_kernel_computes(random_checkpoint):
    """cpu-fp16 runs conv/linear as fp32 kernels on fp16 values rounded once (the half kernel is 13x
    slower on an AVX2 CPU): on every conv/linear of the reference model, with its own fp16 weights
    and an fp16 input of the size it sees, the result equals PyTorch's half kernel but for rare
    one-ulp ties, and it overflows to inf exactly where the half kernel does."""
    from parity.runners.half import HalfExecutor

    ex = HalfExecutor(random_checkpoint.build_model())
    x = torch.from_numpy(_feed((4, 3, 112, 288)))
    env = {}
    checked = overflowed = 0
    for node in ex.graph_nodes:
        if node.op == "placeholder":
            env[node] = x.half()
            continue
        if node.op == "output":
            break
        out = ex._run_node(node, env, half=True)
        mod = ex.modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            inp = env[node.args[0]].half()
            native = copy.deepcopy(mod).half()(inp)  # PyTorch's CPU half kernel
            assert out.dtype == torch.float16 and out.shape == native.shape
            mag = torch.maximum(out.float().abs(), native.float().abs()).clamp_min(2**-14)
            ulp = 2.0 ** (torch.floor(torch.log2(mag)) - 10)  # fp16 spacing at that magnitude (2**-24 among subnormals)
            diff = (out.float() - native.float()).abs()
            # one ulp at most, two among subnormals (a cancelled sum below 6e-5: a difference of 1.2e-7)
            assert (diff <= torch.where(mag > 2**-14, ulp, 2 * ulp)).all(), node.target
            assert (diff == 0).float().mean() > 0.998, node.target  # and equal but for rare ties
            big = (inp.float() * (60000 / inp.float().abs().max())).half()  # finite, past 65504 after the weights: inf at the same places
            overflow = torch.isinf(copy.deepcopy(mod).half()(big))
            assert torch.equal(torch.isinf(ex.half_modules[node.target](big)), overflow)
            overflowed += bool(overflow.any())
            checked += 1
        env[node] = out
    assert checked >= 5 and overflowed >= 1  # every conv of the backbone and the head's linears; an overflow seen


def _feed(shape=(2, 3, 112, 288)):
    return np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)


def _run(name, checkpoint, cache_dir, x):
    r = create(name, checkpoint, ArtifactCache(cache_dir))
    with r:
        return r.infer({"image": x})["logits"], r


def test_cpu_fp16_is_in_the_default_set_and_matches_torch_to_fp16_precision(random_checkpoint, cache_dir):
    assert "cpu-fp16" in resolve("auto") and RUNNERS["cpu-fp16"].requires == ("torch",)
    x = _feed()
    ref, _ = _run("torch", random_checkpoint, cache_dir, x)
    out, runner = _run("cpu-fp16", random_checkpoint, cache_dir, x)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    scale = np.abs(ref).max()
    assert 0 < np.abs(out - ref).max() < 2e-2 * scale  # rounded (not bit-equal), but only by fp16 precision
    assert runner.label.startswith("fp16 weights, activations and outputs") and "fp32 accumulation inside conv/linear" in runner.label
    assert runner.label.endswith("(run fp32, output rounded): none") and runner.describe()["fp32_fallback"] == {}


def test_activation_overflow_shows_in_real_fp16_and_not_in_fp16_weights_only(random_checkpoint, cache_dir, tmp_path):
    """ort-fp16 on the CPU provider computes every activation in fp32: an activation that overflows
    fp16 never overflows there, which is why its label says 'fp16 weights, fp32 activations'."""
    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    x = _feed()
    ref, _ = _run("torch", bad, cache_dir, x)
    np.testing.assert_allclose(ref, _run("torch", random_checkpoint, cache_dir, x)[0], rtol=1e-5, atol=1e-5)  # exact in fp32
    assert not np.isfinite(_run("cpu-fp16", bad, cache_dir, x)[0]).all()
    out, runner = _run("ort-fp16", bad, cache_dir, x)
    assert np.isfinite(out).all()  # blind to the overflow
    assert runner.label.startswith("fp16 weights, fp32 activations")
    assert "fp16 weights, fp32 activations" in RUNNERS["ort-fp16"].description


def test_keeping_the_overflowing_chain_in_fp32_fixes_it(random_checkpoint, tmp_path):
    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    x = torch.from_numpy(_feed())
    with torch.inference_mode():
        ref = bad.build_model()(x)
        ex = HalfExecutor(bad.build_model())
        assert "backbone.4" not in ex.ids  # batch norm folded into backbone.3: no node of its own
        assert not torch.isfinite(ex(x)).all()
        for keep in (("backbone.3",), ("backbone.3", "backbone.5")):  # the big values reach an fp16 node: inf
            ex.set_keep(keep)
            assert not torch.isfinite(ex(x)).all()
        ex.set_keep(("backbone.3", "backbone.5", "backbone.6"))
        fixed = ex(x)
    assert torch.isfinite(fixed).all() and (fixed - ref).abs().max() < 2e-2 * ref.abs().max()
    with pytest.raises(ValueError, match="no such node"):
        HalfExecutor(bad.build_model(), keep_fp32=("backbone.99",))


seen_dtypes = []


def record_dtype(x):
    seen_dtypes.append(x.dtype)
    return x * 1.0


torch.fx.wrap("record_dtype")


class _Chain(torch.nn.Module):
    """Functional ops between modules: a scale that overflows fp16 unless the chain is kept fp32."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x) * 1000.0
        y = record_dtype(y * 100.0)
        return torch.relu(y) / 1e5 + 1.0


def test_every_node_runs_in_fp16_and_kept_nodes_in_fp32():
    net = _Chain().eval()
    ex = HalfExecutor(net)
    assert ex.ids == ["lin", "mul", "mul_1", "record_dtype", "relu", "truediv", "add"]
    x = torch.full((2, 4), 1.0)
    with torch.no_grad():
        net.lin.weight.fill_(0.25)
        net.lin.bias.fill_(0.0)
        ex = HalfExecutor(net)
        seen_dtypes.clear()
        assert not torch.isfinite(ex(x)).all()  # 1 * 1000 * 100 > 65504: a functional mul overflows
        assert seen_dtypes == [torch.float16]
        ex.set_keep(("mul_1", "record_dtype", "relu", "truediv"))  # kept: inputs cast up, fp32 outputs
        seen_dtypes.clear()
        y = ex(x)
        assert seen_dtypes == [torch.float32] and y.dtype == torch.float32
        assert torch.allclose(y, net(x)) and torch.isfinite(y).all()
        assert {"lin", "mul", "mul_1", "record_dtype", "relu", "truediv", "add"} == ex.tensor_nodes


def test_remembered_runs_are_bit_identical_to_full_runs(random_checkpoint):
    x = torch.from_numpy(_feed())
    ids = HalfExecutor(random_checkpoint.build_model()).ids
    fresh = HalfExecutor(random_checkpoint.build_model())
    memo = HalfExecutor(random_checkpoint.build_model(), memo=True)
    sets = [(), tuple(ids), tuple(i for i in ids if i != "backbone.6"), ("backbone.6",), ("pool", "flatten", "head.0"),
            ("pool", "head.0"), ("flatten",), ()]
    with torch.inference_mode():
        for keep in sets:
            fresh.set_keep(keep)
            memo.set_keep(keep)
            assert torch.equal(fresh(x), memo(x)), keep
        assert memo._runs and len(memo._runs) <= 4
        memo.set_memo(False)
        assert not memo._runs


class _NoHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        if x.dtype == torch.float16:
            raise RuntimeError("\"my_op\" not implemented for 'Half'")
        return x * 2


def double_without_half_kernel(x):
    return _NoHalf.apply(x)


torch.fx.wrap("double_without_half_kernel")  # a leaf call in the traced graph


class _Fallbacks(torch.nn.Module):
    """A made-up op without a half kernel, and two real ones torch 2.13 CPU lacks."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.lrn = torch.nn.LocalResponseNorm(2)  # avg_pool3d inside: "not implemented for 'Half'"

    def forward(self, x):
        y = self.lrn(self.conv(x))
        y = F.interpolate(y, size=(5, 7), mode="bilinear", antialias=True)  # "compute_index_ranges_weights" has no Half
        return double_without_half_kernel(y)


def test_ops_without_a_half_kernel_fall_back_once_and_are_named():
    net = _Fallbacks().eval()
    ex = HalfExecutor(net)
    x = torch.randn(2, 3, 12, 16)
    with torch.inference_mode():
        y = ex(x)
        assert ex.fallback == {"lrn": "LocalResponseNorm", "interpolate": "interpolate",
                               "double_without_half_kernel": "double_without_half_kernel"}
        assert y.dtype == torch.float32 and torch.allclose(y, net(x), atol=1e-2, rtol=1e-2)
        with pytest.raises(RuntimeError):  # what the fallback caught: these ops really lack a half kernel
            net.lrn.half()(torch.randn(1, 4, 3, 3).half())
        assert torch.equal(ex(x), y)  # the second batch goes straight to fp32 for them, same numbers


def test_fallback_is_in_the_runner_label():
    from parity.runners.half import HalfPrecisionRunner

    runner = HalfPrecisionRunner("cpu-fp16", _Fallbacks, "image", "logits", (3, 12, 16))
    with runner:
        runner.infer({"image": np.zeros((1, 3, 12, 16), np.float32)})
        assert runner.label.endswith("(run fp32, output rounded): lrn (LocalResponseNorm), interpolate (interpolate), "
                                     "double_without_half_kernel (double_without_half_kernel)")
        assert runner.describe()["fp32_fallback"]["lrn"] == "LocalResponseNorm"


class _ConvBnOutsideSequential(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def test_batch_norm_outside_a_sequential_is_folded_too():
    net = _ConvBnOutsideSequential().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 2)
    ex = HalfExecutor(net)
    assert ex.ids == ["conv", "relu"]
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(ex(x), net(x), atol=1e-2)
