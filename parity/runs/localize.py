"""`parity localize`: which layer makes reduced precision move the lanes, and which to keep in fp32.

1. Capture every conv/linear layer's output in the reference and in the reduced-precision model for
   the same inputs: torch hooks on the emulated model (`emu-fp16`, `emu-tf32`, reference: the same
   model in fp32 with batch norm folded), or extra graph outputs of the fp16 ONNX graph
   (`ort-fp16`, reference: the fp32 graph; node `/backbone/backbone.3/Conv` is module `backbone.3`).
2. Rank layers by the error they add: relative error of their output minus that of their input;
   a layer whose output turns non-finite from finite input ranks above everything.
3. Keep layers in fp32 in rank order until the lanes on the sampled frames are within the tolerance
   of torch fp32; the set is printed as module names and as ONNX node names (AutoCast
   `nodes_to_exclude`, onnxconverter-common `node_block_list`).
4. Verify on the whole case: lane difference, bending and jitter against torch fp32, before and after.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from .. import metrics as M
from ..errors import UsageError
from ..runners.artifacts import ArtifactCache, export_onnx, fp16_onnx
from .batch import RunnerBatches

RUNNERS = ("emu-fp16", "emu-tf32", "ort-fp16")


@dataclass
class LayerError:
    order: int
    layer: str  # module name
    node: str  # ONNX node name ("" when unknown)
    rel_error: float
    added: float
    introduced_nonfinite: bool

    def score(self) -> tuple:
        return (self.introduced_nonfinite, self.added if np.isfinite(self.added) else -1.0)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not np.isfinite(b).all():
        return float("inf")
    n = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / n) if n > 0 else float(np.linalg.norm(b) > 0)


def _rank(names, nodes, ref, red) -> list[LayerError]:
    out, prev, prev_finite = [], 0.0, True
    for k, name in enumerate(names):
        rel = _rel(ref[name], red[name])
        finite = bool(np.isfinite(red[name]).all())
        introduced = prev_finite and not finite
        added = 0.0 if not prev_finite else (float("inf") if not finite else rel - prev)
        out.append(LayerError(k, name, nodes.get(name, ""), rel, added, introduced))
        prev, prev_finite = rel, finite
    return out


def module_of(node_name: str) -> str | None:
    parts = [p for p in node_name.split("/") if p]
    return parts[-2] if len(parts) >= 2 else None


def onnx_nodes(checkpoint, cache) -> dict[str, str]:
    """module name -> ONNX node name for the conv/linear nodes of the exported graph."""
    import onnx

    path, _ = export_onnx(checkpoint, cache)
    return {module_of(n.name): n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and module_of(n.name)}


# ---- capture -------------------------------------------------------------------------------------
def capture_torch(model, x: np.ndarray) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    import torch

    names, acts, handles = [], {}, []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            names.append(name)
            handles.append(m.register_forward_hook(lambda mod, a, out, name=name: acts.__setitem__(name, out.detach().numpy().copy())))
    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    for h in handles:
        h.remove()
    return names, acts, y


def capture_onnx(path: Path, nodes: dict[str, str], x: np.ndarray, input_name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run the graph with every named node's output added as a graph output."""
    import onnx
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    by_node = {n.name: n.output[0] for n in model.graph.node}
    infos = {v.name: v for v in model.graph.value_info}
    wanted = {m: by_node[n] for m, n in nodes.items() if n in by_node}
    existing = {o.name for o in model.graph.output}
    for tensor in wanted.values():
        if tensor not in existing and tensor in infos:
            model.graph.output.append(infos[tensor])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, {input_name: x})))
    acts = {m: np.asarray(outs[t], np.float32) for m, t in wanted.items() if t in outs}
    return acts, np.asarray(outs[names[0]], np.float32)


# ---- the reduced-precision model with some layers kept in fp32 -----------------------------------
class Reduced:
    def __init__(self, checkpoint, cache, runner: str):
        if runner not in RUNNERS:
            raise UsageError(f"localize works with {', '.join(RUNNERS)}, not {runner!r}")
        self.ck, self.cache, self.runner = checkpoint, cache, runner
        self.adapter = checkpoint.adapter()
        self.nodes = onnx_nodes(checkpoint, cache)

    def _onnx(self, keep) -> Path:
        path, _ = export_onnx(self.ck, self.cache)
        return fp16_onnx(path, self.cache, tuple(self.nodes[k] for k in keep if k in self.nodes))[0]

    def capture(self, x: np.ndarray, keep=()):
        """(layer names in order, reference activations, reduced activations)."""
        from ..runners.emulation import emulate, fold_batchnorm

        base = self.ck.build_model()
        names, ref, _ = capture_torch(fold_batchnorm(base), x)
        if self.runner.startswith("emu-"):
            _, red, _ = capture_torch(emulate(base, self.runner[4:], tuple(keep)), x)
            return names, ref, red
        fp32_path, _ = export_onnx(self.ck, self.cache)
        nodes = {m: n for m, n in self.nodes.items() if m in names}
        ref, _ = capture_onnx(fp32_path, nodes, x, self.adapter.input_name)
        red, _ = capture_onnx(self._onnx(keep), nodes, x, self.adapter.input_name)
        return [n for n in names if n in ref and n in red], ref, red

    def make_runner(self, keep=()):
        """The reduced-precision runner with the layers in `keep` left in fp32."""
        a = self.adapter
        if self.runner.startswith("emu-"):
            from ..runners.emulation import EmulatedPrecisionRunner

            return EmulatedPrecisionRunner(self.runner, self.ck.build_model, a.input_name, a.output_name, a.input_shape(),
                                           self.runner[4:], keep_fp32=tuple(keep))
        from ..runners.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(self.runner, self._onnx(keep), "fp16 ONNX graph, CPU provider")

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
            "bend_mean_px": float(np.nanmean(b["score"])), "kink_rate": float((b["kinks"] > 0).mean()),
            "jitter_rms_near": float(np.nanmean(j["rms"][:, 0])), "nonfinite_frames": int((red.nonfinite > 0).sum()),
        }


def localize(checkpoint, case, runner: str = "emu-fp16", pipeline: str = "vehicle", frames: int = 16,
             tolerance_px: float = 1.0, max_keep: int = 8, cache=None) -> dict:
    cache = cache or ArtifactCache()
    red = Reduced(checkpoint, cache, runner)
    adapter = red.adapter
    pipe = adapter.pipelines()[pipeline]
    rows = adapter.anchor_rows(case.height)
    sample = np.unique(np.linspace(0, len(case) - 1, min(frames, len(case))).round().astype(int))
    x = pipe.prepare(case, sample)
    names, ref_acts, red_acts = red.capture(x)
    layers = _rank(names, red.nodes, ref_acts, red_acts)
    ranked = sorted(layers, key=lambda e: e.score(), reverse=True)

    def sample_dx(keep):
        ref, out = red.compare([x], case.width, keep)
        d = M.lateral_difference(out.x, ref.x)["max_px"]
        return d if np.isfinite(d) and not (out.nonfinite > 0).any() else float("inf")

    keep, trail = [], [{"keep": [], "dx_max_px": sample_dx([])}]
    for e in ranked[:max_keep]:
        if trail[-1]["dx_max_px"] <= tolerance_px:
            break
        keep.append(e.layer)
        trail.append({"keep": list(keep), "dx_max_px": sample_dx(keep)})

    full = [pipe.prepare(case, range(s, min(s + 32, len(case)))) for s in range(0, len(case), 32)]
    before = _lane_effect(case, *red.compare(full, case.width), rows)
    after = _lane_effect(case, *red.compare(full, case.width, keep), rows)
    return {
        "runner": runner, "case": case.name, "pipeline": pipeline, "sample_frames": sample.tolist(),
        "layers": [asdict(e) for e in layers], "ranking": [e.layer for e in ranked],
        "keep_fp32": keep, "nodes_to_exclude": [red.nodes[k] for k in keep if k in red.nodes],
        "search": trail, "tolerance_px": tolerance_px,
        "within_tolerance": bool(trail[-1]["dx_max_px"] <= tolerance_px),
        "before": before, "after": after,
    }


def format_result(res: dict, top: int = 10) -> str:
    by = {e["layer"]: e for e in res["layers"]}
    lines = [f"{'rank':>4} {'layer':<14} {'onnx node':<28} {'rel error':>10} {'added':>10} {'introduces inf/nan':>19}"]
    for k, name in enumerate(res["ranking"][:top], 1):
        e = by[name]
        lines.append(f"{k:>4} {name:<14} {e['node']:<28} {e['rel_error']:>10.3g} {e['added']:>10.3g} {str(e['introduced_nonfinite']):>19}")
    lines.append(f"keep in fp32: {res['keep_fp32'] or '(nothing needed)'}  (within {res['tolerance_px']} px on the sampled frames: {res['within_tolerance']})")
    lines.append(f"AutoCast nodes_to_exclude / onnxconverter-common node_block_list: {res['nodes_to_exclude']}")
    b, a = res["before"], res["after"]
    for key in ("dx_mean_px", "dx_max_px", "bend_mean_px", "kink_rate", "jitter_rms_near", "nonfinite_frames"):
        lines.append(f"  {key:<18} {b[key]:>10.4g} -> {a[key]:<10.4g} (whole case, vs torch fp32)")
    return "\n".join(lines)


def bar_chart(res: dict, out: Path, top: int = 15) -> Path:
    """Horizontal bars of each layer's relative output error (log scale), in network order."""
    from PIL import Image, ImageDraw

    layers = res["layers"][:]
    vals = [e["rel_error"] for e in layers]
    finite = [v for v in vals if np.isfinite(v) and v > 0]
    lo = np.log10(min(finite)) if finite else -8.0
    hi = max(np.log10(max(finite)) if finite else 0.0, lo + 1)
    W, row = 760, 22
    im = Image.new("RGB", (W, 40 + row * len(layers)), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 8), f"{res['runner']} vs fp32: relative error of each layer's output ({res['case']}), log scale", fill="black")
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
