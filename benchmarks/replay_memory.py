"""Replay memory stays flat with case length: peak RSS of `parity replay` on 1,000 and 10,000 frames.

The long cases hard-link 60 rendered NV12 frames over and over (no disk cost, every frame still
read from its own file), so the measurement is of replay, not of the generator.
Writes reports/bench/replay_memory.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (1_000, 10_000)


def make_long_case(base: Path, out: Path, n: int) -> Path:
    meta = json.loads((base / "case.json").read_text())
    (out / "frames").mkdir(parents=True)
    frames = []
    for i in range(n):
        src = base / meta["frames"][i % len(meta["frames"])]["nv12"]
        rel = f"frames/{i:06d}.nv12"
        os.link(src, out / rel)
        frames.append({"t": round(i / meta["fps"], 6), "nv12": rel})
    meta.update(name=f"long_{n}", frames=frames, streams=["nv12"])
    meta.pop("lanes", None)
    (out / "case.json").write_text(json.dumps(meta))
    return out


def child(case: str, ckpt: str, out: str) -> None:
    from parity.runs.replay import ReplayConfig, replay

    t = time.perf_counter()
    res = replay(ReplayConfig(cases=[case], checkpoint=ckpt, runners="torch", pipelines="vehicle", out=out, progress=False))
    wall = time.perf_counter() - t
    frames = res.summary["results"][0]["frames"]
    print(json.dumps({"frames": frames, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)

    import torch

    from parity.models.checkpoint import save_checkpoint
    from parity.models.rowanchor import RowAnchorAdapter
    from parity.cases.synth import Scenario, write_case

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_case(Scenario("base", seed=1, frames=60), tmp / "base", streams=("nv12",))
        torch.manual_seed(0)
        adapter = RowAnchorAdapter()
        ckpt = save_checkpoint(tmp / "ckpt.pt", adapter.build().eval(), {"method": "random-init", "config": adapter.config.to_dict()})
        rows = []
        for n in LENGTHS:
            case = make_long_case(base, tmp / f"long_{n}", n)
            env = dict(os.environ, PARITY_CACHE_DIR=str(tmp / "cache"))
            res = subprocess.run([sys.executable, __file__, "--child", str(case), str(ckpt.path), str(tmp / f"run_{n}")],
                                 capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    result = {"benchmark": "replay_memory", "runner": "torch", "pipeline": "vehicle", "runs": rows,
              "peak_rss_ratio_10k_vs_1k": round(ratio, 3), "target": "ratio <= 1.25 (flat)",
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "targets": [{"name": "replay peak memory, 10,000 vs 1,000 frames", "measured": ratio, "unit": "x", "target": "<= 1.25",
                           "met": ratio <= 1.25}]}
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "replay_memory.json", result)
    md = ["# Replay memory vs case length", "", "`make bench` (benchmarks/replay_memory.py); torch runner, vehicle pipeline, NV12 640x360.", "",
          "| frames | peak RSS (MB) | wall (s) | frames/s |", "|---:|---:|---:|---:|"]
    md += [f"| {r['frames']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | {r['frames'] / r['wall_s']:.0f} |" for r in rows]
    md += ["", f"Peak RSS ratio 10,000 / 1,000 frames: **{ratio:.2f}** (target <= 1.25: memory is flat in case length)."]
    (out / "replay_memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
