"""``assets.extra/tf_serving_warmup_requests``: one PredictionLog per signature (plus a mixed-format
batch for the bytes signature), built from images generated here, so TF Serving traces every
signature at load instead of on the first user request."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

import numpy as np
from xception_client import contract

WARMUP_FILE: Final = "tf_serving_warmup_requests"
MAX_RECORDS: Final = 1000  # TF Serving refuses to load more


def warmup_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image (gradients plus mild noise), deterministic per seed."""
    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / max(width, 1) * np.pi * (1 + seed % 3)),
            128 + 100 * np.cos(y / max(height, 1) * np.pi * 2),
            255 * (x + y) / max(width + height, 1),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 8, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_warmup(path: Path, image_size: int, model_name: str = contract.DEFAULT_MODEL_NAME) -> int:
    """Write the warmup TFRecord file; returns the number of records."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        input_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    def spec(signature: str) -> model_pb2.ModelSpec:
        return model_pb2.ModelSpec(name=model_name, signature_name=signature)

    jpeg = _encode(warmup_image((image_size + 37, image_size + 11), 1), "JPEG")
    png = _encode(warmup_image((image_size // 2 + 3, image_size - 5), 2), "PNG")
    pixels = warmup_image((image_size, image_size), 3)
    preprocessed = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)

    logs = []
    for batch in ([jpeg], [jpeg, png]):
        request = predict_pb2.PredictRequest(model_spec=spec(contract.BYTES_SIGNATURE))
        request.inputs[contract.IMAGE_BYTES_INPUT].CopyFrom(
            tf.make_tensor_proto(batch, dtype=tf.string)
        )
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    for signature, name, value in (
        (contract.PIXELS_SIGNATURE, contract.PIXELS_INPUT, pixels[np.newaxis]),
        (contract.PREPROCESSED_SIGNATURE, contract.PREPROCESSED_INPUT, preprocessed[np.newaxis]),
    ):
        request = predict_pb2.PredictRequest(model_spec=spec(signature))
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                contract.EXAMPLE_IMAGE_FEATURE: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[png])
                )
            }
        )
    )
    classify = classification_pb2.ClassificationRequest(
        model_spec=spec(contract.CLASSIFY_SIGNATURE),
        input=input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example])),
    )
    logs.append(
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        )
    )
    assert len(logs) <= MAX_RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return len(logs)
