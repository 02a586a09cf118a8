"""`parity localize --capture`: the first layer where a target's engine leaves what fp16 rounding explains.

1. Layer tensors from the target, for one exported batch: trtexec `--saveAllDebugTensors=numpy`
   (tensor_summary.json + one .npy per tensor; the engine built with --markUnfusedTensorsAsDebugTensors
   or --markDebug), the capture script's `debug/<batch>/` (the same layout), or Polygraphy
   `--onnx-outputs mark all --save-outputs` RunResults (iteration i = batch i of the export).
2. Each tensor name is an ONNX value name: mapped to the ONNX node that produces it and, where that
   node is the last of an fx node's ONNX nodes (parity.runs.localize.map_to_onnx), to torch's
   activation of that fx node on the same input (the export's batch, its sha256 checked), computed in
   fp32 with batch norms folded as the export folds them.
3. Per layer in topological order: max absolute and relative (L2) error against torch, non-finite
   count, and what fp16 rounding alone explains there: `8 u sqrt(k)` relative, u = 2^-11 the fp16
   unit roundoff, k the layer's depth among the compared layers (independent roundings add like a
   random walk; 8 leaves room for weight rounding). The first layer over it, or with a NaN/Inf, is
   the first diverging layer.
4. Lanes: each compared layer's captured tensor is put in place of torch's and the rest run in fp32;
   the lane difference from torch fp32 (px, inf when a lane is lost or the output is NaN/Inf) says
   which layer's error moves the lanes by how much. Then parity's keep-set search (localize.py) on
   parity's real-fp16 model, the capture's ranking first, gives the nodes to keep in fp32 and their
   AutoCast `nodes_to_exclude`: verified here on parity's fp16 arithmetic, to be confirmed by a
   rebuild on the target.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..models.outputs import decode_outputs
from ..runners.captures import manifest as Mf
from ..runners.captures import polygraphy_json, trtexec
from .localize import candidate_nodes, lane_effect_px, map_to_onnx, minimal_keep_set, onnx_data_nodes

FP16_UNIT_ROUNDOFF = 2.0**-11
BUDGET_FACTOR = 8.0


def rounding_budget(depth: int) -> float:
    return BUDGET_FACTOR * FP16_UNIT_ROUNDOFF * math.sqrt(max(depth, 1))


def read_layer_tensors(path: Path, manifest, batch: str | None) -> tuple[dict[str, np.ndarray], str, str]:
    """(tensor name -> array, batch id, format) of one execution on the target."""
    p = Path(path)
    if p.is_dir() and (p / "capture.json").is_file():
        bid = batch or manifest.batches[0].id
        p = p / "debug" / bid
        if not (p / "tensor_summary.json").is_file():
            raise UsageError(f"{p}: no debug tensors for batch {bid} (run the capture script with --debug-tensors)")
    if p.is_dir():
        bid = batch or (p.name if p.name in manifest.by_id() else None)
        if bid is None:
            if len(manifest.batches) > 1:
                raise UsageError(f"{p}: say which exported batch trtexec ran with --batch (or name the folder after it, e.g. batch_0000)")
            bid = manifest.batches[0].id
        return trtexec.read_debug_tensors(p), bid, "trtexec-debug-tensors"
    _, iters = polygraphy_json.read_run_results(p)
    bid = batch or manifest.batches[0].id
    ids = [b.id for b in manifest.batches]
    if bid not in ids:
        raise UsageError(f"--batch {bid}: not a batch of {manifest.path}")
    if len(iters) <= ids.index(bid):
        raise UsageError(f"{p}: {len(iters)} iterations; batch {bid} is iteration {ids.index(bid)}")
    return iters[ids.index(bid)], bid, "polygraphy-mark-all"


def load_batch_input(manifest, b) -> np.ndarray:
    """The exported tensor of batch `b`, refused unless its bytes are what inputs.json says."""
    f = manifest.folder / b.tensor["file"]
    if not f.is_file():
        raise UsageError(f"{f}: the export's input file for {b.id} is missing (give the export folder with --inputs EXPORT_DIR)")
    if f.suffix == ".npy":
        x = np.load(f, allow_pickle=False)
    elif f.suffix == ".json":
        x = polygraphy_json.read_json(f)[b.tensor["index"]][b.tensor["name"]]
    else:
        x = np.fromfile(f, dtype=np.dtype(b.tensor["dtype"]).newbyteorder("<")).reshape(b.tensor["shape"]).astype(b.tensor["dtype"])
    if Mf.row_hashes(x) != b.frame_sha256:
        raise UsageError(f"{f}: its content is not the tensor inputs.json records for {b.id}")
    return x


def tensor_to_node(onnx_path) -> tuple[dict[str, str], list[str]]:
    """(ONNX value name -> producing node name, node names in topological order) of the exported graph."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    out = {}
    for n in graph.node:
        for o in n.output:
            out[o] = n.name
    return out, [n.name for n in graph.node]


class Torch:
    """torch fp32 through parity's fx executor (batch norms folded, as the export folds them): its
    activations per node, and its output with one node's output replaced."""

    def __init__(self, checkpoint):
        import torch

        from ..models.outputs import output_names
        from ..runners.half import HalfExecutor

        self.torch = torch
        self.names = output_names(checkpoint.adapter())
        self.ex = HalfExecutor(checkpoint.build_model())
        self.ex.set_keep(self.ex.ids)

    def _run(self, x: np.ndarray) -> dict:
        from ..models.outputs import named_outputs

        with self.torch.inference_mode():
            return named_outputs(self.names, self.ex(self.torch.from_numpy(x)))

    def activations(self, x: np.ndarray) -> tuple[dict, dict]:
        self.ex.recorded = {}
        out = self._run(x)
        acts, self.ex.recorded = self.ex.recorded, None
        return {k: v.float().numpy() for k, v in acts.items() if isinstance(v, self.torch.Tensor)}, out

    def with_layer(self, x: np.ndarray, node: str, value: np.ndarray) -> dict:
        self.ex.override = {node: self.torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))}
        try:
            return self._run(x)
        finally:
            self.ex.override = {}


def _errors(cap: np.ndarray, ref: np.ndarray) -> dict:
    c = cap.astype(np.float64)
    fin = np.isfinite(c)
    d = np.where(fin, c - ref, 0.0)
    norm = float(np.linalg.norm(ref))
    return {"abs_max": float(np.abs(d).max()) if d.size else 0.0, "rel_l2": float(np.linalg.norm(d) / norm) if norm > 0 else 0.0,
            "nonfinite": int((~fin).sum()), "ref_abs_max": float(np.abs(ref).max()) if ref.size else 0.0}


def localize_capture(checkpoint, capture: str, inputs: str | None = None, batch: str | None = None, tolerance_px: float = 1.0,
                     max_keep: int = 8, search: bool = True, cache=None) -> dict:
    from ..runners.artifacts import ArtifactCache, export_onnx
    from ..runners.captures import CaptureSpec, find_manifest

    cache = cache or ArtifactCache()
    manifest = find_manifest(CaptureSpec("capture", str(capture), inputs))
    if manifest.doc.get("checkpoint", {}).get("sha256") not in (None, checkpoint.sha256):
        raise UsageError(f"{manifest.path}: exported from checkpoint {manifest.doc['checkpoint'].get('name')} "
                         f"({manifest.doc['checkpoint']['sha256'][:12]}), not {checkpoint.name} ({checkpoint.sha256[:12]})")
    tensors, bid, fmt = read_layer_tensors(Path(capture), manifest, batch)
    b = manifest.by_id()[bid]
    x = load_batch_input(manifest, b)
    width = int(manifest.doc.get("cases", {}).get(b.case, {}).get("width") or 0)
    if not width:
        raise UsageError(f"{manifest.path}: records no width for case {b.case}")
    verified = None
    if manifest.input_name in tensors:  # the engine's own view of its input: checked, not assumed
        verified = Mf.row_hashes(np.ascontiguousarray(tensors[manifest.input_name], dtype=np.float32)) == b.frame_sha256
    torch_ref = Torch(checkpoint)
    acts, ref_out = torch_ref.activations(x)
    adapter = checkpoint.adapter()
    onnx_path, _ = export_onnx(checkpoint, cache)
    producer, topo = tensor_to_node(onnx_path)
    nodes = candidate_nodes(torch_ref.ex)  # after a run: which nodes compute floating tensors
    fx_onnx = map_to_onnx(nodes, onnx_data_nodes(onnx_path))
    last_of = {names[-1]: c["node"] for c in nodes for names in [fx_onnx.get(c["node"]) or []] if names}
    ref_lanes = decode_outputs(adapter, ref_out, width)
    layers, depth = [], 0
    for name in sorted(tensors, key=lambda t: topo.index(producer[t]) if t in producer else len(topo)):
        onnx_node = producer.get(name)
        fx = last_of.get(onnx_node)
        row = {"tensor": name, "onnx_node": onnx_node, "node": fx, "shape": list(tensors[name].shape), "dtype": tensors[name].dtype.name}
        if fx is None or fx not in acts:
            layers.append({**row, "compared": False, "why": "no torch counterpart (an input, a Cast or a tensor inside a module)"
                           if onnx_node else "not a value of the exported graph"})
            continue
        if list(acts[fx].shape) != list(tensors[name].shape):
            layers.append({**row, "compared": False, "why": f"shape {list(tensors[name].shape)}, torch's {list(acts[fx].shape)}"})
            continue
        depth += 1
        e = _errors(tensors[name], acts[fx])
        budget = rounding_budget(depth)
        moved = torch_ref.with_layer(x, fx, tensors[name])
        effect = _lane_effect(adapter, moved, ref_out, ref_lanes, width)
        layers.append({**row, "compared": True, "depth": depth, **e, "budget_rel_l2": budget,
                       "exceeds": bool(e["nonfinite"] > 0 or e["rel_l2"] > budget), "lane_effect_px": effect})
    compared = [r for r in layers if r["compared"]]
    if not compared:
        raise UsageError(f"{capture}: none of its {len(tensors)} tensors maps to a layer of {checkpoint.name}'s exported graph "
                         "(were they captured from this model's ONNX?)")
    first = next((r for r in compared if r["exceeds"]), None)
    res = {"capture": str(capture), "format": fmt, "inputs": str(manifest.path), "batch": bid, "case": b.case, "frames": b.frames,
           "input_verified": verified, "layers": layers, "compared": len(compared), "tensors": len(tensors),
           "first_diverging": first and {k: first[k] for k in ("tensor", "node", "onnx_node", "rel_l2", "budget_rel_l2", "nonfinite",
                                                                 "lane_effect_px")},
           "tolerance_px": tolerance_px, "legend": _LEGEND}
    if search:
        res.update(_keep_set(checkpoint, cache, x, width, compared, first, tolerance_px, max_keep))
    return res


_LEGEND = ("rel_l2: ||captured - torch|| / ||torch|| over finite values; budget: what fp16 rounding alone explains at that depth "
           "(8 u sqrt(depth), u = 2^-11); lane_effect_px: max lane difference from torch fp32 with only this layer's captured "
           "tensor in place of torch's (inf: a lane lost or NaN/Inf)")


def _lane_effect(adapter, out: dict, ref_out, ref_lanes, width) -> float:
    from .batch import RunnerOutputs

    n = len(next(iter(out.values())))
    nonfinite = np.concatenate([(~np.isfinite(o)).reshape(n, -1) for o in out.values()], axis=1).mean(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        lanes = decode_outputs(adapter, out, width)
    lanes[nonfinite > 0] = np.nan

    def wrap(xs, nf):
        return RunnerOutputs(x=xs, ms=np.zeros(n), raw={}, raw_by_output={}, nonfinite=nf, logits=None)

    return lane_effect_px(wrap(ref_lanes, np.zeros(n)), wrap(lanes, nonfinite))


def _keep_set(checkpoint, cache, x, width, compared, first, tolerance_px, max_keep) -> dict:
    """parity's keep-set search on its real-fp16 model, tried in the capture's order: the first
    diverging layer, then by lane effect, then the rest in network order."""
    from .localize import FORWARD_BUDGET_MIN, Reduced

    with Reduced(checkpoint, cache, "cpu-fp16", x) as red:
        ids = [c["node"] for c in red.nodes]
        ranked = sorted(compared, key=lambda r: (r is not first, -(r["lane_effect_px"] if np.isfinite(r["lane_effect_px"]) else 1e30),
                                                 r["depth"]))
        order = list(dict.fromkeys([r["node"] for r in ranked if r["node"] in ids] + ids))
        seen: dict = {}

        def effect(keep):
            key = frozenset(keep)
            if key not in seen:
                seen[key] = lane_effect_px(*red.compare([x], width, sorted(key, key=ids.index)))
            return seen[key]

        keep = sorted(minimal_keep_set(order, effect, tolerance_px, max(2 * max_keep, FORWARD_BUDGET_MIN)), key=ids.index)
        return {"keep_fp32": keep, "nodes_to_exclude": [n for k in keep for n in red.onnx.get(k, [])],
                "keep_effect_px": effect(keep), "everything_fp16_px": effect(()), "keep_within_tolerance": effect(keep) <= tolerance_px,
                "keep_within_max_keep": len(keep) <= max_keep, "label": red.label()}


def format_capture_result(res: dict, top: int = 14) -> str:
    px = lambda v: "inf" if v is None or not np.isfinite(v) else f"{v:.3g}"  # noqa: E731
    lines = [f"layer tensors: {res['capture']} ({res['format']}), batch {res['batch']} (case {res['case']} frames "
             f"{res['frames'][0]}..{res['frames'][-1]}); {res['compared']} of {res['tensors']} tensors compared with torch fp32"
             + ("" if res["input_verified"] is None else "; the engine's input " + ("matches" if res["input_verified"] else "DIFFERS from") + " the export"),
             f"{'depth':>5} {'tensor':<34} {'node':<12} {'rel err':>9} {'budget':>8} {'abs max':>9} {'nonfin':>7} {'lanes px':>9}"]
    shown = [r for r in res["layers"] if r["compared"]]
    first_at = next((k for k, r in enumerate(shown) if r["exceeds"]), 0)
    lo = max(0, first_at - top // 2)
    for r in shown[lo : lo + top]:
        mark = " <- first over fp16 rounding" if res["first_diverging"] and r["tensor"] == res["first_diverging"]["tensor"] else ""
        lines.append(f"{r['depth']:>5} {r['tensor'][:34]:<34} {str(r['node'])[:12]:<12} {r['rel_l2']:>9.2e} {r['budget_rel_l2']:>8.1e} "
                     f"{r['abs_max']:>9.3g} {r['nonfinite']:>7} {px(r['lane_effect_px']):>9}{mark}")
    fd = res["first_diverging"]
    if fd:
        lines.append(f"first diverging layer: {fd['node']} (ONNX {fd['onnx_node']}, tensor {fd['tensor']}): relative error "
                     f"{fd['rel_l2']:.3g} against {fd['budget_rel_l2']:.2g} fp16 rounding explains, {fd['nonfinite']} NaN/Inf; "
                     f"alone it moves the lanes {px(fd['lane_effect_px'])} px")
    else:
        lines.append("no layer leaves what fp16 rounding explains: the engine computes this model as fp16 arithmetic should")
    if "keep_fp32" in res:
        lines.append(f"keep in fp32 (parity's keep-set search on its real-fp16 model, capture's order first): {res['keep_fp32'] or '(nothing)'}"
                     f" -> {px(res['keep_effect_px'])} px from torch (everything fp16: {px(res['everything_fp16_px'])} px)")
        lines.append(f"AutoCast nodes_to_exclude / onnxconverter-common node_block_list: {res['nodes_to_exclude']} "
                     "(rebuild the engine with them and capture again to confirm on the target)")
    lines.append(res["legend"])
    return "\n".join(lines)
