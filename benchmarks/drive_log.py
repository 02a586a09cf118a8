"""Drive logs: import throughput of `parity cases import bag`, and replay from the log (frames read
lazily from it) against replay of the same frames copied out as NV12 files, on 1,000- and
10,000-frame logs; peak memory must stay flat in the log's length.

ROS 1 bag (rosbags' writer, uncompressed chunks) and a bare MCAP file (rosbags' ROS 2 MCAP writer),
NV12 320x180 with a padded step (384 bytes), 60 distinct frames cycled. Each import and replay is
a child process: its peak RSS is its own. Replay: torch runner, vehicle pipeline, random-weight
reference model. Writes reports/bench/drive_log.{json,md}.
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
sys.path.insert(0, str(ROOT))
LENGTHS = (1_000, 10_000)
TOPIC = "/camera/front/image_raw"


def write_log(path: Path, n: int, fmt: str) -> Path:
    from tests import drive_logs as D

    if fmt == "rosbag1":
        from rosbags.rosbag1 import Writer
        from rosbags.typesys import Stores, get_typestore

        ts, ser = get_typestore(Stores.ROS1_NOETIC), "serialize_ros1"
        writer = Writer(path)
    else:
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import Stores, get_typestore

        ts, ser = get_typestore(Stores.ROS2_HUMBLE), "serialize_cdr"
        writer = Writer(path.with_suffix(""), version=8, storage_plugin=StoragePlugin.MCAP)
    T = ts.types
    frames = [D.encoded("nv12", D.road(i), 64) for i in range(60)]
    with writer as w:
        c = w.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i in range(n):
            ns = 10**18 + i * 100_000_000
            data, h, step = frames[i % 60]
            stamp = T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
            header = T["std_msgs/msg/Header"](seq=i, stamp=stamp, frame_id="c") if fmt == "rosbag1" else T["std_msgs/msg/Header"](stamp=stamp, frame_id="c")
            msg = T["sensor_msgs/msg/Image"](header=header, height=h, width=D.W, encoding="nv12", is_bigendian=0, step=step, data=data)
            w.write(c, ns, getattr(ts, ser)(msg, "sensor_msgs/msg/Image"))
    if fmt == "mcap":  # the bare .mcap file out of the bag folder: no metadata.yaml, read by the mcap library
        bare = next(path.with_suffix("").glob("*.mcap"))
        bare.rename(path)
    return path


def copy_out(case: Path, out: Path) -> Path:
    """The same frames as NV12 files in an ordinary case (what a copying importer would write)."""
    from parity.cases.format import load_case

    c = load_case(case)
    meta = json.loads((case / "case.json").read_text())
    (out / "frames").mkdir(parents=True)
    frames = []
    for i in range(len(c)):
        rel = f"frames/{i:06d}.nv12"
        c.read(i, "nv12").tofile(out / rel)
        frames.append({"t": meta["frames"][i]["t"], "nv12": rel})
    for k in ("log",):
        meta.pop(k)
    meta.update(name=meta["name"] + "_files", frames=frames)
    (out / "case.json").write_text(json.dumps(meta))
    return out


def child_import(log: str, out: str) -> None:
    from parity.cases.logs.importer import import_log

    t = time.perf_counter()
    root, notes = import_log(log, TOPIC, out)
    wall = time.perf_counter() - t
    print(json.dumps({"case": str(root), "frames": notes["frames"], "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_replay(case: str, ckpt: str, out: str) -> None:
    from parity.runs.replay import ReplayConfig, replay

    t = time.perf_counter()
    res = replay(ReplayConfig(cases=[case], checkpoint=ckpt, runners="torch", pipelines="vehicle", out=out, progress=False))
    wall = time.perf_counter() - t
    print(json.dumps({"frames": res.summary["results"][0]["frames"], "wall_s": wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _child(env, *args) -> dict:
    res = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--import-child", nargs=2)
    ap.add_argument("--replay-child", nargs=3)
    args = ap.parse_args()
    if args.import_child:
        return child_import(*args.import_child)
    if args.replay_child:
        return child_replay(*args.replay_child)

    import torch

    from parity.models.checkpoint import save_checkpoint
    from parity.models.rowanchor import RowAnchorAdapter
    from ufld_cost import cpu_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        adapter = RowAnchorAdapter()
        ckpt = save_checkpoint(tmp / "ckpt.pt", adapter.build().eval(), {"method": "random-init", "config": adapter.config.to_dict()})
        env = dict(os.environ, PARITY_CACHE_DIR=str(tmp / "cache"))
        for fmt, suffix in (("rosbag1", ".bag"), ("mcap", ".mcap")):
            for n in LENGTHS:
                log = write_log(tmp / f"{fmt}_{n}{suffix}", n, fmt)
                imp = _child(env, "--import-child", log, tmp / f"cases_{fmt}_{n}")
                rep = _child(env, "--replay-child", imp["case"], ckpt.path, tmp / f"run_{fmt}_{n}")
                row = {"format": fmt, "frames": n, "log_mb": log.stat().st_size / 2**20, "import_s": imp["wall_s"],
                       "import_fps": n / imp["wall_s"], "import_peak_rss_mb": imp["peak_rss_mb"],
                       "replay_s": rep["wall_s"], "replay_peak_rss_mb": rep["peak_rss_mb"]}
                if n == LENGTHS[0]:
                    files = copy_out(Path(imp["case"]), tmp / f"files_{fmt}_{n}")
                    ref = _child(env, "--replay-child", files, ckpt.path, tmp / f"run_files_{fmt}_{n}")
                    row.update(files_replay_s=ref["wall_s"], files_replay_peak_rss_mb=ref["peak_rss_mb"])
                rows.append(row)
                print(row, flush=True)
                log.unlink()
    by = {(r["format"], r["frames"]): r for r in rows}
    targets = []
    for fmt in ("rosbag1", "mcap"):
        ratio = by[(fmt, LENGTHS[1])]["replay_peak_rss_mb"] / by[(fmt, LENGTHS[0])]["replay_peak_rss_mb"]
        targets.append({"name": f"replay peak memory from a {fmt} log, 10,000 vs 1,000 frames", "measured": ratio, "unit": "x",
                        "target": "<= 1.25", "met": ratio <= 1.25})
    result = {"benchmark": "drive_log", "runs": rows, "targets": targets,
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    out = ROOT / "reports" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "drive_log.json", result)
    md = ["# Drive logs: import and lazy replay", "",
          f"`make bench` (benchmarks/drive_log.py) on {cpu_model()}, {os.cpu_count()} CPUs; NV12 320x180 (step 384), torch runner, "
          "vehicle pipeline; each figure a child process of its own.", "",
          "| log | frames | log MB | import s | import frames/s | import peak MB | replay s | replay peak MB | same frames as files: replay s |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['format']} | {r['frames']} | {r['log_mb']:.0f} | {r['import_s']:.2f} | {r['import_fps']:.0f} | {r['import_peak_rss_mb']:.0f} | "
           f"{r['replay_s']:.1f} | {r['replay_peak_rss_mb']:.0f} | {r.get('files_replay_s', float('nan')):.1f} |" for r in rows]
    md += [""] + [f"- {t['name']}: **{t['measured']:.2f}x** (target {t['target']}: {'met' if t['met'] else 'MISSED'})" for t in targets]
    md += ["- the import reads every message once (sizes, steps, stamps checked; pixels not decoded) and hashes the log; "
           "nothing is copied, so the case costs a case.json (about 60 bytes per frame)"]
    (out / "drive_log.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
