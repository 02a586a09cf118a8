"""The runner contract (after Polygraphy's BaseRunner).

Public methods check state and inputs and time the call; subclasses implement the `*_impl`
methods only, so every runner behaves the same at its edges.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..errors import ParityError


class RunnerError(ParityError):
    """A runner was used outside its contract (not active, wrong input)."""

    exit_code = 1


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int | None, ...]  # None marks a dynamic dimension
    dtype: str  # numpy dtype name

    def problems(self, name: str, arr) -> list[str]:
        if not isinstance(arr, np.ndarray):
            return [f"input {name!r}: expected a numpy array, got {type(arr).__name__}"]
        out = []
        if arr.dtype != np.dtype(self.dtype):
            out.append(f"input {name!r}: dtype {arr.dtype}, runner expects {self.dtype}")
        if arr.ndim != len(self.shape) or any(s is not None and s != a for s, a in zip(self.shape, arr.shape)):
            want = "x".join("?" if s is None else str(s) for s in self.shape)
            out.append(f"input {name!r}: shape {'x'.join(map(str, arr.shape))}, runner expects {want}")
        return out


class Runner(ABC):
    """activate() -> infer(feed) -> deactivate(); or use as a context manager."""

    #: what the numbers mean, e.g. "fp16 storage, fp32 arithmetic (onnxruntime CPU provider)"
    label: str = ""

    def __init__(self, name: str):
        self.name = name
        self.is_active = False
        self.last_inference_time: float | None = None
        self.total_inference_time = 0.0
        self.inference_count = 0

    def activate(self) -> None:
        if self.is_active:
            raise RunnerError(f"runner {self.name}: already active")
        self.activate_impl()
        self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.deactivate_impl()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def io_spec(self) -> dict[str, TensorSpec]:
        if not self.is_active:
            raise RunnerError(f"runner {self.name}: io_spec() needs an active runner")
        return self.io_spec_impl()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs are checked against io_spec() before anything reaches the backend."""
        if not self.is_active:
            raise RunnerError(f"runner {self.name}: infer() called before activate()")
        spec = self.io_spec()
        problems = [f"missing input {k!r}" for k in spec if k not in feed]
        problems += [f"unexpected input {k!r}" for k in feed if k not in spec]
        for k, s in spec.items():
            if k in feed:
                problems += s.problems(k, feed[k])
        if problems:
            raise RunnerError(f"runner {self.name}: " + "; ".join(problems))
        start = time.perf_counter()
        out = self.infer_impl(feed)
        self.last_inference_time = self.reported_time(time.perf_counter() - start)
        self.total_inference_time += self.last_inference_time
        self.inference_count += 1
        return out

    def describe(self) -> dict:
        """Provenance of this runner for summary.json."""
        return {"name": self.name, "label": self.label, **self.describe_impl()}

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def io_spec_impl(self) -> dict[str, TensorSpec]: ...

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        pass

    def reported_time(self, elapsed: float) -> float:
        """The inference time to report for a call that took `elapsed` s here (a capture reports the target's)."""
        return elapsed

    def describe_impl(self) -> dict:
        return {}


_THREADS: int | None = None
_TORCH_DEFAULT: int | None = None  # torch's own thread count, before any run set one


def set_compute_threads(n: int | None) -> None:
    """Threads every backend of this process may use (a worker of a pool of N gets cores / N, so
    torch and ONNX Runtime do not oversubscribe the machine). None: each library's default, restored
    if an earlier run in this process set another (the thread count changes torch's sums, and a run
    with threads=None must compute what a fresh process computes). torch is not imported for it:
    importing torch takes ~2 s that a run on an ONNX-only model never needs; its count is set the
    moment something imports it."""
    global _THREADS
    _THREADS = n
    if "torch" in sys.modules:
        _set_torch_threads(sys.modules["torch"])
    elif not any(isinstance(f, _TorchThreadsOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchThreadsOnImport())


def _set_torch_threads(torch) -> None:
    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        _TORCH_DEFAULT = torch.get_num_threads()
    torch.set_num_threads(_THREADS if _THREADS is not None else _TORCH_DEFAULT)


class _TorchThreadsOnImport(importlib.abc.MetaPathFinder):
    """Finds torch as the other finders do, and sets its thread count once its module has run. A
    lookup that does not import (importlib.util.find_spec, to see what is installed) leaves it in place."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch":
            return None
        others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_set(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)  # imported once; later imports find torch in sys.modules
                exec_module(module)
                _set_torch_threads(module)

            spec.loader.exec_module = exec_then_set
        return spec


def compute_threads() -> int | None:
    return _THREADS

