"""BatchScheduler: merging, splitting, padding, isolation of bad inputs, TF Serving's errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.batching import BatchingOptions, BatchScheduler
from xception_serving.runtime.errors import ServingError

from tests.fixtures.threads import run_at_once


class FakeModel:
    """y = 2x per row; rows equal to -1 make the whole call fail (a "bad image")."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def run(
        self,
        servable: Any,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None = None,
    ) -> dict:
        self.release.wait(10)
        x = inputs["x"]
        with self.lock:
            self.calls.append(int(x.shape[0]))
        time.sleep(self.delay)
        if np.any(x == -1):
            raise ValueError("bad row")
        return {"y": x * 2}


SERVABLE = SimpleNamespace(name="m")


@contextmanager
def scheduler_of(
    model: FakeModel, options: BatchingOptions, metrics: Metrics | None = None
) -> Iterator[BatchScheduler]:
    """A BatchScheduler running `model`, stopped when the block ends."""
    scheduler = BatchScheduler(options, metrics or Metrics(), model.run)
    try:
        yield scheduler
    finally:
        scheduler.stop()


def predict_at_once(scheduler: BatchScheduler, values: list[float]) -> list[float | ServingError]:
    """One single-row request per value, all sent together: each request's y, or its error."""

    def request(value: float) -> float:
        out = scheduler.run(SERVABLE, "sig", {"x": np.array([[value]], np.float32)})
        return float(out["y"][0, 0])

    return run_at_once([lambda v=v: request(v) for v in values], catch=ServingError, timeout=20)  # type: ignore[return-value]


def test_batcher_merges_concurrent_requests_and_splits_results_back() -> None:
    model, metrics = FakeModel(), Metrics()
    options = BatchingOptions(max_batch_size=8, batch_timeout_s=0.3, num_batch_threads=1)
    with scheduler_of(model, options, metrics) as scheduler:
        results = predict_at_once(scheduler, [float(i) for i in range(8)])
    assert results == [2.0 * i for i in range(8)]
    assert sum(model.calls) == 8
    assert len(model.calls) < 8  # merged: fewer model calls than requests
    assert metrics.wrapped_run_count.total() == len(model.calls)
    assert max(model.calls) > 1


def test_batcher_bad_input_fails_only_its_own_request() -> None:
    model = FakeModel()
    options = BatchingOptions(max_batch_size=6, batch_timeout_s=0.3, num_batch_threads=1)
    with scheduler_of(model, options) as scheduler:
        results = predict_at_once(scheduler, [1.0, 2.0, -1.0, 4.0, 5.0, 6.0])
    assert model.calls[0] == 6  # the merged attempt
    assert [r for i, r in enumerate(results) if i != 2] == [2.0, 4.0, 8.0, 10.0, 12.0]
    failed = results[2]
    assert isinstance(failed, ServingError)
    # The model's own exception, as the core maps a ValueError: INVALID_ARGUMENT, its text.
    assert (failed.code, failed.message) == (grpc.StatusCode.INVALID_ARGUMENT, "bad row")


def test_batcher_pads_to_the_next_allowed_batch_size() -> None:
    model = FakeModel()
    options = BatchingOptions(
        max_batch_size=8, batch_timeout_s=0.3, num_batch_threads=1, allowed_batch_sizes=(4, 8)
    )
    with scheduler_of(model, options) as scheduler:
        results = predict_at_once(scheduler, [1.0, 2.0, 3.0])
    assert results == [2.0, 4.0, 6.0]
    assert all(size in (4, 8) for size in model.calls)


def test_batcher_rejects_a_task_larger_than_max_batch_size() -> None:
    with (
        scheduler_of(FakeModel(), BatchingOptions(max_batch_size=2)) as scheduler,
        pytest.raises(ServingError) as info,
    ):
        scheduler.run(SERVABLE, "sig", {"x": np.zeros((3, 1), np.float32)})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Task size 3 is larger than maximum input batch size 2"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.float32(1.0)}, "Batching Run() input tensors must have at least one dimension"),
        (
            {"x": np.zeros((1, 1)), "z": np.zeros((2, 1))},
            "Batching Run() input tensors must have equal 0th-dimension size",
        ),
    ],
)
def test_batcher_rejects_inputs_it_cannot_batch(inputs: dict, message: str) -> None:
    with (
        scheduler_of(FakeModel(), BatchingOptions()) as scheduler,
        pytest.raises(ServingError) as info,
    ):
        scheduler.run(SERVABLE, "sig", inputs)
    assert (info.value.code, info.value.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_batcher_full_queue_is_unavailable() -> None:
    model = FakeModel()
    model.release.clear()  # the only batch thread blocks inside the model
    options = BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    scheduler = BatchScheduler(options, Metrics(), model.run)
    errors: list[ServingError] = []
    threads = []

    def call() -> None:
        try:
            scheduler.run(SERVABLE, "sig", {"x": np.ones((1, 1), np.float32)})
        except ServingError as err:
            errors.append(err)

    try:
        for _ in range(3):  # one running, one queued, one rejected
            thread = threading.Thread(target=call)
            thread.start()
            threads.append(thread)
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        model.release.set()
        for thread in threads:
            thread.join(10)
        scheduler.stop()
    assert len(errors) == 1
    assert errors[0].code == grpc.StatusCode.UNAVAILABLE
    assert errors[0].message == (
        "The batch scheduling queue to which this task was submitted is full"
    )


def test_batcher_stop_finishes_queued_batches() -> None:
    model = FakeModel()
    options = BatchingOptions(max_batch_size=8, batch_timeout_s=5.0, num_batch_threads=1)
    scheduler = BatchScheduler(options, Metrics(), model.run)
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            scheduler.run(SERVABLE, "sig", {"x": np.ones((1, 1), np.float32)})
        )
    )
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    scheduler.stop()
    thread.join(10)
    assert time.monotonic() - started < 4  # did not wait for the 5 s batch timeout
    assert float(result[0]["y"][0, 0]) == 2.0
