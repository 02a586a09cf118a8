"""`parity localize`: which nodes make reduced precision move the lanes, and the minimal set to keep in fp32.

1. The reduced-precision model is `cpu-fp16` (parity.runners.half: the fx graph in real fp16, node
   by node; any node can be kept fp32) or `ort-fp16` (the fp16 ONNX graph; kept nodes go to the
   converter's block list). Every node that computes (conv, ReLU, pooling, flatten, reshape, add,
   concat, linear ...) is a candidate, mapped to its ONNX node name (module scope for modules,
   op type and order for the top-level functional ops).
2. Effect on the lanes, not on tensors: on sampled frames the lanes of torch fp32 and of the
   reduced model are compared (max lateral difference in px over points both have; any NaN/Inf
   output is an infinite effect). Each node is ranked by the effect of reducing it **alone**
   (everything else fp32; culprit first, effects within a factor of 2 ordered by position in the
   network, so the node where the damage enters leads), and the effect left when it alone is kept
   fp32 is shown beside it.
3. Search: greedy forward in rank order until the lanes are within `--tolerance-px`, then backward
   elimination (each member, least important first, dropped if the rest still pass): the set is
   1-minimal, no member can be dropped. A set larger than `--max-keep` is reported as such.
4. Verification on the whole case: lane difference, bending (kink_rate as replay counts it),
   jitter and non-finite frames against torch fp32, before and after.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from .. import atomic
from .. import metrics as M
from ..errors import UsageError
from ..runners.artifacts import ArtifactCache, export_onnx, fp16_onnx
from .batch import RunnerBatches

RUNNERS = ("cpu-fp16", "ort-fp16")
_FUNCTIONAL_ONNX = {"flatten": "Flatten", "view": "Reshape", "reshape": "Reshape", "add": "Add", "cat": "Concat",
                    "mul": "Mul", "sub": "Sub", "relu": "Relu", "adaptive_avg_pool2d": "GlobalAveragePool", "sigmoid": "Sigmoid",
                    "softmax": "Softmax", "matmul": "MatMul", "interpolate": "Resize", "permute": "Transpose", "transpose": "Transpose"}


def candidate_nodes(checkpoint) -> list[dict]:
    """Every computing node of the model's fx graph (BN folded): id, op, position."""
    from ..runners.half import HalfExecutor, node_id

    ex = HalfExecutor(checkpoint.build_model())
    out = []
    for k, n in enumerate(ex.nodes):
        op = type(ex.modules[n.target]).__name__ if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
        out.append({"node": node_id(n), "op": op, "order": k, "kind": n.op})
    return out


def onnx_names(checkpoint, cache, nodes: list[dict]) -> dict[str, list[str]]:
    """fx node id -> the ONNX node names that compute it in the exported graph ([] if none)."""
    import onnx

    path, _ = export_onnx(checkpoint, cache)
    graph = [n for n in onnx.load(str(path)).graph.node if n.op_type != "Constant"]
    top: dict[str, list[str]] = {}
    for n in graph:
        parts = [p for p in n.name.split("/") if p]
        if len(parts) == 1:
            top.setdefault(n.op_type, []).append(n.name)
    seen: dict[str, int] = {}
    out = {}
    for c in nodes:
        if c["kind"] == "call_module":
            parts = c["node"].split(".")
            scope = "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"  # the exporter's module scopes
            out[c["node"]] = [n.name for n in graph if n.name.startswith(scope)]
        else:
            op = _FUNCTIONAL_ONNX.get(c["op"], c["op"])
            k = seen.get(op, 0)
            seen[op] = k + 1
            names = top.get(op, [])
            out[c["node"]] = [names[k]] if k < len(names) else []
    return out


class Reduced:
    """The reduced-precision runner with any set of nodes kept in fp32."""

    def __init__(self, checkpoint, cache, runner: str):
        if runner not in RUNNERS:
            raise UsageError(f"localize works with {', '.join(RUNNERS)} (every node can be kept fp32 there), not {runner!r}")
        self.ck, self.cache, self.runner = checkpoint, cache, runner
        self.adapter = checkpoint.adapter()
        self.nodes = candidate_nodes(checkpoint)
        self.onnx = onnx_names(checkpoint, cache, self.nodes)
        if runner == "ort-fp16":  # only nodes the ONNX graph has can be blocked
            self.nodes = [c for c in self.nodes if self.onnx.get(c["node"])]

    def make_runner(self, keep=()):
        a = self.adapter
        if self.runner == "cpu-fp16":
            from ..runners.half import HalfPrecisionRunner

            return HalfPrecisionRunner(self.runner, self.ck.build_model, a.input_name, a.output_name, a.input_shape(), keep_fp32=tuple(keep))
        from ..runners.onnxrt import OnnxRuntimeRunner

        path, _ = export_onnx(self.ck, self.cache)
        blocked = tuple(n for k in keep for n in self.onnx.get(k, []))
        return OnnxRuntimeRunner(self.runner, fp16_onnx(path, self.cache, blocked)[0], "fp16 ONNX graph, CPU provider")

    def compare(self, batches: list[np.ndarray], width: int, keep=()):
        """(torch fp32 outputs, reduced outputs) on the same batches, through the shared runner helper."""
        from ..runners.torch_runner import TorchRunner

        a = self.adapter
        reference = TorchRunner("torch", self.ck.build_model, a.input_name, a.output_name, a.input_shape())
        reduced = self.make_runner(keep)
        with reference, reduced:
            fed = RunnerBatches([reference, reduced], a, width)
            for b in batches:
                fed.feed(b)
        outs = fed.outputs()
        return outs["torch"], outs[self.runner]


def _effect(ref, red) -> float:
    """Max lateral difference (px) of the reduced lanes from torch's; inf when any output is NaN/Inf."""
    if (red.nonfinite > 0).any():
        return math.inf
    d = M.lateral_difference(red.x, ref.x)["max_px"]
    return d if np.isfinite(d) else 0.0


def _lane_effect(case, ref, red, rows) -> dict:
    """Lane difference, bending and jitter of the reduced runner's outputs against torch fp32's."""
    d = M.lateral_difference(red.x, ref.x)
    b = M.bending(red.x, ref.x, rows, kink_px=M.kink_threshold(case.width))
    look = list(M.lookahead_rows(len(rows)).values())
    j = M.jitter(red.x[:, :, look], ref.x[:, :, look], case.timestamps[: len(red.x)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "dx_mean_px": d["mean_px"], "dx_max_px": d["max_px"], "existence_disagreement": d["existence_disagreement"],
            "bend_mean_px": float(np.nanmean(b["score"])), "kink_rate": M.kink_rate(b),
            "jitter_rms_near": float(np.nanmean(j["rms"][:, 0])), "nonfinite_frames": int((red.nonfinite > 0).sum()),
        }


def _bucket(v: float) -> float:
    return math.inf if not np.isfinite(v) else (math.floor(math.log2(v)) if v > 0 else -math.inf)


def localize(checkpoint, case, runner: str = "cpu-fp16", pipeline: str = "vehicle", frames: int = 16,
             tolerance_px: float = 1.0, max_keep: int = 8, cache=None) -> dict:
    if frames < 1:
        raise UsageError(f"--frames must be at least 1, not {frames}")
    if max_keep < 0:
        raise UsageError(f"--max-keep must be 0 or more, not {max_keep}")
    cache = cache or ArtifactCache()
    red = Reduced(checkpoint, cache, runner)
    pipes = red.adapter.pipelines()
    if pipeline not in pipes:
        raise UsageError(f"unknown pipeline {pipeline!r} (known: {', '.join(pipes)})")
    pipe = pipes[pipeline]
    rows = red.adapter.anchor_rows(case.height)
    sample = np.unique(np.linspace(0, len(case) - 1, min(frames, len(case))).round().astype(int))
    x = pipe.prepare(case, sample)
    ids = [c["node"] for c in red.nodes]
    evaluated: dict[frozenset, float] = {}

    def effect(keep) -> float:
        key = frozenset(keep)
        if key not in evaluated:
            evaluated[key] = _effect(*red.compare([x], case.width, sorted(key)))
        return evaluated[key]

    def passes(keep) -> bool:
        return effect(keep) <= tolerance_px

    everything = effect(())
    table = []
    for c in red.nodes:
        alone = effect([n for n in ids if n != c["node"]])  # only this node reduced
        kept = effect([c["node"]])  # everything reduced but this node
        table.append({**c, "onnx": red.onnx.get(c["node"], []), "alone_px": alone, "kept_px": kept})
    ranked = sorted(table, key=lambda e: (-_bucket(e["alone_px"]), e["order"]))
    order = [e["node"] for e in ranked]

    keep, trail = [], [{"step": "all reduced", "keep": [], "effect_px": everything}]
    if not passes(keep):
        for n in order:  # forward: in rank order until the lanes pass
            keep.append(n)
            trail.append({"step": "add", "keep": list(keep), "effect_px": effect(keep)})
            if passes(keep):
                break
        for n in reversed(list(keep)):  # backward: drop what is not needed, least important first
            trial = [k for k in keep if k != n]
            ok = passes(trial)
            trail.append({"step": f"drop {n}", "keep": trial, "effect_px": effect(trial), "dropped": ok})
            if ok:
                keep = trial
    keep = sorted(keep, key=lambda n: ids.index(n))  # network order
    found = passes(keep)

    full = [pipe.prepare(case, range(s, min(s + 32, len(case)))) for s in range(0, len(case), 32)]
    before = _lane_effect(case, *red.compare(full, case.width), rows)
    after = _lane_effect(case, *red.compare(full, case.width, keep), rows)
    return {
        "runner": runner, "case": case.name, "pipeline": pipeline, "sample_frames": sample.tolist(),
        "nodes": table, "ranking": order, "keep_fp32": keep,
        "nodes_to_exclude": [n for k in keep for n in red.onnx.get(k, [])],
        "search": trail, "evaluations": len(evaluated), "tolerance_px": tolerance_px, "max_keep": max_keep,
        "within_tolerance": bool(found), "within_max_keep": bool(found and len(keep) <= max_keep),
        "before": before, "after": after,
    }


def format_result(res: dict, top: int = 12) -> str:
    by = {e["node"]: e for e in res["nodes"]}
    lines = [f"{'rank':>4} {'node':<14} {'op':<10} {'onnx node':<28} {'alone px':>10} {'kept px':>10}"]
    for k, name in enumerate(res["ranking"][:top], 1):
        e = by[name]
        lines.append(f"{k:>4} {name:<14} {e['op'][:10]:<10} {(e['onnx'][0] if e['onnx'] else '-'):<28} {e['alone_px']:>10.4g} {e['kept_px']:>10.4g}")
    lines.append("alone: max lane difference vs torch fp32 with only this node reduced; kept: with every node reduced but this one")
    if res["within_max_keep"]:
        lines.append(f"keep in fp32: {res['keep_fp32'] or '(nothing needed)'}  (minimal: no member can be dropped; "
                     f"within {res['tolerance_px']} px on the sampled frames)")
    elif res["within_tolerance"]:
        lines.append(f"no set within --max-keep {res['max_keep']}: the minimal set found has {len(res['keep_fp32'])} nodes: {res['keep_fp32']}")
    else:
        lines.append(f"no set of nodes brings the lanes within {res['tolerance_px']} px (even with every node in fp32)")
    lines.append(f"AutoCast nodes_to_exclude / onnxconverter-common node_block_list: {res['nodes_to_exclude']}")
    b, a = res["before"], res["after"]
    for key in ("dx_mean_px", "dx_max_px", "bend_mean_px", "kink_rate", "jitter_rms_near", "nonfinite_frames"):
        lines.append(f"  {key:<18} {b[key]:>10.4g} -> {a[key]:<10.4g} (whole case, vs torch fp32)")
    return "\n".join(lines)


def bar_chart(res: dict, out: Path, top: int = 15) -> Path:
    """Horizontal bars of each node's lane effect when reduced alone (px, log scale), in network order."""
    from PIL import Image, ImageDraw

    layers = [{"layer": e["node"], "rel_error": e["alone_px"]} for e in res["nodes"]]
    vals = [e["rel_error"] for e in layers]
    finite = [v for v in vals if np.isfinite(v) and v > 0]
    lo = np.log10(min(finite)) if finite else -8.0
    hi = max(np.log10(max(finite)) if finite else 0.0, lo + 1)
    W, row = 760, 22
    im = Image.new("RGB", (W, 40 + row * len(layers)), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 8), f"{res['runner']} vs fp32: max lane difference (px) with only this node reduced ({res['case']}), log scale", fill="black")
    first = res["ranking"][0] if res["ranking"] else None
    for k, e in enumerate(layers):
        y = 32 + k * row
        v = e["rel_error"]
        frac = 1.0 if not np.isfinite(v) else (np.log10(v) - lo) / (hi - lo) if v > 0 else 0.0
        colour = (200, 40, 40) if e["layer"] == first else (70, 110, 180)
        d.text((10, y + 4), e["layer"], fill="black")
        d.rectangle([140, y + 3, 140 + int(max(frac, 0.01) * (W - 260)), y + row - 3], fill=colour)
        d.text((W - 110, y + 4), "inf/nan" if not np.isfinite(v) else f"{v:.2e}", fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic.write_bytes(out, buf.getvalue())
    return Path(out)
