"""PyTorch runner: the reference (fp32 on CPU)."""
from __future__ import annotations

from .base import Runner, TensorSpec


class TorchRunner(Runner):
    label = "fp32 (PyTorch, CPU)"

    def __init__(self, name: str, build_model, input_name: str, output_name, input_shape: tuple[int, ...]):
        """`output_name`: the output's name, or a tuple of names for a model returning several."""
        super().__init__(name)
        self._build_model = build_model
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = tuple(input_shape)
        self.model = None

    def activate_impl(self) -> None:
        self.model = self._build_model().eval()

    def io_spec_impl(self) -> dict[str, TensorSpec]:
        return {self.input_name: TensorSpec((None, *self.input_shape), "float32")}

    def infer_impl(self, feed):
        import torch

        from ..models.outputs import named_outputs

        with torch.inference_mode():
            out = self.model(torch.from_numpy(feed[self.input_name]))
        return named_outputs(self.output_name, out)

    def deactivate_impl(self) -> None:
        self.model = None

    def describe_impl(self) -> dict:
        import torch

        return {"backend": "torch", "torch": str(torch.__version__), "device": "cpu", "precision": "fp32"}
