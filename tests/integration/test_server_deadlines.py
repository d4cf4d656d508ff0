"""Deadlines end the Session run, as in TF Serving.

TF Serving puts each request's deadline into the Session::Run it makes (prediction_service_impl.cc
sets RunOptions.timeout_in_ms from the gRPC deadline; the REST handler from
--rest_api_timeout_in_ms), so TensorFlow cancels a run still going at the deadline with
DEADLINE_EXCEEDED, "Timed out waiting for notification", and the server's thread is free again.
The model here has a `slow` signature (a long while loop) beside a fast `serving_default`; no test
lets the slow run finish, so each would fail, not pass, if the deadline did not reach the Session.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2
from xception_serving.api.grpc.server import GrpcServer
from xception_serving.api.rest.handler import RestApi
from xception_serving.runtime.batching import BatchingOptions
from xception_serving.runtime.core import ServingCore
from xception_serving.runtime.errors import ServingError

MODEL = "slow"
# Loop iterations of the `slow` signature: about 30 s of CPU on this project's machines (a few
# microseconds each), far beyond every deadline below.
SLOW_ITERATIONS = 10_000_000
SESSION_TIMEOUT = "Timed out waiting for notification"  # TensorFlow's DEADLINE_EXCEEDED text
DEADLINE_S = 0.5
# How long a call that hit its deadline may take in all, on two busy cores: well under the slow run.
ENDED_WITHIN_S = 5.0


def _write_slow_model(base: Path) -> None:
    v1 = tf.compat.v1
    staging = base / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None], name="x")
        _, slow = tf.while_loop(
            lambda i, acc: i < SLOW_ITERATIONS,
            lambda i, acc: (i + 1, acc * 0.5 + 1.0),
            [tf.constant(0), x],
        )
        info = v1.saved_model.utils.build_tensor_info
        signature = v1.saved_model.signature_def_utils.build_signature_def
        predict = "tensorflow/serving/predict"
        builder = v1.saved_model.Builder(str(staging))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.SERVING],
            signature_def_map={
                "serving_default": signature(
                    {"x": info(x)}, {"y": info(tf.identity(x * 2.0, name="fast"))}, predict
                ),
                "slow": signature(
                    {"x": info(x)}, {"y": info(tf.identity(slow, name="slow"))}, predict
                ),
            },
        )
        builder.save()
    os.rename(staging, base / "1")


@pytest.fixture(scope="module")
def slow_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("slow_model")
    _write_slow_model(base)
    return base


def _core(base: Path, batching: BatchingOptions | None = None) -> ServingCore:
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name=MODEL, base_path=str(base), model_platform="tensorflow"
    )
    core = ServingCore(file_system_poll_wait_seconds=0, max_num_load_retries=0, batching=batching)
    core.load(config)
    return core


@pytest.fixture
def core(slow_base: Path) -> Iterator[ServingCore]:
    serving = _core(slow_base)
    try:
        yield serving
    finally:
        serving.stop(5)


def _request(signature: str, values: tuple[float, ...] = (1.0,)) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return request


def _answers_fast(core: ServingCore) -> None:
    response = core.predict(_request("serving_default", (3.0,)), deadline=time.monotonic() + 30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [6.0]


def test_a_run_past_its_deadline_is_cancelled_with_tensorflows_error(core: ServingCore) -> None:
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        core.predict(_request("slow"), deadline=started + DEADLINE_S)
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        SESSION_TIMEOUT,
    )
    assert time.monotonic() - started < ENDED_WITHIN_S
    _answers_fast(core)


def test_a_grpc_deadline_frees_the_servers_only_worker(slow_base: Path) -> None:
    # One gRPC worker: if the slow run went on past the client's deadline, the next call would
    # be refused (RESOURCE_EXHAUSTED, as TF Serving past --grpc_max_threads) until it ended. The
    # worker is back within milliseconds of the deadline, so refusals are retried until then.
    serving = _core(slow_base)
    server = GrpcServer(serving, host="127.0.0.1", port=0, max_workers=1)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(_request("slow"), timeout=DEADLINE_S)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            response = _first_answer(stub, _request("serving_default", (3.0,)), ENDED_WITHIN_S)
            assert tf.make_ndarray(response.outputs["y"]).tolist() == [6.0]
    finally:
        server.stop(1)
        serving.stop(5)


def _first_answer(stub: Any, request: predict_pb2.PredictRequest, within_s: float) -> Any:
    """Predict, retried while the only worker is busy (RESOURCE_EXHAUSTED), for `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return stub.Predict(request, timeout=max(0.1, deadline - time.monotonic()))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_rest_timeout_ends_the_run_with_tensorflows_error(core: ServingCore) -> None:
    api = RestApi(core, core.metrics, monitoring_path=None, timeout_s=DEADLINE_S)
    body = json.dumps({"signature_name": "slow", "instances": [1.0]}).encode()
    started = time.monotonic()
    response = api.handle("POST", f"/v1/models/{MODEL}:predict", {}, body)
    assert time.monotonic() - started < ENDED_WITHIN_S
    assert response.status == 504
    assert json.loads(response.body) == {"error": SESSION_TIMEOUT}
    answer = api.handle("POST", f"/v1/models/{MODEL}:predict", {}, b'{"instances": [3.0]}')
    assert (answer.status, json.loads(answer.body)) == (200, {"predictions": [6.0]})


def test_a_batch_whose_callers_all_timed_out_frees_the_batch_thread(slow_base: Path) -> None:
    # Two slow requests merge into one run on the only batch thread; that run has the later of
    # their deadlines, so it ends there and the thread serves the next batch.
    batching = BatchingOptions(max_batch_size=2, batch_timeout_s=1.0, num_batch_threads=1)
    serving = _core(slow_base, batching)
    errors: list[BaseException] = []

    def slow_call() -> None:
        try:
            serving.predict(_request("slow"), deadline=time.monotonic() + DEADLINE_S)
        except ServingError as err:
            errors.append(err)

    try:
        callers = [threading.Thread(target=slow_call) for _ in range(2)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
        assert [getattr(e, "code", None) for e in errors] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        assert serving.metrics.input_batch_size.count(MODEL, "slow") == 1  # one merged run
        started = time.monotonic()
        _answers_fast(serving)
        assert time.monotonic() - started < ENDED_WITHIN_S
    finally:
        serving.stop(5)
