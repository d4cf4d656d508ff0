"""Error wording helpers and the Prometheus exposition under TF Serving's metric names."""

from __future__ import annotations

import grpc
import pytest
from xception_serving.observability.metrics import LATENCY_BUCKETS_US, Metrics
from xception_serving.runtime.errors import ServingError, from_exception, grpc_message


class FakeOpError(Exception):
    """What tf.errors.OpError carries for the core: TF's code (3 = INVALID_ARGUMENT), a message."""

    error_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def test_grpc_message_is_cut_at_1024_chars_plus_truncated() -> None:
    assert grpc_message("a" * 1024) == "a" * 1024
    assert grpc_message("b" * 1025) == "b" * 1024 + "...TRUNCATED"


def test_from_exception_keeps_serving_errors_and_maps_tf_error_codes() -> None:
    err = ServingError(grpc.StatusCode.NOT_FOUND, "x")
    assert from_exception(err) is err

    mapped = from_exception(FakeOpError("Incompatible shapes"))
    assert (mapped.code, mapped.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Incompatible shapes",
    )


def test_metrics_render_tf_serving_names_without_total_suffix() -> None:
    metrics = Metrics()
    metrics.record_request(
        model_name="m", api="Predict", entrypoint="GRPC", status="OK", latency_s=0.002
    )
    metrics.record_request(
        model_name="m", api="Predict", entrypoint="GRPC", status="NOT_FOUND", latency_s=None
    )
    metrics.wrapped_run_count.inc()
    text = metrics.render_prometheus().decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    labels = 'model_name="m",API="Predict",entrypoint="GRPC"'
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 1" in text
    assert 'le="+Inf"' in text
    assert ":tensorflow:serving:batching_session:wrapped_run_count 1" in text
    assert "_total" not in text
    assert metrics.content_type.startswith("text/plain; version=0.0.4")


def test_latency_buckets_are_tf_servings() -> None:
    assert len(LATENCY_BUCKETS_US) == 33
    assert LATENCY_BUCKETS_US[0] == 10.0
    assert abs(LATENCY_BUCKETS_US[1] - 18.0) < 1e-9


@pytest.mark.parametrize(
    ("eager", "session"),
    [
        pytest.param(
            "Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at "
            '(most recent call last):\n  File "/x/models.py", line 73, in __init__\n\n'
            "Name: <unknown>, Feature: x (data type: float) is required but could not be found."
            "\n\t [[{{node ParseExample/ParseExampleV2}}]] [Op:__inference_pruned_159]",
            "Name: <unknown>, Feature: x (data type: float) is required but could not be found."
            "\n\t [[{{node ParseExample/ParseExampleV2}}]]",
            id="with the Python traceback of the node",
        ),
        pytest.param(
            # From a loaded export: no traceback, a "<stack traces unavailable>" line instead.
            "Graph execution error:\n\nDetected at node map/while/Assert_1/AssertGuard/Assert "
            "defined at (most recent call last):\n<stack traces unavailable>\n"
            "assertion failed: [image_bytes[0]:] [unsupported or undecodable image format]\n"
            "\t [[{{node map/while/Assert_1/AssertGuard/Assert}}]] [Op:__inference_f_1]",
            "assertion failed: [image_bytes[0]:] [unsupported or undecodable image format]\n"
            "\t [[{{node map/while/Assert_1/AssertGuard/Assert}}]]",
            id="stack traces unavailable",
        ),
        pytest.param(
            "Incompatible shapes: [2] vs. [3]",
            "Incompatible shapes: [2] vs. [3]",
            id="no eager wrapper: kept as it is",
        ),
    ],
)
def test_eager_runtime_errors_read_as_tf_serving_session_errors(eager: str, session: str) -> None:
    mapped = from_exception(FakeOpError(eager))
    assert (mapped.code, mapped.message) == (grpc.StatusCode.INVALID_ARGUMENT, session)
