"""The usual way: how a TF Serving client classifies an image without this bundle.

Pillow decode, a Keras ``load_img``-style nearest resize to SxS, float32 ``x / 127.5 - 1`` on
the client, and a float32 tensor (in ``tensor_content``, as ``tf.make_tensor_proto`` writes it) to
the ``serving_preprocessed`` signature, through TF Serving's own Python API
(``tensorflow_serving.apis``: ``predict_pb2`` and ``prediction_service_pb2_grpc``), the answer
read with ``tf.make_ndarray``. Those modules import TensorFlow, so importing this one loads
TensorFlow into the process, as it does in a user's; an idle TensorFlow costs no CPU time.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
import xception_contract as contract
from PIL import Image
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

MAX_MESSAGE = 64 * 1024 * 1024


def keras_style_preprocess(data: bytes, size: int) -> np.ndarray[Any, Any]:
    """keras.utils.load_img(target_size=(S, S)) (nearest) + img_to_array + preprocess_input."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        resized = rgb.resize((size, size), Image.Resampling.NEAREST)
        x = np.asarray(resized, dtype=np.float32)
    x = x / np.float32(127.5) - np.float32(1.0)
    return x[np.newaxis]


def preprocessed_request(model_name: str, x: np.ndarray[Any, Any]) -> Any:
    """PredictRequest with a float32 tensor in tensor_content (as tf.make_tensor_proto does)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = contract.PREPROCESSED_SIGNATURE
    tensor = request.inputs[contract.PREPROCESSED_INPUT]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in x.shape]
        )
    )
    tensor.tensor_content = np.ascontiguousarray(x, dtype="<f4").tobytes()
    return request


def bytes_request(model_name: str, images: Sequence[bytes]) -> Any:
    """PredictRequest of the bytes signature (a DT_STRING [N] tensor of encoded images)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = contract.BYTES_SIGNATURE
    tensor = request.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(images)
    tensor.string_val.extend(images)
    return request


def top_k(response: Any, k: int) -> list[list[tuple[int, str, float]]]:
    """Per image, the ``k`` best (class id, label, score) from the top_k_* outputs."""
    outputs = response.outputs
    scores = tf.make_ndarray(outputs[contract.TOP_K_SCORES_OUTPUT])
    ids = tf.make_ndarray(outputs[contract.TOP_K_CLASS_IDS_OUTPUT])
    labels = tf.make_ndarray(outputs[contract.TOP_K_LABELS_OUTPUT])
    return [
        [
            (int(i), label.decode(), float(score))
            for i, label, score in zip(id_row[:k], label_row[:k], score_row[:k], strict=True)
        ]
        for id_row, label_row, score_row in zip(ids, labels, scores, strict=True)
    ]


def channel(target: str) -> grpc.Channel:
    """An insecure channel with room for large messages (float tensors are ~1 MB per image)."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )


class UsualGrpc:
    """The usual way as a load driver (see load.py): one image per request."""

    name = "usual-float32"

    def __init__(
        self, target: str, model_name: str, images: Sequence[bytes], size: int, timeout: float
    ) -> None:
        self._channel = channel(target)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel).Predict
        self._model_name = model_name
        self._images = images
        self._size = size
        self._timeout = timeout

    def _request(self, data: bytes) -> Any:
        return preprocessed_request(self._model_name, keras_style_preprocess(data, self._size))

    def request_bytes(self, data: bytes) -> int:
        return int(self._request(data).ByteSize())

    def __call__(self, worker: int, index: int) -> None:
        request = self._request(self._images[index % len(self._images)])
        top_k(self._predict(request, timeout=self._timeout), contract.DEFAULT_TOP_K)

    def stream(self, count: int, concurrency: int, images_per_request: int | None = None) -> int:
        """The same window of futures as ``Client.predict_many``, preparing each request as it
        is submitted; always one image per request (the usual way does not pack)."""
        if images_per_request not in (None, 1):
            raise ValueError(f"the usual way sends one image per request, not {images_per_request}")
        pending: deque[Any] = deque()
        done = 0
        for i in range(count):
            request = self._request(self._images[i % len(self._images)])
            pending.append(self._predict.future(request, timeout=self._timeout))
            if len(pending) >= concurrency:
                top_k(pending.popleft().result(), contract.DEFAULT_TOP_K)
                done += 1
        while pending:
            top_k(pending.popleft().result(), contract.DEFAULT_TOP_K)
            done += 1
        return done

    def close(self) -> None:
        self._channel.close()
