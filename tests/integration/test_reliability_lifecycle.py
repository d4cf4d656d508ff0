"""Faults and rollouts around one server process on a fixed gRPC port (`python -m xception_serving`
serving a private copy of the small exported Xception): SIGKILL and restart mid-run, SIGSTOP,
SIGTERM drain, a new version and a corrupt version copied in while callers run.

The tests share the process on purpose (each start costs ~30 s of TensorFlow import and model
load): the kill test leaves the restarted server running for the next ones, and `Lifecycle.running`
starts a fresh one if a previous test did not. Related tests elsewhere:
test_client_local_server::test_same_client_recovers_after_the_server_is_killed_and_restarted (one
client, one request at a time), test_k8s_client_load_balancing (a replica killed behind a
round-robin client), test_server_versions (hot swap and failed loads with TF Serving's
half_plus_two), test_rest_server::test_stop_finishes_in_flight_request_then_refuses_connections
(REST drain, in-process).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import xception_contract as contract
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
)
from xception_client import Client, DeadlineExceeded, Prediction
from xception_serving.testing.process import ServerProcess, free_port

from tests.fixtures.images import image_bytes
from tests.fixtures.models import ExportedModel, new_version
from tests.fixtures.rpc import model_statuses, wait_for
from tests.fixtures.servers import start_local_server
from tests.fixtures.traffic import PredictLoops

MODEL = contract.DEFAULT_MODEL_NAME
WAIT_S = 120.0  # for a version of the real Xception to load, or for answers under load
State = get_model_status_pb2.ModelVersionStatus.State
# Poll the base path every second; a version that fails to load is not retried for a minute.
SERVER_ARGS = ["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"]
IMAGES = [image_bytes("jpeg_baseline", 90, 120, seed=seed) for seed in range(40, 48)]
DRAIN_BATCH = IMAGES * 10  # one request big enough to still be running when SIGTERM arrives

pytestmark = pytest.mark.slow


class Lifecycle:
    """The module's server: same port and model directory across restarts."""

    def __init__(self, base_path: Path, stack: ExitStack) -> None:
        self.base_path = base_path
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._stack = stack
        self.server: ServerProcess | None = None

    def running(self) -> ServerProcess:
        if self.server is None or self.server.process.poll() is not None:
            self.server = self._stack.enter_context(
                start_local_server(
                    model_name=MODEL,
                    model_base_path=self.base_path,
                    grpc_port=self.port,
                    extra_args=SERVER_ARGS,
                )
            )
        return self.server


@pytest.fixture(scope="module")
def life(
    small_xception_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lifecycle]:
    base = tmp_path_factory.mktemp("lifecycle") / MODEL
    shutil.copytree(small_xception_model.version_dir, base / "1")
    with ExitStack() as stack:
        yield Lifecycle(base, stack)


@pytest.fixture(scope="module")
def expected(life: Lifecycle) -> list[list[int]]:
    """Top-5 class ids of each image, from the running server before any fault."""
    with Client(life.running().grpc_target, timeout=120) as client:
        return [[p.class_id for p in r] for r in client.predict_batch(IMAGES)]


def _ids(predictions: list[Prediction]) -> list[int]:
    return [p.class_id for p in predictions]


# -- SIGKILL and restart -----------------------------------------------------------------------


def test_killed_and_restarted_server_loses_no_request_and_answers_none_twice(
    life: Lifecycle, expected: list[list[int]]
) -> None:
    total, workers, kill_after = 48, 4, 10
    first = life.running()
    pending: queue.Queue[int] = queue.Queue()
    for request_id in range(total):
        pending.put(request_id)
    results: dict[int, list[int]] = {}
    finished_at: dict[int, float] = {}
    duplicates: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    # wait_for_ready: calls made while the server is down wait (within their deadline) for it to
    # come back; UNAVAILABLE on calls in flight at the kill is retried by the channel's policy.
    client = Client(life.target, timeout=240, retries=4, wait_for_ready=True)

    def worker() -> None:
        while True:
            try:
                request_id = pending.get_nowait()
            except queue.Empty:
                return
            try:
                ids = _ids(client.predict(IMAGES[request_id % len(IMAGES)]))
            except Exception as error:
                with lock:
                    failures.append(f"request {request_id}: {error!r}")
                continue
            with lock:
                if request_id in results:
                    duplicates.append(request_id)
                results[request_id] = ids
                finished_at[request_id] = time.monotonic()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(results) < kill_after and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        assert len(results) >= kill_after, f"no progress before the kill: {failures}"
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(30) == -signal.SIGKILL
        killed_with_done = len(results)
        second = life.running()  # same port, new process
        assert second.process.pid != first.process.pid
        restarted_at = time.monotonic()
        for thread in threads:
            thread.join(240)
        assert not any(thread.is_alive() for thread in threads), "workers hung"
    finally:
        client.close()
    assert failures == []
    assert duplicates == []
    assert sorted(results) == list(range(total))  # every request id answered exactly once
    for request_id, ids in results.items():
        assert ids == expected[request_id % len(IMAGES)], request_id
    assert killed_with_done < total
    assert any(t > restarted_at for t in finished_at.values()), "nothing ran on the new server"


# -- SIGSTOP -----------------------------------------------------------------------------------


def test_frozen_server_makes_the_client_deadline_fire_on_time(
    life: Lifecycle, expected: list[list[int]]
) -> None:
    server = life.running()
    with Client(life.target, timeout=60) as client:
        assert _ids(client.predict(IMAGES[0])) == expected[0]  # connected and warm
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            for timeout in (2.0, 0.5):
                started = time.monotonic()
                with pytest.raises(DeadlineExceeded) as info:
                    client.predict(IMAGES[0], timeout=timeout)
                elapsed = time.monotonic() - started
                assert timeout <= elapsed < timeout + 1.0, f"{timeout} s deadline: {elapsed:.2f}s"
                assert info.value.details == "Deadline Exceeded"  # gRPC's own, client side
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert _ids(client.predict(IMAGES[1], timeout=60)) == expected[1]  # thawed: serving
    assert server.process.poll() is None


# -- rollouts ----------------------------------------------------------------------------------


def _copy_version(base: Path, version: int, *, corrupt: bool = False) -> Path:
    """Version 1 published again as `version`, atomically as an export is: the poller sees it
    whole. `corrupt` cuts its variables in half, so its load fails."""
    with new_version(base, version) as staging:
        shutil.copytree(base / "1", staging)
        if corrupt:
            data = next((staging / "variables").glob("variables.data-*"))
            with data.open("r+b") as handle:
                handle.truncate(data.stat().st_size // 2)
    return base / str(version)


def _bytes_request(image: bytes) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor = request.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = 1
    tensor.string_val.append(image)
    return request


# Callers' answers during a rollout: (version, top-5 ids, image index).
RawTraffic = PredictLoops[tuple[int, list[int], int]]


def _raw_traffic(target: str) -> RawTraffic:
    """Three callers sending Predict in a loop, each rotating through IMAGES, on a plain channel
    with no retries, so any failure shows."""

    def request(call: int) -> predict_pb2.PredictRequest:
        return _bytes_request(IMAGES[call % len(IMAGES)])

    def answer(response: predict_pb2.PredictResponse, call: int) -> tuple[int, list[int], int]:
        ids = np.asarray(response.outputs[contract.TOP_K_CLASS_IDS_OUTPUT].int_val).tolist()
        return response.model_spec.version.value, ids, call % len(IMAGES)

    return PredictLoops(target, request, answer, threads=3, call_timeout=60, for_seconds=240)


@dataclass(frozen=True)
class Rollout:
    """What callers and the server saw while version 2, then a corrupt version 3, were copied in."""

    answers: list[tuple[int, list[int], int]]  # (version, top-5 ids, image index)
    failures: list[str]
    final: dict[int, Any]  # version -> ModelVersionStatus once the traffic stopped
    log: str


def _wait_for_more_answers(traffic: RawTraffic, count: int, what: str) -> None:
    start = traffic.answered()
    wait_for(lambda: traffic.answered() >= start + count, what, WAIT_S)


def _roll_out_then_copy_in_a_corrupt_version(
    life: Lifecycle, models: Any, traffic: RawTraffic
) -> None:
    _copy_version(life.base_path, 2)
    wait_for(
        lambda: (
            (s := model_statuses(models, MODEL)).get(2) is not None
            and s[2].state == State.AVAILABLE
            and s[1].state == State.END
        ),
        "version 2 serving and version 1 unloaded",
        WAIT_S,
    )
    _wait_for_more_answers(traffic, 3, "answers from version 2")
    _copy_version(life.base_path, 3, corrupt=True)
    wait_for(
        lambda: 3 in (s := model_statuses(models, MODEL)) and s[3].state == State.END,
        "version 3 to fail its load",
        WAIT_S,
    )
    _wait_for_more_answers(traffic, 3, "answers after the corrupt version")


@pytest.fixture(scope="module")
def rollout(life: Lifecycle, expected: list[list[int]]) -> Rollout:
    """Version 2 copied in under traffic, then a corrupt version 3 (after `expected` was taken
    from version 1)."""
    server = life.running()
    with grpc.insecure_channel(server.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        with _raw_traffic(server.grpc_target) as traffic:
            _wait_for_more_answers(traffic, 5, "first answers")
            _roll_out_then_copy_in_a_corrupt_version(life, models, traffic)
        final = model_statuses(models, MODEL)
    return Rollout(traffic.answers, traffic.failures, final, server.log_text())


def test_rollout_under_traffic_fails_no_request(rollout: Rollout) -> None:
    assert rollout.failures == []


def test_rollout_switches_traffic_to_the_new_version_for_good(rollout: Rollout) -> None:
    versions = [version for version, _, _ in rollout.answers]
    assert set(versions) == {1, 2}
    assert versions.index(2) > 0 and versions[-1] == 2  # switched, and stayed switched


def test_every_answer_during_a_rollout_is_the_image_s_own(
    rollout: Rollout, expected: list[list[int]]
) -> None:
    for _, ids, image in rollout.answers:
        assert ids == expected[image]


def test_corrupt_version_fails_its_load_with_tensorflow_s_restore_error_and_never_serves(
    rollout: Rollout,
) -> None:
    assert 3 not in {version for version, _, _ in rollout.answers}
    assert rollout.final[3].state == State.END
    # TensorFlow's restore of the cut variables file, in its words.
    assert rollout.final[3].status.error_code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert "Read less bytes than requested" in rollout.final[3].status.error_message


def test_rolled_out_version_stays_available_and_is_logged_as_loaded(rollout: Rollout) -> None:
    assert rollout.final[2].state == State.AVAILABLE and rollout.final[2].status.error_code == 0
    assert "Successfully loaded servable version {name: xception version: 2}" in rollout.log


# -- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_then_exits_zero(
    life: Lifecycle, expected: list[list[int]]
) -> None:
    server = life.running()
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()
    with Client(life.target, timeout=120, retries=0) as client:
        assert _ids(client.predict(IMAGES[0])) == expected[0]

        def call() -> None:
            try:
                result = client.predict_batch(DRAIN_BATCH)
                outcome = "ok" if len(result) == len(DRAIN_BATCH) else f"short: {len(result)}"
            except Exception as error:
                outcome = repr(error)
            with lock:
                outcomes.append((outcome, time.monotonic()))

        threads = [threading.Thread(target=call, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        # Terminate once the requests are on the server. 6 x 80 images is seconds of work even on
        # a quiet machine (the 71x71 model does ~150 images/s on 2 cores), so most of it is still
        # running when SIGTERM lands (checked below).
        time.sleep(0.5)
        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        exit_code = server.process.wait(90)
    assert exit_code == 0, server.log_tail()
    assert [o for o, _ in outcomes] == ["ok"] * len(threads)
    # Some of them were still running when SIGTERM arrived: the drain is what answered them.
    assert any(at > terminated_at for _, at in outcomes)
    assert "Received SIGTERM" in server.log_text()
