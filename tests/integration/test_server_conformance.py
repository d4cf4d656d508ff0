"""The local server answers TF Serving's gRPC API as TF Serving does (its predict_impl_test.cc and
tensorflow_model_server_test.py cases).

Driven only through the official tensorflow-serving-api stubs, against one server process serving
TF Serving's own test models: "default" = half_plus_two (y = 0.5x + 2) and "half_plus_three",
both at version 123, from a two-model models.config with a version label.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.rpc import float_example, rpc_error
from tests.fixtures.servers import ServerProcess, start_local_server

MODEL = "default"
VERSION = 123


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, half_plus_two_base: Path, half_plus_three_base: Path
) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(
        f"""
model_config_list {{
  config {{
    name: "{MODEL}" base_path: "{half_plus_two_base}" model_platform: "tensorflow"
    version_labels {{ key: "stable" value: {VERSION} }}
  }}
  config {{
    name: "half_plus_three" base_path: "{half_plus_three_base}" model_platform: "tensorflow"
  }}
}}
"""
    )
    with start_local_server(model_config_file=config) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(server.grpc_target, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict_stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(
    name: str = MODEL,
    *,
    x: tuple[float, ...] = (2.0,),
    shape: tuple[int, ...] | None = (1,),
    signature: str = "",
    output_filter: tuple[str, ...] = (),
) -> predict_pb2.PredictRequest:
    """VerifyPredictRequest's request: x as float_val, DT_FLOAT, shape [1]."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    if shape is not None:
        for size in shape:
            tensor.tensor_shape.dim.add().size = size
    tensor.float_val.extend(x)
    request.output_filter.extend(output_filter)
    return request


def assert_spec(spec: object, name: str, signature: str, version: int = VERSION) -> None:
    assert spec.name == name  # type: ignore[attr-defined]
    assert spec.signature_name == signature  # type: ignore[attr-defined]
    assert spec.version.value == version  # type: ignore[attr-defined]


# -- status and metadata ----------------------------------------------------------------------


def test_get_model_status_reports_one_available_version(model_stub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = model_stub.GetModelStatus(request, timeout=30)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == VERSION
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0
    assert status.HasField("status")


@pytest.mark.parametrize(
    ("name", "version", "code", "message"),
    [
        ("nope", None, grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        (MODEL, 7, grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model default"),
        ("", None, grpc.StatusCode.NOT_FOUND, "Could not find any versions of model "),
    ],
)
def test_get_model_status_unknown_model_or_version_is_not_found(
    model_stub, name, version, code, message
) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    err = rpc_error(model_stub.GetModelStatus, request)
    assert (err.code(), err.details()) == (code, message)


def test_get_model_status_without_model_spec_is_invalid(model_stub) -> None:
    err = rpc_error(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_get_model_metadata_returns_signature_def_map(predict_stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "ignored_by_metadata"
    request.metadata_field.append("signature_def")
    response = predict_stub.GetModelMetadata(request, timeout=30)
    assert_spec(response.model_spec, MODEL, "")
    assert list(response.metadata) == ["signature_def"]
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert signatures.signature_def["classify_x_to_y"].outputs["scores"].dtype == types_pb2.DT_FLOAT


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((), "GetModelMetadataRequest must specify at least one metadata_field"),
        (("signature_def", "bogus"), "Metadata field bogus is not supported"),
    ],
)
def test_get_model_metadata_rejects_missing_or_unknown_fields(
    predict_stub, fields, message
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.extend(fields)
    err = rpc_error(predict_stub.GetModelMetadata, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


# -- Predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output_filter", [(), ("y",)])
def test_predict_half_plus_two_with_and_without_output_filter(predict_stub, output_filter) -> None:
    response = predict_stub.Predict(predict_request(output_filter=output_filter), timeout=30)
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert list(y.float_val) == [3.0]
    assert not y.tensor_content  # typed repeated field, as TF Serving's AsProtoField
    assert [d.size for d in y.tensor_shape.dim] == [1]
    assert_spec(response.model_spec, MODEL, "serving_default")


def test_predict_second_model_of_config_answers_half_plus_three(predict_stub) -> None:
    response = predict_stub.Predict(predict_request("half_plus_three"), timeout=30)
    assert list(response.outputs["y"].float_val) == [4.0]
    assert_spec(response.model_spec, "half_plus_three", "serving_default")


def test_predict_accepts_tensor_content_and_keeps_shape(predict_stub) -> None:
    request = predict_request()
    x = np.array([[2.0], [3.0], [4.0]], dtype=np.float32)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert request.inputs["x"].tensor_content
    response = predict_stub.Predict(request, timeout=30)
    y = response.outputs["y"]
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert list(y.float_val) == [3.0, 3.5, 4.0]


@pytest.mark.parametrize(
    ("values", "shape", "expected"),
    [
        ((2.0,), (3,), [3.0, 3.0, 3.0]),  # fewer values: the last one repeats
        ((2.0, 4.0, 6.0, 8.0), (2,), [3.0, 4.0]),  # more values: extras ignored
        ((), (2,), [2.0, 2.0]),  # no values: zeros
    ],
)
def test_predict_typed_field_follows_tf_fill_and_truncate_rules(
    predict_stub, values, shape, expected
) -> None:
    response = predict_stub.Predict(predict_request(x=values, shape=shape), timeout=30)
    assert list(response.outputs["y"].float_val) == expected


def test_predict_scalar_input_without_shape_gives_scalar_output(predict_stub) -> None:
    response = predict_stub.Predict(predict_request(shape=None), timeout=30)
    y = response.outputs["y"]
    assert list(y.float_val) == [3.0]
    assert len(y.tensor_shape.dim) == 0


def test_predict_by_version_and_by_label(predict_stub) -> None:
    request = predict_request()
    request.model_spec.version.value = VERSION
    assert predict_stub.Predict(request, timeout=30).model_spec.version.value == VERSION
    request = predict_request()
    request.model_spec.version_label = "stable"
    response = predict_stub.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0]
    assert response.model_spec.version.value == VERSION


def test_predict_runs_a_named_classify_signature_with_raw_bytes(predict_stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify_x_to_y"
    inputs = request.inputs["inputs"]
    inputs.dtype = types_pb2.DT_STRING
    inputs.tensor_shape.dim.add().size = 1
    inputs.string_val.append(float_example(x=2.0).SerializeToString())  # raw bytes, no base64
    response = predict_stub.Predict(request, timeout=30)
    assert list(response.outputs["scores"].float_val) == [3.0]
    assert_spec(response.model_spec, MODEL, "classify_x_to_y")


def _spec_error_cases() -> list[tuple[str, dict[str, object], grpc.StatusCode, str]]:
    return [
        ("unknown model", {"name": "nope"}, grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        ("unknown version", {"version": 999}, grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(default, 999)"),
        ("unknown label", {"label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT,
         "Unrecognized servable version label: canary"),
        ("empty name", {"name": ""}, grpc.StatusCode.INVALID_ARGUMENT,
         "ModelSpec has no name specified."),
        ("unknown signature", {"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "spec", "code", "message"),
    _spec_error_cases(),
    ids=[c[0] for c in _spec_error_cases()],
)
def test_predict_model_spec_errors_match_tf_serving(
    predict_stub, case, spec, code, message
) -> None:
    request = predict_request(
        str(spec.get("name", MODEL)), signature=str(spec.get("signature", ""))
    )
    if "version" in spec:
        request.model_spec.version.value = int(spec["version"])  # type: ignore[call-overload]
    if "label" in spec:
        request.model_spec.version_label = str(spec["label"])
    err = rpc_error(predict_stub.Predict, request)
    assert (err.code(), err.details()) == (code, message)


def test_predict_without_model_spec_is_invalid(predict_stub) -> None:
    err = rpc_error(predict_stub.Predict, predict_pb2.PredictRequest())
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (
            (),
            "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
            "Missing but required: {x}.",
        ),
        (
            ("x", "z"),
            "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent "
            "extra: {z}. Missing but required: {}.",
        ),
        (
            ("z",),
            "Signature input alias: x(feed name: x:0) not found in request and no default "
            "value provided. Inputs expected to be in the request {z}, or default input "
            "alias set: ",
        ),
    ],
    ids=["missing", "extra", "wrong key"],
)
def test_predict_inputs_other_than_the_signature_s_are_invalid(
    predict_stub, sent: tuple[str, ...], message: str
) -> None:
    template = predict_request().inputs["x"]
    request = predict_request()
    del request.inputs["x"]
    for alias in sent:
        request.inputs[alias].CopyFrom(template)
    err = rpc_error(predict_stub.Predict, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_predict_string_fed_to_float_input_is_invalid(predict_stub) -> None:
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([b"2.0"]))
    err = rpc_error(predict_stub.Predict, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but string is provided",
    )


def test_predict_bad_tensor_content_is_a_parsing_error(predict_stub) -> None:
    request = predict_request()
    request.inputs["x"].tensor_content = b"\x00" * 7  # not 1 float
    err = rpc_error(predict_stub.Predict, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    )


@pytest.mark.parametrize(
    ("output_filter", "message"),
    [
        (
            ("z",),
            "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
        ),
        (("y", "y"), "duplicate output tensor alias: y"),
    ],
)
def test_predict_bad_output_filter_is_invalid(predict_stub, output_filter, message) -> None:
    err = rpc_error(predict_stub.Predict, predict_request(output_filter=output_filter))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_grpc_error_message_is_truncated_at_1024_chars(predict_stub) -> None:
    err = rpc_error(predict_stub.Predict, predict_request(output_filter=("z" * 3000,)))
    assert (
        err.details()
        == ("output tensor alias not found in signature: " + "z" * 3000)[:1024] + "...TRUNCATED"
    )


def test_predict_accepts_messages_over_the_4mib_grpc_default(predict_stub) -> None:
    x = np.arange(1_500_000, dtype=np.float32).reshape(-1, 1)  # 6 MB request and response
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert request.ByteSize() > 4 * 1024 * 1024
    response = predict_stub.Predict(request, timeout=60)
    y = np.asarray(response.outputs["y"].float_val, dtype=np.float32)
    np.testing.assert_allclose(y, 0.5 * x.ravel() + 2.0)


# -- Classify / Regress / MultiInference ------------------------------------------------------


def classification_request(signature: str, *examples: tf.train.Example):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


def test_classify_returns_one_class_per_example(predict_stub) -> None:
    request = classification_request("classify_x_to_y", float_example(x=2.0), float_example(x=4.0))
    response = predict_stub.Classify(request, timeout=30)
    classifications = response.result.classifications
    assert [[(c.label, c.score) for c in cl.classes] for cl in classifications] == [
        [("", 3.0)],
        [("", 4.0)],
    ]
    assert_spec(response.model_spec, MODEL, "classify_x_to_y")


def test_classify_merges_context_features_into_every_example(predict_stub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "classify_x2_to_y3"
    with_context = request.input.example_list_with_context
    with_context.context.CopyFrom(float_example(x2=4.0))
    with_context.examples.extend([float_example(x=1.0), float_example(x=2.0)])
    response = predict_stub.Classify(request, timeout=30)
    assert [cl.classes[0].score for cl in response.result.classifications] == [5.0, 5.0]


@pytest.mark.parametrize(
    ("signature", "examples", "message"),
    [
        ("nope", 1, "No signature was found with the name: nope"),
        ("classify_x_to_y", 0, "Input is empty."),
    ],
)
def test_classify_errors_match_tf_serving(predict_stub, signature, examples, message) -> None:
    request = classification_request(signature, *[float_example(x=2.0)] * examples)
    err = rpc_error(predict_stub.Classify, request)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


# An Example whose feature "x" map entry carries an unknown fixed64 field: protobuf keeps it,
# TensorFlow's example parser refuses it and quotes the bytes, which are not UTF-8 (0xa1).
UNPARSABLE_EXAMPLE = b"\n\x0f\n\r\n\x01x\xa1\x08\x12\x06\n\x04\x00\x00\x00\x00"


def test_classify_example_tensorflow_cannot_parse_is_invalid_naming_the_parse_failure(
    predict_stub,
) -> None:
    request = classification_request("classify_x_to_y")
    request.input.example_list.examples.add().ParseFromString(UNPARSABLE_EXAMPLE)
    err = rpc_error(predict_stub.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # TensorFlow quotes the example's bytes, which are not UTF-8: TF Serving sends them as they
    # are and gRPC's Python client reads them as Latin-1 (cut here at the first NUL byte, where
    # TensorFlow's Python binding ends the message).
    quoted = UNPARSABLE_EXAMPLE.split(b"\0")[0].decode("latin-1")
    assert err.details() == "Could not parse example input, value: '" + quoted, err.details()


def signature_def(predict_stub, key: str) -> object:
    """The server's SignatureDef `key` of the default model, from GetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    signatures = get_model_metadata_pb2.SignatureDefMap()
    predict_stub.GetModelMetadata(request, timeout=30).metadata["signature_def"].Unpack(signatures)
    return signatures.signature_def[key]


def test_classify_on_a_predict_signature_is_invalid(predict_stub) -> None:
    err = rpc_error(
        predict_stub.Classify, classification_request("serving_default", float_example(x=2.0))
    )
    # TF Serving prints the SignatureDef it found (its DebugString, protobuf's text format).
    found = signature_def(predict_stub, "serving_default")
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"No classification inputs found in SignatureDef: {found}",
    )


def test_regress_returns_one_value_per_example(predict_stub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.append(float_example(x=2.0))
    response = predict_stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0]
    assert_spec(response.model_spec, MODEL, "regress_x_to_y")


def test_regress_without_regression_signature_answers_as_tf_serving(predict_stub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL  # serving_default has input x, not "inputs"
    request.input.example_list.examples.append(float_example(x=2.0))
    err = rpc_error(predict_stub.Regress, request)
    found = signature_def(predict_stub, "serving_default")
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"No regression inputs found in SignatureDef: {found}",
    )


def multi_request(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(float_example(x=2.0))
    return request


REGRESS = "tensorflow/serving/regress"
CLASSIFY = "tensorflow/serving/classify"


def test_multi_inference_runs_regress_and_classify_tasks(predict_stub) -> None:
    request = multi_request(
        (MODEL, "regress_x_to_y", REGRESS), (MODEL, "classify_x_to_y", CLASSIFY)
    )
    response = predict_stub.MultiInference(request, timeout=30)
    assert len(response.results) == 2
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert_spec(response.results[0].model_spec, MODEL, "regress_x_to_y")
    assert_spec(response.results[1].model_spec, MODEL, "classify_x_to_y")


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            ((MODEL, "regress_x_to_y", REGRESS), ("half_plus_three", "classify_x_to_y", CLASSIFY)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            ((MODEL, "regress_x_to_y", REGRESS), (MODEL, "regress_x_to_y", REGRESS)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            ((MODEL, "nope", REGRESS),),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            ((MODEL, "serving_default", "tensorflow/serving/predict"),),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
    ],
)
def test_multi_inference_errors_match_tf_serving(predict_stub, tasks, code, message) -> None:
    err = rpc_error(predict_stub.MultiInference, multi_request(*tasks))
    assert (err.code(), err.details()) == (code, message)


# -- transport --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "tensorflow.serving.PredictionService", "ModelService"])
def test_health_reports_serving_once_models_are_loaded(channel, service) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_unregistered_service_is_unimplemented(channel) -> None:
    call = channel.unary_unary("/tensorflow.serving.SessionService/SessionRun")
    err = rpc_error(call, b"", timeout=30)
    assert (err.code(), err.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
