"""Fuzzing the server's gRPC request handling: valid requests of every method, mutated field by
field or byte by byte, get the right answer or a refusal with one of TF Serving's codes and
messages, and the server keeps serving. Runs against the in-process server (the same GrpcServer
and ServingCore as xception-serve, seconds instead of a TensorFlow start) on TF Serving's
half_plus_two model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    regression_pb2,
)
from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus
from xception_serving.runtime import tensors

from tests.fixtures.fuzz import FuzzRun, damaged
from tests.fixtures.servers import (
    in_process_server,
)

MODEL = "default"  # the half_plus_two fixture's name in these tests


# -- fuzzing the gRPC request parsing ----------------------------------------------------------
#
# Each fuzzer starts from valid requests for every method, with answers known from the model
# (y = 0.5 x + 2, y2 = 0.5 x2 + 3), and mutates them: fields of the message ("request messages")
# or bytes of its encoding ("bytes at every method"). What stayed valid must get the right answer;
# everything else a refusal with one of TF Serving's codes, and the server keeps serving.

FUZZ = settings(
    max_examples=300,
    deadline=None,  # a slow example on a shared machine is not a failure; a hang is (timeouts)
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
FUZZ_TIME_CAP_S = 40.0
CALL_TIMEOUT_S = 20.0  # a call over it is DEADLINE_EXCEEDED, a failure (REQUEST_ERRORS)
# Examples each fuzzer must really check of its 300: each takes a few milliseconds against the
# in-process server, so only a machine about a hundred times slower runs out of the budget.
FUZZ_FLOOR = 250
PREDICT = "/tensorflow.serving.PredictionService/Predict"
CLASSIFY = "/tensorflow.serving.PredictionService/Classify"
REGRESS = "/tensorflow.serving.PredictionService/Regress"
MULTI_INFERENCE = "/tensorflow.serving.PredictionService/MultiInference"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
MESSAGES = {  # method -> (request type, response type)
    PREDICT: (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
    CLASSIFY: (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
    REGRESS: (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
    MULTI_INFERENCE: (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
    METADATA: (
        get_model_metadata_pb2.GetModelMetadataRequest,
        get_model_metadata_pb2.GetModelMetadataResponse,
    ),
    STATUS: (
        get_model_status_pb2.GetModelStatusRequest,
        get_model_status_pb2.GetModelStatusResponse,
    ),
}
# What a request can legitimately be refused with. INTERNAL / UNKNOWN would be an unhandled
# exception in the server, DEADLINE_EXCEEDED a hang.
REQUEST_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}
VERSION = 123  # the half_plus_two fixture's version
# The model's classify / regress signatures: name -> (method name, output of one example).
EXAMPLE_SIGNATURES: dict[str, tuple[str, Any]] = {
    "classify_x_to_y": ("tensorflow/serving/classify", lambda x, x2: 0.5 * x + 2),
    "classify_x2_to_y3": ("tensorflow/serving/classify", lambda x, x2: 0.5 * x2 + 3),
    "regress_x_to_y": ("tensorflow/serving/regress", lambda x, x2: 0.5 * x + 2),
    "regress_x_to_y2": ("tensorflow/serving/regress", lambda x, x2: 0.5 * x2 + 3),
}


@pytest.fixture(scope="module")
def fuzz_target(half_plus_two_base: Path) -> Iterator[str]:
    with in_process_server({MODEL: half_plus_two_base}) as (_, target):
        yield target


def _raw_calls(channel: grpc.Channel) -> dict[str, Any]:
    return {
        method: channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for method in MESSAGES
    }


def _parses(method: str, data: bytes) -> bool:
    try:
        MESSAGES[method][0]().ParseFromString(data)
    except DecodeError:
        return False
    return True


def _assert_still_serving(channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    assert stub.GetModelStatus(request, timeout=30).model_version_status


# -- valid requests, and the answers they must get

# Quarters up to 2**18: 0.5 x + 2 and 0.5 x + 3 are exact in float32, whatever the kernels fuse.
_X = st.integers(-(2**20), 2**20).map(lambda k: k / 4)


def _spec(draw: st.DrawFn, spec: Any, signature: str) -> None:
    spec.name = MODEL
    spec.signature_name = signature
    if draw(st.booleans()):
        spec.version.value = VERSION


def _examples(draw: st.DrawFn, request: Any) -> None:
    """One to three tf.Examples with x (and x2, now and then), or the same with a context
    (holding x2, now and then)."""
    with_context = draw(st.booleans())
    target = request.input.example_list_with_context if with_context else request.input.example_list
    x2_in_context = with_context and draw(st.booleans())
    if x2_in_context:
        target.context.features.feature["x2"].float_list.value.append(draw(_X))
    for _ in range(draw(st.integers(1, 3))):
        example = target.examples.add()
        example.features.feature["x"].float_list.value.append(draw(_X))
        if not x2_in_context and draw(st.booleans()):
            example.features.feature["x2"].float_list.value.append(draw(_X))


def _example_values(request: Any) -> list[tuple[float, float]]:
    """(x, x2) of each example, the context merged in, x2 defaulting to 0 as in the graph."""
    if request.input.WhichOneof("kind") == "example_list_with_context":
        examples = request.input.example_list_with_context.examples
        context = request.input.example_list_with_context.context.features.feature
    else:
        examples, context = request.input.example_list.examples, {}
    values = []
    for example in examples:
        features = dict(context) | dict(example.features.feature)
        x2 = features["x2"].float_list.value[0] if "x2" in features else 0.0
        values.append((features["x"].float_list.value[0], x2))
    return values


def _outputs(signature: str, request: Any) -> list[np.float32]:
    """What the signature answers for each example, in float32 as the graph computes it."""
    formula = EXAMPLE_SIGNATURES[signature][1]
    return [formula(np.float32(x), np.float32(x2)) for x, x2 in _example_values(request)]


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[str, Any]:
    """(method, request): a request of any method that half_plus_two answers."""
    method = draw(st.sampled_from(sorted(MESSAGES)))
    request = MESSAGES[method][0]()
    if method == PREDICT:
        _spec(draw, request.model_spec, draw(st.sampled_from(["", "serving_default"])))
        x = np.asarray(draw(st.lists(_X, min_size=1, max_size=3)), np.float32).reshape(-1, 1)
        if draw(st.booleans()):
            request.inputs["x"].CopyFrom(tensors.make_proto(x))
        else:
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))  # tensor_content
        request.output_filter.extend(draw(st.sampled_from([[], ["y"]])))
    elif method in (CLASSIFY, REGRESS):
        kind = "classify" if method == CLASSIFY else "regress"
        names = [n for n, (m, _) in EXAMPLE_SIGNATURES.items() if m.endswith(kind)]
        _spec(draw, request.model_spec, draw(st.sampled_from(names)))
        _examples(draw, request)
    elif method == MULTI_INFERENCE:
        for signature in draw(
            st.lists(
                st.sampled_from(sorted(EXAMPLE_SIGNATURES)), min_size=1, max_size=3, unique=True
            )
        ):
            task = request.tasks.add()
            _spec(draw, task.model_spec, signature)
            task.method_name = EXAMPLE_SIGNATURES[signature][0]
        _examples(draw, request)
    elif method == METADATA:
        _spec(draw, request.model_spec, draw(st.sampled_from(["", "serving_default"])))
        request.metadata_field.append("signature_def")
    else:
        _spec(draw, request.model_spec, "")
    return method, request


def assert_right_answer(method: str, request: Any, answer: bytes) -> None:
    """The answer half_plus_two gives a valid request: y = 0.5 x + 2 and its kin."""
    response = MESSAGES[method][1].FromString(answer)
    if method == PREDICT:
        x = tensors.to_numpy(request.inputs["x"])
        assert list(response.outputs) == ["y"]
        np.testing.assert_array_equal(
            tensors.to_numpy(response.outputs["y"]), np.float32(0.5) * x + np.float32(2)
        )
    elif method == CLASSIFY:
        scores = [c.classes[0].score for c in response.result.classifications]
        assert scores == _outputs(request.model_spec.signature_name, request)
    elif method == REGRESS:
        values = [r.value for r in response.result.regressions]
        assert values == _outputs(request.model_spec.signature_name, request)
    elif method == MULTI_INFERENCE:
        assert len(response.results) == len(request.tasks)
        for task, result in zip(request.tasks, response.results, strict=True):
            if task.method_name.endswith("classify"):
                got = [c.classes[0].score for c in result.classification_result.classifications]
            else:
                got = [r.value for r in result.regression_result.regressions]
            assert got == _outputs(task.model_spec.signature_name, request)
    elif method == METADATA:
        assert list(response.metadata) == ["signature_def"]
    else:
        (status,) = response.model_version_status
        assert (status.version, status.state) == (VERSION, ModelVersionStatus.AVAILABLE)
    if method != STATUS:  # every other answer names the version that answered
        specs = (
            [r.model_spec for r in response.results]
            if method == MULTI_INFERENCE
            else [response.model_spec]
        )
        assert all((s.name, s.version.value) == (MODEL, VERSION) for s in specs)


# -- mutations of a valid request


@st.composite
def _tensors(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        dtype=draw(
            st.sampled_from(
                [
                    types_pb2.DT_FLOAT,
                    types_pb2.DT_STRING,
                    types_pb2.DT_INT64,
                    types_pb2.DT_UINT8,
                    types_pb2.DT_INVALID,
                    77,
                ]
            )
        )
    )
    # Tiny or absurd sizes only (see tests/unit/test_fuzz_tensors_protos.py).
    dims = st.one_of(st.integers(0, 3), st.integers(2**45, 2**62), st.just(-1))
    for size in draw(st.lists(dims, max_size=3)):
        proto.tensor_shape.dim.add().size = size
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=24), max_size=3)))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=32))
    return proto


_NAMES = st.one_of(
    st.sampled_from([MODEL, "", "../default", MODEL + "\x00", "half_plus_three"]),
    st.text(max_size=12),
)
_SIGNATURES = st.one_of(
    st.sampled_from(["", "serving_default", *EXAMPLE_SIGNATURES]), st.text(max_size=12)
)


def _mutate_spec(draw: st.DrawFn, spec: Any) -> None:
    edit = draw(st.sampled_from(["name", "signature", "version", "label", "clear"]))
    if edit == "name":
        spec.name = draw(_NAMES)
    elif edit == "signature":
        spec.signature_name = draw(_SIGNATURES)
    elif edit == "version":
        spec.version.value = draw(
            st.one_of(
                st.sampled_from([0, VERSION - 1, VERSION + 1]), st.integers(-(2**63), 2**63 - 1)
            )
        )
    elif edit == "label":
        spec.version_label = draw(st.one_of(st.just("stable"), st.text(max_size=8)))
    else:
        spec.Clear()


def _mutate_examples(draw: st.DrawFn, request: Any) -> None:
    kind = request.input.WhichOneof("kind")
    examples = getattr(request.input, kind).examples
    if not examples:
        examples.add()  # an example without features
        return
    edit = draw(st.sampled_from(["kind", "drop", "rename", "empty", "many values"]))
    feature = examples[draw(st.integers(0, len(examples) - 1))].features.feature
    if edit == "kind":
        feature["x"].bytes_list.value.append(draw(st.binary(max_size=8)))
    elif edit == "drop":
        feature.pop("x", None)
    elif edit == "rename":
        feature[draw(st.sampled_from(["inputs", "y", "", "x3"]))].CopyFrom(feature["x"])
        feature.pop("x", None)
    elif edit == "empty":
        del examples[:]
    else:
        feature["x"].float_list.value.extend(draw(st.lists(st.floats(width=32), max_size=3)))


def _mutate_task(draw: st.DrawFn, request: Any) -> None:
    """One edit of a MultiInference request's tasks: a method name, a repeated task, or its
    examples."""
    edit = draw(st.sampled_from(["method", "repeat", "examples"]))
    if edit == "method":
        request.tasks[0].method_name = draw(
            st.sampled_from(
                [
                    "tensorflow/serving/classify",
                    "tensorflow/serving/regress",
                    "tensorflow/serving/predict",
                    "nope",
                ]
            )
        )
    elif edit == "repeat":
        request.tasks.add().CopyFrom(request.tasks[0])
    else:
        _mutate_examples(draw, request)


def _mutate_multi_inference(draw: st.DrawFn, target: str, request: Any) -> None:
    """A MultiInference request's edit: one task's model spec, or its tasks."""
    if target == "spec" or not request.tasks:
        _mutate_spec(draw, request.tasks[draw(st.integers(0, len(request.tasks) - 1))].model_spec)
    else:
        _mutate_task(draw, request)


def _mutate_predict_inputs(draw: st.DrawFn, request: Any) -> None:
    """A Predict request's edit: its tensor, alias, an extra input, an output filter or dtype."""
    edit = draw(st.sampled_from(["tensor", "alias", "extra", "filter", "dtype"]))
    if edit == "tensor":
        request.inputs["x"].CopyFrom(draw(_tensors()))
    elif edit == "alias":
        request.inputs[draw(st.sampled_from(["inputs", "y", ""]))].CopyFrom(request.inputs["x"])
        request.inputs.pop("x", None)
    elif edit == "extra":
        request.inputs[draw(st.sampled_from(["inputs", "y", "z"]))].CopyFrom(draw(_tensors()))
    elif edit == "filter":
        request.output_filter.append(draw(st.sampled_from(["y", "scores", "z", ""])))
    else:
        request.inputs["x"].dtype = draw(
            st.sampled_from([types_pb2.DT_DOUBLE, types_pb2.DT_STRING, types_pb2.DT_HALF, 0, 77])
        )


def _mutate(draw: st.DrawFn, method: str, request: Any) -> None:
    """One edit that may or may not keep the request valid."""
    target = draw(st.sampled_from(["spec", "payload"]))
    if method == MULTI_INFERENCE:
        _mutate_multi_inference(draw, target, request)
    elif target == "spec":
        _mutate_spec(draw, request.model_spec)
    elif method == PREDICT:
        _mutate_predict_inputs(draw, request)
    elif method in (CLASSIFY, REGRESS):
        _mutate_examples(draw, request)
    elif method == METADATA:
        request.metadata_field[:] = draw(
            st.lists(st.sampled_from(["signature_def", "bogus", ""]), max_size=2)
        )
    else:
        _mutate_spec(draw, request.model_spec)


@st.composite
def request_messages(draw: st.DrawFn) -> tuple[str, Any, bool]:
    """(method, request, valid): a valid request edited once or twice, or left valid (two in
    five; hypothesis draws the small choices, the edits, most often)."""
    method, request = draw(valid_requests())
    if draw(st.integers(0, 4)) >= 3:
        return method, request, True
    for _ in range(draw(st.integers(1, 2))):
        _mutate(draw, method, request)
    return method, request, False


@st.composite
def request_bytes(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(method, bytes, valid): a valid request's encoding with a byte or two overwritten (half of
    them in the model spec it starts with) or cut short; a valid request of another method,
    whose field numbers overlap; a valid request's encoding; the same followed by another valid
    request's encoding, which protobuf merges into one message; noise. Hypothesis draws small
    choices most often, so the damaged ones come first."""
    method, request = draw(valid_requests())
    data = request.SerializeToString()
    choice = draw(st.integers(0, 9))
    if choice < 3:
        return method, draw(damaged(data, header=12, edits=2, kinds=("overwrite",))), False
    if choice < 5:
        other_method = draw(st.sampled_from(sorted(set(MESSAGES) - {method})))
        return other_method, data, False
    if choice < 8:
        return method, data, True
    if choice < 9:
        other = draw(valid_requests().filter(lambda case: case[0] == method))[1]
        return method, data + other.SerializeToString(), False
    return method, draw(st.binary(max_size=300)), False


# -- what a refusal may say

# The request checks' messages, in TF Serving's words (predict_util.cc, classifier.cc,
# regressor.cc, multi_inference.cc, get_model_metadata_impl.cc, server_core.cc), and a
# TensorFlow kernel's own error, which names its graph node as a Session reports it.
GRPC_MESSAGES = tuple(
    re.compile(pattern, re.DOTALL)
    for pattern in (
        r"Missing ModelSpec",
        r"ModelSpec has no name specified\.",
        r"Found ModelSpec with an empty model name\.",
        r"GetModelMetadataRequest must specify at least one metadata_field",
        r"Metadata field .* is not supported",
        r"Servable not found for request: (?:Latest\(.*\)|Specific\(.*, -?\d+\))",
        r"Could not find version -?\d+ of model .*",
        r"Could not find any versions of model .*",
        r"Unrecognized servable version label: .*",
        r'Serving signature key ".*" not found\.',
        r"input size does not match signature: \d+!=\d+ len\(\{.*\}\) != len\(\{.*\}\)\. "
        r"Sent extra: \{.*\}\. Missing but required: \{.*\}\.",
        r"Signature input alias: .+\(feed name: .+\) not found in request and no default value "
        r"provided\. Inputs expected to be in the request \{.*\}, or default input alias set: .*",
        r"tensor parsing error: .*",
        r"Inputs contains invalid name\. Used request inputs: .*, request input: .*",
        r"Expects arg\[\d+\] to be \w+ but \w+ is provided",
        r"output tensor alias not found in signature: .* Outputs expected to be in the set "
        r"\{.*\}\.",
        r"duplicate output tensor alias: .*",
        r"Input is empty\.",
        r"No (?:classification|regression) inputs found in SignatureDef: .+",
        r"No regression outputs found in SignatureDef: .+",
        r"Expected classification signature outputs to contain classes or scores: .+",
        r"Expected one (?:input|output) Tensor\.",
        r"Expected one or two output Tensors, found \d+",
        r"Expected (?:classes|scores|output) Tensor of DT_\w+\.  Got: DT_\w+",
        r"Expected Tensor shape: \[batch_size num_classes\] but got \[[\d,]*\] \(.+\)",
        r"Expected output Tensor shape to be either \[batch_size\] or \[batch_size, 1\] but got "
        r"\[[\d,]*\]",
        r"Input batch size did not match output batch size: \d+ vs\. \d+",
        r"Tensors class and score should match in dim_size\(1\)\. Got \d+ vs\. \d+",
        r"No signature was found with the name: .*",
        r"All ModelSpecs in a MultiInferenceRequest must access the same model name\.",
        r"Duplicate evaluation of signature: .*",
        r"Requested signature not found in model graph: .*",
        r"Unsupported signature method_name: .*",
        r"Input tensor must be the same for all Signatures\.",
        r".*\[\[\{\{node [^}]+\}\}\]\].*",
        r"Could not parse example input, value: '.*",  # quoting bytes (Latin-1 on the client)
    )
)


def is_grpc_message(details: str) -> bool:
    return any(pattern.fullmatch(details) for pattern in GRPC_MESSAGES)


# -- the two fuzzers


def _check_answer(
    call: Any, method: str, payload: bytes, valid: bool, run: FuzzRun, request: Any = None
) -> None:
    """Sends `payload`: a valid one gets the right answer; any other, the right answer or a
    refusal with one of TF Serving's codes and a message."""
    try:
        answer = call(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        code, details = error.code(), str(error.details())
        assert not valid, f"a valid {method} was refused: {code}: {details}"
        if code == grpc.StatusCode.INTERNAL and not _parses(method, payload):
            assert details == "Exception deserializing request!", details  # gRPC's own words
            run.outcome("unparsed")
            return
        assert code in REQUEST_ERRORS, f"{code}: {details}"
        assert is_grpc_message(details), f"{code}: {details}"
        run.outcome("refused", code.name)
        return
    run.outcome("answered", "valid" if valid else "mutated, still valid")
    if request is None:
        request = MESSAGES[method][0].FromString(payload)
    if valid:
        assert_right_answer(method, request, answer)


def _run_fuzzer(target: str, name: str, cases: Any, send: Any) -> FuzzRun:
    """`send(calls, run, *case)` for each generated case, then a check that the server still
    serves; returns the run for its floors."""
    run = FuzzRun(name, budget_s=FUZZ_TIME_CAP_S, example_cap_s=CALL_TIMEOUT_S + 5)
    with grpc.insecure_channel(target) as channel:
        calls = _raw_calls(channel)
        run.fuzz(cases, lambda case: send(calls, run, *case), settings=FUZZ)
        _assert_still_serving(channel)
    return run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_bytes_at_every_method_get_the_right_answer_or_a_refusal(fuzz_target: str) -> None:
    def send(calls: dict[str, Any], run: FuzzRun, method: str, data: bytes, valid: bool) -> None:
        _check_answer(calls[method], method, data, valid, run)

    run = _run_fuzzer(fuzz_target, "bytes at every method", request_bytes(), send)
    # Ten runs of 300 gave 70-104 answered, 35-70 refused by the server, 139-187 unparsed.
    run.assert_checked(at_least=FUZZ_FLOOR, answered=30, refused=15, unparsed=50)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_request_messages_get_the_right_answer_or_a_refusal(fuzz_target: str) -> None:
    def send(calls: dict[str, Any], run: FuzzRun, method: str, request: Any, valid: bool) -> None:
        _check_answer(calls[method], method, request.SerializeToString(), valid, run, request)

    run = _run_fuzzer(fuzz_target, "request messages", request_messages(), send)
    # Ten runs of 300 gave 95-149 answered and 151-205 refused.
    run.assert_checked(at_least=FUZZ_FLOOR, answered=40, refused=60)
