"""Time of `parity rank` over the zoo on the default suite, and of re-ranking after adding one checkpoint.

Three runs of the same command as `make rank` (runners torch,ort-fp16; the deploy perturbations at
severities 1,3,5; 3 s windows), side by side in one process tree, on a private cache folder so the
first is cold (ONNX exports and every unit computed):
1. the zoo (N checkpoints), cold;
2. the zoo plus one new checkpoint (a uniform soup of `erm` and `swa`, made here): only its units
   should be evaluated, so the time should be about 1/N of the first;
3. the same again: every unit from the cache.
Needs `make zoo` (the Makefile's bench target builds it), or `--stand-ins N`: N checkpoints made
here from the committed reference with seeded weight noise (the same architecture, so the same
inference and scoring cost as a trained zoo; what they rank is meaningless), for the added-checkpoint
ratio without hours of training. Writes reports/bench/rank_time.{json,md}.
Target: the cold rank within 30 minutes on 2 cores; the added checkpoint about 1/N of it.
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
ZOO = ROOT / "checkpoints" / "zoo"
CASES = ROOT / "cases" / "default"
TARGET_S = 30 * 60


def rank(ckpts: list[str], cache: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "parity", "rank", "--checkpoints", *ckpts, "--cases", str(CASES), "--runners", "torch,ort-fp16",
           "--perturb", "deploy", "--severities", "1,3,5", "--cache-dir", str(cache), "--out", str(out), "--no-progress"]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"rank_time: parity rank exited {res.returncode}:\n{res.stderr[-3000:]}")
    units = json.loads((out / "rank.json").read_text())["units"]
    return {"wall_s": wall, "checkpoints": len(json.loads((out / "rank.json").read_text())["leaderboard"]), **units}


def extra_checkpoint(path: Path) -> str:
    """A new candidate the zoo does not have: the uniform soup of erm and swa."""
    from parity.models.checkpoint import load_checkpoint, save_checkpoint
    from parity.training.recipes.soups import average

    a, b = load_checkpoint(ZOO / "erm.pt"), load_checkpoint(ZOO / "swa.pt")
    model = a.build_model()
    model.load_state_dict(average([a.build_model().state_dict(), b.build_model().state_dict()]))
    meta = {k: a.meta[k] for k in ("adapter", "config") if k in a.meta}
    meta.update(method="soup-uniform(erm,swa)", parents=[{"path": str(c.path), "sha256": c.sha256} for c in (a, b)])
    return str(save_checkpoint(path, model, meta).path)


def stand_in(path: Path, seed: int) -> str:
    """The reference with 2% seeded noise on every weight tensor: a checkpoint of the zoo's architecture."""
    import torch

    from parity.models.checkpoint import load_checkpoint, save_checkpoint

    ref = load_checkpoint(ROOT / "checkpoints" / "reference.pt")
    model = ref.build_model()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * p.std() * torch.randn(p.shape, generator=g))
    return str(save_checkpoint(path, model, dict(ref.meta, name=path.stem, method=f"stand-in-{seed}")).path)


def main() -> None:
    n_stand_ins = int(sys.argv[sys.argv.index("--stand-ins") + 1]) if "--stand-ins" in sys.argv else 0
    zoo = sorted(str(p) for p in ZOO.glob("*.pt"))
    if not (zoo or n_stand_ins) or not (CASES / "straight_day" / "case.json").is_file():
        sys.exit("rank_time: needs checkpoints/zoo/*.pt (make zoo) or --stand-ins N, and cases/default")
    with tempfile.TemporaryDirectory(prefix="parity-rank-bench-") as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(ROOT))
        if n_stand_ins:
            zoo = [stand_in(tmp / "zoo" / f"stand-in-{i}.pt", i) for i in range(n_stand_ins)]
        cache = tmp / "cache"
        full = rank(zoo, cache, tmp / "full")
        extra = stand_in(tmp / "extra" / "stand-in-new.pt", 1000) if n_stand_ins else extra_checkpoint(tmp / "extra" / "soup-erm-swa.pt")
        added = rank(zoo + [extra], cache, tmp / "added")
        again = rank(zoo + [extra], cache, tmp / "again")
    n = full["checkpoints"]
    res = {
        "cpus": os.cpu_count(), "zoo_checkpoints": n, "stand_ins": bool(n_stand_ins), "full": full, "added_one": added, "all_cached": again,
        "added_over_full": added["wall_s"] / full["wall_s"], "one_over_n": 1 / n,
        "target_full_s": TARGET_S, "full_met": full["wall_s"] <= TARGET_S,
    }
    zoo_name = f"{n} stand-in checkpoints (the reference + noise)" if n_stand_ins else f"the zoo ({n} checkpoints)"
    res["targets"] = [
        {"name": f"make rank over {zoo_name}, cold", "measured": full["wall_s"] / 60, "unit": "min", "target": "<= 30",
         "met": res["full_met"]},
        {"name": f"re-rank after adding one checkpoint to {zoo_name}, vs the cold rank", "measured": res["added_over_full"], "unit": "x",
         "target": f"about 1/N = {1 / n:.3f} (<= 2/N)", "met": res["added_over_full"] <= 2 / n},
    ]
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "rank_time.json", res)
    md = [
        "# Rank time",
        "",
        f"`make bench` (benchmarks/rank_time.py{' --stand-ins ' + str(n) if n_stand_ins else ''}): `parity rank` over {zoo_name} on the default suite "
        "(9 cases, one 3 s window each), runners torch + ort-fp16, training and vehicle pipelines unperturbed and the "
        f"10 deploy perturbations x severities 1,3,5 on the vehicle pipeline; {os.cpu_count()} CPUs, one run after the other "
        "on a private cache folder.",
        "",
        "| run | wall s | units | evaluated | from the cache |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in (("the zoo, cold cache", full), ("zoo + 1 new checkpoint", added), ("the same again", again)):
        md.append(f"| {label} | {r['wall_s']:.1f} | {r['total']} | {r['evaluated']} | {r['cached']} |")
    md += [
        "",
        f"Cold rank: **{full['wall_s'] / 60:.1f} min** (target <= 30 min: {'met' if res['full_met'] else 'MISSED'}). "
        f"Adding one checkpoint costs **{res['added_over_full']:.3f}x** the cold rank (1/N = {1 / n:.3f}; "
        "both export each new checkpoint's ONNX graphs; the added run reads every condition's prepared inputs "
        "from the cold run's, parity.runs.prepared). "
        f"A fully cached re-rank: {again['wall_s']:.1f} s.",
        "",
    ]
    (out / "rank_time.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
