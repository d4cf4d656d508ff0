"""Dynamic batching through the official stubs: concurrent requests merge into one model call,
a bad input fails only its own request, oversized requests get TF Serving's error."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from xception_serving.runtime.batching import BatchingOptions

from tests.fixtures.rpc import float_example
from tests.fixtures.servers import in_process_server
from tests.fixtures.threads import run_at_once

N = 6


@pytest.fixture(scope="module")
def batching_server(half_plus_two_base: Path):
    # A long timeout and one batch thread make merging of simultaneous requests deterministic.
    options = BatchingOptions(
        max_batch_size=N, batch_timeout_s=1.0, num_batch_threads=1, max_enqueued_batches=4
    )
    models = {"default": half_plus_two_base}
    with (
        in_process_server(models, batching=options) as (core, target),
        grpc.insecure_channel(target) as channel,
    ):
        yield core, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_call(stub, x: float):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(x)
    return lambda: stub.Predict(request, timeout=30)


def test_concurrent_predicts_merge_into_one_model_call(batching_server) -> None:
    core, stub = batching_server
    runs_before = core.metrics.wrapped_run_count.total()
    results = run_at_once([predict_call(stub, float(i)) for i in range(N)], catch=grpc.RpcError)
    runs = core.metrics.wrapped_run_count.total() - runs_before
    assert [r.outputs["y"].float_val[0] for r in results] == [0.5 * i + 2 for i in range(N)]
    assert all([d.size for d in r.outputs["y"].tensor_shape.dim] == [1, 1] for r in results)
    assert runs == 1  # six requests, one model call
    sizes = core.metrics.input_batch_size.observations()[("default", "serving_default")]
    assert sizes[8.0] >= 1  # a batch of 6 (bucket <= 8) was run


def test_bad_example_in_merged_batch_fails_only_its_caller(batching_server) -> None:
    core, stub = batching_server

    def classify(ex: tf.train.Example):
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = "classify_x_to_y"
        request.input.example_list.examples.append(ex)
        return lambda: stub.Classify(request, timeout=30)

    good = [float_example(x=float(i)) for i in range(N - 1)]
    bad = float_example(x2=1.0)  # required feature x missing: parse_example fails in the graph
    before = core.metrics.input_batch_size.count("default", "classify_x_to_y")
    results = run_at_once([classify(e) for e in [*good[:2], bad, *good[2:]]], catch=grpc.RpcError)
    merged = core.metrics.input_batch_size.observations()[("default", "classify_x_to_y")]
    assert core.metrics.input_batch_size.count("default", "classify_x_to_y") > before
    assert merged[8.0] >= 1  # the six examples were first run as one batch
    failed = results[2]
    assert isinstance(failed, grpc.RpcError)
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.details().startswith(
        "Name: <unknown>, Feature: x (data type: float) is required but could not be found."
    )
    scores = [r.result.classifications[0].classes[0].score for i, r in enumerate(results) if i != 2]
    assert scores == [0.5 * i + 2 for i in range(N - 1)]


def test_request_larger_than_max_batch_size_is_invalid(batching_server) -> None:
    _core, stub = batching_server
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]] * (N + 1), dtype=tf.float32))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"Task size {N + 1} is larger than maximum input batch size {N}"
