"""SessionRuns: a Session run with a deadline never holds its caller past it (plus the short grace
in which TensorFlow's own error still wins), an overdue run keeps its version loaded until it ends,
and once overdue runs may hold every inter-op thread a new run is refused at once, UNAVAILABLE.

The stand-in servable's run blocks on an Event, as a kernel that ignores cancellation blocks
Session::Run; no TensorFlow is loaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import grpc
import numpy as np
import pytest
from xception_serving.runtime.errors import ServingError
from xception_serving.runtime.session_runs import GRACE_S, SessionRuns, inter_op_busy_message

DEADLINE_S = 0.2
# The caller must be back by its deadline + grace; 3 s is far above that on a busy machine, and
# the stuck run never ends during the assertions.
BACK_WITHIN_S = DEADLINE_S + GRACE_S + 3.0


class StuckServable:
    """`run` returns {"y": x} once `release` is set (at once if it already is)."""

    name = "m"
    version = 1

    def __init__(self) -> None:
        self.release_run = threading.Event()
        self.in_flight = 0
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            self.in_flight += 1

    def release(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def run(
        self, key: str, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        self.release_run.wait(30)
        return {"y": inputs["x"]}


X = {"x": np.array([1.0], np.float32)}


def _deadline_exceeded_within_bound(runs: SessionRuns, servable: StuckServable) -> None:
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        runs.run(servable, "k", X, started + DEADLINE_S)
    elapsed = time.monotonic() - started
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "Deadline Exceeded",
    )
    assert DEADLINE_S <= elapsed < BACK_WITHIN_S


def test_a_stuck_run_returns_deadline_exceeded_to_its_caller_and_is_counted_overdue() -> None:
    runs, servable = SessionRuns(inter_op_threads=4), StuckServable()
    _deadline_exceeded_within_bound(runs, servable)
    assert runs.overdue == 1
    assert servable.in_flight == 1  # the version stays loaded under the running Session
    servable.release_run.set()
    deadline = time.monotonic() + 5
    while (runs.overdue or servable.in_flight) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (runs.overdue, servable.in_flight) == (0, 0)


def test_a_run_that_ends_in_time_answers_its_outputs_and_leaves_nothing_counted() -> None:
    runs, servable = SessionRuns(inter_op_threads=4), StuckServable()
    servable.release_run.set()
    outputs = runs.run(servable, "k", X, time.monotonic() + 10)
    assert outputs["y"].tolist() == [1.0]
    assert (runs.overdue, servable.in_flight) == (0, 0)


def test_a_run_error_reaches_its_caller_unchanged() -> None:
    class Failing(StuckServable):
        def run(
            self, key: str, inputs: Mapping[str, np.ndarray], deadline: float | None = None
        ) -> dict[str, np.ndarray]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad image")

    with pytest.raises(ServingError) as info:
        SessionRuns(inter_op_threads=4).run(Failing(), "k", X, time.monotonic() + 10)
    assert (info.value.code, info.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad image")


def test_a_new_run_is_unavailable_at_once_when_stuck_runs_may_hold_every_inter_op_thread() -> None:
    runs, servable = SessionRuns(inter_op_threads=2, stuck_after_s=0.0), StuckServable()
    _deadline_exceeded_within_bound(runs, servable)
    _deadline_exceeded_within_bound(runs, servable)
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        runs.run(servable, "k", X, started + 30)
    assert time.monotonic() - started < 1.0  # refused, not queued until its 30 s deadline
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.UNAVAILABLE,
        inter_op_busy_message(2, 2, 0.0),
    )
    assert "2 Session runs more than 0 s past their deadline" in info.value.message
    servable.release_run.set()
    deadline = time.monotonic() + 5
    while runs.overdue and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs.run(servable, "k", X, time.monotonic() + 10)["y"].tolist() == [1.0]


def test_a_run_without_a_deadline_is_made_on_the_callers_thread() -> None:
    class Where(StuckServable):
        thread: threading.Thread | None = None

        def run(
            self, key: str, inputs: Mapping[str, np.ndarray], deadline: float | None = None
        ) -> dict[str, np.ndarray]:
            self.thread = threading.current_thread()
            return {"y": inputs["x"]}

    servable = Where()
    SessionRuns(inter_op_threads=1).run(servable, "k", X, None)
    assert servable.thread is threading.current_thread()


def test_runs_only_just_past_their_deadline_do_not_refuse_new_ones() -> None:
    # A merely slow run ends within a kernel of its cancellation: not counted as stuck yet.
    runs, stuck = SessionRuns(inter_op_threads=1, stuck_after_s=60.0), StuckServable()
    _deadline_exceeded_within_bound(runs, stuck)
    assert runs.overdue == 1
    quick = StuckServable()
    quick.release_run.set()
    assert runs.run(quick, "k", X, time.monotonic() + 10)["y"].tolist() == [1.0]
    stuck.release_run.set()
