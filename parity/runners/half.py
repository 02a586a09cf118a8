"""Real fp16 arithmetic on the CPU: every op of the model run by PyTorch's half kernels, as an fp16
engine runs it, so an activation that overflows 65504 becomes inf here as it does there.

The model is batch-norm folded (as the ONNX exporter and TensorRT fold it), traced with torch.fx and
executed node by node: each node's floating inputs are cast to fp16 and it runs with fp16
parameters, except the nodes in `keep_fp32`, which run in fp32 (their inputs cast up, fp32
parameters) and hand an fp32 output to the next node, which casts it back: the casts AutoCast's
`nodes_to_exclude` and TensorRT's precision constraints insert. The graph input arrives fp32; the
output is returned fp32.

What is rounded: weights, every activation (each op's output) and the output to fp16. Accumulation
inside conv and linear is fp32: measured on torch 2.13's CPU kernels, 1 + 4096 terms of 2**-12
sums to 2.0 in a half `linear` and a half 1x1 `conv2d` (fp16 accumulation would stop at 1.0), and a
3x3 conv's fp32 sum 2.12476 comes out as its fp16 rounding 2.125 (tests/test_half_runner.py). That
is what a TensorRT fp16 engine with fp32 accumulation does; it does not reproduce the engine's
kernel choice, tactic-dependent summation order or layer fusions (a fused conv+ReLU rounds once).

An op with no CPU half kernel runs in fp32 with its output rounded to fp16, and is named: in the
runner's label and in `fallback` (node -> op), so a reader knows which op was not computed in fp16.
"""
from __future__ import annotations

import copy

from .torch_runner import TorchRunner

HALF_MISSING = ("not implemented for 'Half'", "\"Half\"", "Half'")


def node_id(node) -> str:
    """The name a user types for a node: the module path for modules (`backbone.3`), else the fx name (`flatten`)."""
    return str(node.target) if node.op == "call_module" else node.name


class HalfExecutor:
    """Run a torch module's fx graph in fp16 node by node, with chosen nodes kept in fp32."""

    def __init__(self, model, keep_fp32=()):
        import torch
        import torch.fx

        from .emulation import fold_batchnorm

        self.graph_module = torch.fx.symbolic_trace(fold_batchnorm(model).eval())
        self.modules = dict(self.graph_module.named_modules())
        self.half_modules = {k: copy.deepcopy(m).half() for k, m in self.modules.items() if k and not list(m.children())}
        self.keep_fp32 = set(keep_fp32)
        self.fallback: dict[str, str] = {}
        self.nodes = [n for n in self.graph_module.graph.nodes if self.computes(n)]
        unknown = self.keep_fp32 - {node_id(n) for n in self.nodes}
        if unknown:
            raise ValueError(f"no such node(s) in the model's graph: {sorted(unknown)}")
        self._torch = torch

    def computes(self, node) -> bool:
        import torch

        if node.op == "call_module":
            return not isinstance(self.modules[node.target], torch.nn.Identity)
        return node.op in ("call_function", "call_method")

    def eval(self):
        return self

    def _cast(self, value, dtype):
        torch = self._torch
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    def _run(self, node, args, kwargs, half: bool):
        if node.op == "call_module":
            mod = self.half_modules.get(node.target) if half else self.modules[node.target]
            return (mod or self.modules[node.target])(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def __call__(self, x):
        import torch.fx

        torch = self._torch
        env = {}
        for node in self.graph_module.graph.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "get_attr":
                obj = self.graph_module
                for part in str(node.target).split("."):
                    obj = getattr(obj, part)
                env[node] = obj
            elif node.op == "output":
                out = torch.fx.node.map_arg(node.args[0], lambda n: env[n])
                return self._cast(out, torch.float32)
            elif not self.computes(node):
                env[node] = env[node.args[0]]
            else:
                half = node_id(node) not in self.keep_fp32
                dtype = torch.float16 if half else torch.float32
                args = torch.fx.node.map_arg(node.args, lambda n: self._cast(env[n], dtype))
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._cast(env[n], dtype))
                try:
                    env[node] = self._run(node, args, kwargs, half)
                except (RuntimeError, NotImplementedError) as exc:
                    if not half or not any(s in str(exc) for s in HALF_MISSING):
                        raise
                    op = str(node.target) if node.op != "call_module" else type(self.modules[node.target]).__name__
                    self.fallback[node_id(node)] = op
                    args = torch.fx.node.map_arg(node.args, lambda n: self._cast(env[n], torch.float32))
                    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._cast(env[n], torch.float32))
                    env[node] = self._cast(self._run(node, args, kwargs, False), torch.float16)
        raise RuntimeError("the traced graph has no output")


class HalfPrecisionRunner(TorchRunner):
    """`cpu-fp16`: the model's graph in real fp16 arithmetic on the CPU (see the module doc)."""

    def __init__(self, name, build_model, input_name, output_name, input_shape, keep_fp32=()):
        super().__init__(name, build_model, input_name, output_name, input_shape)
        self.keep_fp32 = tuple(keep_fp32)
        self.executor: HalfExecutor | None = None

    def activate_impl(self) -> None:
        self.executor = HalfExecutor(self._build_model(), self.keep_fp32)
        self.model = self.executor

    @property
    def label(self) -> str:
        fb = self.executor.fallback if self.executor else {}
        kept = f"; kept fp32: {', '.join(self.keep_fp32)}" if self.keep_fp32 else ""
        return ("fp16 weights, activations and outputs (PyTorch CPU half kernels, every op), fp32 accumulation inside conv/linear, "
                f"BN folded; ops without a CPU half kernel (run fp32, output rounded): {', '.join(f'{k} ({v})' for k, v in fb.items()) or 'none'}"
                + kept)

    def describe_impl(self) -> dict:
        fb = dict(self.executor.fallback) if self.executor else {}
        return {**super().describe_impl(), "precision": "fp16 (every op)", "keep_fp32": list(self.keep_fp32), "fp32_fallback": fb}
