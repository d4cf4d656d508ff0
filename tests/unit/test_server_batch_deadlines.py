"""BatchScheduler and deadlines, as TF Serving's batching_session.cc ProcessBatch: a merged run gets
the latest of its callers' deadlines (none if any caller has none), a run that timed out is not
re-run member by member, and a member re-run alone after another's bad input keeps its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.batching import BatchingOptions, BatchScheduler
from xception_serving.runtime.errors import ServingError

SERVABLE = SimpleNamespace(name="m")
# Two callers arriving together share one batch: it closes when full, long before this timeout.
TWO_AT_ONCE = BatchingOptions(max_batch_size=2, batch_timeout_s=5.0, num_batch_threads=1)


class RecordingModel:
    """y = 2x; records each run's batch size and deadline; a -1 row fails the run, `timeout` makes
    every run end as TensorFlow ends one at its deadline."""

    def __init__(self, *, timeout: bool = False) -> None:
        self.runs: list[tuple[int, float | None]] = []
        self.timeout = timeout
        self.lock = threading.Lock()

    def run(
        self,
        servable: Any,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self.lock:
            self.runs.append((int(x.shape[0]), deadline))
        if self.timeout:
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification"
            )
        if np.any(x == -1):
            raise ValueError("bad row")
        return {"y": x * 2}


def run_together(scheduler: BatchScheduler, calls: list[tuple[float, float | None]]) -> list[Any]:
    """(value, deadline) per caller, all at once: each caller's y, or its ServingError."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def call(i: int) -> None:
        value, deadline = calls[i]
        barrier.wait(5)
        try:
            inputs = {"x": np.array([value], np.float32)}
            results[i] = float(scheduler.run(SERVABLE, "sig", inputs, deadline=deadline)["y"][0])
        except ServingError as err:
            results[i] = err

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_a_merged_run_gets_the_latest_deadline_of_its_callers() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(TWO_AT_ONCE, Metrics(), model.run)
    soon, later = time.monotonic() + 30, time.monotonic() + 60
    try:
        results = run_together(scheduler, [(1.0, soon), (2.0, later)])
    finally:
        scheduler.stop()
    assert results == [2.0, 4.0]
    assert model.runs == [(2, later)]


def test_a_merged_run_has_no_deadline_when_a_caller_has_none() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(TWO_AT_ONCE, Metrics(), model.run)
    try:
        results = run_together(scheduler, [(1.0, time.monotonic() + 30), (2.0, None)])
    finally:
        scheduler.stop()
    assert results == [2.0, 4.0]
    assert model.runs == [(2, None)]


def test_a_run_that_timed_out_fails_every_member_without_re_running_them() -> None:
    model = RecordingModel(timeout=True)
    scheduler = BatchScheduler(TWO_AT_ONCE, Metrics(), model.run)
    deadline = time.monotonic() + 30
    try:
        results = run_together(scheduler, [(1.0, deadline), (2.0, deadline)])
    finally:
        scheduler.stop()
    assert [(r.code, r.message) for r in results] == [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification")
    ] * 2
    assert len(model.runs) == 1


def test_members_re_run_alone_after_a_bad_input_keep_their_own_deadlines() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(TWO_AT_ONCE, Metrics(), model.run)
    soon, later = time.monotonic() + 30, time.monotonic() + 60
    try:
        results = run_together(scheduler, [(-1.0, soon), (2.0, later)])
    finally:
        scheduler.stop()
    assert isinstance(results[0], ServingError) and results[1] == 4.0
    assert model.runs[0] == (2, later)  # the merged attempt
    assert sorted(model.runs[1:]) == [(1, soon), (1, later)]
