"""GPU runners: real tests under the `gpu` marker (skipped without CUDA), availability logic everywhere."""
import numpy as np
import pytest

from parity.runners.artifacts import ArtifactCache
from parity.cases.format import load_case
from parity.errors import RunnerUnavailable
from parity.runners import RUNNERS, create

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the no-GPU path is not what runs here")
@pytest.mark.parametrize("name", ["torch-cuda-fp32", "torch-cuda-tf32", "torch-cuda-fp16"])
def test_cuda_runners_say_why_they_cannot_run(name, random_checkpoint, cache_dir):
    assert not RUNNERS[name].available()
    with pytest.raises(RunnerUnavailable, match="needs a CUDA device"):
        create(name, random_checkpoint, ArtifactCache(cache_dir))


def test_ort_gpu_runners_name_the_missing_provider(random_checkpoint, cache_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(RunnerUnavailable, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        create("ort-cuda-fp16", random_checkpoint, ArtifactCache(cache_dir))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_torch_cuda_precisions_against_cpu(random_checkpoint, cache_dir, tiny_case):
    adapter = random_checkpoint.adapter()
    feed = {"image": adapter.pipelines()["vehicle"].prepare(load_case(tiny_case), range(4))}
    cache = ArtifactCache(cache_dir)
    out = {}
    for name in ("torch", "torch-cuda-fp32", "torch-cuda-tf32", "torch-cuda-fp16"):
        with create(name, random_checkpoint, cache) as r:
            out[name] = r.infer(feed)["logits"]
    ref = out["torch"]
    err = {k: float(np.abs(v - ref).max()) for k, v in out.items()}
    assert err["torch-cuda-fp32"] < 1e-3
    assert err["torch-cuda-fp32"] <= err["torch-cuda-tf32"] < err["torch-cuda-fp16"] < 0.1 * np.abs(ref).max()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_tf32_flag_is_restored(random_checkpoint, cache_dir, tiny_case):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    feed = {"image": random_checkpoint.adapter().pipelines()["vehicle"].prepare(load_case(tiny_case), range(2))}
    with create("torch-cuda-tf32", random_checkpoint, ArtifactCache(cache_dir)) as r:
        r.infer(feed)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before  # set for the call only
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cpu_fp16_sees_what_cuda_fp16_sees(random_checkpoint, cache_dir, tiny_case, tmp_path):
    """The CPU runner with real fp16 arithmetic against PyTorch fp16 on the GPU: the same overflow, and
    rounding differences of the same size as fp16's own."""
    from .defects import plant_overflow

    adapter = random_checkpoint.adapter()
    feed = {"image": adapter.pipelines()["vehicle"].prepare(load_case(tiny_case), range(4))}
    cache = ArtifactCache(cache_dir)
    out = {}
    for name in ("torch", "cpu-fp16", "torch-cuda-fp16"):
        with create(name, random_checkpoint, cache) as r:
            out[name] = r.infer(feed)["logits"]
    gpu_vs_fp32 = np.abs(out["torch-cuda-fp16"] - out["torch"]).max()
    cpu_vs_gpu = np.abs(out["cpu-fp16"] - out["torch-cuda-fp16"]).max()
    print(f"max |cpu-fp16 - cuda-fp16| = {cpu_vs_gpu:.3g}, max |cuda-fp16 - torch fp32| = {gpu_vs_fp32:.3g}")
    assert cpu_vs_gpu <= 3 * gpu_vs_fp32 + 1e-3
    bad = plant_overflow(random_checkpoint, tmp_path / "overflow.pt")
    for name in ("cpu-fp16", "torch-cuda-fp16"):
        with create(name, bad, cache) as r:
            assert not np.isfinite(r.infer(feed)["logits"]).all(), name


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_tf32_holds_when_every_cuda_runner_is_active_at_once(random_checkpoint, cache_dir, tiny_case):
    """Replay activates all runners before the first frame; TF32 is process-wide. Each runner must still get its own."""
    from contextlib import ExitStack

    adapter = random_checkpoint.adapter()
    feed = {"image": adapter.pipelines()["vehicle"].prepare(load_case(tiny_case), range(4))}
    cache = ArtifactCache(cache_dir)
    names = ("torch-cuda-fp32", "torch-cuda-tf32", "torch-cuda-fp16")
    with ExitStack() as stack:
        runners = [stack.enter_context(create(n, random_checkpoint, cache)) for n in names]
        out = {r.name: r.infer(feed)["logits"] for r in runners}
        again = runners[0].infer(feed)["logits"]
    np.testing.assert_array_equal(again, out["torch-cuda-fp32"])  # tf32 did not leak into fp32
    assert np.abs(out["torch-cuda-tf32"] - out["torch-cuda-fp32"]).max() > 0  # tf32 is on for its runner
