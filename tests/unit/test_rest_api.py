"""REST routing and handling (RestApi.handle) against a half_plus_two fake core: no sockets.

URL cases are TF Serving's own (http_rest_api_handler_test.cc).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)
from xception_serving.api.rest import handler as rest
from xception_serving.api.rest.handler import RestApi, parse_route
from xception_serving.api.rest.http_server import RestLimits
from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.errors import ServingError

from tests.fixtures.rest import HALF_PLUS_TWO_STATUS, error_text

PROMETHEUS = "/monitoring/prometheus/metrics"


class HalfPlusTwoCore:
    """Answers like TF Serving's half_plus_two fixture (version 123): y = 0.5 x + 2.

    Only model "half_plus_two" exists; it records the requests it received."""

    name = "half_plus_two"
    version = 123

    def __init__(self, *, fail_with: ServingError | None = None, delay_s: float = 0.0) -> None:
        self.requests: list[Any] = []
        self.fail_with = fail_with
        self.delay_s = delay_s

    def _check(self, spec: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if spec.name != self.name:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )

    def get_model_metadata(self, request: Any) -> Any:
        self.requests.append(request)
        self._check(request.model_spec)
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        signature.inputs["x"].dtype = types_pb2.DT_FLOAT
        signature.inputs["x"].name = "x:0"
        signature.outputs["y"].dtype = types_pb2.DT_FLOAT
        sigs = get_model_metadata_pb2.SignatureDefMap()
        sigs.signature_def["serving_default"].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.metadata["signature_def"].Pack(sigs)
        return response

    def get_model_status(self, request: Any) -> Any:
        self.requests.append(request)
        self._check(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=self.version, state=30)
        status.status.error_code = 0  # type: ignore[assignment]  # present, as TF Serving sets it
        return response

    def predict(self, request: Any, *, deadline: float | None = None) -> Any:
        import time

        self.requests.append(request)
        self._check(request.model_spec)
        if self.delay_s:
            time.sleep(self.delay_s)
        x = request.inputs["x"]
        values = np.array(x.float_val, dtype=np.float32) * 0.5 + 2
        response = predict_pb2.PredictResponse()
        y = response.outputs["y"]
        y.dtype = types_pb2.DT_FLOAT
        y.tensor_shape.CopyFrom(x.tensor_shape)
        y.float_val.extend(values.tolist())
        return response

    def _ys(self, request: Any) -> list[float]:
        """y = 0.5 x + 2 for each tf.Example of a classify or regress request."""
        self.requests.append(request)
        self._check(request.model_spec)
        examples = request.input.example_list.examples
        return [0.5 * e.features.feature["x"].float_list.value[0] + 2 for e in examples]

    def classify(self, request: Any, *, deadline: float | None = None) -> Any:
        response = classification_pb2.ClassificationResponse()
        for y in self._ys(request):
            response.result.classifications.add().classes.add(label="", score=y)
        return response

    def regress(self, request: Any, *, deadline: float | None = None) -> Any:
        response = regression_pb2.RegressionResponse()
        for y in self._ys(request):
            response.result.regressions.add(value=y)
        return response


def make_api(core: Any = None, metrics: Metrics | None = None) -> tuple[RestApi, Any, Metrics]:
    core = core or HalfPlusTwoCore()
    metrics = metrics or Metrics()
    return RestApi(core, metrics, monitoring_path=PROMETHEUS), core, metrics


def call(
    api: RestApi,
    method: str,
    uri: str,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    raw = body.encode() if isinstance(body, str) else body
    response = api.handle(method, uri, headers or {}, raw)
    return response.status, dict(response.headers), response.body


# -- TF Serving's REST tests ------------------------------------------------------------------


def test_predict_row_answers_tf_serving_half_plus_two() -> None:
    api, _, _ = make_api()
    status, headers, body = call(
        api, "POST", "/v1/models/half_plus_two:predict", '{"instances": [2.0, 3.0, 4.0]}'
    )
    assert status == 200
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_answers_outputs() -> None:
    api, _, _ = make_api()
    body = call(api, "POST", "/v1/models/half_plus_two:predict", '{"inputs": [2.0, 3.0, 4.0]}')[2]
    assert json.loads(body) == {"outputs": [3.0, 3.5, 4.0]}


def test_classify_and_regress_answer_results() -> None:
    api, _, _ = make_api()
    request = '{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}'
    status, _, body = call(api, "POST", "/v1/models/half_plus_two:classify", request)
    assert (status, json.loads(body)) == (200, {"results": [[["", 3.0]]]})
    _, _, body = call(api, "POST", "/v1/models/half_plus_two:regress", request)
    assert json.loads(body) == {"results": [3.0]}


def test_get_status_answers_model_version_status() -> None:
    api, _, _ = make_api()
    status, _, body = call(api, "GET", "/v1/models/half_plus_two")
    assert status == 200
    assert json.loads(body) == HALF_PLUS_TWO_STATUS


def test_get_metadata_answers_signature_defs() -> None:
    api, core, _ = make_api()
    status, _, body = call(api, "GET", "/v1/models/half_plus_two/versions/123/metadata")
    assert status == 200
    result = json.loads(body)
    assert result["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    assert "serving_default" in result["metadata"]["signature_def"]["signature_def"]
    assert list(core.requests[-1].metadata_field) == ["signature_def"]
    assert core.requests[-1].model_spec.version.value == 123


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/foo"),
        ("POST", "/v1/foo"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/debug/model_name"),
        ("GET", "/v1/models/foo:predict"),
        ("GET", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/versions/HELLO:regress"),
        ("POST", "/v1/models/foo/metadata"),
        ("POST", "/v1/models/foo/label/some_label:regress"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),
        ("POST", "/v1/models/foo/versions/some_label:regress"),
        ("PUT", "/v1/models/foo:predict"),
        ("POST", "/v1/models/half_plus_two:PREDICT"),  # regex is case-insensitive, dispatch not
        ("POST", "/v1/models/half_plus_two:predict?debug=1"),  # the query is part of the path
    ],
)
def test_malformed_requests_answer_400_naming_method_and_path(method: str, path: str) -> None:
    api, _, _ = make_api()
    status, headers, body = call(api, method, path, '{"instances": [1.0]}')
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert error_text(body) == f"Malformed request: {method} {path}"


def test_get_models_without_name_is_missing_model_name() -> None:
    api, _, _ = make_api()
    status, _, body = call(api, "GET", "/v1/models")
    assert (status, error_text(body)) == (400, "Missing model name in request.")


def test_version_beyond_int64_fails_to_convert_with_empty_body() -> None:
    api, _, _ = make_api()
    with pytest.raises(ServingError, match="Failed to convert version: 18446744073709551615"):
        parse_route("POST", "/v1/models/foo/versions/18446744073709551615:predict")
    status, _, body = call(api, "POST", "/v1/models/foo/versions/18446744073709551615:predict")
    # TF Serving returns from ParseModelInfo before writing the error JSON.
    assert (status, body) == (400, b"")


@pytest.mark.parametrize("digits", ["9" * 5000, "9223372036854775808", "1" + "0" * 19])
def test_version_of_any_length_past_int64_fails_to_convert(digits: str) -> None:
    api, _, _ = make_api()
    status, _, body = call(api, "GET", f"/v1/models/half_plus_two/versions/{digits}")
    assert (status, body) == (400, b"")
    with pytest.raises(ServingError) as caught:
        parse_route("GET", f"/v1/models/half_plus_two/versions/{digits}")
    assert caught.value.message == f"Failed to convert version: {digits} to numeric."


def test_version_with_leading_zeros_is_its_number_as_simple_atoi_reads_it() -> None:
    assert parse_route("GET", "/v1/models/m/versions/" + "0" * 5000 + "123").version == 123
    max_int64 = "0" * 10 + "9223372036854775807"
    assert parse_route("GET", f"/v1/models/m/versions/{max_int64}").version == 2**63 - 1


def test_unknown_model_answers_404_servable_not_found() -> None:
    api, _, _ = make_api()
    status, _, body = call(api, "POST", "/v1/models/half:predict", '{"instances": [1.0]}')
    assert (status, error_text(body)) == (404, "Servable not found for request: Latest(half)")


def test_json_is_parsed_before_the_model_is_looked_up() -> None:
    api, _, _ = make_api()
    status, _, body = call(api, "POST", "/v1/models/nope:predict", b"")
    assert (status, error_text(body)) == (400, "JSON Parse error: The document is empty")


def test_unknown_signature_answers_rest_wording() -> None:
    api, _, _ = make_api()
    status, _, body = call(
        api,
        "POST",
        "/v1/models/half_plus_two:predict",
        '{"signature_name": "nope", "instances": [1.0]}',
    )
    assert status == 400
    assert error_text(body) == 'Serving signature name: "nope" not found in signature def'


def test_routes_are_case_insensitive_and_names_percent_decoded() -> None:
    api, core, _ = make_api(HalfPlusTwoCore())
    core.name = "half plus two"
    status, _, _ = call(api, "POST", "/V1/Models/half%20plus%20two:predict", '{"inputs": [1.0]}')
    assert status == 200
    assert core.requests[-1].model_spec.name == "half plus two"


def test_version_and_label_paths_fill_the_model_spec() -> None:
    api, core, _ = make_api()
    call(api, "POST", "/v1/models/half_plus_two/versions/123:predict", '{"inputs": [1.0]}')
    assert core.requests[-1].model_spec.version.value == 123
    call(api, "POST", "/v1/models/half_plus_two/labels/can%61ry:predict", '{"inputs": [1.0]}')
    assert core.requests[-1].model_spec.version_label == "canary"
    call(api, "GET", "/v1/models/half_plus_two/labels/stable")
    assert core.requests[-1].model_spec.version_label == "stable"


def test_predict_forwards_signature_name_as_sent() -> None:
    api, core, _ = make_api()
    call(api, "POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0]}')
    assert core.requests[-1].model_spec.signature_name == ""
    assert core.requests[-1].inputs["x"].dtype == types_pb2.DT_FLOAT


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
    ],
)
def test_core_errors_map_to_http_status_with_full_message(
    code: grpc.StatusCode, status: int
) -> None:
    message = "x" * 2000  # REST is not truncated at 1024 like gRPC
    api, _, _ = make_api(HalfPlusTwoCore(fail_with=ServingError(code, message)))
    got, _, body = call(api, "GET", "/v1/models/half_plus_two")
    assert (got, error_text(body)) == (status, message)


def test_unexpected_core_exception_answers_500_without_python_words_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(HalfPlusTwoCore):
        def get_model_status(self, request: Any) -> Any:
            raise RuntimeError("boom")

    api, _, _ = make_api(Broken())
    status, _, body = call(api, "GET", "/v1/models/half_plus_two")
    assert (status, error_text(body)) == (500, rest.INTERNAL_ERROR_MESSAGE)
    # The defect is for the operator: its traceback is in the log, not in the answer.
    assert "RuntimeError: boom" in caplog.text and "Traceback" in caplog.text


# -- HTTP layer details -----------------------------------------------------------------------


def test_gzip_request_bodies_are_decompressed() -> None:
    api, _, _ = make_api()
    body = gzip.compress(b'{"instances": [2.0]}')
    status, _, out = call(
        api, "POST", "/v1/models/half_plus_two:predict", body, {"content-encoding": "gzip"}
    )
    assert (status, json.loads(out)) == (200, {"predictions": [3.0]})


def test_corrupt_gzip_body_reads_as_empty_document() -> None:
    api, _, _ = make_api()
    status, _, out = call(
        api, "POST", "/v1/models/half_plus_two:predict", b"not gzip", {"content-encoding": "gzip"}
    )
    assert (status, error_text(out)) == (400, "JSON Parse error: The document is empty")


@pytest.mark.parametrize(
    ("method", "uri", "status", "phrase"),
    [
        ("GET", "/v2/models/half_plus_two", 404, "Not Found"),  # outside /v1
        ("TRACE", "/v1/models/half_plus_two", 501, "Not Implemented"),  # a method libevent bars
    ],
    ids=["path outside v1", "method not allowed"],
)
def test_requests_outside_the_api_get_libevent_s_error_page(
    method: str, uri: str, status: int, phrase: str
) -> None:
    api, core, _ = make_api()
    got, headers, body = call(api, method, uri)
    assert (got, headers) == (
        status,
        {"Content-Type": "text/html; charset=ISO-8859-1", "Connection": "close"},
    )
    assert (
        body
        == (
            f"<HTML><HEAD>\n<TITLE>{status} {phrase}</TITLE>\n</HEAD><BODY>\n<H1>{phrase}</H1>\n"
            "</BODY></HTML>\n"
        ).encode()
    )
    assert core.requests == []  # refused before anything reached the model


def test_prometheus_path_serves_metrics_text() -> None:
    api, _, _ = make_api()
    call(api, "POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0]}')
    status, headers, body = call(api, "GET", PROMETHEUS)
    assert status == 200
    assert headers["Content-Type"] == "text/plain"
    text = body.decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 1' in text


def test_prometheus_path_with_query_is_unexpected_path() -> None:
    api, _, _ = make_api()
    status, headers, body = call(api, "GET", PROMETHEUS + "?x=1")
    assert status == 400
    assert headers["Content-Type"] == "text/plain"
    assert body.decode() == f"Unexpected path: {PROMETHEUS}?x=1. Should be {PROMETHEUS}"


def test_every_rest_call_is_counted_and_successes_timed() -> None:
    api, _, metrics = make_api()
    call(api, "POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0]}')
    call(api, "POST", "/v1/models/missing:predict", '{"instances": [1.0]}')
    call(api, "GET", "/v1/models/half_plus_two")
    text = metrics.render_prometheus().decode()
    assert ':tensorflow:serving:request_count{model_name="missing",status="NOT_FOUND"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} 2' in text
    assert (
        'request_latency_count{model_name="half_plus_two",API="predict",entrypoint="REST"} 1'
        in text
    )
    assert 'request_latency_count{model_name="half_plus_two",API="",entrypoint="REST"} 1' in text
    assert 'model_name="missing",API=' not in text  # failures are not timed


def test_tensor_content_free_request_reaches_core_as_typed_values() -> None:
    api, core, _ = make_api()
    call(api, "POST", "/v1/models/half_plus_two:predict", '{"instances": [[1.0], [2.0]]}')
    x: tensor_pb2.TensorProto = core.requests[-1].inputs["x"]
    assert (list(x.float_val), [d.size for d in x.tensor_shape.dim]) == ([1.0, 2.0], [2, 1])


def test_timeouts_answer_504_with_tf_serving_rest_wording() -> None:
    failure = ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    api, _, _ = make_api(HalfPlusTwoCore(fail_with=failure))
    status, _, body = call(api, "POST", "/v1/models/half_plus_two:predict", '{"inputs": [1.0]}')
    assert (status, error_text(body)) == (504, "Timed out waiting for notification")


@pytest.mark.parametrize(
    "settings",
    [{"max_connections": 0}, {"request_read_timeout_s": 0}, {"idle_timeout_s": -1.0}],
)
def test_rest_limits_refuse_settings_that_would_admit_or_keep_nothing(
    settings: dict[str, float],
) -> None:
    with pytest.raises(ValueError):
        RestLimits(**settings)  # type: ignore[arg-type]
