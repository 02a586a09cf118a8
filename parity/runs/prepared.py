"""Prepared model inputs of a case x condition, kept on disk for the next checkpoint.

A rank's inputs (decoded, perturbed, preprocessed) do not depend on the checkpoint, so a checkpoint
added to a ranked zoo needs only its inference and scoring. Each entry is one file,
`<cache>/prepared/<key[:2]>/<key>.bin`: a JSON header (its key, shapes, dtype, a BLAKE2b digest of the
payload) and the payload. Most conditions end in 8-bit levels before the
normalisation, so the levels are kept (4x smaller than float32) when normalising them gives back
every input bit for bit; otherwise (a tensor-stage perturbation) the inputs themselves are kept.

Nothing is trusted by its name: an entry is used only when its header names the requested key, its
payload has the recorded digest and the arrays have the recorded shapes; anything else is
recomputed (and rewritten). The folder is bounded (`PARITY_PREPARED_CACHE_GB`, default 4): past it,
the entries used longest ago are dropped. A hit refreshes the entry's modification time.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import atomic

_MAGIC = b"parity.prepared/1\n"
_DEFAULT_GB = 4.0


def budget_bytes() -> int:
    raw = os.environ.get("PARITY_PREPARED_CACHE_GB")
    try:
        gb = float(raw) if raw else _DEFAULT_GB
    except ValueError:
        gb = _DEFAULT_GB
    return int(max(gb, 0.0) * 2**30) if np.isfinite(gb) else int(_DEFAULT_GB * 2**30)


class PreparedInputs:
    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None):
        self.root = Path(root) / "prepared"
        self.max_bytes = budget_bytes() if max_bytes is None else max_bytes
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.bin"

    def get(self, key: str, pipe) -> tuple[list[np.ndarray], np.ndarray, np.ndarray] | None:
        """(batches, slots, timestamps) as `prepare_condition` made them, or None."""
        p = self.path(key)
        try:
            raw = p.read_bytes()
            got = _decode(raw, key, pipe)
        except (OSError, ValueError, KeyError, TypeError):
            got = None
        if got is None:
            self.misses += 1
            return None
        self.hits += 1
        try:
            os.utime(p)  # recently used: kept longest
        except OSError:
            pass
        return got

    def put(self, key: str, pipe, batches: list[np.ndarray], slots: np.ndarray, ts: np.ndarray) -> None:
        if self.max_bytes <= 0:
            return
        try:
            atomic.write_bytes(self.path(key), _encode(key, pipe, batches, slots, ts))
        except OSError:  # a cache: a full disk costs the next rank time, not this one its results
            return
        self._bound()

    def _bound(self) -> None:
        entries = []
        for f in self.root.glob("*/*.bin"):
            try:
                st = f.stat()
            except OSError:  # another worker dropped it
                continue
            entries.append((st.st_mtime, st.st_size, f))
        total = sum(e[1] for e in entries)
        for _, size, f in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size


def _levels_of(pipe, x: np.ndarray) -> np.ndarray | None:
    """The 8-bit levels that `pipe.normalise` turns into exactly `x`, or None when there are none: each
    value inverted, then checked against the pipeline's own normalisation of that level."""
    nchw = pipe.layout == "NCHW"
    if x.ndim != 4 or x.shape[1 if nchw else -1] != 3:
        return None
    table = pipe.normalise(np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, axis=3))  # level -> input, per channel
    table = table[0, :, 0, :] if nchw else table[0, 0].T  # [3, 256]
    q = np.empty((x.shape[0], *x.shape[2:], 3) if nchw else x.shape, np.uint8)
    for c in range(3):
        v = x[:, c] if nchw else x[..., c]
        lv = np.rint((v.astype(np.float32) * np.float32(pipe.std[c]) + np.float32(pipe.mean[c])) / np.float32(pipe.scale))
        if not (np.isfinite(lv).all() and lv.min(initial=0) >= 0 and lv.max(initial=0) <= 255):
            return None
        q[..., c] = lv
        if not np.array_equal(table[c][q[..., c]], v):
            return None
    return q


def _encode(key: str, pipe, batches, slots, ts) -> bytes:
    x = np.concatenate(batches) if batches else np.zeros((0,), np.float32)
    levels = _levels_of(pipe, x) if len(x) else None
    body = levels if levels is not None else np.ascontiguousarray(x)
    arrays = {"body": body, "slots": np.asarray(slots, np.int64), "ts": np.asarray(ts, np.float64)}
    payload = b"".join(a.tobytes() for a in arrays.values())  # not compressed: zlib level 1 takes half a prepare for 1.6x
    head = {"key": key, "levels": levels is not None, "lengths": [len(b) for b in batches],
            "arrays": {k: [a.dtype.str, list(a.shape)] for k, a in arrays.items()},
            "digest": hashlib.blake2b(payload, digest_size=16).hexdigest()}
    return _MAGIC + json.dumps(head).encode() + b"\n" + payload


def _decode(raw: bytes, key: str, pipe):
    if not raw.startswith(_MAGIC):
        return None
    head_end = raw.index(b"\n", len(_MAGIC))
    head = json.loads(raw[len(_MAGIC) : head_end])
    payload = memoryview(raw)[head_end + 1 :]
    if head.get("key") != key:
        return None
    # the digest on another thread (hashlib lets go of the GIL) while this one normalises: it was as long
    # again; nothing is returned before it matches
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(lambda: hashlib.blake2b(payload, digest_size=16).hexdigest())
        arrays, at = {}, 0
        for name, (dtype, shape) in head["arrays"].items():
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            arrays[name] = np.frombuffer(payload, dtype, count=int(np.prod(shape)), offset=at).reshape(shape)
            at += n
        if at != len(payload) or sum(head["lengths"]) != len(arrays["body"]):
            return None
        x = pipe.normalise(arrays["body"]) if head["levels"] else arrays["body"].copy()
        if digest.result() != head.get("digest"):
            return None
    cuts = np.cumsum([0, *head["lengths"]])
    return [x[a:b] for a, b in zip(cuts[:-1], cuts[1:])], arrays["slots"].copy(), arrays["ts"].copy()
