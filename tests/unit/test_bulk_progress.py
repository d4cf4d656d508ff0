"""Progress of the bulk job: a line every interval off a terminal, a redrawn bar on one, and the
summary's timing (first result, then the steady rate over the later half of the outcomes)."""

from __future__ import annotations

import io

import pytest
from xception_bulk import progress
from xception_bulk.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def test_off_a_terminal_a_line_is_printed_once_per_interval(clock: Clock) -> None:
    stream = io.StringIO()
    reporter = Progress(stream, tty=False, interval=10)
    for _ in range(5):
        clock.now += 3
        reporter.add(classified=1)
    reporter.add(errors=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # at 12 s; the next is due at 22 s
    assert lines[0].endswith(": 4 images (4 classified, 0 errors), 0.3 images/s, 12 s")


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_cleared(clock: Clock) -> None:
    stream = io.StringIO()
    reporter = Progress(stream, tty=True, interval=0.2)
    clock.now += 1
    reporter.add(classified=1)
    assert stream.getvalue().startswith("\r[")
    assert "1 images (1 classified, 0 errors), 1.0 images/s" in stream.getvalue()
    reporter.clear()
    assert stream.getvalue().endswith("\r\033[K")


def test_timing_gives_the_first_result_and_the_rate_over_the_later_half(clock: Clock) -> None:
    started = clock.now
    reporter = Progress(io.StringIO(), tty=False)
    clock.now += 7.5  # start-up: the first result
    reporter.add(classified=8)  # a first batch lands at once
    for _ in range(12):  # then one image every 0.5 s
        clock.now += 0.5
        reporter.add(classified=1)
    # 20 outcomes: the rate runs from the 8th (at 7.5 s) to the 20th (at 13.5 s).
    assert reporter.timing(started) == ", first result after 7.5 s, then 2.00 images/s"


def test_timing_is_empty_when_this_process_counted_nothing(clock: Clock) -> None:
    assert Progress(io.StringIO(), tty=False).timing(clock.now) == ""
