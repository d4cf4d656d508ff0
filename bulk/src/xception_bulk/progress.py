"""Progress while the job runs, and counts for the summary, from the stage before the sinks.

Every image passes one counting step on its way to a sink: it bumps a Beam Metrics counter
(what the summary and remote runners report) and this process's ``Progress``, which draws a
one-line bar with count and rate on a terminal, or prints a line every ``interval`` seconds
otherwise (logs, CI). Under a multi-process runner each worker process reports its own counts.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import ClassVar, Final, TextIO

__all__ = ["COUNTER_NAMESPACE", "Progress"]

COUNTER_NAMESPACE: Final = "xception_bulk"
LOG_INTERVAL: Final = 10.0  # seconds between lines when stderr is not a terminal
BAR_INTERVAL: Final = 0.2
BAR_WIDTH: Final = 20


class Progress:
    """Counts of classified and failed images in this process, drawn on ``stream``."""

    _shared: ClassVar[Progress | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, stream: TextIO, *, tty: bool, interval: float | None = None) -> None:
        self._stream = stream
        self._tty = tty
        self._interval = (
            interval if interval is not None else (BAR_INTERVAL if tty else LOG_INTERVAL)
        )
        self._started = time.monotonic()
        self._last = self._started
        self.classified = 0
        self.errors = 0
        self.first_at: float | None = None  # time.monotonic() of the first and last outcome
        self.last_at: float | None = None
        self._marks: dict[int, float] = {}  # when the count reached each power of two
        self._drawn = False

    @classmethod
    def shared(cls) -> Progress:
        """The process's reporter on stderr (created on first use, e.g. in a worker)."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls(sys.stderr, tty=sys.stderr.isatty())
            return cls._shared

    def add(self, *, classified: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.classified += classified
            self.errors += errors
            now = time.monotonic()
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            done = self.classified + self.errors
            mark = 1 << (done.bit_length() - 1)
            self._marks.setdefault(mark, now)
            if now - self._last >= self._interval:
                self._last = now
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        done = self.classified + self.errors
        return (
            f"{done} images ({self.classified} classified, {self.errors} errors), "
            f"{done / elapsed:.1f} images/s, {elapsed:.0f} s"
        )

    def _draw(self, now: float) -> None:
        if self._tty:
            # No total is known up front (patterns expand on the workers): the bar cycles.
            filled = (self.classified + self.errors) // 10 % (BAR_WIDTH + 1)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {self.line(now)}\033[K")
            self._drawn = True
        else:
            self._stream.write(f"xception-bulk [{os.getpid()}]: {self.line(now)}\n")
        self._stream.flush()

    def timing(self, started: float) -> str:
        """``first result after S s, then R images/s`` when this process saw the outcomes (the
        local runner in one process or threads); empty otherwise. Separates the job's start-up
        (process, pipeline, model load or server check) from its steady rate, which is taken
        over the later half of the outcomes (from the power of two at or below half the count):
        the first batches in flight complete together and would inflate a rate from the first
        result."""
        if self.first_at is None or self.last_at is None:
            return ""
        text = f", first result after {self.first_at - started:.1f} s"
        done = self.classified + self.errors
        mark = 1 << (max(done // 2, 1).bit_length() - 1)
        since = self._marks.get(mark)
        if done > mark and since is not None and self.last_at > since:
            text += f", then {(done - mark) / (self.last_at - since):.2f} images/s"
        return text

    def clear(self) -> None:
        """Remove the bar before the summary line (terminal only)."""
        with self._lock:
            if self._tty and self._drawn:
                self._stream.write("\r\033[K")
                self._stream.flush()
                self._drawn = False
