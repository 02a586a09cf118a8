"""Peak memory of `parity rank` over 2 and over 8 checkpoints of the zoo (the default suite, torch +
ort-fp16, both pipelines and crop_shift_x at severity 5, 3 s windows, a cold private cache). Each in
a fresh process that reports its own peak RSS. The evaluation units stream to the unit cache as
they finish; what stays in memory is each checkpoint's activated runners (a process keeps them for
the next case, as replay does). Writes reports/bench/rank_memory.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _result import write_result

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "checkpoints" / "zoo"


def child(cache: str, out: str, ckpts: list[str]) -> None:
    from parity.decisions.rank import RankConfig, rank

    _, summary, _ = rank(RankConfig(checkpoints=ckpts, cases=[str(ROOT / "cases" / "default")], runners="torch,ort-fp16",
                                    perturb="crop_shift_x", severities=[5], out=out, cache_dir=cache, progress=False, n_boot=500))
    print(json.dumps({"checkpoints": len(ckpts), "units": summary["units"]["total"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], a.child[2:])
    zoo = sorted(str(p) for p in ZOO.glob("*.pt"))
    if len(zoo) < 8:
        sys.exit("rank_memory: needs 8 checkpoints in checkpoints/zoo (make zoo)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity-rank-mem-") as tmp:
        for n in (2, 8):
            res = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / f"cache{n}"), str(Path(tmp) / f"out{n}"), *zoo[:n]],
                                 cwd=ROOT, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"rank_memory: rank of {n} exited {res.returncode}:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    per_ckpt = (rows[1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]) / 6
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    out = {"runs": rows, "ratio_8_vs_2": ratio, "mb_per_added_checkpoint": per_ckpt, "cpus": os.cpu_count(),
           "targets": [{"name": "rank peak memory, 8 vs 2 checkpoints", "measured": ratio, "unit": "x", "target": "flat (<= 1.25)",
                        "met": ratio <= 1.25}]}
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    write_result(dest / "rank_memory.json", out)
    md = ["# Rank memory", "", "`make bench` (benchmarks/rank_memory.py): `parity rank` of the zoo's first 2 and first 8 checkpoints on the default "
          "suite (torch + ort-fp16, both pipelines, crop_shift_x at severity 5, 3 s windows), each in a fresh process, cold cache.", "",
          "| checkpoints | units | peak RSS (MB) |", "|---:|---:|---:|"]
    md += [f"| {r['checkpoints']} | {r['units']} | {r['peak_rss_mb']:.0f} |" for r in rows]
    md += ["", f"8 vs 2 checkpoints: **{ratio:.2f}x** the peak memory, {per_ckpt:.0f} MB per added checkpoint (target: flat, <= 1.25x). "
           "Units stream to the cache as they finish; the growth is the activated runners each checkpoint keeps for the next case.", ""]
    (dest / "rank_memory.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
