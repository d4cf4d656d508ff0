"""The only module that builds or reads protobuf messages: TF Serving's wire format at the edge.

Everything else in the client sees bytes, numpy arrays and the dataclasses of ``labels`` and
``metadata``. The messages are this package's own (``xception_client.tfs``, see ``_proto/``) with
TF Serving's field numbers; the gRPC method paths below are TF Serving's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import xception_contract as contract

from ._proto import serving_pb2 as pb
from ._proto import tensorflow_pb2 as tf
from .errors import TopKTooLarge
from .metadata import ModelMetadata, ModelVersionStatus, Signature, TensorSpec
from .predictions import Prediction

Req = TypeVar("Req")
Resp = TypeVar("Resp")

SIGNATURE_DEF_FIELD = "signature_def"
SIGNATURE_DEF_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


@dataclass(frozen=True, slots=True)
class Method(Generic[Req, Resp]):
    """One unary gRPC method: TF Serving's full path and how to (de)serialize its messages."""

    path: str
    serializer: Callable[[Req], bytes]
    deserializer: Callable[[bytes], Resp]


def _method(path: str, response_type: Any) -> Method[Any, Any]:
    return Method(path, lambda message: message.SerializeToString(), response_type.FromString)


PREDICT: Method[pb.PredictRequest, pb.PredictResponse] = _method(
    "/tensorflow.serving.PredictionService/Predict", pb.PredictResponse
)
CLASSIFY: Method[pb.ClassificationRequest, pb.ClassificationResponse] = _method(
    "/tensorflow.serving.PredictionService/Classify", pb.ClassificationResponse
)
GET_MODEL_METADATA: Method[pb.GetModelMetadataRequest, pb.GetModelMetadataResponse] = _method(
    "/tensorflow.serving.PredictionService/GetModelMetadata", pb.GetModelMetadataResponse
)
GET_MODEL_STATUS: Method[pb.GetModelStatusRequest, pb.GetModelStatusResponse] = _method(
    "/tensorflow.serving.ModelService/GetModelStatus", pb.GetModelStatusResponse
)
SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model, version (or label) and signature a call addresses."""

    name: str
    version: int | None = None
    version_label: str | None = None
    signature: str = contract.BYTES_SIGNATURE


def _model_spec(model: ModelRef, *, with_signature: bool = True) -> pb.ModelSpec:
    spec = pb.ModelSpec(name=model.name)
    if model.version is not None:
        spec.version.value = model.version
    elif model.version_label is not None:
        spec.version_label = model.version_label
    if with_signature:
        spec.signature_name = model.signature
    return spec


def _shape(*dims: int) -> tf.TensorShapeProto:
    return tf.TensorShapeProto(dim=[tf.TensorShapeProto.Dim(size=d) for d in dims])


def predict_bytes_request(
    model: ModelRef, images: Sequence[bytes], output_filter: Sequence[str] = ()
) -> pb.PredictRequest:
    """PredictRequest for the bytes signature: a DT_STRING [N] tensor of encoded images."""
    request = pb.PredictRequest(model_spec=_model_spec(model), output_filter=list(output_filter))
    tensor = request.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = tf.DT_STRING
    tensor.tensor_shape.CopyFrom(_shape(len(images)))
    tensor.string_val.extend(images)
    return request


def predict_pixels_request(
    model: ModelRef, pixels: np.ndarray[Any, Any], output_filter: Sequence[str] = ()
) -> pb.PredictRequest:
    """PredictRequest for the pixel signature: uint8 [N, H, W, 3] as one raw buffer."""
    request = pb.PredictRequest(model_spec=_model_spec(model), output_filter=list(output_filter))
    tensor = request.inputs[contract.PIXELS_INPUT]
    tensor.dtype = tf.DT_UINT8
    tensor.tensor_shape.CopyFrom(_shape(*pixels.shape))
    tensor.tensor_content = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return request


_NUMPY_DTYPES: dict[int, Any] = {
    tf.DT_FLOAT: np.float32,
    tf.DT_DOUBLE: np.float64,
    tf.DT_INT32: np.int32,
    tf.DT_UINT8: np.uint8,
    tf.DT_INT16: np.int16,
    tf.DT_INT8: np.int8,
    tf.DT_INT64: np.int64,
    tf.DT_BOOL: np.bool_,
    tf.DT_UINT16: np.uint16,
    tf.DT_UINT32: np.uint32,
    tf.DT_UINT64: np.uint64,
}
_TYPED_FIELD = {
    tf.DT_FLOAT: "float_val",
    tf.DT_DOUBLE: "double_val",
    tf.DT_INT32: "int_val",
    tf.DT_UINT8: "int_val",
    tf.DT_INT16: "int_val",
    tf.DT_INT8: "int_val",
    tf.DT_UINT16: "int_val",
    tf.DT_INT64: "int64_val",
    tf.DT_BOOL: "bool_val",
    tf.DT_UINT32: "uint32_val",
    tf.DT_UINT64: "uint64_val",
}


class WireError(ValueError):
    """A response that does not have the shape or type the client expects."""


def tensor_to_array(tensor: tf.TensorProto, alias: str = "") -> np.ndarray[Any, Any]:
    """Decode a TensorProto the way TF's Tensor::FromProto does (tensor_content or typed values)."""
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if tensor.dtype == tf.DT_STRING:
        values: list[bytes] = list(tensor.string_val)
        return _fill(np.array(values, dtype=object), count, shape, alias)
    np_dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if np_dtype is None:
        name = tf.DataType.Name(tensor.dtype) if tensor.dtype in tf.DataType.values() else "?"
        raise WireError(f"output {alias!r} has unsupported dtype {name} ({tensor.dtype})")
    if tensor.tensor_content:
        flat = np.frombuffer(tensor.tensor_content, dtype=np.dtype(np_dtype).newbyteorder("<"))
        if flat.size != count:
            raise WireError(f"output {alias!r}: {flat.size} values for shape {list(shape)}")
        return flat.reshape(shape)
    typed = np.asarray(getattr(tensor, _TYPED_FIELD[tensor.dtype]), dtype=np_dtype)
    return _fill(typed, count, shape, alias)


def _fill(
    flat: np.ndarray[Any, Any], count: int, shape: tuple[int, ...], alias: str
) -> np.ndarray[Any, Any]:
    # TF semantics: extra values ignored, a short list repeats its last value, none means zeros.
    if flat.size >= count:
        return flat[:count].reshape(shape)
    if flat.size == 0:
        filler: Any = b"" if flat.dtype == object else 0
        return np.full(shape, filler, dtype=flat.dtype)
    padded = np.concatenate([flat, np.repeat(flat[-1:], count - flat.size)])
    return padded.reshape(shape)


def _output(response: pb.PredictResponse, alias: str) -> np.ndarray[Any, Any]:
    if alias not in response.outputs:
        raise WireError(
            f"response has no output {alias!r} (it has: {sorted(response.outputs)}); "
            "call check_model() to compare the served signature with the client's"
        )
    return tensor_to_array(response.outputs[alias], alias)


def parse_top_k(response: pb.PredictResponse, top_k: int) -> list[list[Prediction]]:
    """Per image, the best ``top_k`` predictions from the top_k_* outputs (best first)."""
    scores = _output(response, contract.TOP_K_SCORES_OUTPUT)
    ids = _output(response, contract.TOP_K_CLASS_IDS_OUTPUT)
    labels = _output(response, contract.TOP_K_LABELS_OUTPUT)
    keys = (
        _output(response, contract.TOP_K_KEYS_OUTPUT)
        if contract.TOP_K_KEYS_OUTPUT in response.outputs
        else None
    )
    if scores.ndim != 2 or ids.shape != scores.shape or labels.shape != scores.shape:
        raise WireError(
            f"top-k outputs disagree: scores {scores.shape}, class ids {ids.shape}, "
            f"labels {labels.shape}"
        )
    exported_k = scores.shape[1]
    if top_k > exported_k:
        raise TopKTooLarge(top_k, exported_k)
    results: list[list[Prediction]] = []
    for row in range(scores.shape[0]):
        results.append(
            [
                Prediction(
                    label=_text(labels[row, col]),
                    key=(_text(keys[row, col]) or None) if keys is not None else None,
                    score=float(scores[row, col]),
                    class_id=int(ids[row, col]),
                )
                for col in range(top_k)
            ]
        )
    return results


def parse_probabilities(response: pb.PredictResponse) -> np.ndarray[Any, Any]:
    """The probabilities output as float32 [N, C]."""
    return _output(response, contract.PROBABILITIES_OUTPUT).astype(np.float32, copy=False)


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def metadata_request(model: ModelRef) -> pb.GetModelMetadataRequest:
    return pb.GetModelMetadataRequest(
        model_spec=_model_spec(model, with_signature=False), metadata_field=[SIGNATURE_DEF_FIELD]
    )


def parse_metadata(response: pb.GetModelMetadataResponse) -> ModelMetadata:
    """Unpack the Any-wrapped SignatureDefMap with the client's own message type."""
    version = response.model_spec.version.value if response.model_spec.HasField("version") else None
    signatures: dict[str, Signature] = {}
    if SIGNATURE_DEF_FIELD in response.metadata:
        packed = response.metadata[SIGNATURE_DEF_FIELD]
        if packed.type_url != SIGNATURE_DEF_TYPE_URL:
            raise WireError(f"metadata {SIGNATURE_DEF_FIELD!r} has type {packed.type_url!r}")
        sig_map = pb.SignatureDefMap.FromString(packed.value)
        for key, sig in sig_map.signature_def.items():
            signatures[key] = Signature(
                method_name=sig.method_name,
                inputs={k: _tensor_spec(v) for k, v in sig.inputs.items()},
                outputs={k: _tensor_spec(v) for k, v in sig.outputs.items()},
            )
    return ModelMetadata(name=response.model_spec.name, version=version, signatures=signatures)


def _tensor_spec(info: tf.TensorInfo) -> TensorSpec:
    dtype = tf.DataType.Name(info.dtype) if info.dtype in tf.DataType.values() else str(info.dtype)
    if info.tensor_shape.unknown_rank:
        return TensorSpec(dtype, None)
    return TensorSpec(dtype, tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim))


def status_request(model: ModelRef) -> pb.GetModelStatusRequest:
    return pb.GetModelStatusRequest(model_spec=_model_spec(model, with_signature=False))


def parse_status(response: pb.GetModelStatusResponse) -> list[ModelVersionStatus]:
    states = pb.ModelVersionStatus.State
    return [
        ModelVersionStatus(
            version=s.version,
            state=states.Name(s.state) if s.state in states.values() else str(s.state),
            error_code=s.status.error_code,
            error_message=s.status.error_message,
        )
        for s in response.model_version_status
    ]
