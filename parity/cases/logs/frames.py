"""Frames read lazily from the drive log a case was imported from.

A case imported from a log does not copy its frames: `case.json` names the log (its files, sizes
and sha256) and gives every frame the log time of its message (`log.ns`, with `log.k` the number of
earlier messages of the topic at that same log time, almost always 0). Reading frame i asks the
log for the window of log times that frames i .. i+READ_AHEAD-1 span; the readers serve a window
from the files' chunk and time indexes, so a sequential replay decodes each chunk about once and
holds at most READ_AHEAD messages: memory stays flat in the length of the log.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ...errors import CaseError
from . import messages as M

READ_AHEAD = 16


class LogFrames:
    def __init__(self, root: Path, log: dict, frames: list[dict], isp: dict):
        self.path = resolve_log_path(root, log)
        self.topic, self.kind = log["topic"], log["kind"]
        self.isp = isp
        self.keys = [(int(f["log"]["ns"]), int(f["log"].get("k", 0))) for f in frames]
        self._reader = None
        self._buffer: OrderedDict[int, object] = OrderedDict()

    def _open(self):
        if self._reader is None:
            from . import open_log

            self._reader = open_log(self.path)
        return self._reader

    def __getstate__(self):  # a case sent to a worker reopens its log there
        return {**self.__dict__, "_reader": None, "_buffer": OrderedDict()}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def message(self, index: int):
        if index not in self._buffer:
            self._fill(index)
        return self._buffer[index]

    def _fill(self, index: int) -> None:
        last = min(index + READ_AHEAD, len(self.keys)) - 1
        want = {self.keys[i]: i for i in range(index, last + 1)}
        self._buffer.clear()
        seen: dict[int, int] = {}
        try:
            for ns, msg in self._open().messages(self.topic, self.keys[index][0], self.keys[last][0] + 1):
                k = seen.get(ns, 0)
                seen[ns] = k + 1
                i = want.get((ns, k))
                if i is not None:
                    self._buffer[i] = msg
        except CaseError:
            raise
        except Exception as exc:  # a damaged or changed log: name it and the frame
            raise CaseError([f"{self.path}: cannot read topic {self.topic} at frame {index} (log time {self.keys[index][0]} ns): "
                             f"{type(exc).__name__}: {exc}"]) from None
        if index not in self._buffer:
            raise CaseError([f"{self.path}: topic {self.topic} has no message at log time {self.keys[index][0]} ns (frame {index}): "
                             "the log is not the one the case was imported from"])

    def read(self, index: int) -> np.ndarray:
        msg = self.message(index)
        try:
            if self.kind in M.RAW:
                return M.raw_frame(msg, self.isp.get("yuv_matrix", "bt601"), self.isp.get("yuv_range", "limited"))[1]
            return M.compressed_frame(msg)[1]
        except M.MessageError as exc:
            raise CaseError([f"{self.path}: topic {self.topic} frame {index}: {exc}"]) from None


def resolve_log_path(root: Path, log: dict) -> Path:
    """The log a case names: `path` relative to the case folder (a case and its log move together),
    else `abs_path` where it was imported from."""
    rel = (root / log["path"]).absolute()
    if rel.exists() or not log.get("abs_path"):
        return rel
    return Path(log["abs_path"])


def log_file_paths(log_path: Path, log: dict) -> list[Path]:
    """The files case.json's `log.files` lists, where they are now: the log itself, or inside a ROS 2 bag folder."""
    return [log_path if log["format"] != "rosbag2" else log_path / f["name"] for f in log["files"]]


def log_problems(root: Path, log, streams: list) -> list[str]:
    """What is wrong with case.json's `log` (each as `log.<field>: ...`), short of hashing the log:
    the named files must exist with the sizes recorded (the sha256 is checked by Case.content_hash)."""
    from .reader import FORMATS

    if not isinstance(log, dict):
        return [f"log: must be an object {{path, format, topic, kind, files}}, got {type(log).__name__}"]
    out = []
    for key, ok, want in (("path", isinstance(log.get("path"), str) and log.get("path"), "the log's path relative to the case folder"),
                          ("format", log.get("format") in FORMATS, f"one of {list(FORMATS)}"),
                          ("topic", isinstance(log.get("topic"), str) and log.get("topic"), "the image topic"),
                          ("kind", log.get("kind") in M.RAW | M.COMPRESSED, f"one of {sorted(M.RAW | M.COMPRESSED)}")):
        if not ok:
            out.append(f"log.{key}: must be {want}, got {log.get(key)!r}")
    files = log.get("files")
    if not (isinstance(files, list) and files and all(isinstance(f, dict) and isinstance(f.get("name"), str) and "/" not in f["name"]
                                                      and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str) for f in files)):
        out.append(f"log.files: must list {{name, size, sha256}} of the log's files, got {files!r}")
    if not (isinstance(streams, list) and len(streams) == 1):
        out.append(f"streams: a case kept in a drive log has exactly one stream (its topic's), got {streams!r}")
    if out:
        return out
    path = resolve_log_path(root, log)
    for p, f in zip(log_file_paths(path, log), files):
        if not p.is_file():
            out.append(f"log: {p} is missing (the drive log the frames are kept in; log.path {log['path']!r} from the case folder)")
        elif p.stat().st_size != f["size"]:
            out.append(f"log: {p} is {p.stat().st_size} bytes, {f['size']} when imported: the drive log changed; import it again")
    return out
