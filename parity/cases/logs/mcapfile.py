"""Bare MCAP files through the `mcap` reader and its decoders: ROS 2 (cdr), ROS 1 and protobuf
(Foxglove's schemas) from their support packages, JSON (Foxglove's JSON schemas) here."""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import CaseError
from .reader import TopicInfo
from .messages import type_name


class _JsonDecoders:
    """mcap's DecoderFactory protocol for `json` message encoding: the message as a dict."""

    def decoder_for(self, message_encoding, schema):
        return (lambda data: json.loads(data)) if message_encoding == "json" else None


class McapReader:
    format = "mcap"

    def __init__(self, path: Path):
        from mcap.reader import make_reader
        from mcap_protobuf.decoder import DecoderFactory as Protobuf
        from mcap_ros1.decoder import DecoderFactory as Ros1
        from mcap_ros2.decoder import DecoderFactory as Ros2

        self.path = path
        self._decoders = [Ros2(), Ros1(), Protobuf(), _JsonDecoders()]
        try:
            self._file = open(path, "rb")  # noqa: SIM115  kept open for the lazy reads, closed by close()
        except OSError as exc:
            raise CaseError([f"{path}: cannot open the MCAP file: {exc}"]) from None
        try:
            self._reader = make_reader(self._file, decoder_factories=self._decoders)
            self._summary = self._reader.get_summary()
        except Exception:  # noqa: BLE001  a truncated file's summary is garbage: read it as a stream below
            self._summary = None
        self.note = ("" if self._summary is not None else
                     " (the file has no readable summary: truncated or still being written; read as a stream up to where its data ends)")
        # Without a summary (a truncated file, or one still being written) there are no indexes: the
        # file is read as a stream, which finds its channels and stops, naming the message, where the data ends.

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._file.close()

    def _stream(self):
        from mcap.reader import NonSeekingReader

        self._file.seek(0)
        return NonSeekingReader(self._file, decoder_factories=self._decoders)

    def topics(self) -> list[TopicInfo]:
        if self._summary is None:
            return self._scanned_topics()
        s = self._summary
        counts = s.statistics.channel_message_counts if s.statistics else {}
        out: dict[str, TopicInfo] = {}
        for ch in s.channels.values():
            schema = s.schemas.get(ch.schema_id)
            t = out.setdefault(ch.topic, TopicInfo(ch.topic, type_name(schema.name if schema else ""), 0, None, None))
            t.count += counts.get(ch.id, 0)
        for ci in s.chunk_indexes:  # first and last log time per topic, from the chunk indexes
            for cid in ci.message_index_offsets:
                t = out.get(s.channels[cid].topic)
                if t is not None:
                    t.first_ns = ci.message_start_time if t.first_ns is None else min(t.first_ns, ci.message_start_time)
                    t.last_ns = ci.message_end_time if t.last_ns is None else max(t.last_ns, ci.message_end_time)
        return list(out.values())

    def _scanned_topics(self) -> list[TopicInfo]:
        out: dict[str, TopicInfo] = {}
        try:
            for schema, channel, msg in self._stream().iter_messages():
                t = out.setdefault(channel.topic, TopicInfo(channel.topic, type_name(schema.name if schema else ""), 0, msg.log_time, msg.log_time))
                t.count += 1
                t.first_ns, t.last_ns = min(t.first_ns, msg.log_time), max(t.last_ns, msg.log_time)
        except Exception:  # noqa: BLE001  the data ends: what was read is what the file holds
            pass
        return list(out.values())

    def messages(self, topic: str, start_ns: int | None = None, stop_ns: int | None = None):
        """(log time ns, decoded message) of `topic` with start_ns <= log time < stop_ns, in log-time order."""
        if self._summary is None:
            for _, _, msg, decoded in self._stream().iter_decoded_messages(topics=[topic]):
                if (start_ns is None or msg.log_time >= start_ns) and (stop_ns is None or msg.log_time < stop_ns):
                    yield msg.log_time, decoded
            return
        for _, _, msg, decoded in self._reader.iter_decoded_messages(topics=[topic], starting_at=start_ns, ending_before=stop_ns):
            yield msg.log_time, decoded
