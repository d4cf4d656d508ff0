"""The protobuf edge of verify: warmup records (PredictionLog) and saved_model.pb signatures in,
replay requests out, responses back to numpy. Nothing else in ``verify`` touches a message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from .. import _wire
from .._proto import serving_pb2 as pb
from .._proto import tensorflow_pb2 as tf
from ..errors import ArtifactError
from ..metadata import Signature
from .records import Outputs, Record

__all__ = ["parse_record", "parse_response", "replay_request", "saved_model_signatures"]

SERVE_TAG = "serve"  # the MetaGraph TF Serving loads


def saved_model_signatures(data: bytes, source: str) -> dict[str, Signature]:
    """The serving MetaGraph's SignatureDefs, TF2's internal ``__`` entries left out."""
    try:
        saved = tf.SavedModel.FromString(data)
    except DecodeError as error:
        raise ArtifactError(f"{source}: not a SavedModel protobuf ({error})") from error
    graphs = [g for g in saved.meta_graphs if SERVE_TAG in g.meta_info_def.tags]
    if not graphs:
        tags = [list(g.meta_info_def.tags) for g in saved.meta_graphs]
        raise ArtifactError(f"{source}: no MetaGraph tagged {SERVE_TAG!r} (tags: {tags})")
    return {
        key: Signature(
            method_name=sig.method_name,
            inputs={k: _wire._tensor_spec(v) for k, v in sig.inputs.items()},
            outputs={k: _wire._tensor_spec(v) for k, v in sig.outputs.items()},
        )
        for key, sig in graphs[0].signature_def.items()
        if not key.startswith("__")
    }


def parse_record(raw: bytes, number: int, source: str) -> Record:
    """One warmup record with its reference answer; ArtifactError if it has none."""
    where = f"{source}: record {number}"
    try:
        log = pb.PredictionLog.FromString(raw)
    except DecodeError as error:
        raise ArtifactError(f"{where}: not a PredictionLog ({error})") from error
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request: Any = log.predict_log.request
        if not log.predict_log.HasField("response") or not log.predict_log.response.outputs:
            raise ArtifactError(f"{where}: {_NO_REFERENCE}")
        expected: Outputs = {
            alias: _wire.tensor_to_array(tensor, alias)
            for alias, tensor in log.predict_log.response.outputs.items()
        }
        images = _input_images(request.inputs)
        batch = _batch_size(request.inputs)
    elif kind == "classify_log":
        request = log.classify_log.request
        if not log.classify_log.HasField("response"):
            raise ArtifactError(f"{where}: {_NO_REFERENCE}")
        expected = _classifications(log.classify_log.response)
        examples = request.input.example_list.examples
        images = [
            bytes(value)
            for example in examples
            for feature in example.features.feature.values()
            if feature.HasField("bytes_list")
            for value in feature.bytes_list.value
        ]
        batch = len(examples)
    else:
        raise ArtifactError(f"{where}: log type {kind!r}; verify replays predict and classify")
    signature = request.model_spec.signature_name or "serving_default"
    return Record(
        number=number,
        signature=signature,
        method=kind.removesuffix("_log"),
        request=request.SerializeToString(),
        expected=expected,
        batch=batch,
        formats=tuple(_sniff(data) for data in images),
    )


_NO_REFERENCE = (
    "no reference response (the artifact was exported before warmup records carried Keras "
    "reference answers); re-export it with this version of xception-export"
)


def replay_request(record: Record, model: _wire.ModelRef) -> Any:
    """The record's request, addressed to ``model`` (name, version or label) and its signature."""
    message: Any = (pb.PredictRequest if record.method == "predict" else pb.ClassificationRequest)()
    message.ParseFromString(record.request)
    spec = _wire._model_spec(_wire.ModelRef(model.name, model.version, model.version_label))
    spec.signature_name = record.signature
    message.model_spec.CopyFrom(spec)
    return message


def parse_response(record: Record, response: Any) -> Outputs:
    """A server's answer to a replayed record as named arrays, in the reference's layout."""
    if record.method == "classify":
        return _classifications(response)
    return {
        alias: _wire.tensor_to_array(tensor, alias) for alias, tensor in response.outputs.items()
    }


def _classifications(response: pb.ClassificationResponse) -> Outputs:
    # Classify has no tensors: rows of (label, score) become classes [N, C] and scores [N, C].
    rows = response.result.classifications
    width = max((len(row.classes) for row in rows), default=0)
    if any(len(row.classes) != width for row in rows):
        raise _wire.WireError("classify rows have different numbers of classes")
    classes = np.array(
        [[c.label.encode() for c in row.classes] for row in rows], dtype=object
    ).reshape(len(rows), width)
    scores = np.array([[c.score for c in row.classes] for row in rows], dtype=np.float32).reshape(
        len(rows), width
    )
    return {"classes": classes, "scores": scores}


def _input_images(inputs: Mapping[str, tf.TensorProto]) -> list[bytes]:
    return [
        bytes(value)
        for tensor in inputs.values()
        if tensor.dtype == tf.DT_STRING
        for value in tensor.string_val
    ]


def _batch_size(inputs: Mapping[str, tf.TensorProto]) -> int:
    for tensor in inputs.values():
        if tensor.tensor_shape.dim:
            return int(tensor.tensor_shape.dim[0].size)
    return 1


_MAGIC = ((b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


def _sniff(data: bytes) -> str:
    return next((name for magic, name in _MAGIC if data.startswith(magic)), "bytes")
