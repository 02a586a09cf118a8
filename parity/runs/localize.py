"""`parity localize`: which nodes make reduced precision move the lanes, and the minimal set to keep in fp32.

1. The reduced-precision model. `cpu-fp16` (the default; parity.runners.half): the batch-norm-folded
   fx graph in real fp16, node by node, any node kept fp32 with casts around it. `ort-fp16`: the
   fp16 ONNX graph on the CPU provider, kept nodes in the converter's `node_block_list`; that
   provider computes every activation in fp32, so only what rounding the weights does can be found
   there, and only nodes the ONNX graph has are candidates. The emulation runners round only
   conv/linear layers (a ReLU, a flatten or an add cannot be reduced, so cannot be localised) and
   the GPU runners would need an engine per set: both are refused with a usage error.
2. Candidates: every node that computes a floating tensor (conv, ReLU, pooling, flatten, reshape,
   add, concat, linear, ...), each mapped to its ONNX node in the exported graph: a module by its
   scope (`/backbone/backbone.3/Conv`; a batch norm folded into its conv has no node of its own),
   a functional op by its enclosing module's scope, ONNX op type and order (`/Flatten`,
   `/Reshape`), counting only ONNX nodes on the data path (not the Shape/Gather/Concat arithmetic
   that computes a reshape's target shape).
3. Effect on the lanes, not on tensors: on sampled frames the lanes of torch fp32 and of the reduced
   model are compared through the shared runner helper (RunnerBatches): the max lateral difference
   in px over points both have; a NaN/Inf output, or a lane present in one and absent in the other,
   is a failure (inf). Each node gets (a) its effect reduced ALONE (every other node fp32) and (b)
   the relief of keeping it ALONE in fp32 (every other node reduced): effect of everything reduced
   minus that. Ranking: effect alone (within a factor of 2 counts as equal), then a relief larger
   than the tolerance, then position in the network, so the node where the damage enters leads.
4. Search: greedy forward in rank order until the lanes are within `tolerance_px`; if that does not
   happen within the forward budget, start from everything in fp32. Then backward elimination
   (each member, least important first, dropped if the rest still pass), repeated until a pass
   drops nothing: the set is 1-minimal, no member can be dropped (each drop was tried on the final
   set). Polygraphy's `debug precision` bisects the same question; this search is exhaustive per
   member instead.
5. Verification on the whole case: lane difference, bending (kink_rate as replay counts it),
   jitter, lane presence and non-finite frames against torch fp32, before and after. A set larger
   than `max_keep`, or one that passes on the sampled frames but not on the whole case, is said.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import warnings
from pathlib import Path

import numpy as np

from .. import atomic
from .. import metrics as M
from ..errors import UsageError
from ..runners.artifacts import ArtifactCache, export_onnx, fp16_onnx
from ..runners.torch_runner import TorchRunner
from .batch import RunnerBatches

RUNNERS = ("cpu-fp16", "ort-fp16")
REFUSED = {
    "emu-fp16": "emu-fp16 rounds only conv/linear layers, so a ReLU, pooling, flatten or add cannot be reduced or kept there",
    "emu-tf32": "emu-tf32 rounds only conv/linear inputs and weights, so most nodes cannot be reduced or kept there",
}
# fx op name -> ONNX op type the TorchScript exporter writes for it (unlisted: the name capitalised, "relu" -> "Relu")
FUNCTIONAL_ONNX = {
    "flatten": "Flatten", "view": "Reshape", "reshape": "Reshape", "add": "Add", "iadd": "Add", "sub": "Sub", "mul": "Mul",
    "truediv": "Div", "div": "Div", "cat": "Concat", "concat": "Concat", "matmul": "MatMul", "bmm": "MatMul",
    "adaptive_avg_pool2d": "GlobalAveragePool", "avg_pool2d": "AveragePool", "max_pool2d": "MaxPool",
    "interpolate": "Resize", "permute": "Transpose", "transpose": "Transpose", "softmax": "Softmax", "log_softmax": "LogSoftmax",
    "mean": "ReduceMean", "sum": "ReduceSum", "linear": "Gemm", "conv2d": "Conv", "hardtanh": "Clip", "clamp": "Clip", "getitem": "Slice",
}
FORWARD_BUDGET_MIN = 8  # forward steps before falling back to "everything fp32" (at least 2 x max_keep)


def _scope(module_path: str) -> str:
    """The TorchScript exporter's name scope of a module: one level per module, each named by its
    path's last atom, looking past numeric ones (torch.onnx.utils._unqualified_variable_name):
    `backbone.3` -> `/backbone/backbone.3/`, `block.conv` -> `/block/conv/`, `layer1.0.conv1` ->
    `/layer1/layer1.0/conv1/`."""
    if not module_path:
        return "/"
    parts = module_path.split(".")
    levels = []
    for i in range(len(parts)):
        atoms = parts[: i + 1]
        j = next((k for k in range(len(atoms) - 1, -1, -1) if not atoms[k].isnumeric()), 0)
        levels.append(".".join(atoms[j:]))
    return "/" + "/".join(levels) + "/"


def _enclosing_module(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else ""


def candidate_nodes(executor) -> list[dict]:
    """The executor's nodes that compute a floating tensor (after it has run once), in network order."""
    from ..runners.half import node_id, node_op

    out, seen = [], set()
    for n in executor.candidates():
        if node_id(n) in seen:  # a module called twice is one name to keep: both its calls
            continue
        seen.add(node_id(n))
        module = str(n.target) if n.op == "call_module" else _enclosing_module(n)
        out.append({"node": node_id(n), "op": node_op(n, executor.modules), "order": len(out), "kind": n.op, "scope": _scope(module)})
    return out


def onnx_data_nodes(onnx_path) -> list:
    """The exported graph's nodes on the data path from the inputs (not shape arithmetic, not constants)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    data = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    out = []
    for n in graph.node:
        if n.op_type in ("Shape", "Size", "Constant") or not any(i in data for i in n.input):
            continue
        data.update(n.output)
        out.append(n)
    return out


def map_to_onnx(nodes: list[dict], onnx_nodes: list) -> dict[str, list[str]]:
    """fx node id -> the ONNX node names that compute it ([] where the exported graph has none)."""

    def scope_of(name: str) -> str:
        return name.rsplit("/", 1)[0] + "/" if "/" in name.strip("/") else "/"

    by_scope_op: dict[tuple[str, str], list[str]] = {}
    for n in onnx_nodes:
        by_scope_op.setdefault((scope_of(n.name), n.op_type), []).append(n.name)
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for c in nodes:
        if c["kind"] == "call_module":
            # a module called twice (a ResNet block's one ReLU) is exported once per call: relu/, relu_1/, ...
            again = re.compile(re.escape(c["scope"][:-1]) + r"(_\d+)?/")
            out[c["node"]] = [n.name for n in onnx_nodes if again.match(n.name)]
            continue
        op = FUNCTIONAL_ONNX.get(c["op"].strip("_"), c["op"].strip("_").capitalize())
        key = (c["scope"], op)
        k = seen.get(key, 0)
        seen[key] = k + 1
        names = by_scope_op.get(key, [])
        out[c["node"]] = [names[k]] if k < len(names) else []
    return out


def lane_failure(ref, red) -> bool:
    """NaN/Inf in the reduced output, or a lane (frame, lane) present in one and absent in the other."""
    present = np.isfinite(red.x).any(axis=-1) != np.isfinite(ref.x).any(axis=-1)
    return bool((red.nonfinite > 0).any() or present.any())


def lane_effect_px(ref, red) -> float:
    """Max lateral difference (px) of the reduced lanes from torch's over points both have; inf on a failure."""
    if lane_failure(ref, red):
        return math.inf
    d = M.lateral_difference(red.x, ref.x)["max_px"]
    return d if np.isfinite(d) else 0.0


class _Reference(TorchRunner):
    """torch fp32 that answers a batch it has seen from memory: the sampled frames are fed once per keep-set tried."""

    def infer_impl(self, feed):
        arr = feed[self.input_name]
        key = (arr.shape, hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest())
        if getattr(self, "_last", (None,))[0] != key:
            self._last = (key, super().infer_impl(feed))
        return {k: v.copy() for k, v in self._last[1].items()}


def check_runner(runner: str) -> None:
    if runner in REFUSED:
        raise UsageError(f"localize cannot use {runner}: {REFUSED[runner]}; use cpu-fp16 (every node in real fp16)")
    if runner not in RUNNERS:
        raise UsageError(f"localize works with {', '.join(RUNNERS)} (every node can be kept fp32 there), not {runner!r}; "
                         "for a GPU engine, localize with cpu-fp16 and give its builder the ONNX node names it prints")


class Reduced:
    """torch fp32 and the reduced-precision runner, active once, with any set of nodes kept in fp32."""

    def __init__(self, checkpoint, cache, runner: str, probe: np.ndarray):
        import torch

        from ..runners.half import HalfExecutor, HalfPrecisionRunner

        check_runner(runner)
        self.ck, self.cache, self.runner = checkpoint, cache, runner
        a = self.adapter = checkpoint.adapter()
        graph = HalfExecutor(checkpoint.build_model())
        graph.set_keep(graph.ids)  # a cheap fp32 pass tells which nodes compute floating tensors
        with torch.inference_mode():
            graph(torch.from_numpy(probe[:1]))
        self.nodes = candidate_nodes(graph)
        self.onnx_path, _ = export_onnx(checkpoint, cache)
        self.onnx = map_to_onnx(self.nodes, onnx_data_nodes(self.onnx_path))
        if runner == "ort-fp16":  # only nodes the ONNX graph has can be blocked
            self.nodes = [c for c in self.nodes if self.onnx.get(c["node"])]
            for k, c in enumerate(self.nodes):
                c["order"] = k
        from ..models.outputs import output_names

        outs = output_names(a) if len(output_names(a)) > 1 else a.output_name
        self.reference = _Reference("torch", checkpoint.build_model, a.input_name, outs, a.input_shape())
        self.reference.activate()
        self.half, self.clamped = None, 0
        if runner == "cpu-fp16":
            self.half = HalfPrecisionRunner(runner, checkpoint.build_model, a.input_name, outs, a.input_shape(), memo=True)
            self.half.activate()

    def close(self) -> None:
        self.reference.deactivate()
        if self.half is not None:
            self.half.deactivate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def label(self) -> str:
        if self.half is not None:
            return self.half.label
        clamped = f"; {self.clamped} weight values clamped into [1e-7, 1e4] by the converter" if self.clamped else ""
        return f"fp16 ONNX graph on the onnxruntime CPU provider: fp16 weights, fp32 activations (finds weight rounding only{clamped})"

    def reduced_runner(self, keep):
        if self.half is not None:
            self.half.set_keep(keep)
            return self.half
        from ..runners.onnxrt import OnnxRuntimeRunner

        blocked = tuple(n for k in keep for n in self.onnx.get(k, []))
        quiet = logging.getLogger(fp16_onnx.__module__)
        level = quiet.level
        if blocked:  # the converter's clamping is logged once, for the graph with nothing kept, not once per set tried
            quiet.setLevel(logging.ERROR)
        try:
            path, meta = fp16_onnx(self.onnx_path, self.cache, blocked)
        finally:
            quiet.setLevel(level)
        if not blocked:
            self.clamped = sum(meta.get("clamped_initializers", {}).values())
        runner = OnnxRuntimeRunner(self.runner, path, self.label(), ["CPUExecutionProvider"])
        runner.activate()
        return runner

    def compare(self, batches: list[np.ndarray], width: int, keep=(), memo: bool = True):
        """(torch fp32 outputs, reduced outputs) on the same batches, through the shared runner helper."""
        reduced = self.reduced_runner(keep)
        if self.half is not None:
            self.half.executor.set_memo(memo)  # off for the whole case: its batches are not tried twice
        try:
            fed = RunnerBatches([self.reference, reduced], self.adapter, width)
            for b in batches:
                fed.feed(b)
        finally:
            if reduced is not self.half:
                reduced.deactivate()
        outs = fed.outputs()
        return outs["torch"], outs[self.runner]


def _whole_case_effect(case, ref, red, rows) -> dict:
    """Lane difference, bending and jitter of the reduced runner's outputs against torch fp32's, over the whole case."""
    d = M.lateral_difference(red.x, ref.x)
    b = M.bending(red.x, ref.x, rows, kink_px=M.kink_threshold(case.width))
    look = list(M.lookahead_rows(len(rows)).values())
    j = M.jitter(red.x[:, :, look], ref.x[:, :, look], case.timestamps[: len(red.x)])
    presence = np.isfinite(red.x).any(axis=-1) != np.isfinite(ref.x).any(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "dx_mean_px": d["mean_px"], "dx_max_px": d["max_px"], "existence_disagreement": d["existence_disagreement"],
            "lane_presence_disagreements": int(presence.sum()),
            "bend_mean_px": float(np.nanmean(b["score"])), "kink_rate": M.kink_rate(b),
            "jitter_rms_near": float(np.nanmean(j["rms"][:, 0])), "nonfinite_frames": int((red.nonfinite > 0).sum()),
        }


def _bucket(v: float) -> float:
    return math.inf if not np.isfinite(v) else (math.floor(math.log2(v)) if v > 0 else -math.inf)


def _relief(everything: float, kept: float) -> float:
    if math.isinf(everything):
        return 0.0 if math.isinf(kept) else math.inf
    return max(everything - kept, 0.0)


def minimal_keep_set(order: list[str], effect, tolerance_px: float, budget: int, trail: list | None = None) -> list[str]:
    """A 1-minimal set of nodes to keep in fp32, `effect(keep)` (px) within `tolerance_px`, or every node
    when even that does not pass. `order`: the nodes, most important first.

    Forward: add nodes in rank order until the set passes, at most `budget` of them; else start from
    every node. Backward: try dropping each member, least important first, keeping each drop that
    still passes; repeat until a whole pass drops nothing, so each member was last tried against the
    final set (1-minimal even where effects are not monotone)."""
    trail = [] if trail is None else trail

    def passes(keep) -> bool:
        return effect(keep) <= tolerance_px

    keep: list[str] = []
    if passes(keep):
        return keep
    for n in order[:budget]:  # forward: in rank order until the lanes pass
        keep.append(n)
        trail.append({"step": f"add {n}", "keep": list(keep), "effect_px": effect(keep)})
        if passes(keep):
            break
    if not passes(keep):
        keep = list(order)
        trail.append({"step": f"forward did not pass in {min(budget, len(order))} steps: start from everything fp32",
                      "keep": list(keep), "effect_px": effect(keep)})
    dropped = True
    while dropped and passes(keep):  # backward, until a pass over every member drops nothing
        dropped = False
        for n in [k for k in reversed(order) if k in keep]:  # least important first
            trial = [k for k in keep if k != n]
            ok = passes(trial)
            trail.append({"step": f"drop {n}", "keep": trial, "effect_px": effect(trial), "dropped": ok})
            if ok:
                keep, dropped = trial, True
    return keep


def localize(checkpoint, case, runner: str = "cpu-fp16", pipeline: str = "vehicle", frames: int = 16,
             tolerance_px: float = 1.0, max_keep: int = 8, cache=None) -> dict:
    if frames < 1:
        raise UsageError(f"--frames must be at least 1, not {frames}")
    if max_keep < 0:
        raise UsageError(f"--max-keep must be 0 or more, not {max_keep}")
    if not tolerance_px >= 0:
        raise UsageError(f"--tolerance-px must be 0 or more, not {tolerance_px}")
    check_runner(runner)
    cache = cache or ArtifactCache()
    pipes = checkpoint.adapter().pipelines()
    if pipeline not in pipes:
        raise UsageError(f"unknown pipeline {pipeline!r} (known: {', '.join(pipes)})")
    pipe = pipes[pipeline]
    sample = np.unique(np.linspace(0, len(case) - 1, min(frames, len(case))).round().astype(int))
    x = pipe.prepare(case, sample)
    with Reduced(checkpoint, cache, runner, x) as red:
        return _localize(red, case, pipe, pipeline, sample, x, tolerance_px, max_keep)


def _localize(red: Reduced, case, pipe, pipeline, sample, x, tolerance_px, max_keep) -> dict:
    rows = red.adapter.anchor_rows(case.height)
    ids = [c["node"] for c in red.nodes]
    evaluated: dict[frozenset, float] = {}

    def effect(keep) -> float:
        key = frozenset(keep)
        if key not in evaluated:
            evaluated[key] = lane_effect_px(*red.compare([x], case.width, sorted(key, key=ids.index)))
        return evaluated[key]

    def passes(keep) -> bool:
        return effect(keep) <= tolerance_px

    everything = effect(())
    label = red.label()  # with nothing kept: which ops fell back, what the converter clamped
    floor = effect(ids)  # every node fp32 (BN folded): the best any keep-set can do
    table = []
    for c in red.nodes:
        alone = effect([n for n in ids if n != c["node"]])  # only this node reduced
        kept = effect([c["node"]])  # everything reduced but this node
        table.append({**c, "onnx": red.onnx.get(c["node"], []), "alone_px": alone, "kept_px": kept,
                      "relief_px": _relief(everything, kept), "alone_fails": math.isinf(alone), "kept_fails": math.isinf(kept)})
    ranked = sorted(table, key=lambda e: (-_bucket(e["alone_px"]), -(e["relief_px"] > tolerance_px), e["order"]))
    order = [e["node"] for e in ranked]

    trail = [{"step": "everything reduced", "keep": [], "effect_px": everything},
             {"step": "everything fp32", "keep": list(ids), "effect_px": floor}]
    keep = minimal_keep_set(order, effect, tolerance_px, max(2 * max_keep, FORWARD_BUDGET_MIN), trail)
    keep = sorted(keep, key=ids.index)  # network order
    found = passes(keep)

    full = [pipe.prepare(case, range(s, min(s + 32, len(case)))) for s in range(0, len(case), 32)]
    ref, before = red.compare(full, case.width, (), memo=False)
    after = red.compare(full, case.width, keep, memo=False)[1] if keep else before
    verified = not lane_failure(ref, after) and not (M.lateral_difference(after.x, ref.x)["max_px"] > tolerance_px)
    within_max_keep = bool(found and len(keep) <= max_keep)
    return {
        "legend": "effects: max lateral difference from torch fp32 in px over points both have; a failure (NaN/Inf output, "
                  "or a lane present in one and absent in the other) is inf, written null in JSON (alone_fails/kept_fails)",
        "runner": red.runner, "label": label, "case": case.name, "pipeline": pipeline, "sample_frames": sample.tolist(),
        "nodes": table, "ranking": order, "keep_fp32": keep, "keep_size": len(keep),
        "nodes_to_exclude": [n for k in keep for n in red.onnx.get(k, [])],
        "effect_everything_px": everything, "effect_nothing_px": floor,
        "search": trail, "evaluations": len(evaluated), "tolerance_px": tolerance_px, "max_keep": max_keep,
        "within_tolerance": bool(found), "within_max_keep": within_max_keep,
        "verified_whole_case": bool(verified), "ok": bool(within_max_keep and verified),
        "before": _whole_case_effect(case, ref, before, rows), "after": _whole_case_effect(case, ref, after, rows),
    }


def _px(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.4g}"


def format_result(res: dict, top: int = 12) -> str:
    by = {e["node"]: e for e in res["nodes"]}
    lines = [f"reduced: {res['runner']}: {res['label']}",
             f"{'rank':>4} {'node':<14} {'op':<12} {'onnx node':<28} {'alone px':>10} {'relief px':>10}"]
    for k, name in enumerate(res["ranking"][:top], 1):
        e = by[name]
        lines.append(f"{k:>4} {name:<14} {e['op'][:12]:<12} {(e['onnx'][0] if e['onnx'] else '-'):<28} "
                     f"{_px(e['alone_px']):>10} {_px(e['relief_px']):>10}")
    if len(res["ranking"]) > top:
        lines.append(f"     ... {len(res['ranking']) - top} more in localize.json")
    lines.append(f"alone: max lane difference vs torch fp32 (px, on {len(res['sample_frames'])} sampled frames; inf: NaN/Inf "
                 "or a lane lost/added) with only this node reduced; relief: how much keeping only this node fp32 removes "
                 f"from the {_px(res['effect_everything_px'])} px of everything reduced")
    n = len(res["keep_fp32"])
    if res["within_max_keep"]:
        lines.append(f"keep in fp32: {res['keep_fp32'] or '(nothing needed)'}  (minimal: no member can be dropped; "
                     f"within {res['tolerance_px']} px on the sampled frames)")
    elif res["within_tolerance"]:
        lines.append(f"no set within --max-keep {res['max_keep']}: the minimal set found has {n} nodes: {res['keep_fp32']}")
    else:
        lines.append(f"no set of nodes brings the lanes within {res['tolerance_px']} px (even with every node in fp32: "
                     f"{_px(res['effect_nothing_px'])} px)")
    lines.append(f"AutoCast nodes_to_exclude / onnxconverter-common node_block_list: {res['nodes_to_exclude']}")
    b, a = res["before"], res["after"]
    for key in ("dx_mean_px", "dx_max_px", "bend_mean_px", "kink_rate", "jitter_rms_near", "lane_presence_disagreements", "nonfinite_frames"):
        lines.append(f"  {key:<27} {b[key]:>10.4g} -> {a[key]:<10.4g} (whole case, vs torch fp32)")
    if res["within_tolerance"] and not res["verified_whole_case"]:
        lines.append(f"the set passes on the sampled frames but not on the whole case: rerun with more --frames (had {len(res['sample_frames'])})")
    return "\n".join(lines)


def bar_chart(res: dict, out: Path) -> Path:
    """Horizontal bars of each node's lane effect when reduced alone (px, log scale), in network order;
    the keep-set in red."""
    from PIL import Image, ImageDraw

    nodes = sorted(res["nodes"], key=lambda e: e["order"])
    vals = [e["alone_px"] for e in nodes]
    finite = [v for v in vals if np.isfinite(v) and v > 0]
    lo = np.log10(min(finite)) if finite else -8.0
    hi = max(np.log10(max(finite)) if finite else 0.0, lo + 1)
    keep = set(res["keep_fp32"])
    W, row = 760, 22
    im = Image.new("RGB", (W, 52 + row * len(nodes)), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 8), f"{res['runner']} vs torch fp32, {res['case']}: max lane difference (px, log) with only this node reduced", fill="black")
    d.text((10, 24), "network order; red: kept in fp32 by the minimal set", fill=(200, 40, 40))
    for k, e in enumerate(nodes):
        y = 44 + k * row
        v = e["alone_px"]
        frac = 1.0 if not np.isfinite(v) else (np.log10(v) - lo) / (hi - lo) if v > 0 else 0.0
        colour = (200, 40, 40) if e["node"] in keep else (70, 110, 180)
        d.text((10, y + 4), f"{e['node']} ({e['op']})"[:22], fill="black")
        d.rectangle([160, y + 3, 160 + int(max(frac, 0.01) * (W - 280)), y + row - 3], fill=colour)
        d.text((W - 110, y + 4), "inf/nan" if not np.isfinite(v) else f"{v:.2e}", fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic.write_bytes(out, buf.getvalue())
    return Path(out)
