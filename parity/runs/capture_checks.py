"""Checks only a capture allows, made from the captured files themselves.

- Batch invariance: the probe batch repeats one frame over a whole batch; every row must give the
  same output (TensorRT issue #4813 shows engines that do not: a kernel chosen per batch position).
  Per case x pipeline: the largest |row - row 0| of the raw output and the largest lateral spread
  of the decoded lanes between rows (px in the source image; a lane present in one row and absent
  in another is inf).
- Realised precision: a capture claimed fp16 whose outputs are bit-identical to an fp32 capture's
  (or to torch fp32's) on every shared frame, or whose engine inspector lists no fp16 layer, did
  not run in fp16 (rf-detr #1453: an "fp16" export that was fp32 throughout).
"""
from __future__ import annotations

import math

import numpy as np

from ..metrics.lateral import lateral_difference
from ..models.outputs import decode_outputs, output_names

WIDE = ("fp32", "tf32")


def batch_invariance(runners, adapter, pipelines) -> dict[tuple[str, str, str], dict]:
    """(case, runner, pipeline name) -> {"batch_variance_raw_max", "batch_variance_dx_max_px"} for every
    capture runner with a probe of that case under one of the run's pipelines."""
    from ..provenance import sha256_json

    names = {sha256_json(p.to_dict()): p.name for p in pipelines}
    out = {}
    for r in runners:
        if not hasattr(r, "invariance"):
            continue
        cases = r.capture.manifest.doc.get("cases", {})
        for b, outs in r.invariance():
            if b.pipeline_sha256 not in names:
                continue
            outs = {n: outs[n] for n in output_names(adapter)}
            with np.errstate(invalid="ignore", over="ignore"):
                raw = max(float(np.nanmax(np.abs(o.astype(np.float64) - o[:1].astype(np.float64)))) for o in outs.values())
            width = int(cases.get(b.case, {}).get("width", 0)) or None
            dx = math.nan
            if width:
                x = decode_outputs(adapter, outs, width)
                ref = np.repeat(x[:1], len(x), axis=0)
                present = np.isfinite(x).any(axis=-1) != np.isfinite(ref).any(axis=-1)
                d = lateral_difference(x, ref)["max_px"]
                finite = all(np.isfinite(o).all() for o in outs.values())
                dx = math.inf if present.any() or not finite else (d if np.isfinite(d) else 0.0)
            out[(b.case, r.name, names[b.pipeline_sha256])] = {"batch_variance_raw_max": raw, "batch_variance_dx_max_px": dx}
    return out


def realised_precision(runners, results: list[dict]) -> list[str]:
    """Findings: captures claimed fp16 that show no sign of having run in fp16."""
    caps = [r for r in runners if hasattr(r, "capture")]
    found = []
    for a in caps:
        claim, by = a.capture.precision
        if claim != "fp16":
            continue
        layers = a.capture.provenance.get("layer_precisions") or {}
        if layers.get("layers") and not layers.get("fp16"):
            found.append(f"capture {a.name} is claimed fp16 (by {by}) but its engine inspector lists no fp16 layer "
                         f"({layers.get('layers')} layers): the engine runs in fp32")
        for b in caps:
            if b is a or b.capture.precision[0] not in WIDE:
                continue
            same = identical_outputs(a.capture, b.capture)
            if same:
                found.append(f"capture {a.name} is claimed fp16 (by {by}) but its outputs are bit-identical to {b.name} "
                             f"({b.capture.precision[0]}) on all {same} shared frames: it did not run in fp16")
        for r in results:
            if r["runner"] == a.name and r.get("raw_max") == 0.0 and r.get("frames"):
                found.append(f"capture {a.name} is claimed fp16 (by {by}) but its outputs are bit-identical to torch fp32 on all "
                             f"{r['frames']} frames ({r['pipeline']}): it did not run in fp16")
    return found


def identical_outputs(a, b) -> int:
    """Frames both captures have, if every one of their outputs is bitwise equal; else 0."""
    ra, rb = a.frame_rows(), b.frame_rows()
    shared = [h for h in ra if h in rb]
    for h in shared:
        (ba, ka), (bb, kb) = ra[h], rb[h]
        if any(not np.array_equal(a.outputs[ba][n][ka], b.outputs[bb][n][kb]) for n in a.manifest.output_names):
            return 0
    return len(shared)
