"""Real fp16 arithmetic on the CPU: every op of the model run by PyTorch's half kernels, as an fp16
engine runs it, so an activation that overflows 65504 becomes inf here as it does there.

The model is batch-norm folded (`emulation.fold_batchnorm`, then any conv -> batch norm pair the
traced graph still has, as the ONNX exporter and TensorRT fold them), traced with torch.fx and
executed node by node: each node's floating inputs are cast to fp16 and it runs with fp16
parameters (a second copy, made once), except the nodes in `keep_fp32`, which run in fp32 (their
inputs cast up, fp32 parameters) and hand an fp32 output to the next node, which casts it back: the
casts AutoCast's `nodes_to_exclude` and TensorRT's precision constraints insert. The graph input
arrives fp32; the output is returned fp32. Folded batch norms (Identity) are no-ops.

What is rounded: weights, every activation (each op's output) and the output, to fp16. What is
accumulated in fp32: measured on torch 2.13's CPU half kernels (tests/test_half_runner.py), a half
`linear`, 1x1 `conv2d` and 3x3 `conv2d` with 4608 random positive products per output return
exactly the float64 sum rounded once to fp16 (every output, e.g. 1134 for a sum of 1134.19), where
accumulating in fp16 in order would give 1042; and 1 + 4096 terms of 2**-12 sums to 2.0 (fp16
accumulation stops at 1.0). Sum, mean, avg/adaptive-avg pooling do the same. So: fp16 storage
between ops, fp32 accumulation inside each op, one rounding per op output: what a TensorRT fp16
engine with fp32 accumulation does. It does not reproduce the engine's kernel choice, its summation
order or its layer fusions (a fused conv+ReLU rounds once, here twice; the ReLU of an fp16 value is
exact, so that one costs nothing).

An op with no CPU half kernel (torch 2.13 CPU has none for e.g. `nn.LocalResponseNorm`, antialiased
`interpolate`, `cdist`, `fft`) runs in fp32 on fp16-rounded inputs with its output rounded to fp16,
and is named: in `fallback` (node -> op), the runner's label and describe().

Speed: PyTorch's CPU half convolution has no oneDNN path on a CPU without AVX512-FP16
(`_slow_conv2d_forward`: im2col and a generic GEMM): 25 frames/s on a 2-core AVX2 EPYC against 330
for torch fp32. So conv and linear nodes run the fp32 oneDNN kernel on their fp16 inputs and fp16
weights (products of fp16 values are exact in fp32) and round the output to fp16 once: the half
kernel's own arithmetic (fp32 accumulation, one rounding), the same on every CPU, at fp32 speed.
The per-node Python overhead is ~30 us, 0.6 ms for the model's 20 nodes.

`memo=True` (used by `parity localize`) keeps the node outputs of recent runs on the same input
and starts a new run at the first node whose precision differs, bit-identical to a full run.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import re

from .torch_runner import TorchRunner

# What PyTorch says when an op has no half kernel: "... not implemented for 'Half'", "Unsupported
# dtype Half", "Low precision dtypes not supported. Got Half".
HALF_MISSING = re.compile(r"\bHalf\b")
MEMO_RECENT = 2  # runs kept besides the all-fp16 and all-fp32 ones


def node_id(node) -> str:
    """The name a user types for a node: the module path for modules (`backbone.3`), else the fx name (`flatten`)."""
    return str(node.target) if node.op == "call_module" else node.name


def node_op(node, modules) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


def _half_module(module):
    """The fp16 copy of a module that a node runs in fp16; a conv or linear one accumulates in fp32."""
    import torch

    half = copy.deepcopy(module).half()
    if isinstance(half, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
        return _fp32_accumulated()(half)
    return half


@functools.cache
def _fp32_accumulated():
    import torch  # torch is imported where used: `import parity` stays light

    class Fp32Accumulated(torch.nn.Module):
        """A conv/linear with fp16 weights on fp16 inputs, accumulated in fp32 and rounded to fp16 once:
        what PyTorch's CPU half kernel computes (measured in tests/test_half_runner.py: the float64 sum
        rounded once), through the fp32 oneDNN kernel on the same fp16 values; the product of two fp16
        values is exact in fp32. Why: the half kernel has no oneDNN path on a CPU without AVX512-FP16
        and runs im2col + a generic GEMM, 13x slower than torch fp32 on an AVX2 EPYC (25 vs 330
        frames/s for the reference model), and its summation order differs by CPU; this path is the
        same on every CPU and equals the half kernel but for a rare one-ulp tie (tests/test_half_runner.py)."""

        def __init__(self, half_module):
            super().__init__()
            self.fp32 = copy.deepcopy(half_module).float()  # the fp16-rounded weights, exactly, in fp32

        def forward(self, x):
            return self.fp32(x.float()).half()

    return Fp32Accumulated


def _inplace(node) -> bool:
    """An op that writes into its input (x.add_(y), F.relu(x, inplace=True)): node outputs can then not be reused."""
    name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
    return (node.op in ("call_method", "call_function") and name.endswith("_") and not name.startswith("__")) \
        or node.kwargs.get("inplace") is True


class HalfExecutor:
    """Run a torch module's fx graph in fp16 node by node, with chosen nodes kept in fp32."""

    def __init__(self, model, keep_fp32=(), memo: bool = False):
        import torch
        import torch.fx

        from .emulation import fold_batchnorm, fold_graph_batchnorm

        self._torch = torch
        gm = torch.fx.symbolic_trace(fold_batchnorm(model).eval())
        fold_graph_batchnorm(gm)
        self.graph_module = gm
        self.modules = dict(gm.named_modules())
        for m in self.modules.values():  # no aliasing between node outputs: same numbers, safe to keep
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
        self.half_modules = {k: _half_module(self.modules[k]) for k in called}
        self.attrs = {}  # get_attr target -> (fp32 value, fp16 value)
        for n in gm.graph.nodes:
            if n.op == "get_attr":
                v = gm
                for part in str(n.target).split("."):
                    v = getattr(v, part)
                self.attrs[n.target] = (v, v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        self.graph_nodes = list(gm.graph.nodes)
        self.nodes = [n for n in self.graph_nodes if self.computes(n)]
        self.ids = [node_id(n) for n in self.nodes]
        self.fallback: dict[str, str] = {}  # node -> op run in fp32 for want of a half kernel
        self.tensor_nodes: set[str] = set()  # nodes seen turning floating tensors into a floating tensor
        self.memo_safe = not any(_inplace(n) for n in self.nodes)  # an in-place op would change a kept output
        self.memo = False
        self._memo_input = None
        self._runs: list[tuple[tuple, dict]] = []
        self.override: dict = {}  # node id -> tensor put in place of that node's output (a target's layer tensor)
        self.recorded: dict | None = None  # node id -> output of the last run, when set to {}
        self.set_memo(memo)
        self.set_keep(keep_fp32)

    def set_memo(self, on: bool) -> None:
        """Remember node outputs of recent runs on the same input (off: forget them)."""
        self.memo = bool(on) and self.memo_safe
        if not self.memo:
            self._memo_input, self._runs = None, []

    def set_keep(self, keep_fp32) -> None:
        unknown = set(keep_fp32) - set(self.ids)
        if unknown:
            raise ValueError(f"no such node(s) in the model's graph: {sorted(unknown)} (nodes: {', '.join(self.ids)})")
        self.keep_fp32 = frozenset(keep_fp32)

    def computes(self, node) -> bool:
        """False for the no-ops of an eval graph: folded batch norms (Identity) and dropout."""
        torch = self._torch
        if node.op == "call_module":
            return not isinstance(self.modules[node.target], (torch.nn.Identity, torch.nn.modules.dropout._DropoutNd))
        return node.op in ("call_function", "call_method")

    def candidates(self) -> list:
        """The nodes that compute a floating tensor from floating tensors (known after one run), in network order."""
        return [n for n in self.nodes if node_id(n) in self.tensor_nodes]

    def eval(self):
        return self

    def _cast(self, value, dtype):
        torch = self._torch

        def one(v):
            return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype else v

        return torch.fx.node.map_aggregate(value, one) if isinstance(value, (tuple, list, dict)) else one(value)

    def _is_float(self, value) -> bool:
        return isinstance(value, self._torch.Tensor) and value.is_floating_point()

    def _call(self, node, args, kwargs, half: bool):
        if node.op == "call_module":
            return (self.half_modules if half else self.modules)[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _run_node(self, node, env, half: bool):
        torch = self._torch
        dtype = torch.float16 if half else torch.float32
        nid = node_id(node)
        if half and nid in self.fallback:  # known: no half kernel
            half, dtype = False, torch.float32
            fell = True
        else:
            fell = False
        args = torch.fx.node.map_arg(node.args, lambda n: self._cast(env[n], dtype))
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._cast(env[n], dtype))
        try:
            out = self._call(node, args, kwargs, half)
        except (RuntimeError, NotImplementedError) as exc:
            if not half or not HALF_MISSING.search(str(exc)):
                raise
            self.fallback[nid] = node_op(node, self.modules)
            fell = True
            args = torch.fx.node.map_arg(node.args, lambda n: self._cast(env[n], torch.float32))
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._cast(env[n], torch.float32))
            out = self._call(node, args, kwargs, False)
        if nid not in self.tensor_nodes and self._is_float(out):
            inputs = [env[n] for n in node.all_input_nodes]
            if node.op == "call_module" or any(self._is_float(v) for v in inputs):
                self.tensor_nodes.add(nid)
        if half or fell:  # an fp16 node's output is fp16 (constants made inside forward included)
            out = self._cast(out, torch.float16)
        return out

    def _start(self, x, signature):
        """(graph position to start at, env of the nodes before it) from a remembered run, if any."""
        if not self.memo:
            return 0, {}
        arr = x.detach().contiguous().numpy()
        key = (tuple(arr.shape), str(arr.dtype), hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest())
        if key != self._memo_input:
            self._memo_input, self._runs = key, []
            return 0, {}
        best, env = 0, {}
        for sig, run_env in self._runs:
            k = next((i for i, (a, b) in enumerate(zip(sig, signature)) if a != b), len(signature))
            if k > best:
                best, env = k, run_env
        if best == 0:
            return 0, {}
        first = self.nodes[best] if best < len(self.nodes) else None  # the first node that must run
        stop = self.graph_nodes.index(first) if first is not None else len(self.graph_nodes) - 1
        return stop, {n: env[n] for n in self.graph_nodes[:stop]}

    def _remember(self, signature, env) -> None:
        self._runs = [r for r in self._runs if r[0] != signature]
        self._runs.append((signature, env))
        pinned = [r for r in self._runs if len(set(r[0])) <= 1]
        recent = [r for r in self._runs if len(set(r[0])) > 1][-MEMO_RECENT:]
        self._runs = pinned + recent

    def __call__(self, x):
        torch = self._torch
        signature = tuple(i not in self.keep_fp32 for i in self.ids)  # True: this node runs in fp16
        start, env = self._start(x, signature)
        half_of = dict(zip(self.nodes, signature))
        for node in self.graph_nodes[start:]:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "get_attr":
                env[node] = self.attrs[node.target][0]  # cast by the node that reads it (fp16 copy below)
            elif node.op == "output":
                out = torch.fx.node.map_arg(node.args[0], lambda n: env[n])
                if self.memo:
                    self._remember(signature, env)
                return self._cast(out, torch.float32)
            elif not self.computes(node):
                env[node] = env[node.args[0]]
            else:
                half = half_of[node]
                if half:  # fp16 parameters fetched with get_attr: the copy made once, not a per-batch cast
                    for n in node.all_input_nodes:
                        if n.op == "get_attr":
                            env[n] = self.attrs[n.target][1]
                env[node] = self._run_node(node, env, half)
                nid = node_id(node)
                if nid in self.override:
                    env[node] = self.override[nid].to(env[node].dtype)
                if self.recorded is not None:
                    self.recorded[nid] = env[node]
                for n in node.all_input_nodes:
                    if n.op == "get_attr":
                        env[n] = self.attrs[n.target][0]
        raise RuntimeError("the traced graph has no output")


class HalfPrecisionRunner(TorchRunner):
    """`cpu-fp16`: the model's graph in real fp16 arithmetic on the CPU (see the module doc)."""

    def __init__(self, name, build_model, input_name, output_name, input_shape, keep_fp32=(), memo: bool = False):
        super().__init__(name, build_model, input_name, output_name, input_shape)
        self._keep = tuple(keep_fp32)
        self.memo = memo
        self.executor: HalfExecutor | None = None

    @property
    def keep_fp32(self) -> tuple[str, ...]:
        return self._keep

    def set_keep(self, keep_fp32) -> None:
        """Change the nodes kept in fp32 without rebuilding (localize tries many sets)."""
        self._keep = tuple(keep_fp32)
        if self.executor is not None:
            self.executor.set_keep(self._keep)

    def activate_impl(self) -> None:
        self.executor = HalfExecutor(self._build_model(), self._keep, memo=self.memo)
        self.model = self.executor

    @property
    def label(self) -> str:
        fb = self.executor.fallback if self.executor else {}
        kept = f"; kept fp32: {', '.join(self._keep)}" if self._keep else ""
        return ("fp16 weights, activations and outputs (PyTorch CPU half kernels, every op; conv/linear: fp32 kernels on the fp16 "
                "values, rounded to fp16 once), fp32 accumulation inside conv/linear, "
                f"BN folded; ops without a CPU half kernel (run fp32, output rounded): {', '.join(f'{k} ({v})' for k, v in fb.items()) or 'none'}"
                + kept)

    def describe_impl(self) -> dict:
        fb = dict(self.executor.fallback) if self.executor else {}
        return {**super().describe_impl(), "precision": "fp16 (every op)", "keep_fp32": list(self._keep), "fp32_fallback": fb}
