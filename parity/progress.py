"""Progress that both a terminal and a CI log show.

On a terminal: a tqdm bar. Anywhere else (a CI job's log, `make replay > log`): one plain line per
finished unit of work, with the count, the elapsed time and an estimate of what is left, so a
10-minute replay or gate is not silent until its end.
"""
from __future__ import annotations

import sys
import time


class _Context:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineProgress(_Context):
    """tqdm's update/close, written as lines: `replay: 3/9 cases (33%), 41 s, about 82 s left`."""

    def __init__(self, total: int, desc: str, unit: str, stream=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, 0
        self.stream, self.clock = stream or sys.stderr, clock
        self.start = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        elapsed = self.clock() - self.start
        share = self.n / self.total if self.total else 1.0
        left = f", about {elapsed / share - elapsed:.0f} s left" if 0 < share < 1 else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * share:.0f}%), {elapsed:.0f} s{left}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class _Silent(_Context):
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
