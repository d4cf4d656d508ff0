"""One request whose Session run cannot be stopped must not hold anyone else past their deadline.

TensorFlow stops a run at its deadline only between kernels: a kernel that never looks at
cancellation (one long image decode) keeps Session::Run, and the thread that called it, until it
returns. The model here stands in for such a decode: it reads the file each request names, and a
request naming a FIFO blocks inside the ReadFile kernel until the test opens the FIFO's other end,
using no CPU meanwhile. No test lets that run end before its assertions, so a caller or a batch
thread left waiting on it would fail the test, not pass it.

The batching options are those of serving/batching-cpu.config that matter here (`make serve`):
one batch thread, no batch timeout. Bounds on times are generous, many times the measured value,
and each says what it was set from.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from xception_serving.api.rest.handler import RestApi
from xception_serving.runtime.batching import BatchingOptions
from xception_serving.runtime.core import ServingCore
from xception_serving.runtime.errors import ServingError

from tests.fixtures.models import new_version
from tests.fixtures.rpc import wait_for
from tests.fixtures.servers import in_process_server, start_local_server
from tests.fixtures.threads import run_at_once

MODEL = "reader"
GOOD_BYTES = b"abc"  # a good request's answer is its file's length: [3]
SLOW_DEADLINE_S = 1.0
# A stuck caller must be answered well before this (measured: its deadline + 0.25 s grace).
ANSWERED_WITHIN_S = SLOW_DEADLINE_S + 4.0
GOOD_DEADLINE_S = 20.0
# A good request takes ~10 ms here; 5 s is far above that on two busy cores, and far below both
# its own deadline and the stuck run, which never ends during the assertions.
GOOD_LATENCY_S = 5.0
# `make serve`'s batching (serving/batching-cpu.config) in what matters here.
MAKE_SERVE_BATCHING = BatchingOptions(
    max_batch_size=4, batch_timeout_s=0.0, num_batch_threads=2, max_enqueued_batches=16
)
BATCHING = {"batching off": None, "batching as make serve": MAKE_SERVE_BATCHING}


def _write_reader_model(base: Path) -> None:
    """serving_default: path [N] string -> length [N] int32, the byte length of each file."""
    v1 = tf.compat.v1
    with (
        new_version(base, 1) as staging,
        tf.Graph().as_default() as graph,
        v1.Session(graph=graph) as session,
    ):
        paths = v1.placeholder(tf.string, [None], name="path")
        lengths = tf.map_fn(
            lambda p: tf.strings.length(tf.io.read_file(p)),
            paths,
            fn_output_signature=tf.int32,
        )
        info = v1.saved_model.utils.build_tensor_info
        builder = v1.saved_model.Builder(str(staging))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.SERVING],
            signature_def_map={
                "serving_default": v1.saved_model.signature_def_utils.build_signature_def(
                    {"path": info(paths)},
                    {"length": info(tf.identity(lengths, name="length"))},
                    "tensorflow/serving/predict",
                )
            },
        )
        builder.save()


@pytest.fixture(scope="module")
def reader_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("reader_model")
    _write_reader_model(base)
    return base


class Files:
    """A good file and a FIFO whose readers block until `release()`."""

    def __init__(self, directory: Path) -> None:
        self.good = directory / "good"
        self.good.write_bytes(GOOD_BYTES)
        self.stuck = directory / "stuck.fifo"
        os.mkfifo(self.stuck)

    def readers_blocked(self) -> bool:
        try:
            os.close(os.open(self.stuck, os.O_WRONLY | os.O_NONBLOCK))  # also releases them
        except OSError as err:
            if err.errno == errno.ENXIO:  # nobody has it open for reading
                return False
            raise
        return True

    def release(self) -> None:
        """Open the FIFO's writing end until no reader is left (each then reads end of file)."""
        deadline = time.monotonic() + 10
        idle_checks = 0
        while time.monotonic() < deadline and idle_checks < 5:
            idle_checks = 0 if self.readers_blocked() else idle_checks + 1
            time.sleep(0.05)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    made = Files(tmp_path)
    try:
        yield made
    finally:
        made.release()


def _request(path: Path) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["path"].CopyFrom(tf.make_tensor_proto(np.array([str(path).encode()])))
    return request


def _call_stuck(core: ServingCore, files: Files, deadline_s: float) -> tuple[Any, float]:
    """core.predict on the FIFO with a deadline, on a thread: (its error or answer, seconds)."""
    outcome: list[Any] = []
    started = time.monotonic()

    def call() -> None:
        try:
            outcome.append(core.predict(_request(files.stuck), deadline=started + deadline_s))
        except ServingError as err:
            outcome.append(err)
        outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(ANSWERED_WITHIN_S)
    assert not thread.is_alive(), (
        f"a caller with a {deadline_s} s deadline was still waiting after {ANSWERED_WITHIN_S} s"
    )
    return outcome[0], outcome[1]


def _good_calls(target: str, files: Files, count: int) -> list[tuple[Any, float]]:
    """`count` good gRPC Predicts at once: each one's (lengths or RpcError, seconds)."""
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def one() -> tuple[Any, float]:
            started = time.monotonic()
            try:
                response = stub.Predict(_request(files.good), timeout=GOOD_DEADLINE_S)
                answer: Any = tf.make_ndarray(response.outputs["length"]).tolist()
            except grpc.RpcError as err:
                answer = err.code()
            return answer, time.monotonic() - started

        calls: list[Callable[[], tuple[Any, float]]] = [one] * count
        results = run_at_once(calls, catch=(), timeout=GOOD_DEADLINE_S + 10)
    return results  # type: ignore[return-value]  # catch=() lets no exception through


@pytest.mark.parametrize("batching", BATCHING.values(), ids=BATCHING.keys())
def test_a_stuck_run_answers_its_caller_deadline_exceeded_at_its_deadline_and_others_go_on(
    reader_base: Path, files: Files, batching: BatchingOptions | None
) -> None:
    with in_process_server({MODEL: reader_base}, batching=batching) as (core, target):
        error, seconds = _call_stuck(core, files, SLOW_DEADLINE_S)
        assert isinstance(error, ServingError), f"the stuck request was answered: {error}"
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert SLOW_DEADLINE_S <= seconds < ANSWERED_WITHIN_S
        # The run itself is still blocked in ReadFile (counted once the grace after the batch's
        # deadline is over, when batching).
        wait_for(lambda: core.session_runs.overdue == 1, "the stuck run to be overdue", timeout=5)
        answers = _good_calls(target, files, 3)
        assert [answer for answer, _ in answers] == [[len(GOOD_BYTES)]] * 3
        assert max(seconds for _, seconds in answers) < GOOD_LATENCY_S, answers
        files.release()
        wait_for(lambda: core.session_runs.overdue == 0, "the released run to end", timeout=10)


def test_a_caller_queued_behind_a_busy_batch_thread_gives_up_at_its_own_deadline(
    reader_base: Path, files: Files
) -> None:
    # The only batch thread runs a stuck batch whose deadline is 30 s away: a caller queued
    # behind it waits for that thread only until its own deadline, not the batch's.
    batching = BatchingOptions(
        max_batch_size=1, batch_timeout_s=0.0, num_batch_threads=1, max_enqueued_batches=1
    )
    with in_process_server({MODEL: reader_base}, batching=batching) as (core, _target):
        holder = threading.Thread(
            target=lambda: _swallow(
                lambda: core.predict(_request(files.stuck), deadline=time.monotonic() + 30)
            ),
            daemon=True,
        )
        holder.start()
        wait_for(lambda: core.session_runs.running == 1, "the stuck batch to run")
        started = time.monotonic()

        def good_call() -> tuple[Any, float]:
            answer = _swallow(
                lambda: core.predict(_request(files.good), deadline=started + SLOW_DEADLINE_S)
            )
            return answer, time.monotonic() - started

        # The queue holds one batch (max_enqueued_batches 1): of two good calls, one waits in it
        # and gives up at its own deadline; the other is refused at once.
        results = run_at_once([good_call, good_call], catch=(), timeout=ANSWERED_WITHIN_S)
        outcomes = sorted(results, key=lambda r: r[1])  # type: ignore[index]
        (refused, refused_s), (waited, waited_s) = outcomes  # type: ignore[misc]
        assert isinstance(refused, ServingError) and isinstance(waited, ServingError)
        assert (refused.code, refused.message) == (
            grpc.StatusCode.UNAVAILABLE,
            "The batch scheduling queue to which this task was submitted is full",
        )
        assert refused_s < SLOW_DEADLINE_S  # at once: measured in milliseconds
        assert waited.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert SLOW_DEADLINE_S <= waited_s < ANSWERED_WITHIN_S
        files.release()
        holder.join(10)


def _swallow(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ServingError as err:
        return err


def test_rest_calls_after_a_stuck_one_answer_200_with_batching_as_make_serve(
    reader_base: Path, files: Files
) -> None:
    # The REST view of the same fault: good calls answered, not 504 after --rest_api_timeout_in_ms.
    with in_process_server({MODEL: reader_base}, batching=MAKE_SERVE_BATCHING) as (core, _):
        api = RestApi(core, core.metrics, monitoring_path=None, timeout_s=SLOW_DEADLINE_S)
        path = f"/v1/models/{MODEL}:predict"
        stuck = api.handle("POST", path, {}, json.dumps({"instances": [str(files.stuck)]}).encode())
        assert stuck.status == 504
        good_api = RestApi(core, core.metrics, monitoring_path=None, timeout_s=GOOD_DEADLINE_S)
        body = json.dumps({"instances": [str(files.good)]}).encode()

        def good() -> tuple[int, Any, float]:
            started = time.monotonic()
            response = good_api.handle("POST", path, {}, body)
            return response.status, json.loads(response.body), time.monotonic() - started

        results = run_at_once([good] * 3, catch=(), timeout=GOOD_DEADLINE_S + 10)
        assert [(s, b) for s, b, _ in results] == [(200, {"predictions": [3]})] * 3  # type: ignore[misc]
        assert max(t for _, _, t in results) < GOOD_LATENCY_S  # type: ignore[misc]


def test_a_grpc_call_beyond_the_worker_threads_is_refused_at_once_not_queued(
    reader_base: Path, files: Files
) -> None:
    # As TF Serving's --grpc_max_threads: one worker, held by a stuck call until its deadline.
    from tensorflow_serving.config import model_server_config_pb2
    from xception_serving.api.grpc.server import GrpcServer

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name=MODEL, base_path=str(reader_base), model_platform="tensorflow"
    )
    core = ServingCore(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    core.load(config)
    server = GrpcServer(core, host="127.0.0.1", port=0, max_workers=1)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stuck = stub.Predict.future(_request(files.stuck), timeout=3.0)
            wait_for(lambda: core.session_runs.running == 1, "the stuck call to reach the worker")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(_request(files.good), timeout=GOOD_DEADLINE_S)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < GOOD_LATENCY_S
            assert stuck.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The worker is back once the stuck call's deadline (+ grace) is over.
            wait_for(lambda: core.session_runs.overdue == 1, "the stuck run to be overdue")
            response = stub.Predict(_request(files.good), timeout=GOOD_DEADLINE_S)
            assert tf.make_ndarray(response.outputs["length"]).tolist() == [len(GOOD_BYTES)]
    finally:
        files.release()
        server.stop(1)
        core.stop(5)


def test_the_server_process_with_make_serves_batching_answers_good_calls_after_a_stuck_one(
    reader_base: Path, files: Files, tmp_path: Path
) -> None:
    # The same fault through `xception-serve --enable_batching` with make serve's batching values:
    # the gRPC client gives up on the stuck call at its deadline; the server must too.
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 4 } batch_timeout_micros { value: 0 } "
        "num_batch_threads { value: 1 } max_enqueued_batches { value: 16 }"
    )
    args = ["--enable_batching", f"--batching_parameters_file={batching}"]
    with start_local_server(
        model_name=MODEL, model_base_path=reader_base, extra_args=args
    ) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as stuck:
                stub.Predict(_request(files.stuck), timeout=SLOW_DEADLINE_S)
            assert stuck.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        answers = _good_calls(server.grpc_target, files, 3)
        assert [answer for answer, _ in answers] == [[len(GOOD_BYTES)]] * 3
        assert max(seconds for _, seconds in answers) < GOOD_LATENCY_S, answers
        files.release()
