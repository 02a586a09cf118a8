"""`parity cases import bag`: one image topic of a drive log -> a case whose frames stay in the log.

Nothing is re-timed silently: a frame's `t` is its header stamp (the capture time) where every
kept message has one, else its log time (the recorder's receive time), and `source.time_source`
says which. A stamp that repeats or goes back is dropped and listed (`source.dropped`); gaps longer
than 1.5 nominal periods are listed (`source.gaps`). Neither ROS nor Foxglove records the YUV matrix
and range, so `--yuv` gives them or the case records the assumption (`isp.assumed`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ... import atomic
from ...errors import CaseError, UsageError
from . import open_log
from .reader import log_files, log_format
from . import messages as M

YUV_CHOICES = ("bt601-limited", "bt601-full", "bt709-limited", "bt709-full")
MAX_LISTED = 100  # drops and gaps listed in case.json (all are counted)


def _topic(reader, topic: str):
    topics = {t.name: t for t in reader.topics()}
    if topic not in topics:
        images = [n for n, t in topics.items() if t.msgtype in M.RAW | M.COMPRESSED]
        raise CaseError([f"{reader.path}: no topic {topic!r}; image topics: {', '.join(images) or 'none'} (`parity cases import bag PATH --list`)"
                         + getattr(reader, "note", "")])
    return topics[topic]


def list_topics(path) -> list[dict]:
    """Every topic: type, message count, rate over the log's span, and for image topics the first message's encoding and size."""
    with open_log(path) as reader:
        out = []
        for t in reader.topics():
            row = {"topic": t.name, "type": t.msgtype, "messages": t.count, "rate_hz": float("nan")}
            if t.first_ns is not None and t.last_ns and t.last_ns > t.first_ns and t.count > 1:
                row["rate_hz"] = (t.count - 1) / ((t.last_ns - t.first_ns) / 1e9)
            if t.msgtype in M.RAW | M.COMPRESSED:
                row.update(_first_frame(reader, t))
            out.append(row)
    return out


def _first_frame(reader, t) -> dict:
    for _, msg in reader.messages(t.name):
        try:
            w, h = M.frame_size(t.msgtype, msg)
        except M.MessageError as exc:
            return {"encoding": "?", "size": f"unreadable: {exc}"}
        enc = str(M.field(msg, "encoding", "")) if t.msgtype in M.RAW else M.compressed_format(msg)
        return {"encoding": enc, "size": f"{w}x{h}"}
    return {"encoding": "-", "size": "-"}


def _selected(reader, topic, kind, start_s, end_s, every):
    """(message index, log ns, header stamp ns or None, width, height, stream) of every kept message, checked."""
    rows, first_ns, stream, size = [], None, None, None
    idx = -1
    it = reader.messages(topic)
    while True:
        try:
            item = next(it, None)
        except Exception as exc:  # a truncated or damaged log fails at the message it could not read
            raise CaseError([f"{reader.path}: topic {topic}: cannot read message {idx + 1}: {type(exc).__name__}: {exc}"
                             + getattr(reader, "note", "")]) from None
        if item is None:
            break
        idx += 1
        ns, msg = item
        first_ns = ns if first_ns is None else first_ns
        rel = (ns - first_ns) / 1e9
        if (start_s is not None and rel < start_s) or (end_s is not None and rel >= end_s) or idx % every:
            continue
        try:
            w, h = M.frame_size(kind, msg)
            s = ("nv12" if str(M.field(msg, "encoding", "")).lower() == "nv12" else "rgb") if kind in M.RAW else M.compressed_format(msg)
        except M.MessageError as exc:
            raise CaseError([f"{reader.path}: topic {topic} message {idx}: {exc}"]) from None
        if stream is None:
            stream, size = s, (w, h)
        elif (s, (w, h)) != (stream, size):
            raise CaseError([f"{reader.path}: topic {topic} message {idx}: {s} {w}x{h}, earlier messages are {stream} {size[0]}x{size[1]}; "
                             "a case has one size and stream (--start/--end select a part)"])
        rows.append((idx, ns, M.header_stamp(msg), stream))
    if not rows:
        raise CaseError([f"{reader.path}: topic {topic}: no message in the selection (--start/--end/--every)"])
    return rows, size, stream


def _timeline(rows, time_source: str):
    """Frame times in seconds from the first kept frame, what was dropped and why, the gaps, and the source used."""
    if time_source == "auto":
        time_source = "header" if all(r[2] for r in rows) else "log"
    elif time_source == "header" and not all(r[2] for r in rows):
        first = next(r[0] for r in rows if not r[2])
        raise CaseError([f"topic message {first}: no header stamp (0); use --time log (the recorder's receive time)"])
    kept, dropped, last = [], [], None
    ks: dict[int, int] = {}
    for idx, ns, stamp, _ in rows:
        k = ks.get(ns, 0)
        ks[ns] = k + 1
        t = stamp if time_source == "header" else ns
        if last is not None and t <= last:
            dropped.append({"message": idx, "t_ns": t, "why": "repeats the previous stamp" if t == last else f"{(last - t) / 1e6:.3f} ms before the previous stamp"})
            continue
        kept.append((idx, ns, k, t))
        last = t
    t0 = kept[0][3]
    t = np.array([(r[3] - t0) / 1e9 for r in kept])
    dt = np.diff(t)
    period = float(np.median(dt)) if len(dt) else 0.1
    gaps = [{"after_frame": int(i), "seconds": float(dt[i])} for i in np.flatnonzero(dt > 1.5 * period)]
    return kept, t, t0, period, dropped, gaps, time_source


def _camera(reader, camera_json, camera_info, size):
    if camera_json:
        from ..importers import load_camera

        return load_camera(camera_json), {"camera_from": str(camera_json)}
    if not camera_info:
        return None, {}
    t = _topic(reader, camera_info)
    if t.msgtype not in M.CAMERA_INFO:
        raise CaseError([f"{reader.path}: topic {camera_info} is a {t.msgtype}, not a sensor_msgs/CameraInfo"])
    for _, msg in reader.messages(camera_info):
        try:
            cam, extra = M.camera_of(msg)
        except M.MessageError as exc:
            raise CaseError([f"{reader.path}: topic {camera_info} message 0: {exc}"]) from None
        if extra["width"] and (extra["width"], extra["height"]) != tuple(size):
            raise CaseError([f"{reader.path}: topic {camera_info} describes a {extra['width']}x{extra['height']} camera, the image topic is "
                             f"{size[0]}x{size[1]}: its intrinsics do not apply (give --camera cam.json)"])
        return cam, {"camera_from": camera_info, "camera_info": extra}
    raise CaseError([f"{reader.path}: topic {camera_info} has no message"])


def parse_yuv(value: str | None) -> dict:
    if value is None:
        return {"yuv_matrix": "bt601", "yuv_range": "limited", "chroma": "4:2:0", "assumed": True}
    if value not in YUV_CHOICES:
        raise UsageError(f"--yuv must be one of {', '.join(YUV_CHOICES)}, got {value!r}")
    matrix, rng = value.split("-")
    return {"yuv_matrix": matrix, "yuv_range": rng, "chroma": "4:2:0", "assumed": False}


def import_log(path, topic: str, out, camera_info=None, camera=None, start_s=None, end_s=None, every: int = 1, name=None,
               yuv: str | None = None, time_source: str = "auto") -> tuple[Path, dict]:
    """Write the case `out/<name>/case.json` indexing `topic` of the log at `path`; (case folder, what to tell the user)."""
    from ..format import CASE_FILE, SCHEMA_VERSION, file_digests, load_case, name_problem

    path = Path(path)
    if every < 1:
        raise UsageError("--every must be at least 1")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise UsageError(f"--end {end_s} must be after --start {start_s}")
    if time_source not in ("auto", "header", "log"):
        raise UsageError(f"--time must be auto, header or log, got {time_source!r}")
    isp = parse_yuv(yuv)
    name = name or re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{path.stem}{topic}").strip("._") or "drive"
    if (why := name_problem(name)) is not None:
        raise UsageError(f"--name: {why}")
    try:
        reader = open_log(path)
    except CaseError as exc:
        fix = {"rosbag1": "`rosbag reindex` rebuilds it", "rosbag2": "`ros2 bag reindex` rebuilds a bag's metadata"}.get(log_format(path))
        if not (path.exists() and fix):
            raise
        raise CaseError([f"{exc.problems[0]} (topic {topic}: no message can be named, the log's index is what is damaged; {fix})"]) from None
    with reader:
        kind = _topic(reader, topic).msgtype
        if kind not in M.RAW | M.COMPRESSED:
            raise CaseError([f"{path}: topic {topic} is a {kind}, not an image (sensor_msgs/Image, CompressedImage, foxglove RawImage/CompressedImage)"])
        rows, size, stream = _selected(reader, topic, kind, start_s, end_s, every)
        try:
            kept, t, t0, period, dropped, gaps, used = _timeline(rows, time_source)
        except CaseError as exc:
            raise CaseError([f"{path}: {topic} {exc.problems[0]}"]) from None
        cam, cam_source = _camera(reader, camera, camera_info, size)
    root = Path(out) / name
    root.mkdir(parents=True, exist_ok=True)
    (root / CASE_FILE).unlink(missing_ok=True)
    fmt = log_format(path)
    files = log_files(path, fmt)
    digests = file_digests(root, [str(f.resolve()) for f in files])
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", topic).strip("._") or "topic"
    meta = {
        "schema_version": SCHEMA_VERSION, "name": name,
        "source": {"kind": "drive-log", "format": fmt, "file": str(path.resolve()), "topic": topic, "msgtype": kind, "time_source": used,
                   "t0_ns": int(t0), "messages_selected": len(rows), "dropped": dropped[:MAX_LISTED], "dropped_count": len(dropped),
                   "gaps": gaps[:MAX_LISTED], "gap_count": len(gaps), "selection": {"start_s": start_s, "end_s": end_s, "every": every},
                   **cam_source},
        "tags": ["drive-log"], "image": {"width": size[0], "height": size[1]}, "fps": round(1.0 / period, 6) if period > 0 else 10.0,
        "isp": isp, "streams": [stream],
        "log": {"path": os.path.relpath(path.resolve(), root.resolve()), "abs_path": str(path.resolve()), "format": fmt, "topic": topic,
                "kind": kind, "files": [{"name": f.name, "size": f.stat().st_size, "sha256": digests[str(f.resolve())]} for f in files]},
        "frames": [{"t": round(float(ti), 9), "log": {"ns": int(ns), **({"k": k} if k else {})}, "source_file": f"{slug}/{idx:06d}"}
                   for (idx, ns, k, _), ti in zip(kept, t)],
    }
    if cam:
        meta["camera"] = cam
    atomic.write_json(root / CASE_FILE, meta)
    load_case(root)
    notes = {"frames": len(kept), "stream": stream, "size": size, "time_source": used, "dropped": len(dropped), "gaps": len(gaps),
             "yuv_assumed": isp["assumed"], "fps": meta["fps"]}
    return root, notes
