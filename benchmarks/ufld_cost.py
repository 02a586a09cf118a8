"""UFLD-R18 (Ultra-Fast-Lane-Detection v1, CULane config, 288x800) on every CPU runner: per-frame cost,
and what replay adds over a bare loop of the same work with a model whose inference dominates.

A random-weight UFLD-R18 (parity's `ufld` adapter, seeded: the cost does not depend on the weights),
vehicle pipeline, batches of 16, side by side in one run: the bare loop (frames read, prepared with
the same Pipeline.prepare, fed to the same already activated runners, nothing else) and `parity
replay` of the same runners (torch, ort-fp32, ort-fp16, cpu-fp16) as a command, each on a 16- and a
48-frame case. A command pays a fixed cost the loop does not (interpreter and torch start-up,
building and activating four runners of a 45 M-parameter model: seconds); the per-frame figure is
what each extra frame costs: (t48 - t16) / 32. Target: replay's per-frame cost within 1.1x of the
loop's. Per-runner cost: inference time per frame inside the loop. Writes reports/bench/ufld_cost.{json,md}.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ["torch", "ort-fp32", "ort-fp16", "cpu-fp16"]
SIZES = (16, 48)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bare_loop(ckpt_path: str, case_dir: Path, cache: str) -> tuple[float, dict]:
    from parity.cases.format import load_case
    from parity.models.checkpoint import load_checkpoint
    from parity.runners import create
    from parity.runners.artifacts import ArtifactCache

    ckpt = load_checkpoint(ckpt_path)
    pipe = ckpt.adapter().pipelines()["vehicle"]
    runners = [create(n, ckpt, ArtifactCache(cache)) for n in RUNNERS]
    for r in runners:
        r.activate()
    try:
        case = load_case(case_dir)
        t = time.perf_counter()
        for s in range(0, len(case), 16):
            x = pipe.prepare(case, range(s, min(s + 16, len(case))))
            for r in runners:
                r.infer({"image": x})
        total = time.perf_counter() - t
        return total, {r.name: r.total_inference_time / len(case) * 1e3 for r in runners}
    finally:
        for r in runners:
            r.deactivate()


def main() -> None:
    from parity.cases.suites import scenario
    from parity.cases.synth import write_case
    from parity.models.checkpoint import save_checkpoint
    from parity.models.ufld import UfldAdapter, UfldConfig

    import torch

    with tempfile.TemporaryDirectory(prefix="parity-ufld-bench-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        cfg = UfldConfig.from_dict({"name": "culane-r18"})
        ck = save_checkpoint(tmp / "ufld-r18.pt", UfldAdapter(cfg).build().eval(), {"adapter": "ufld", "config": cfg.to_dict(), "method": "random-init"})
        cases = {n: write_case(scenario("straight_day", frames=n), tmp / f"cases{n}" / "straight_day") for n in SIZES}
        cache = str(tmp / "cache")
        bare_loop(str(ck.path), cases[SIZES[0]], cache)  # warm: ONNX export, fp16 graph, page cache

        def replay(n: int) -> float:
            cmd = [sys.executable, "-m", "parity", "replay", "--cases", str(cases[n]), "--checkpoint", str(ck.path), "--runners", ",".join(RUNNERS),
                   "--pipeline", "vehicle", "--cache-dir", cache, "--out", str(tmp / f"run{n}"), "--no-progress", "--no-report"]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"ufld_cost: replay exited {res.returncode}:\n{res.stderr[-2000:]}")
            return time.perf_counter() - t

        bare, rep, ms = {}, {}, {}
        for n in SIZES:  # interleaved: loop, command, loop, command
            bare[n], per = bare_loop(str(ck.path), cases[n], cache)
            rep[n] = replay(n)
            if n == SIZES[-1]:
                ms = per
    lo, hi = SIZES
    bare_frame, rep_frame = (bare[hi] - bare[lo]) / (hi - lo), (rep[hi] - rep[lo]) / (hi - lo)
    ratio = rep_frame / bare_frame
    fixed = rep[lo] - lo * rep_frame
    out = {"sizes": list(SIZES), "cpu": cpu_model(), "cpus": os.cpu_count(), "bare_s": bare, "replay_s": rep, "ms_per_frame": ms,
           "bare_s_per_frame": bare_frame, "replay_s_per_frame": rep_frame, "replay_fixed_s": fixed, "replay_over_bare_per_frame": ratio,
           "targets": [{"name": "UFLD-R18 288x800: replay's per-frame cost (4 CPU runners) over a bare loop's", "measured": ratio, "unit": "x",
                        "target": "<= 1.1x", "met": ratio <= 1.1},
                       *({"name": f"UFLD-R18 288x800 {n}: inference per frame", "measured": ms[n], "unit": "ms", "target": "-", "met": None}
                         for n in RUNNERS)]}
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    write_result(dest / "ufld_cost.json", out)
    md = ["# UFLD-R18 on the CPU runners", "",
          f"`make bench BENCH=ufld_cost` (benchmarks/ufld_cost.py), {out['cpus']} CPUs ({out['cpu']}), synthetic cases of {lo} and {hi} "
          "frames, vehicle pipeline, batches of 16, random weights (UFLD v1 CULane config: ResNet-18, 288x800, 201 x 18 x 4 logits), "
          "one run, interleaved.", "",
          "| runner | inference per frame (ms) |", "|---|---:|", *(f"| {n} | {ms[n]:.1f} |" for n in RUNNERS), "",
          f"Per extra frame (all four runners): bare loop {bare_frame:.2f} s, `parity replay` {rep_frame:.2f} s: **{ratio:.2f}x** "
          f"(target <= 1.1x). The command's fixed cost (start-up, building and activating the runners) is {fixed:.1f} s "
          f"(replay of {lo} frames {rep[lo]:.1f} s, of {hi} {rep[hi]:.1f} s; loop {bare[lo]:.1f} s and {bare[hi]:.1f} s).", ""]
    (dest / "ufld_cost.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
