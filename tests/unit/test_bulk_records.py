"""Output records of the bulk job: a prediction row and an error row have the documented keys,
JSON lines keep text and floats exactly, status codes are named as gRPC and TensorFlow name them,
and a dead-lettered batch becomes one error per image with its error's code."""

from __future__ import annotations

import json

import grpc
import pytest
from xception_bulk.pipeline import dead_letter, failure_code, parquet_schema
from xception_bulk.records import (
    Classified,
    Failure,
    ImageRef,
    code_name,
    error_record,
    prediction_record,
    predictions_from_rows,
    to_json_line,
)
from xception_client import Prediction, ServerUnavailable

TOP = (
    Prediction(label="tabby", key="n02123045", score=0.71, class_id=281),
    Prediction(label="café", key=None, score=1e-7, class_id=3),
)


def test_prediction_record_has_path_id_model_version_and_top_k() -> None:
    record = prediction_record(
        Classified(ImageRef("gs://b/cat.jpg", "42"), TOP),
        model="xception",
        version=3,
        with_probabilities=False,
    )
    assert record == {
        "path": "gs://b/cat.jpg",
        "id": "42",
        "model": "xception",
        "version": 3,
        "top_k": [
            {"label": "tabby", "class_id": 281, "score": 0.71, "key": "n02123045"},
            {"label": "café", "class_id": 3, "score": 1e-7, "key": None},
        ],
    }


def test_prediction_record_carries_probabilities_only_when_asked() -> None:
    result = Classified(ImageRef("a.png"), TOP, (0.25, 0.75))
    with_p = prediction_record(result, model="m", version=1, with_probabilities=True)
    assert with_p["probabilities"] == [0.25, 0.75]
    assert "probabilities" not in prediction_record(
        result, model="m", version=1, with_probabilities=False
    )


def test_prediction_record_refuses_missing_probabilities_when_asked() -> None:
    with pytest.raises(ValueError, match=r"no probabilities were computed for a\.png"):
        prediction_record(
            Classified(ImageRef("a.png"), TOP), model="m", version=1, with_probabilities=True
        )


def test_error_record_names_path_stage_code_and_message() -> None:
    failure = Failure(ImageRef("x.jpg"), "decode", "INVALID_ARGUMENT", "image x.jpg is empty")
    assert error_record(failure) == {
        "path": "x.jpg",
        "id": None,
        "stage": "decode",
        "code": "INVALID_ARGUMENT",
        "message": "image x.jpg is empty",
    }


def test_json_line_keeps_unicode_and_round_trips_float32_scores() -> None:
    score = float.fromhex("0x1.1234560000000p-4")  # a float32 value, as the model gives
    line = to_json_line({"label": "café", "score": score})
    assert "café" in line and "\n" not in line
    assert json.loads(line)["score"] == score


def test_json_line_refuses_nan() -> None:
    with pytest.raises(ValueError):
        to_json_line({"score": float("nan")})


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "OK"),
        (3, "INVALID_ARGUMENT"),
        (8, "RESOURCE_EXHAUSTED"),
        (14, "UNAVAILABLE"),
        (16, "UNAUTHENTICATED"),
        (17, "UNKNOWN"),
        (-1, "UNKNOWN"),
        (None, "UNKNOWN"),
    ],
)
def test_code_name_is_the_canonical_status_name(number: int | None, name: str) -> None:
    assert code_name(number) == name


def test_code_names_match_grpc_status_codes() -> None:
    for status in grpc.StatusCode:
        assert code_name(status.value[0]) == status.name


def test_predictions_from_rows_cut_to_top_k_and_read_empty_keys_as_none() -> None:
    top = predictions_from_rows([0.5, 0.3, 0.2], [7, 1, 4], ["a", "b", "c"], ["k7", "", "k4"], 2)
    assert top == (Prediction("a", "k7", 0.5, 7), Prediction("b", None, 0.3, 1))


def test_predictions_from_rows_refuses_top_k_above_the_exported_k() -> None:
    with pytest.raises(ValueError, match="top_k=4 but the model exports its 3 best classes"):
        predictions_from_rows([0.5, 0.3, 0.2], [7, 1, 4], ["a", "b", "c"], None, 4)


def test_dead_lettered_batch_becomes_one_inference_error_per_image() -> None:
    error = ServerUnavailable("connection refused", code=grpc.StatusCode.UNAVAILABLE)
    batch = [(ImageRef("a.jpg"), b"1"), (ImageRef("b.jpg", "7"), b"2")]
    failures = list(dead_letter((batch, error)))
    assert failures == [
        Failure(
            ImageRef("a.jpg"),
            "inference",
            "UNAVAILABLE",
            "ServerUnavailable: UNAVAILABLE: connection refused",
        ),
        Failure(
            ImageRef("b.jpg", "7"),
            "inference",
            "UNAVAILABLE",
            "ServerUnavailable: UNAVAILABLE: connection refused",
        ),
    ]


def test_failure_code_reads_tensorflow_error_codes_and_defaults_to_unknown() -> None:
    class OpError(Exception):
        error_code = 8

    assert failure_code(OpError("OOM")) == "RESOURCE_EXHAUSTED"
    assert failure_code(RuntimeError("boom")) == "UNKNOWN"


def test_parquet_schema_has_the_json_lines_columns() -> None:
    assert parquet_schema(False).names == ["path", "id", "model", "version", "top_k"]
    assert parquet_schema(True).names[-1] == "probabilities"
