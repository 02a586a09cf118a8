"""CPU emulation of reduced-precision inference, for users without a GPU.

The torch model with batch norm folded into the convolutions (as exporters and TensorRT do), and
every conv/linear layer's weights, inputs and outputs rounded to fp16 (or their mantissa cut to
TF32's 10 bits), while accumulation stays fp32, as on tensor cores. It shows how the deployed
precision moves lanes; it is an emulation, not the engine's kernels.
"""
from __future__ import annotations

import copy

import numpy as np

from .torch_runner import TorchRunner

PRECISIONS = ("fp16", "tf32")


def round_fp16(t):
    return t.half().float()


def round_tf32(t):
    """Round-to-nearest-even to a 10-bit mantissa (TF32) kept in fp32 storage."""
    import torch

    bits = t.contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = (bits + 0xFFF + lsb) & ~0x1FFF
    return rounded.view(torch.float32)


def fold_batchnorm(model):
    """A copy of `model` with every Conv2d -> BatchNorm2d pair inside a Sequential folded into the conv
    (the module tree is kept: cpu-fp16 traces it and localize maps its nodes by module scope)."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = torch.nn.Identity()
    return model


def fold_every_batchnorm(model):
    """fold_batchnorm, then the pairs outside a Sequential (a residual block's conv1 -> bn1) on the
    model's traced graph, as cpu-fp16 and exporters fold them. A model that does not trace keeps those
    batch norms; `unfolded_batchnorms` says how many."""
    import torch

    model = fold_batchnorm(model)
    if unfolded_batchnorms(model):
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception:  # data-dependent control flow: keep the Sequential folding only
            return model
        fold_graph_batchnorm(gm)
        gm.delete_all_unused_submodules()  # the folded batch norms
        model = gm.eval()
    return model


def fold_graph_batchnorm(gm) -> int:
    """Fold every conv -> batch norm pair left in a traced graph (modules used outside a Sequential);
    returns how many were folded."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], torch.nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and type(modules[prev.target]) is torch.nn.Conv2d):
            continue
        fused = fuse_conv_bn_eval(modules[prev.target], modules[node.target])
        parent, _, name = str(prev.target).rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def unfolded_batchnorms(model) -> int:
    import torch

    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def emulate(model, precision: str, keep_fp32: tuple[str, ...] = ()):
    """`model` with reduced-precision conv/linear layers; layers named in `keep_fp32` stay fp32."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    rnd = round_fp16 if precision == "fp16" else round_tf32
    model = fold_every_batchnorm(model)
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or name in keep_fp32:
            continue
        with torch.no_grad():
            m.weight.copy_(rnd(m.weight))
            if m.bias is not None:
                m.bias.copy_(rnd(m.bias))
        m.register_forward_pre_hook(lambda mod, args: tuple(rnd(a) for a in args))
        if precision == "fp16":  # fp16 layers store fp16 activations; TF32 layers write fp32
            m.register_forward_hook(lambda mod, args, out: rnd(out))
    return model


class EmulatedPrecisionRunner(TorchRunner):
    def __init__(self, name, build_model, input_name, output_name, input_shape, precision: str, keep_fp32=()):
        super().__init__(name, lambda: emulate(build_model(), precision, tuple(keep_fp32)), input_name, output_name, input_shape)
        self.precision = precision
        self.keep_fp32 = tuple(keep_fp32)
        self.label = (  # what is rounded, exactly: only conv/linear touch reduced precision
            "fp16 emulated on CPU (PyTorch): BN folded, conv/linear weights, inputs and outputs rounded to fp16, "
            "fp32 arithmetic inside them; every other op in fp32 (its output not rounded)"
            if precision == "fp16" else
            "tf32 emulated on CPU (PyTorch): BN folded, conv/linear weights and inputs rounded to tf32 (10-bit mantissa), "
            "fp32 accumulation and outputs; every other op in fp32"
        )

    def describe_impl(self) -> dict:
        return {**super().describe_impl(), "precision": f"{self.precision} (emulated)", "keep_fp32": list(self.keep_fp32)}


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())
