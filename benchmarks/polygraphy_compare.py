"""parity's fp32-vs-fp16 comparison against Polygraphy's, on the same ONNX files and the same inputs.

Polygraphy (NVIDIA's `polygraphy run`, from PyPI: `pip install -e '.[bench]'`) is given the exact
model inputs parity's vehicle pipeline makes for the 9 default cases (1,080 frames, batches of 16,
from a data-loader script), runs the fp32 export and saves its outputs, then runs the fp16 graph and
compares with them: two commands. parity does the whole job from the recorded NV12 frames:
`parity replay --runners ort-fp32,ort-fp16 --pipeline vehicle`, which also runs torch fp32 (its
parity reference), decodes the lanes and scores every metric. Both sides timed as commands,
interleaved, medians. Target: parity no slower, with its preprocessing, torch and metrics on its side.
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

        def parity(i: int) -> float:
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "parity", "replay", "--cases", str(CASES), "--checkpoint", str(CKPT), "--runners",
                                  "ort-fp32,ort-fp16", "--pipeline", "vehicle", "--cache-dir", cache, "--no-progress", "--no-report",
                                  "--out", str(tmp / f"replay-{i}")], cwd=ROOT, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"polygraphy_compare: parity replay exited {res.returncode}:\n{res.stderr[-2000:]}")
            spent = time.perf_counter() - t
            summary = json.loads((tmp / f"replay-{i}" / "summary.json").read_text())
            infer_s.append({r["runner"]: r["frames"] / r["fps"] for r in summary["results"]})  # fps: inference alone
            return spent

        poly_s, parity_s, infer_s = [], [], []
        for i in range(3):
            poly_s.append(polygraphy())
            parity_s.append(parity(i))
        frames = len(x)
    ratio = statistics.median(parity_s) / statistics.median(poly_s)
    infer = {k: statistics.median(run[k] for run in infer_s) for k in infer_s[0]}
    rest = statistics.median(parity_s) - sum(infer.values())
    out = {"frames": frames, "polygraphy_s": poly_s, "parity_s": parity_s, "parity_over_polygraphy": ratio, "cpus": os.cpu_count(),
           "parity_inference_s": infer, "parity_rest_s": rest,
           "targets": [{"name": "parity's fp32-vs-fp16 comparison (with preprocessing, torch and metrics) vs Polygraphy's two runs",
                        "measured": ratio, "unit": "x the time", "target": "<= 1 (no slower)", "met": ratio <= 1.0}]}
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    write_result(dest / "polygraphy_compare.json", out)
    md = ["# parity vs Polygraphy comparing fp32 and fp16", "",
          f"`make bench` (benchmarks/polygraphy_compare.py), {os.cpu_count()} CPUs, interleaved, 3 runs each, {frames:,} frames in batches "
          "of 16, the same ONNX files (parity's fp32 export and its fp16 graph) and the same input tensors.", "",
          "| side | what it does | wall s (each run) | median |", "|---|---|---|---:|",
          f"| Polygraphy | `polygraphy run fp32.onnx --onnxrt --save-outputs`, then `polygraphy run fp16.onnx --onnxrt --load-outputs` "
          f"(compare) on preprocessed tensors | {', '.join(f'{v:.1f}' for v in poly_s)} | {statistics.median(poly_s):.1f} |",
          f"| parity | `parity replay --runners ort-fp32,ort-fp16 --pipeline vehicle` from the NV12 frames: preprocessing, torch fp32 "
          f"(its reference), both ONNX runners, lane decoding, every metric, tables | {', '.join(f'{v:.1f}' for v in parity_s)} | "
          f"{statistics.median(parity_s):.1f} |", "",
          f"parity takes **{ratio:.2f}x** Polygraphy's time (target <= 1x) while also preprocessing, running torch and scoring.", "",
          "Where parity's time goes (medians over its runs; inference as each runner timed it): "
          + ", ".join(f"{k} inference {v:.1f} s" for k, v in infer.items())
          + f", together {sum(infer.values()):.1f} s = {sum(infer.values()) / statistics.median(poly_s):.2f}x Polygraphy's whole time; "
          f"the rest {rest:.1f} s (interpreter and library start-up, reading and preprocessing the NV12 frames, decoding lanes, every "
          "metric, tables). With torch as its reference parity runs three models where Polygraphy runs two.", ""]
    (dest / "polygraphy_compare.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
