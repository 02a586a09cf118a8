"""parity's fp32-vs-fp16 comparison against Polygraphy's, on the same ONNX files and the same inputs.

Polygraphy (NVIDIA's `polygraphy run`, from PyPI: `pip install -e '.[bench]'`) is given the exact
model inputs parity's vehicle pipeline makes for the 9 default cases (1,080 frames, batches of 16,
from a data-loader script), runs the fp32 export and saves its outputs, then runs the fp16 graph and
compares with them: two commands. parity does the whole job from the recorded NV12 frames, three ways:
- on the same ONNX file, as Polygraphy: `parity replay --onnx fp32.onnx --adapter rowanchor --runners
  ort-fp16 --pipeline vehicle` (an ONNX-only model: its parity reference is ONNX Runtime fp32 on that
  graph, Polygraphy's reference; two models run);
- from the checkpoint, fp32 against fp16: `parity replay --checkpoint reference.pt --runners ort-fp16`:
  torch fp32 (its parity reference, imported and run) against the fp16 graph; two models run;
- from the checkpoint with ONNX Runtime fp32 beside them: `--runners ort-fp32,ort-fp16`, three models
  run (reported: a third model Polygraphy's comparison does not have).
Each also preprocesses, decodes the lanes and scores every metric. Every side timed as a command,
interleaved, medians. Target for the two-model comparisons: parity no slower.
Writes reports/bench/polygraphy_compare.{json,md}.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases" / "default"
CKPT = ROOT / "checkpoints" / "reference.pt"

LOADER = '''
import numpy as np
X = np.load({path!r}, mmap_mode="r")
def load_data():
    for s in range(0, len(X), 16):
        yield {{{name!r}: np.ascontiguousarray(X[s:s + 16])}}
'''


def main() -> None:
    poly = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    if not Path(poly).exists():
        sys.exit("polygraphy_compare: polygraphy is not installed (pip install -e '.[bench]')")
    if not (CASES / "night" / "case.json").is_file() or not CKPT.is_file():
        sys.exit("polygraphy_compare: needs cases/default and checkpoints/reference.pt (make replay)")
    from parity.cases.discovery import find_cases
    from parity.cases.format import load_case
    from parity.models.checkpoint import load_checkpoint
    from parity.runners import create
    from parity.runners.artifacts import ArtifactCache

    with tempfile.TemporaryDirectory(prefix="parity-polygraphy-") as tmp:
        tmp = Path(tmp)
        cache = str(tmp / "cache")
        ckpt = load_checkpoint(CKPT)
        pipe = ckpt.adapter().pipelines()["vehicle"]
        paths = {}
        for name in ("ort-fp32", "ort-fp16"):
            r = create(name, ckpt, ArtifactCache(cache))
            with r:
                paths[name] = str(r.onnx_path)
                input_name = next(iter(r.io_spec()))
        cases = [load_case(p) for p in find_cases([str(CASES)])]
        x = np.concatenate([pipe.prepare(c, range(s, min(s + 16, len(c)))) for c in cases for s in range(0, len(c), 16)])
        np.save(tmp / "inputs.npy", x)
        (tmp / "loader.py").write_text(LOADER.format(path=str(tmp / "inputs.npy"), name=input_name))

        def polygraphy() -> float:
            t = time.perf_counter()
            for cmd in ([poly, "run", paths["ort-fp32"], "--onnxrt", "--data-loader-script", str(tmp / "loader.py"),
                         "--save-outputs", str(tmp / "fp32.json")],
                        [poly, "run", paths["ort-fp16"], "--onnxrt", "--data-loader-script", str(tmp / "loader.py"),
                         "--load-outputs", str(tmp / "fp32.json"), "--atol", "1e9", "--rtol", "1e9"]):
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"polygraphy_compare: {' '.join(cmd[:3])} exited {res.returncode}:\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
            return time.perf_counter() - t

        routes = {"onnx": ["--onnx", paths["ort-fp32"], "--adapter", "rowanchor", "--runners", "ort-fp16"],
                  "torch": ["--checkpoint", str(CKPT), "--runners", "ort-fp16"],
                  "checkpoint": ["--checkpoint", str(CKPT), "--runners", "ort-fp32,ort-fp16"]}

        def parity(route: str, i: int) -> tuple[float, dict]:
            out = tmp / f"replay-{route}-{i}"
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "parity", "replay", "--cases", str(CASES), *routes[route], "--pipeline", "vehicle",
                                  "--cache-dir", cache, "--no-progress", "--no-report", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"polygraphy_compare: parity replay ({route}) exited {res.returncode}:\n{res.stderr[-2000:]}")
            spent = time.perf_counter() - t
            summary = json.loads((out / "summary.json").read_text())
            return spent, {r["runner"]: r["frames"] / r["fps"] for r in summary["results"]}  # fps: inference alone

        parity("onnx", -1)  # the fp16 graph of the ONNX-only model is converted and cached once, outside the timings
        poly_s, parity_s, infer_s = [], {k: [] for k in routes}, {k: [] for k in routes}
        for i in range(3):
            poly_s.append(polygraphy())
            for route in routes:
                spent, infer = parity(route, i)
                parity_s[route].append(spent)
                infer_s[route].append(infer)
        frames = len(x)
    poly = statistics.median(poly_s)
    out = {"frames": frames, "polygraphy_s": poly_s, "cpus": os.cpu_count(), "routes": {}}
    for route in routes:
        med = statistics.median(parity_s[route])
        infer = {k: statistics.median(run[k] for run in infer_s[route]) for k in infer_s[route][0]}
        out["routes"][route] = {"parity_s": parity_s[route], "parity_over_polygraphy": med / poly, "parity_inference_s": infer,
                                "parity_rest_s": med - sum(infer.values())}
    what = {"onnx": "on the same ONNX file (its reference ONNX Runtime fp32, as Polygraphy's; 2 models)",
            "torch": "from the checkpoint (torch fp32, imported and run, against ort-fp16; 2 models)",
            "checkpoint": "from the checkpoint with ort-fp32 beside torch and ort-fp16 (3 models)"}
    held = {"onnx", "torch"}  # the two-model comparisons, as Polygraphy's; the third model is reported
    out["targets"] = [{"name": f"parity's fp32-vs-fp16 comparison {what[k]}, with preprocessing and every metric, vs Polygraphy's two runs",
                       "measured": v["parity_over_polygraphy"], "unit": "x the time", "target": "<= 1 (no slower)" if k in held else "(reported)",
                       "met": v["parity_over_polygraphy"] <= 1.0 if k in held else None} for k, v in out["routes"].items()]
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    write_result(dest / "polygraphy_compare.json", out)
    md = ["# parity vs Polygraphy comparing fp32 and fp16", "",
          f"`make bench` (benchmarks/polygraphy_compare.py), {os.cpu_count()} CPUs, interleaved, 3 runs each, {frames:,} frames in batches "
          "of 16, the same ONNX files (parity's fp32 export and its fp16 graph) and the same input tensors.", "",
          "| side | what it does | wall s (each run) | median |", "|---|---|---|---:|",
          f"| Polygraphy | `polygraphy run fp32.onnx --onnxrt --save-outputs`, then `polygraphy run fp16.onnx --onnxrt --load-outputs` "
          f"(compare) on preprocessed tensors | {', '.join(f'{v:.1f}' for v in poly_s)} | {statistics.median(poly_s):.1f} |",
          f"| parity, ONNX-only | `parity replay --onnx fp32.onnx --adapter rowanchor --runners ort-fp16 --pipeline vehicle` from the NV12 "
          f"frames: preprocessing, ONNX Runtime fp32 (its reference) and fp16, lane decoding, every metric, tables | "
          f"{', '.join(f'{v:.1f}' for v in parity_s['onnx'])} | {statistics.median(parity_s['onnx']):.1f} |",
          f"| parity, checkpoint, fp32 vs fp16 | `parity replay --checkpoint reference.pt --runners ort-fp16 --pipeline vehicle`: the same "
          f"with torch fp32 (imported and run) as its reference | {', '.join(f'{v:.1f}' for v in parity_s['torch'])} | "
          f"{statistics.median(parity_s['torch']):.1f} |",
          f"| parity, checkpoint, 3 models | `parity replay --checkpoint reference.pt --runners ort-fp32,ort-fp16 --pipeline vehicle`: the "
          f"same with ort-fp32 beside them | {', '.join(f'{v:.1f}' for v in parity_s['checkpoint'])} | "
          f"{statistics.median(parity_s['checkpoint']):.1f} |", ""]
    for route, label in (("onnx", "On the same ONNX file"), ("torch", "From the checkpoint, torch fp32 against ort-fp16,"),
                         ("checkpoint", "From the checkpoint with ort-fp32 as a third model (reported)")):
        v = out["routes"][route]
        target = "target <= 1x" if route in held else "no target: Polygraphy runs two models"
        md.append(f"{label} parity takes **{v['parity_over_polygraphy']:.2f}x** Polygraphy's time ({target}). Where its time goes "
                  "(medians; inference as each runner timed it): " + ", ".join(f"{_runner(route, k)} inference {s:.1f} s" for k, s in v["parity_inference_s"].items())
                  + f", together {sum(v['parity_inference_s'].values()):.1f} s = {sum(v['parity_inference_s'].values()) / poly:.2f}x "
                  f"Polygraphy's whole time; the rest {v['parity_rest_s']:.1f} s (interpreter and library start-up, reading and "
                  "preprocessing the NV12 frames, decoding lanes, every metric, tables).")
        md.append("")
    (dest / "polygraphy_compare.md").write_text("\n".join(md))
    print("\n".join(md))


def _runner(route: str, name: str) -> str:
    """An ONNX-only model's reference keeps the reference runner's name, torch, but runs ONNX Runtime fp32."""
    return "the reference (ONNX Runtime fp32, runner `torch`)" if route == "onnx" and name == "torch" else name


if __name__ == "__main__":
    main()
