"""ONNX Runtime runner (CPU provider here; CUDA/TensorRT providers where onnxruntime-gpu is installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner, TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}


class OnnxRuntimeRunner(Runner):
    def __init__(self, name: str, onnx_path: Path, label: str, providers=("CPUExecutionProvider",), artifact: dict | None = None):
        super().__init__(name)
        self.onnx_path = Path(onnx_path)
        self.label = label
        self.providers = list(providers)
        self.artifact = artifact or {}
        self.session = None

    def activate_impl(self) -> None:
        import onnxruntime as ort

        from .base import compute_threads

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Between batches parity preprocesses and scores: ONNX Runtime's workers spinning there take
        # the cores the next step needs (measured 1.11x slower replay with spinning on).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A rank keeps every candidate's sessions active across cases; each arena held ~20 MB that a
        # session never returns (rank peak memory 61 MB per added checkpoint). Without the arena a
        # batch-16 inference of the reference model took the same time (measured side by side).
        opts.enable_cpu_mem_arena = False
        if compute_threads() is not None:
            opts.intra_op_num_threads = compute_threads()
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts, providers=self.providers)
        first = self.session.get_inputs()[0].shape[0]
        self.one_at_a_time = first == 1  # a graph exported with batch 1 fixed (the authors' export.py): fed frame by frame

    def io_spec_impl(self) -> dict[str, TensorSpec]:
        spec = {}
        for i in self.session.get_inputs():
            shape = tuple(d if isinstance(d, int) else None for d in i.shape)
            if self.one_at_a_time:
                shape = (None, *shape[1:])
            spec[i.name] = TensorSpec(shape, _ORT_TYPES.get(i.type, i.type))
        return spec

    def infer_impl(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        if self.one_at_a_time and len(next(iter(feed.values()))) > 1:
            rows = [self.session.run(names, {k: v[i : i + 1] for k, v in feed.items()}) for i in range(len(next(iter(feed.values()))))]
            return {n: np.concatenate([r[j] for r in rows]) for j, n in enumerate(names)}
        outs = self.session.run(names, feed)
        return {n: np.asarray(o) for n, o in zip(names, outs)}

    def deactivate_impl(self) -> None:
        self.session = None

    def describe_impl(self) -> dict:
        import onnxruntime as ort

        return {
            "backend": "onnxruntime",
            "onnxruntime": ort.__version__,
            "providers": self.providers,
            "onnx": str(self.onnx_path),
            **self.artifact,
        }
