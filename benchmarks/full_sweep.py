"""The full-sequence sweep of the default suite: every frame of the 9 cases, all 30 perturbations x
severities 1..5, torch + ort-fp16, on 2 workers (`parity sweep --window-s 0 --perturb all --workers 2`).
Target: within 10 minutes on 2 cores. Needs make replay. Writes reports/bench/full_sweep.{json,md}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 600


def main() -> None:
    cases, ckpt = ROOT / "cases" / "default", ROOT / "checkpoints" / "reference.pt"
    if not (cases / "night" / "case.json").is_file() or not ckpt.is_file():
        sys.exit("full_sweep: needs cases/default and checkpoints/reference.pt (make replay)")
    workers = min(2, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="parity-full-sweep-") as tmp:
        cmd = [sys.executable, "-m", "parity", "sweep", "--cases", str(cases), "--checkpoint", str(ckpt), "--runners", "torch,ort-fp16",
               "--perturb", "all", "--severities", "1..5", "--window-s", "0", "--workers", str(workers), "--no-progress",
               "--cache-dir", str(Path(tmp) / "cache"), "--out", str(Path(tmp) / "sweep")]
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if res.returncode not in (0, 1):  # 1: a finding (a perturbation made a runner produce NaN) is a result
            sys.exit(f"full_sweep: parity sweep exited {res.returncode}:\n{res.stderr[-2000:]}")
        summary = json.loads((Path(tmp) / "sweep" / "summary.json").read_text())
    perts = len(summary["provenance"]["perturbations"])
    frames = sum(r["frames"] for r in summary["results"] if r["runner"] == "torch")
    out = {"wall_s": wall, "workers": workers, "perturbations": perts, "severities": 5, "frame_conditions": frames,
           "frames_per_s": frames / wall, "errors": len(summary["errors"]), "cpus": os.cpu_count(),
           "targets": [{"name": f"full-sequence sweep of the default suite ({perts} perturbations x 5 severities, torch + ort-fp16)",
                        "measured": wall / 60, "unit": "min", "target": "<= 10", "met": wall <= TARGET_S}]}
    dest = ROOT / "reports" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    write_result(dest / "full_sweep.json", out)
    md = ["# Full-sequence sweep of the default suite", "",
          f"`make bench` (benchmarks/full_sweep.py): `parity sweep --cases cases/default --window-s 0 --perturb all --severities 1..5 "
          f"--runners torch,ort-fp16 --workers {workers}` ({os.cpu_count()} CPUs): {perts} perturbations x 5 severities + the clean "
          f"pass over every frame of the 9 cases, {frames:,} frame x condition pairs per runner.", "",
          f"Wall time **{wall / 60:.1f} min** (target <= 10 min: {'met' if wall <= TARGET_S else 'MISSED'}), "
          f"{frames / wall:.0f} frame-conditions per second for both runners together; {len(summary['errors'])} failed cases.", ""]
    (dest / "full_sweep.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
