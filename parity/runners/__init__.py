"""Runners: the model and its deployed forms behind one contract (after Polygraphy's BaseRunner):
activate() / infer(feed) / deactivate(), inputs checked against the IO spec, inference timed.

This module is the registry: the names users type (`torch`, `ort-fp16`, `trt-fp16`, ...) mapped to
lazily built runners. Entries name the modules they need; `available()` checks them without
importing heavy packages, so `parity runners` and `--runners auto` know what this machine can run.
`base` is the contract; `torch_runner`, `onnxrt`, `half`, `emulation`, `torch_cuda` and
`tensorrt_runner` the backends; `artifacts` builds and caches what they load (ONNX export, fp16 graph, engines).

This package may import the shared top-level modules, `parity.cases`, `parity.preprocessing` and
`parity.models`; it never imports the metrics or runs built on it.
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from typing import Callable

from ..errors import RunnerUnavailable, UsageError
from .base import Runner, RunnerError, TensorSpec

__all__ = ["Runner", "RunnerError", "TensorSpec", "RUNNERS", "RunnerEntry", "create", "prebuilt_engine", "resolve", "REFERENCE"]

REFERENCE = "torch"


@dataclass(frozen=True)
class RunnerEntry:
    name: str
    description: str
    requires: tuple[str, ...]
    install_hint: str
    factory: Callable
    probe: Callable[[], str | None] | None = None  # a reason the machine cannot run it (no GPU), else None
    needs_weights: bool = False  # runs the PyTorch module (an ONNX-only model cannot)

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def unavailable_reason(self) -> str | None:
        missing = self.missing()
        if missing:
            return f"needs {', '.join(missing)}, which is not installed ({self.install_hint})"
        return self.probe() if self.probe else None

    def available(self) -> bool:
        return self.unavailable_reason() is None


def _no_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else f"needs a CUDA device; torch {torch.__version__} sees none"


def _no_ort_provider(provider: str):
    def probe() -> str | None:
        import onnxruntime as ort

        have = ort.get_available_providers()
        return None if provider in have else f"needs onnxruntime's {provider} (pip install onnxruntime-gpu); this onnxruntime has {have}"

    return probe


def _outs(adapter):
    """The output's name, or the tuple of them for a model with several (parity.models.outputs)."""
    from ..models.outputs import output_names

    names = output_names(adapter)
    return names[0] if len(names) == 1 else names


def _torch(name, checkpoint, cache, **_):
    from .torch_runner import TorchRunner

    adapter = checkpoint.adapter()
    if not getattr(checkpoint, "has_weights", True):  # ONNX-only: the reference is ONNX Runtime fp32 on the user's graph
        from .onnxrt import OnnxRuntimeRunner

        label = (f"reference: fp32 on onnxruntime's CPU provider, the user's graph {checkpoint.path.name} "
                 "(an ONNX-only model: no PyTorch weights)")
        return OnnxRuntimeRunner(name, checkpoint.onnx_path, label, ["CPUExecutionProvider"], {"artifact_sha256": checkpoint.sha256})
    return TorchRunner(name, checkpoint.build_model, adapter.input_name, _outs(adapter), adapter.input_shape())


def _emu(precision: str):
    def make(name, checkpoint, cache, **_):
        from .emulation import EmulatedPrecisionRunner

        adapter = checkpoint.adapter()
        return EmulatedPrecisionRunner(name, checkpoint.build_model, adapter.input_name, _outs(adapter), adapter.input_shape(), precision)

    return make


def _half(name, checkpoint, cache, **_):
    from .half import HalfPrecisionRunner

    adapter = checkpoint.adapter()
    return HalfPrecisionRunner(name, checkpoint.build_model, adapter.input_name, _outs(adapter), adapter.input_shape())


def _torch_cuda(precision: str):
    def make(name, checkpoint, cache, **_):
        from .torch_cuda import TorchCudaRunner

        adapter = checkpoint.adapter()
        return TorchCudaRunner(name, checkpoint.build_model, adapter.input_name, _outs(adapter), adapter.input_shape(), precision)

    return make


def _trt(precision: str):
    def make(name, checkpoint, cache, trt_timing_cache=None, **_):
        from .tensorrt_runner import LABELS, TensorRTRunner, engine_artifact

        path, artifact = engine_artifact(checkpoint, cache, precision, timing_cache=trt_timing_cache)
        return TensorRTRunner(name, path, LABELS[precision], artifact, expect_fp16=precision == "fp16")

    return make


_ORT_LABELS = {
    ("CPUExecutionProvider", "fp32"): "fp32 (onnxruntime CPU provider)",
    # The CPU provider has few fp16 kernels: it inserts Casts and computes and stores every activation in fp32.
    ("CPUExecutionProvider", "fp16"): "fp16 weights, fp32 activations (onnxruntime CPU provider on the fp16 graph: "
                                      "cannot show activation overflow or activation rounding)",
    ("CUDAExecutionProvider", "fp32"): "fp32 (onnxruntime CUDA provider)",
    ("CUDAExecutionProvider", "fp16"): "fp16 (onnxruntime CUDA provider, fp16 kernels)",
    ("TensorrtExecutionProvider", "fp16"): "fp16 (onnxruntime TensorRT provider on the fp16 graph)",
}


def _ort(precision: str, provider: str = "CPUExecutionProvider"):
    def make(name, checkpoint, cache, **_):
        from .artifacts import export_onnx, fp16_onnx
        from .onnxrt import OnnxRuntimeRunner

        path, meta = export_onnx(checkpoint, cache)
        if precision == "fp16":
            path, meta = fp16_onnx(path, cache)
        artifact = {"artifact_sha256": meta["sha256"], "artifact_key": meta["key"]}
        if "clamped_initializers" in meta:
            artifact["clamped_initializers"] = meta["clamped_initializers"]
        providers = [provider] + (["CUDAExecutionProvider"] if provider == "TensorrtExecutionProvider" else [])
        return OnnxRuntimeRunner(name, path, _ORT_LABELS[(provider, precision)], providers, artifact)

    return make


RUNNERS: dict[str, RunnerEntry] = {
    e.name: e
    for e in (
        RunnerEntry("torch", "PyTorch fp32 on CPU (the reference)", ("torch",), "pip install torch", _torch),
        RunnerEntry("ort-fp32", "ONNX Runtime, fp32 ONNX export, CPU provider", ("onnxruntime", "onnx"), "pip install onnxruntime onnx", _ort("fp32")),
        RunnerEntry(
            "ort-fp16", "ONNX Runtime, fp16 ONNX (fp32 IO), CPU provider: fp16 weights, fp32 activations",
            ("onnxruntime", "onnx", "onnxconverter_common"), "pip install onnxruntime onnx onnxconverter-common", _ort("fp16"),
        ),
        RunnerEntry("cpu-fp16", "PyTorch on CPU in real fp16 arithmetic: weights and every op's output fp16, fp32 accumulation inside conv/linear (shows activation overflow)",
                    ("torch",), "pip install torch", _half, needs_weights=True),
        RunnerEntry("emu-fp16", "PyTorch on CPU, conv/linear weights, inputs and outputs rounded to fp16, fp32 arithmetic, other ops fp32 (emulation)", ("torch",), "pip install torch", _emu("fp16"),
                    needs_weights=True),
        RunnerEntry("emu-tf32", "PyTorch on CPU, conv/linear weights and inputs rounded to TF32, fp32 accumulation and outputs, other ops fp32 (emulation)", ("torch",), "pip install torch", _emu("tf32"),
                    needs_weights=True),
        *(
            RunnerEntry(f"torch-cuda-{p}", f"PyTorch on CUDA, {p}", ("torch",), "a CUDA build of torch (see README)", _torch_cuda(p), _no_cuda, needs_weights=True)
            for p in ("fp32", "tf32", "fp16")
        ),
        *(
            RunnerEntry(f"ort-cuda-{p}", f"ONNX Runtime CUDA provider, {p} graph", ("onnxruntime", "onnx", "onnxconverter_common"),
                        "pip install 'parity[gpu]'", _ort(p, "CUDAExecutionProvider"), _no_ort_provider("CUDAExecutionProvider"))
            for p in ("fp32", "fp16")
        ),
        *(
            RunnerEntry(f"trt-{p}", f"TensorRT engine, {p}", ("tensorrt",), "pip install 'parity[gpu]'", _trt(p), _no_cuda)
            for p in ("fp32", "tf32", "fp16")
        ),
        RunnerEntry("ort-trt-fp16", "ONNX Runtime TensorRT provider on the fp16 graph", ("onnxruntime", "onnx", "onnxconverter_common"),
                    "pip install 'parity[gpu]'", _ort("fp16", "TensorrtExecutionProvider"), _no_ort_provider("TensorrtExecutionProvider")),
    )
}


def resolve(spec: str | list[str]) -> list[str]:
    """'auto' -> every runner available here; otherwise a checked comma-separated list."""
    names = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["auto"]:
        return [n for n, e in RUNNERS.items() if e.available()]
    if not names:
        raise UsageError("no runners given")
    for n in names:
        if n not in RUNNERS:
            close = difflib.get_close_matches(n, RUNNERS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown runner {n!r}{hint} (known: {', '.join(RUNNERS)})")
    return list(dict.fromkeys(names))


def create(name: str, checkpoint, cache, **options) -> Runner:
    """Options reach the factories that take them (`trt_timing_cache` for the TensorRT runners)."""
    entry = RUNNERS[resolve([name])[0]]
    if entry.needs_weights and not getattr(checkpoint, "has_weights", True):
        raise UsageError(f"runner {name!r} runs the PyTorch module; {checkpoint.path} is an ONNX-only model (no PyTorch weights)")
    reason = entry.unavailable_reason()
    if reason:
        raise RunnerUnavailable(f"runner {name!r} {reason}")
    return entry.factory(name, checkpoint, cache, **options)


def prebuilt_engine(path: str) -> Runner:
    """A user's TensorRT engine (.engine/.plan), run as it is: parity does not know how it was built."""
    from pathlib import Path

    from .tensorrt_runner import TensorRTRunner, import_tensorrt

    import_tensorrt()
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such engine file")
    from ..provenance import sha256_file

    return TensorRTRunner(f"trt-engine:{p.name}", p, f"prebuilt TensorRT engine {p.name}", {"engine_sha256": sha256_file(p)})
