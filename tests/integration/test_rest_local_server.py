"""REST conformance through a real `python -m xception_serving --rest_api_port` process.

Expected bodies are TF Serving's own test expectations (tensorflow_model_server_test.py:
testPredictREST, testPredictColumnarREST, testClassifyREST, testRegressREST, testGetStatusREST,
testPrometheusEndpoint; and http_rest_api_handler_test.cc).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xception_contract as contract

from tests.fixtures.rest import HALF_PLUS_TWO_STATUS, error_text
from tests.fixtures.servers import ServerProcess, start_local_server

PROMETHEUS = "/monitoring/prometheus/metrics"


def write_half_plus_two_tf2(base: Path, version: int = 1) -> Path:
    """A TF2 tf.Module: serving_default x (DT_FLOAT [-1]) -> y = 0.5 x + 2, plus a string
    signature `echo` whose output alias ends in `_bytes` (TF Serving writes it as {"b64": ...})."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x: Any) -> dict[str, Any]:
            return {"y": 0.5 * x + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="raw")])
        def echo(self, raw: Any) -> dict[str, Any]:
            return {"raw_bytes": raw, "length": tf.strings.length(raw, unit="BYTE")}

    module = HalfPlusTwo()
    path = base / str(version)
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.predict, "echo": module.echo}
    )
    return path


def http_call(
    server: ServerProcess, method: str, path: str, body: bytes | str | None = None
) -> tuple[int, str, bytes]:
    assert server.rest_url is not None
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


@pytest.fixture(scope="module")
def rest_server(
    tmp_path_factory: pytest.TempPathFactory, half_plus_two_base: Path
) -> Iterator[ServerProcess]:
    """One server, two models from a models.config: TF Serving's own half_plus_two fixture
    (version 123, classify/regress signatures) and the TF2 module above as "module" (version 1);
    Prometheus enabled."""
    root = tmp_path_factory.mktemp("rest_models")
    write_half_plus_two_tf2(root / "module")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "half_plus_two" base_path: "{half_plus_two_base}" '
        'model_platform: "tensorflow" }\n'
        f'  config {{ name: "module" base_path: "{root / "module"}" '
        'model_platform: "tensorflow" }\n'
        "}\n"
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{PROMETHEUS}" }}\n')
    with start_local_server(
        model_config_file=config,
        rest=True,
        extra_args=[f"--monitoring_config_file={monitoring}"],
    ) as server:
        yield server


# -- predict ----------------------------------------------------------------------------------


def test_rest_predict_row_matches_tf_serving(rest_server: ServerProcess) -> None:
    status, content_type, body = http_call(
        rest_server, "POST", "/v1/models/module:predict", '{"instances": [2.0, 3.0, 4.0]}'
    )
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}
    assert body == b'{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'


def test_rest_predict_columnar_matches_tf_serving(rest_server: ServerProcess) -> None:
    status, _, body = http_call(
        rest_server, "POST", "/v1/models/module:predict", '{"inputs": [2.0, 3.0, 4.0]}'
    )
    assert (status, json.loads(body)) == (200, {"outputs": [3.0, 3.5, 4.0]})


def test_rest_predict_bytes_outputs_are_base64(rest_server: ServerProcess) -> None:
    raw = b"\x00\x01hi\xff"
    request = {"signature_name": "echo", "instances": [{"b64": base64.b64encode(raw).decode()}]}
    status, _, body = http_call(
        rest_server, "POST", "/v1/models/module:predict", json.dumps(request)
    )
    assert status == 200
    assert json.loads(body) == {
        "predictions": [{"length": 5, "raw_bytes": {"b64": base64.b64encode(raw).decode()}}]
    }


def test_rest_predict_bad_base64_is_400(rest_server: ServerProcess) -> None:
    request = '{"signature_name": "echo", "instances": [{"b64": "not base64!"}]}'
    status, _, body = http_call(rest_server, "POST", "/v1/models/module:predict", request)
    assert status == 400
    assert error_text(body) == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Unable to base64 decode"
    )


def test_rest_predict_malformed_json_is_400_with_rapidjson_message(
    rest_server: ServerProcess,
) -> None:
    status, content_type, body = http_call(
        rest_server, "POST", "/v1/models/module:predict", '{"instances": [2.0,]}'
    )
    assert (status, content_type) == (400, "application/json")
    assert error_text(body) == "JSON Parse error: Invalid value. at offset: 19"


def test_rest_unknown_model_is_404_servable_not_found(rest_server: ServerProcess) -> None:
    status, _, body = http_call(
        rest_server, "POST", "/v1/models/missing:predict", '{"instances": [1.0]}'
    )
    assert (status, error_text(body)) == (404, "Servable not found for request: Latest(missing)")


def test_rest_wrong_input_type_is_400(rest_server: ServerProcess) -> None:
    status, _, body = http_call(
        rest_server, "POST", "/v1/models/module:predict", '{"instances": ["x", "y"]}'
    )
    assert status == 400
    assert error_text(body) == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )


# -- status / metadata / monitoring -----------------------------------------------------------


def test_rest_get_status_is_exact(rest_server: ServerProcess) -> None:
    status, content_type, body = http_call(rest_server, "GET", "/v1/models/module")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_rest_get_metadata_shape(rest_server: ServerProcess) -> None:
    status, _, body = http_call(rest_server, "GET", "/v1/models/module/versions/1/metadata")
    assert status == 200
    result = json.loads(body)
    assert result["model_spec"] == {"name": "module", "signature_name": "", "version": "1"}
    signatures = result["metadata"]["signature_def"]["signature_def"]
    x = signatures["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_rest_prometheus_endpoint_exports_tf_serving_metrics(rest_server: ServerProcess) -> None:
    http_call(rest_server, "POST", "/v1/models/module:predict", '{"instances": [1.0]}')
    status, content_type, body = http_call(rest_server, "GET", PROMETHEUS)
    assert (status, content_type) == (200, "text/plain")
    text = body.decode()
    assert "# TYPE" in text
    assert ':tensorflow:serving:request_count{model_name="module",status="OK"}' in text
    assert 'API="predict",entrypoint="REST"' in text
    status, _, body = http_call(rest_server, "GET", PROMETHEUS + "?format=x")
    assert (status, body.decode()) == (
        400,
        f"Unexpected path: {PROMETHEUS}?format=x. Should be {PROMETHEUS}",
    )


def test_rest_paths_outside_v1_are_404(rest_server: ServerProcess) -> None:
    assert http_call(rest_server, "GET", "/healthz")[0] == 404


# -- classify / regress on TF Serving's own fixture -------------------------------------------


def test_rest_classify_matches_tf_serving(rest_server: ServerProcess) -> None:
    request = '{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}'
    status, _, body = http_call(rest_server, "POST", "/v1/models/half_plus_two:classify", request)
    assert (status, json.loads(body)) == (200, {"results": [[["", 3.0]]]})


def test_rest_regress_matches_tf_serving(rest_server: ServerProcess) -> None:
    request = '{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}'
    status, _, body = http_call(rest_server, "POST", "/v1/models/half_plus_two:regress", request)
    assert (status, json.loads(body)) == (200, {"results": [3.0]})


def test_rest_status_of_tf_serving_fixture_is_exact(rest_server: ServerProcess) -> None:
    status, _, body = http_call(rest_server, "GET", "/v1/models/half_plus_two")
    assert status == 200
    assert json.loads(body) == HALF_PLUS_TWO_STATUS


# -- the exported Xception --------------------------------------------------------------------


def test_rest_xception_predict_labels_b64_images(
    xception_server: ServerProcess, small_xception_model: Any, sample_jpeg: bytes
) -> None:
    image = {"b64": base64.b64encode(sample_jpeg).decode()}
    status, _, body = http_call(
        xception_server,
        "POST",
        f"/v1/models/{contract.DEFAULT_MODEL_NAME}:predict",
        json.dumps({"instances": [image, image]}),
    )
    assert status == 200, body[:500]
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == 2
    first = predictions[0]
    top_k = small_xception_model.top_k
    assert len(first[contract.TOP_K_LABELS_OUTPUT]) == top_k
    assert all(isinstance(label, str) for label in first[contract.TOP_K_LABELS_OUTPUT])
    scores = first[contract.TOP_K_SCORES_OUTPUT]
    assert scores == sorted(scores, reverse=True)
    assert len(first[contract.PROBABILITIES_OUTPUT]) == small_xception_model.num_classes
    assert predictions[0] == predictions[1]  # same image, same answer


def test_rest_xception_columnar_and_bad_image(
    xception_server: ServerProcess, sample_jpeg: bytes
) -> None:
    request = {
        "inputs": {contract.IMAGE_BYTES_INPUT: [{"b64": base64.b64encode(sample_jpeg).decode()}]}
    }
    status, _, body = http_call(
        xception_server,
        "POST",
        f"/v1/models/{contract.DEFAULT_MODEL_NAME}:predict",
        json.dumps(request),
    )
    assert status == 200, body[:500]
    outputs = json.loads(body)["outputs"]
    assert len(outputs[contract.TOP_K_LABELS_OUTPUT]) == 1
    bad = {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}
    status, content_type, body = http_call(
        xception_server,
        "POST",
        f"/v1/models/{contract.DEFAULT_MODEL_NAME}:predict",
        json.dumps(bad),
    )
    assert (status, content_type) == (400, "application/json"), body[:500]
    # The graph's InvalidArgument message, whole (TF Serving does not truncate REST errors): the
    # Assert's text and the first bytes of the input ("not"), then TensorFlow's node trace.
    first_line, *trace = error_text(body).split("\n")
    assert first_line == (
        "assertion failed: [image_bytes[0]:] [unsupported or undecodable image format"
        " (expected JPEG, PNG, GIF or BMP); first bytes:] [110 111 116...]"
    )
    assert len(trace) == 1 and "AssertGuard" in trace[0], trace


def test_rest_xception_classify_takes_b64_image_feature(
    xception_server: ServerProcess, small_xception_model: Any, sample_jpeg: bytes
) -> None:
    request = {
        "signature_name": contract.CLASSIFY_SIGNATURE,
        "examples": [
            {contract.EXAMPLE_IMAGE_FEATURE: {"b64": base64.b64encode(sample_jpeg).decode()}}
        ],
    }
    status, _, body = http_call(
        xception_server,
        "POST",
        f"/v1/models/{contract.DEFAULT_MODEL_NAME}:classify",
        json.dumps(request),
    )
    assert status == 200, body[:500]
    results = json.loads(body)["results"]
    assert len(results) == 1
    classes = results[0]
    assert len(classes) in {small_xception_model.top_k, small_xception_model.num_classes}
    assert all(isinstance(label, str) and isinstance(score, float) for label, score in classes)
