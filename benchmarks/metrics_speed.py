"""All lane metrics on 10,000 frames x 4 lanes x 56 rows, on one core. Target: under 1 s in total.
Writes reports/bench/metrics_speed.{json,md}."""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from parity import metrics as M

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    rng = np.random.default_rng(0)
    T, L, R = 10_000, 4, 56
    rows = np.linspace(160, 710, R)
    t = np.arange(T) / 20.0
    gt = np.stack([np.linspace(640 - 300 * (k - 1.5), 640 - 60 * (k - 1.5), R) for k in range(L)])[None].repeat(T, 0)
    gt = gt + 30 * np.sin(t / 3)[:, None, None] + rng.normal(0, 0.5, (T, L, R))
    gt[:, 0, :12] = np.nan
    pred = gt + rng.normal(0, 4, gt.shape)
    pred[rng.random((T, L)) < 0.05] = np.nan
    ref = gt + rng.normal(0, 1, gt.shape)
    logits = rng.normal(0, 1, (T, 101, R, L)).astype(np.float32)
    logits_b = logits + rng.normal(0, 1e-3, logits.shape).astype(np.float32)
    look = list(M.lookahead_rows(R).values())
    steps = {
        "tusimple (accuracy, FP, FN)": lambda: M.tusimple_batch(pred, gt, rows, 1280),
        "culane F1 @0.5": lambda: M.culane_counts(pred, gt, rows, 1640, 0.5),
        "lateral difference": lambda: M.lateral_difference(pred, ref),
        "bending": lambda: M.bending(pred, ref, rows),
        "jitter (near/mid/far)": lambda: M.jitter(pred[:, :, look], ref[:, :, look], t),
        "raw tensor parity + argmax flips": lambda: (M.tensor_parity(logits, logits_b), M.argmax_flips(logits, logits_b)),
    }
    times = {}
    for name, fn in steps.items():
        fn()  # warm
        runs = []
        for _ in range(3):
            s = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - s)
        times[name] = min(runs)
    lane_total = sum(v for k, v in times.items() if not k.startswith("raw"))
    result = {"benchmark": "metrics_speed", "frames": T, "lanes": L, "rows": R, "seconds": times,
              "lane_metrics_total_s": lane_total, "target_s": 1.0, "python": sys.version.split()[0]}
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Metric speed", "", f"`make bench` (benchmarks/metrics_speed.py): {T:,} frames x {L} lanes x {R} rows, one core, best of 3.", "",
          "| metric | seconds |", "|---|---:|"]
    md += [f"| {k} | {v:.3f} |" for k, v in times.items()]
    md += ["", f"All lane metrics together: **{lane_total:.3f} s** (target < 1 s). Raw tensor parity runs on the "
           f"{T:,} x 101 x {R} x {L} logits ({logits.nbytes / 1e9:.1f} GB of float32 per runner), so it is reported apart."]
    (out / "metrics_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
