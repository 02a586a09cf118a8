"""A model that exists only as an ONNX file (what a deployment team is often handed): no PyTorch weights.

`OnnxModel` stands where a Checkpoint stands for what needs no PyTorch: its adapter (named by the
user, with the graph's own input and output names), its pipelines and decoding, the ONNX graph itself
for the ONNX Runtime runners, the fp16 conversion and captures. The parity reference becomes ONNX
Runtime fp32 on that graph, and the runner's label says so. What needs the PyTorch module (cpu-fp16,
the emulations, torch on CUDA, localize, training) is refused in one line.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, UsageError
from ..provenance import sha256_file


@dataclass
class OnnxModel:
    path: Path
    meta: dict
    sha256: str
    has_weights = False

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def onnx_path(self) -> Path:
        return self.path

    def adapter(self):
        from .checkpoint import make_adapter

        adapter = make_adapter(self.meta["adapter"], self.meta.get("config", {}), self.path)
        adapter.input_name, adapter.output_name = self.meta["input_name"], self.meta["output_name"]
        if len(self.meta["output_names"]) > 1:
            adapter.output_names = tuple(self.meta["output_names"])
        return adapter

    def build_model(self):
        raise UsageError(f"{self.path} is an ONNX-only model: this needs its PyTorch weights (parity import-checkpoint "
                         "turns the weights file into a checkpoint)")


def load_onnx_model(path: str | os.PathLike, adapter: str | None, config: dict | None = None) -> OnnxModel:
    """The graph checked against the adapter before anything runs: one float input of the adapter's
    input shape (any batch), and the adapter's outputs: one (any name), or all of its named ones."""
    from .checkpoint import make_adapter
    from .outputs import output_names

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such ONNX file")
    if not adapter:
        raise UsageError(f"{p}: an ONNX-only model needs --adapter (the model family that decodes its outputs, e.g. ufld)")
    sha256 = sha256_file(p)
    inputs, outputs = _graph_io(p, sha256)
    outputs = list(outputs)  # the kept tuple stays as read
    family = make_adapter(adapter, config or {}, p)
    expected = output_names(family)
    if len(inputs) != 1 or len(outputs) != len(expected):
        raise CheckpointError(f"{p}: {len(inputs)} input(s) and {len(outputs)} output(s) ({', '.join(outputs)}); the {adapter} adapter "
                              f"reads one input and {len(expected)} output(s) ({', '.join(expected)})")
    if len(expected) > 1:  # several outputs are told apart by name only: the names the model's authors export
        if set(outputs) != set(expected):
            raise CheckpointError(f"{p}: outputs {', '.join(outputs)}; the {adapter} adapter reads {', '.join(expected)} by name")
        outputs = list(expected)
    name, dims, dtype = inputs[0]
    if dtype != "tensor(float)":
        raise CheckpointError(f"{p}: input {name!r} is a {dtype}; the {adapter} adapter feeds float32")
    want = family.input_shape()
    if len(dims) != 1 + len(want) or any(d is not None and d != w for d, w in zip(dims[1:], want)):
        raise CheckpointError(f"{p}: input {name!r} has shape {['?' if d is None else d for d in dims]}; the {adapter} adapter "
                              f"feeds N x {' x '.join(map(str, want))}")
    meta = {"adapter": adapter, "config": dict(config or {}), "method": "onnx-only", "name": p.stem,
            "input_name": name, "output_name": outputs[0], "output_names": outputs, "fixed_batch": dims[0]}
    return OnnxModel(p, meta, sha256)


@functools.lru_cache(maxsize=8)
def _graph_io(p: Path, sha256: str) -> tuple[tuple[tuple[str, tuple, str], ...], tuple[str, ...]]:
    """The graph's inputs (name, dims with None where not fixed, element type) other than its
    initializers, and its output names, as ONNX Runtime reads them: the runners load it with ONNX
    Runtime anyway (and the reference cannot run on what it refuses), and importing onnx would take
    ~1 s of every run. Graph optimisations off: only the graph is read here, once per content (`sha256`)
    in a process: a replay checks the model, then its units load it again."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind11 types (InvalidProtobuf, Fail, ...)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{p}: not an ONNX model ONNX Runtime can load: {type(exc).__name__}: {first}") from None
    inputs = tuple((i.name, tuple(d if isinstance(d, int) else None for d in i.shape), i.type) for i in session.get_inputs())
    return inputs, tuple(o.name for o in session.get_outputs())


def load_model(path: str | os.PathLike, onnx_spec: dict | None = None):
    """A Checkpoint, or an OnnxModel when `onnx_spec` ({"adapter", "config"}) says the path is an ONNX-only model."""
    from .checkpoint import load_checkpoint

    if onnx_spec is not None:
        return load_onnx_model(path, onnx_spec.get("adapter"), onnx_spec.get("config"))
    return load_checkpoint(path)
