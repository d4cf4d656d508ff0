"""What the job writes: one prediction record or one error record per input image (pure logic).

Every stage hands the next one an ``ImageRef`` (where the image came from) and, on failure, a
``Failure`` (which stage, which status code, why). The records are plain dicts so the JSON Lines
and Parquet sinks write the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import grpc
from xception_client import Prediction

__all__ = [
    "STAGES",
    "Classified",
    "Failure",
    "ImageRef",
    "code_name",
    "error_record",
    "prediction_record",
    "to_json_line",
]

Stage = Literal["read", "decode", "inference"]
STAGES: Final[tuple[str, ...]] = ("read", "decode", "inference")

# The canonical status codes share their numbers between gRPC and TensorFlow (absl::StatusCode),
# so gRPC's own enum names a TensorFlow error's code too.
_CODE_NAMES: Final[dict[int, str]] = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(code: int | None) -> str:
    """A status code's name from its number; UNKNOWN for None or a number outside the table."""
    return "UNKNOWN" if code is None else _CODE_NAMES.get(code, "UNKNOWN")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One input: its URI as matched or listed, and the manifest's id for it (None without)."""

    path: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one image has no prediction."""

    ref: ImageRef
    stage: Stage
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Classified:
    """One image's answer: its top-k, best first, and (when asked for) every class's score."""

    ref: ImageRef
    top_k: tuple[Prediction, ...]
    probabilities: tuple[float, ...] | None = None


def prediction_record(
    result: Classified, *, model: str, version: int, with_probabilities: bool
) -> dict[str, Any]:
    """The output row of a classified image (JSON Lines object or Parquet row)."""
    record: dict[str, Any] = {
        "path": result.ref.path,
        "id": result.ref.id,
        "model": model,
        "version": version,
        "top_k": [
            {"label": p.label, "class_id": p.class_id, "score": p.score, "key": p.key}
            for p in result.top_k
        ],
    }
    if with_probabilities:
        if result.probabilities is None:
            raise ValueError(f"no probabilities were computed for {result.ref.path}")
        record["probabilities"] = list(result.probabilities)
    return record


def error_record(failure: Failure) -> dict[str, Any]:
    """The output row of an image that could not be classified."""
    return {
        "path": failure.ref.path,
        "id": failure.ref.id,
        "stage": failure.stage,
        "code": failure.code,
        "message": failure.message,
    }


def to_json_line(record: Mapping[str, Any]) -> str:
    """One JSON Lines line (no newline): UTF-8 text kept as is, floats as Python repr them."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def predictions_from_rows(
    scores: Sequence[float],
    class_ids: Sequence[int],
    labels: Sequence[str],
    keys: Sequence[str] | None,
    top_k: int,
) -> tuple[Prediction, ...]:
    """The first ``top_k`` columns of one image's top-k outputs as Predictions (an empty key is
    None, as the client reads it)."""
    if top_k > len(scores):
        raise ValueError(f"top_k={top_k} but the model exports its {len(scores)} best classes")
    return tuple(
        Prediction(
            label=labels[i],
            key=(keys[i] or None) if keys is not None else None,
            score=float(scores[i]),
            class_id=int(class_ids[i]),
        )
        for i in range(top_k)
    )
