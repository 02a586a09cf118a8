"""ROS 1 and ROS 2 bags through rosbags' AnyReader (message definitions from the bag, ROS 2 Humble's
types where a ROS 2 bag carries none)."""
from __future__ import annotations

from pathlib import Path

from ...errors import CaseError
from .reader import TopicInfo
from .messages import type_name


class RosbagReader:
    def __init__(self, path: Path, fmt: str):
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path, self.format = path, fmt
        try:
            self._reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            self._reader.open()
        except Exception as exc:  # rosbags raises its own errors, struct and OS errors for damaged files
            raise CaseError([f"{path}: cannot open the {fmt} bag: {type(exc).__name__}: {exc}"]) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # noqa: BLE001  closing a damaged bag must not hide the error that came first
            pass

    def _connections(self, topic: str):
        return [c for c in self._reader.connections if c.topic == topic]

    def topics(self) -> list[TopicInfo]:
        """Topics with their message counts; first/last are the log's span (a ROS 2 bag indexes no
        per-topic times, and reading every message to find them would read the log)."""
        out: dict[str, TopicInfo] = {}
        start, end = self._reader.start_time, self._reader.end_time
        for c in self._reader.connections:
            t = out.setdefault(c.topic, TopicInfo(c.topic, type_name(c.msgtype), 0, start, end))
            t.count += c.msgcount
        return list(out.values())

    def messages(self, topic: str, start_ns: int | None = None, stop_ns: int | None = None):
        """(log time ns, decoded message) of `topic` with start_ns <= log time < stop_ns, in log-time order."""
        conns = self._connections(topic)
        if not conns:
            return
        for conn, t, raw in self._reader.messages(connections=conns, start=start_ns, stop=stop_ns):
            yield t, _Lazy(self._reader, raw, conn.msgtype)


class _Lazy:
    """A message deserialised on first use: listing and indexing read only the fields they need of
    messages they keep, and the bytes are already in memory."""

    __slots__ = ("_reader", "_raw", "_type", "_msg")

    def __init__(self, reader, raw: bytes, msgtype: str):
        self._reader, self._raw, self._type, self._msg = reader, raw, msgtype, None

    def __getattr__(self, name):
        if self._msg is None:
            self._msg = self._reader.deserialize(self._raw, self._type)
        return getattr(self._msg, name)
