"""PyTorch on a CUDA device: fp32 (TF32 off), TF32 (on), fp16 (model and input in half precision)."""
from __future__ import annotations

import numpy as np

from ..errors import RunnerUnavailable
from .base import Runner, TensorSpec

LABELS = {
    "fp32": "fp32 (PyTorch, CUDA; TF32 off)",
    "tf32": "TF32 (PyTorch, CUDA; TF32 matmul and cuDNN conv on)",
    "fp16": "fp16 (PyTorch, CUDA; weights and activations in half precision)",
}


class TorchCudaRunner(Runner):
    def __init__(self, name, build_model, input_name, output_name, input_shape, precision: str, device: str = "cuda"):
        super().__init__(name)
        if precision not in LABELS:
            raise ValueError(f"precision must be one of {list(LABELS)}")
        self._build_model = build_model
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = tuple(input_shape)
        self.precision, self.device = precision, device
        self.label = LABELS[precision]
        self.model = None

    def activate_impl(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RunnerUnavailable(f"runner {self.name!r} needs a CUDA device; torch {torch.__version__} sees none")
        model = self._build_model().eval().to(self.device)
        self.model = model.half() if self.precision == "fp16" else model

    def io_spec_impl(self) -> dict[str, TensorSpec]:
        return {self.input_name: TensorSpec((None, *self.input_shape), "float32")}

    def infer_impl(self, feed):
        import torch

        x = torch.from_numpy(feed[self.input_name]).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        # TF32 is a process-wide switch and replay holds every runner active at once: set it for this
        # call only and put it back, so torch-cuda-fp32 and torch-cuda-tf32 side by side each get theirs.
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            from ..models.outputs import named_outputs

            with torch.inference_mode():
                out = self.model(x)
            out = [o.float().cpu() for o in out] if isinstance(out, (tuple, list)) else out.float().cpu()  # .cpu() synchronises
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return named_outputs(self.output_name, out)

    def deactivate_impl(self) -> None:
        import torch

        self.model = None
        torch.cuda.empty_cache()

    def describe_impl(self) -> dict:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        return {"backend": "torch", "torch": str(torch.__version__), "device": gpu, "precision": self.precision}
