"""The reader interface every drive-log backend gives (`rosbag.RosbagReader`, `mcapfile.McapReader`):
`topics()` -> [TopicInfo], `messages(topic, start_ns, stop_ns)` -> (log time ns, decoded message),
`close()`; and which files make a log."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMATS = ("rosbag1", "rosbag2", "mcap")


@dataclass
class TopicInfo:
    name: str
    msgtype: str  # normalised: sensor_msgs/Image, foxglove.CompressedImage
    count: int
    first_ns: int | None
    last_ns: int | None


def log_format(path: Path) -> str | None:
    """rosbag1 (a .bag file), rosbag2 (a folder with metadata.yaml), mcap (a bare .mcap file), or None."""
    if path.is_dir():
        return "rosbag2" if (path / "metadata.yaml").is_file() else None
    return {".bag": "rosbag1", ".mcap": "mcap"}.get(path.suffix.lower())


def log_files(path: Path, fmt: str) -> list[Path]:
    """The files whose bytes make the log (a ROS 2 bag: metadata.yaml and its storage files)."""
    if fmt != "rosbag2":
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and (p.name == "metadata.yaml" or p.suffix in (".db3", ".mcap")))
