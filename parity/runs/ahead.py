"""The next case's first batches, prepared on a second thread while this case is scored.

A serial replay keeps both cores busy while the runners infer, and one while a case is scored (decoding,
metrics, tables: one Python thread). Preparing the next case's first frames meanwhile (reading its NV12,
the resize, the normalisation: compiled code that releases the GIL) uses the other. The batches are
the ones the unit would prepare itself (the same function of the same case, frames and pipeline), so
nothing computed changes; a failure here is left to the unit, which prepares inline and reports it.
At most AHEAD_BYTES of batches are held, and only where the run has two compute threads or
more (a pool's worker has its share of the cores and no next unit it knows of). The thread is a
daemon and a run's end never waits for it: a SIGTERM or Ctrl-C that lands in the main thread
exits at once, whatever the thread was doing (a pool of non-daemon threads was joined at exit, and
one such run hung there).
"""
from __future__ import annotations

import functools
import json
import os
import threading
from concurrent.futures import Future

from .inputs import case_key, unit_case

AHEAD_BYTES = 64 << 20  # batches held ahead: 160 frames of the reference model's 3x112x288 float32
_PENDING: list = []  # [(case key, future of {(pipeline key, start, stop): batch})]


def pipeline_key(pipeline: dict) -> str:
    return json.dumps(pipeline, sort_keys=True)


def start(payload: dict | None) -> None:
    """Begin preparing the first batches of `payload`'s case on every pipeline of it (a replay unit's
    payload; nothing for None or on fewer than two compute threads)."""
    from ..runners.base import compute_threads

    threads = compute_threads() or os.cpu_count() or 1
    if payload is None or threads < 2:
        return
    key = case_key(payload["case"], payload["case_sha256"])
    if any(k == key for k, _ in _PENDING):
        return
    _keep_freed_memory()
    future: Future = Future()
    threading.Thread(target=_run, args=(future, payload), name="parity-ahead", daemon=True).start()
    _PENDING.append((key, future))


def _run(future: Future, payload: dict) -> None:
    try:
        future.set_result(_prepare(payload))
    except Exception as exc:  # the unit prepares these frames itself and reports what fails there
        future.set_exception(exc)
    except BaseException as exc:  # never leaves a unit waiting on it
        future.set_exception(RuntimeError(f"preparing ahead stopped: {exc!r}"))
        raise


def take(path: str, sha256: str) -> dict:
    """The batches prepared ahead for this case ({(pipeline key, start, stop): batch}), once every
    preparation begun is done (the thread loads cases through runs.inputs, which the unit uses next);
    {} where none were or they failed."""
    out = {}
    while _PENDING:
        key, future = _PENDING.pop(0)
        batches = _result(future)
        if key == case_key(path, sha256):
            out = batches
    return out


def drop() -> None:
    """Forget what was prepared ahead and not taken (the end of a run, or a run stopped), without waiting
    for a preparation still under way: its batches are dropped with it."""
    _PENDING.clear()


@functools.cache  # once a process
def _keep_freed_memory() -> None:
    """glibc's malloc, for the whole process: blocks up to 32 MB from its heaps, and up to 128 MB freed
    at a heap's top kept for the next batch rather than given back. The thread preparing ahead keeps
    nothing beyond a batch, so all it frees gathers at its heap's top, which glibc's adaptive
    thresholds gave back to the system after nearly every batch, to be faulted in again for the next.
    Replays of the default suite after a process's first (AMD EPYC): 55,000-600,000 page faults (0.3-1.7 s
    of system time) -> 2,000-9,000 (0.2 s); a `parity replay` command 5.39 -> 5.24 s, peak RSS unchanged;
    the replay memory bench's peak +60 MB. Elsewhere than glibc (no mallopt): nothing."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _result(future: Future) -> dict:
    try:
        return future.result()
    except Exception:  # the unit prepares these frames itself and reports what fails there
        return {}


def _prepare(payload: dict) -> dict:
    import numpy as np

    from ..preprocessing.pipeline import Pipeline

    case = unit_case(payload["case"], payload["case_sha256"])
    out, held, size = {}, 0, payload["batch_size"]
    for p in payload["pipelines"]:  # in the order the unit feeds them
        pipe = Pipeline.from_dict(p)
        key = pipeline_key(pipe.to_dict())
        for s in range(0, len(case), size):
            if held >= AHEAD_BYTES:
                return out
            stop = min(s + size, len(case))
            out[(key, s, stop)] = x = pipe.prepare(case, np.arange(s, stop))
            held += x.nbytes
    return out
