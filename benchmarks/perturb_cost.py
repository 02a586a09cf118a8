"""Per-frame cost of each perturbation against the fastest established implementation of the same
operation on the same frame, and against one torch inference of the reference model.

Reference: for every image perturbation at severity 3, the library call(s) that do the same thing
(OpenCV, libjpeg-turbo through OpenCV or Pillow, numpy's generator, torch's bfloat16 cast), with
everything that does not depend on the frame (tables, kernels, maps) prepared outside the timing: the
library's best case. Where the operation is deterministic the reference must give parity's pixels
(checked here), so it is the same operation and not a cheaper one. Noise is compared with fresh
draws from numpy's generator (the same distribution). Target: parity <= 1.5x the fastest reference.
Pipeline-stage entries change the preprocessing spec: a resize kernel is compared with OpenCV's
resize of the same crop by the same kernel (the added cost over bilinear on both sides); the others
with the unperturbed pipeline, which is itself held to <= 1x one inference. Sequence-stage entries
are one draw per case, not per frame, and adversarial (fgsm) is a backward pass: reported, exempt.
Writes reports/bench/perturb_cost.{json,md}.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5
EXEMPT = {"fgsm": "a backward pass through the model", "frame_drop": "one draw per case", "frame_repeat": "one draw per case",
          "timestamp_jitter": "one draw per case"}
SEVERITY = 3


def median_time(fn, repeat=21):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def interleaved(fns, repeat=21) -> list[float]:
    """Median seconds of each function, called in turn within each round: a burst of machine noise
    hits parity's side and its references alike (the VMs here are shared)."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) for ts in times]


def references(rgb, a, frame):
    """name -> [(label, fn() -> image or None, exact)] for the perturbation `a` (an Applied) on `rgb`."""
    import cv2
    from PIL import Image

    from parity.preprocessing import perturb as P

    v, name, h, w = a.v, a.pert.name, rgb.shape[0], rgb.shape[1]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # the codec's native layout, given for free
    c = ((w - 1) / 2, (h - 1) / 2)
    warp = lambda M: lambda: cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # noqa: E731
    lut = lambda table: lambda: cv2.LUT(rgb, table)  # noqa: E731

    def jpeg_cv2():
        return cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(v)])[1], cv2.IMREAD_COLOR)

    def jpeg_pil():
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=int(v))
        buf.seek(0)
        return np.asarray(Image.open(buf))

    def chroma():  # all three planes resized (the plain call), luma copied back
        ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
        up = cv2.resize(cv2.resize(ycc, (w // v, h // v), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_NEAREST)
        cv2.mixChannels([ycc], [up], [0, 0])
        return cv2.cvtColor(up, cv2.COLOR_YCrCb2RGB)

    gen = np.random.default_rng(0)
    kernel = P.motion_kernel(v, a.rng(frame)) if name == "motion_blur" else None
    mx, my = P._distortion_maps(h, w, float(v)) if name == "lens_distortion" else (None, None)
    grey = lambda: cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # noqa: E731
    table = {
        "channel_swap": [("cv2.cvtColor + addWeighted", lambda: cv2.addWeighted(rgb, 1 - v, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), v, 0.0), True)],
        "roll": [("cv2.warpAffine", warp(cv2.getRotationMatrix2D(c, -v, 1.0)), True)],
        "pitch": [("cv2.warpAffine", warp(np.float32([[1, 0, 0], [0, 1, v]])), True)],
        "zoom": [("cv2.warpAffine", warp(cv2.getRotationMatrix2D(c, 0.0, v)), True)],
        "lens_distortion": [("cv2.remap", lambda: cv2.remap(rgb, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), True)],
        "gamma": [("cv2.LUT", lut(P._lut(lambda x: 255 * (x / 255) ** v)), True)],
        "brightness": [("cv2.LUT", lut(P._lut(lambda x: x + v)), True)],
        "contrast": [("cv2.LUT", lut(P._lut(lambda x: (x - 128) * v + 128)), True)],
        "white_balance": [("cv2.LUT (3 tables)", lut(P._wb_table(float(v))), True)],
        "saturation": [("cv2.cvtColor x2 + addWeighted", lambda: cv2.addWeighted(rgb, v, grey(), 1 - v, 0.0), True)],
        "vignetting": [("cv2.multiply by the gain map", lambda: cv2.multiply(rgb, P._vignette_gain(h, w, float(v)), scale=1 / 255), True)],
        "jpeg": [("cv2.imencode + imdecode (BGR given)", jpeg_cv2, False), ("Pillow save + open", jpeg_pil, False)],
        "chroma_subsampling": [("cv2.cvtColor + resize (3 planes) + cvtColor", chroma, True)],
        "gaussian_noise": [("numpy generator: standard_normal + clip", lambda: np.clip(
            rgb + gen.standard_normal(rgb.shape, dtype=np.float32) * np.float32(v) + 0.5, 0, 255).astype(np.uint8), False)],
        "shot_noise": [("numpy generator: poisson", lambda: np.clip(gen.poisson(rgb * (v / 255.0)) * (255.0 / v), 0, 255).astype(np.uint8), False),
                       ("numpy generator: standard_normal x sqrt(level)", lambda: np.clip(
                           rgb + gen.standard_normal(rgb.shape, dtype=np.float32) * P._shot_sigma(float(v))[rgb] + 0.5, 0, 255).astype(np.uint8), False)],
        "motion_blur": [("cv2.filter2D (same kernel)", lambda: cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REPLICATE), True)],
        "defocus_blur": [("cv2.filter2D (same kernel)", lambda: cv2.filter2D(rgb, -1, P.disk_kernel(float(v)), borderType=cv2.BORDER_REPLICATE), True)],
    }
    return table.get(name, [])


def main() -> None:
    import cv2
    import torch

    from parity.cases.format import load_case
    from parity.cases.synth import Scenario, write_case
    from parity.models.rowanchor import RowAnchorAdapter
    from parity.preprocessing import perturb
    from parity.preprocessing.pipeline import quantize
    from parity.preprocessing.resample import apply_taps

    torch.set_num_threads(1)  # one core, like the target
    cv2.setNumThreads(1)
    frame = 1
    with tempfile.TemporaryDirectory() as tmp:
        case = load_case(write_case(Scenario("bench", seed=1, frames=4), Path(tmp) / "c"))
        adapter = RowAnchorAdapter()
        pipe = adapter.pipelines()["vehicle"]
        model = adapter.build().eval()
        x = pipe.prepare(case, [frame])
        with torch.inference_mode():
            infer = median_time(lambda: model(torch.from_numpy(x)), 31)
        base = median_time(lambda: pipe.prepare(case, [frame]))
        rgb = pipe.decode(case, frame, "nv12")
        top, bottom, left, right = pipe.crop_box(case.height, case.width)
        crop = np.ascontiguousarray(rgb[top:bottom, left:right])
        resized = apply_taps(rgb[None, top:bottom], pipe._taps(case.height, top, bottom, 0)[0], pipe._taps(case.width, left, right, 1)[0])
        targets = model(torch.from_numpy(x)).detach().numpy().argmax(axis=1)
        ctx = lambda frames: {"model": model, "targets": targets, "std": pipe.std}  # noqa: E731
        rows = [measure(name, p, perturb.Applied(p, SEVERITY, 0, case.name, ctx), case, pipe, frame, rgb, crop, resized, x, infer, quantize)
                for name, p in perturb.REGISTRY.items()]
    write(rows, infer, base)


def measure(name, p, a, case, pipe, frame, rgb, crop, resized, x, infer, quantize) -> dict:
    import cv2
    import torch

    refs = []
    if p.stage == "sequence":
        cost = median_time(lambda: a.schedule(case.timestamps))
    elif p.stage == "raw":
        ours = a.raw(rgb, frame)
        found = references(rgb, a, frame)
        for label, fn, exact in found:
            if exact:
                assert np.array_equal(fn(), ours), f"{name}: the reference {label} is not the same operation"
        cost, *ref_times = interleaved([lambda: a.raw(rgb, frame)] + [fn for _, fn, _ in found])
        refs += [(label, t) for (label, _, _), t in zip(found, ref_times)]
    elif p.stage == "resized":
        step = np.float32(2.0 ** (8 - a.v))
        cost, ref = interleaved([lambda: a.resized(resized, [frame]), lambda: np.floor(np.clip(np.floor(resized), 0, 255) / step) * step])
        refs.append(("numpy floor, floor(x / step) * step", ref))
    elif p.stage == "tensor":
        cost = median_time(lambda: a.tensor(x, [frame]))
        if name == "fp16_input_cast":
            dtype = {10: torch.float16, 7: torch.bfloat16}.get(a.v)
            if dtype is not None:
                ref = lambda: torch.from_numpy(x).to(dtype).float()  # noqa: E731
                assert np.array_equal(ref().numpy(), a.tensor(x, [frame])), name
                refs.append((f"torch .to({dtype}).float()", median_time(ref)))
    else:
        ppipe = a.pipeline(pipe)
        sides = [lambda: ppipe.prepare(case, [frame]), lambda: pipe.prepare(case, [frame])]
        if name == "resize_kernel":  # the added cost of the other kernel, parity's and OpenCV's, all four interleaved
            flag = {"bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos4": cv2.INTER_LANCZOS4, "nearest": cv2.INTER_NEAREST}[a.v]
            size = (pipe.size[1], pipe.size[0])
            sides += [lambda: cv2.resize(crop, size, interpolation=flag), lambda: cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)]
        t = interleaved(sides, 41)
        cost = max(t[0] - t[1], 0.0)
        if name == "resize_kernel":
            refs.append((f"cv2.resize {a.v} over bilinear, same crop (added cost)", max(t[2] - t[3], 1e-6)))
        else:
            refs.append(("the unperturbed pipeline (the added cost over it)", t[1]))
    best = min(refs, key=lambda r: r[1]) if refs else None
    ratio = cost / best[1] if best else float("nan")
    applies = name not in EXEMPT and best is not None
    return {"perturbation": name, "stage": p.stage, "ms": cost * 1e3, "ratio_to_inference": cost / infer,
            "references": [{"reference": label, "ms": t * 1e3} for label, t in refs],
            "fastest_reference": best[0] if best else None, "reference_ms": best[1] * 1e3 if best else None,
            "ratio_to_reference": ratio, "target_applies": applies, "exempt_because": EXEMPT.get(name),
            "meets_target": (not applies) or ratio <= TARGET}


def write(rows, infer, base) -> None:
    held = [r for r in rows if r["target_applies"]]
    missed = [r["perturbation"] for r in held if not r["meets_target"]]
    worst = max(held, key=lambda r: r["ratio_to_reference"])
    worst_inf = max((r for r in rows if r["perturbation"] != "fgsm"), key=lambda r: r["ratio_to_inference"])
    result = {"benchmark": "perturb_cost", "severity": SEVERITY, "torch_inference_ms": infer * 1e3, "pipeline_prepare_ms": base * 1e3,
              "threads": 1, "cpus": os.cpu_count(), "python": sys.version.split()[0], "rows": rows,
              "targets": [{"name": "unperturbed vehicle preprocessing vs one inference (one frame, one thread)", "measured": base / infer,
                           "unit": "x", "target": "<= 1", "met": base / infer <= 1.0},
                          {"name": f"every perturbation vs the fastest library doing the same ({len(held)} held to it; worst: {worst['perturbation']})",
                           "measured": worst["ratio_to_reference"], "unit": "x", "target": f"<= {TARGET}", "met": not missed, "missed": missed},
                          {"name": f"costliest perturbation vs one inference ({worst_inf['perturbation']}; fgsm excluded)",
                           "measured": worst_inf["ratio_to_inference"], "unit": "x", "target": "(reported)", "met": None}]}
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "perturb_cost.json", result)
    md = ["# Perturbation cost per frame", "",
          f"`make bench` (benchmarks/perturb_cost.py), one thread, 640x360 NV12 frame, severity {SEVERITY}. One torch inference of the "
          f"reference model: {infer * 1e3:.2f} ms; the vehicle pipeline itself: {base * 1e3:.2f} ms. `vs library` = parity's cost / the "
          f"fastest established implementation of the same operation on the same frame (target <= {TARGET}); deterministic references "
          "are checked to give parity's pixels; tables, kernels and maps are prepared outside the reference's timing.", "",
          "| perturbation | stage | ms | fastest reference | ref ms | vs library | vs inference | target |", "|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        verdict = f"exempt ({r['exempt_because']})" if r["exempt_because"] else ("met" if r["meets_target"] else "MISSED")
        ref = f"{r['fastest_reference']} | {r['reference_ms']:.3f} | {r['ratio_to_reference']:.2f}" if r["fastest_reference"] else "- | - | -"
        md.append(f"| {r['perturbation']} | {r['stage']} | {r['ms']:.3f} | {ref} | {r['ratio_to_inference']:.3f} | {verdict} |")
    md += ["", f"The unperturbed vehicle pipeline costs **{base / infer:.2f}x** one inference (target <= 1x). "
           f"Perturbations over {TARGET}x their library: {', '.join(missed) if missed else 'none'}. "
           f"Costliest against one inference: {worst_inf['perturbation']} ({worst_inf['ratio_to_inference']:.2f}x)."]
    (out / "perturb_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
