"""Drive logs as fleets record them: ROS 1 `.bag` files, ROS 2 bag folders (sqlite3 or MCAP
storage, read by rosbags, no ROS install) and bare `.mcap` files (read by `mcap` with its ROS 1,
ROS 2 and protobuf decoders, and JSON).

`open_log(path)` gives one reader interface over all of them: `topics()` and `messages(topic,
start_ns, stop_ns)` (log-time windows served from the files' own chunk and time indexes, so a
window costs the chunks it touches, not the log). A case imported from a log keeps its frames in
the log (`case.json` `log` + each frame's log time): see `frames.LogFrames`.

`reader` is the interface and what files make a log; `rosbag` and `mcapfile` the two backends;
`messages` turns any of their messages into a frame or a camera; `importer` writes the case;
`frames` reads it back. Part of the cases stage: it may import only the shared top-level modules
and `parity.cases`.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import CaseError
from .reader import log_format


def open_log(path: str | Path):
    """A reader for the drive log at `path` (rosbag.RosbagReader or mcapfile.McapReader)."""
    path = Path(path)
    if not path.exists():
        raise CaseError([f"{path}: no such drive log"])
    fmt = log_format(path)
    if fmt is None:
        raise CaseError([f"{path}: not a drive log parity reads (a ROS 1 .bag, a ROS 2 bag folder with metadata.yaml, or a .mcap file)"])
    try:
        if fmt == "mcap":
            from .mcapfile import McapReader

            return McapReader(path)
        from .rosbag import RosbagReader

        return RosbagReader(path, fmt)
    except ImportError as exc:
        from ...errors import UsageError

        raise UsageError(f"{path}: reading drive logs needs the `bags` extra (pip install 'parity[bags]'): {exc}") from None
