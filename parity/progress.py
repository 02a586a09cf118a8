"""Progress that both a terminal and a CI log show.

On a terminal: a tqdm bar. Anywhere else (a CI job's log, `make replay > log`): one plain line per
finished unit of work, with the count, the elapsed time and an estimate of what is left, so a
10-minute replay or gate is not silent until its end.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class _Context:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineProgress(_Context):
    """tqdm's update/close, written as lines: `replay: 3/9 cases (33%), 41 s, about 82 s left`."""

    INTERVAL_S = 30.0  # within a long unit, a line from its batches at most this often (a log never sits a minute silent)

    def __init__(self, total: int, desc: str, unit: str, stream=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, 0
        self.stream, self.clock = stream or sys.stderr, clock
        self.start = self.last = clock()

    def tick(self, n: int) -> None:
        """Frames of a unit still running: counted, and written only when the last line is INTERVAL_S old."""
        self.n += n
        now = self.clock()
        if now - self.last >= self.INTERVAL_S:
            self._line(now)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._line(self.clock())

    def _line(self, now: float) -> None:
        self.last = now
        elapsed = now - self.start
        share = self.n / self.total if self.total else 1.0
        left = f", about {elapsed / share - elapsed:.0f} s left" if 0 < share < 1 else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * share:.0f}%), {elapsed:.0f} s{left}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Silent(_Context):
    per_batch = False

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str, enabled: bool = True, stream=None):
    """A tqdm bar on a terminal, LineProgress elsewhere, nothing when disabled or when there is nothing to do."""
    stream = stream or sys.stderr
    if not enabled or total <= 0:
        return _Silent()
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream)
    return LineProgress(total, desc, unit, stream)


# A unit of work that runs in this process (the serial executor) reports its finished frames batch by
# batch here, so a terminal bar moves per batch and not only per case; units in other processes
# (a pool, Ray) do not, and their bar moves per case.
_TICK = None


def tick(unit: str, n: int) -> None:
    """`n` more frames of `unit` (a case) done, where a command in this process is counting."""
    if _TICK is not None:
        _TICK(unit, n)


class Ticks:
    """Per-batch ticks into a bar, and what is left of a unit once it finishes (ticks never count twice)."""

    def __init__(self, bar):
        self.bar, self.done = bar, {}

    def __call__(self, unit: str, n: int) -> None:
        if not getattr(self.bar, "per_batch", True):
            return
        self.done[unit] = self.done.get(unit, 0) + n
        getattr(self.bar, "tick", self.bar.update)(n)  # a terminal bar moves; a log line waits for the unit or the interval

    def finish(self, unit: str, total: int) -> None:
        self.bar.update(max(total - self.done.pop(unit, 0), 0))  # a log's line for the finished unit, even with nothing left


@contextmanager
def ticking(bar):
    """Route `tick` into `bar` while the block runs; yields the Ticks (call `.finish(unit, total)` per finished unit)."""
    global _TICK
    ticks, previous = Ticks(bar), _TICK
    _TICK = ticks
    try:
        yield ticks
    finally:
        _TICK = previous
