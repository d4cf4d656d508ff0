"""``assets.extra/tf_serving_warmup_requests``: warmup requests for every signature, each with its
reference answer.

TF Serving replays only each record's request (so every signature is traced at load instead of on
the first user request) and ignores its response field. The export fills that field with the answer
of the Keras reference pipeline (``reference.py``: ``load_img`` on the same bytes,
``preprocess_input``, ``model.predict``), never of the exported graph, so the file is a parity proof
that travels with the artifact: ``xception-client verify`` replays it against a running server.

Records: one image per format the graph decodes (JPEG, PNG, GIF, BMP, each at a size that needs a
resize), a mixed batch of all four, a pixel batch of two, a preprocessed image and a classify
request of two examples. At 299x299 that is about 2 MB.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import xception_contract as contract
from xception_contract import layout

from xception_export.labels import Labels
from xception_export.reference import (
    Array,
    KerasReference,
    height_width,
    top_k,
    xception_preprocess_input,
)

WARMUP_FILE: Final = layout.WARMUP_FILE
MAX_RECORDS: Final = 1000  # TF Serving refuses to load more
FORMATS: Final = ("JPEG", "PNG", "GIF", "BMP")


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


def warmup_images(image_size: int | Sequence[int]) -> dict[str, bytes]:
    """One encoded image per graph-decodable format, each at a size other than the model's."""
    h, w = height_width(image_size)
    sizes = {
        "JPEG": (h + 37, w + 11),  # downscale
        "PNG": (h // 2 + 3, w - 5),  # upscale one axis, downscale the other
        "GIF": (h - 7, w // 2 + 9),  # palette image: convert("RGB") semantics
        "BMP": (h // 2 - 3, w // 3 + 8),  # small upscale
    }
    return {
        fmt: _encode(warmup_image(size, seed), fmt)
        for seed, (fmt, size) in enumerate(sizes.items(), 1)
    }


class _Records:
    """TF Serving's PredictionLog records for one model, with the given reference answers."""

    def __init__(self, model_name: str, labels: Labels, top_k_classes: int) -> None:
        self.model_name = model_name
        self.labels = labels
        self.top_k_classes = top_k_classes

    def spec(self, signature: str) -> Any:
        from tensorflow_serving.apis import model_pb2

        return model_pb2.ModelSpec(name=self.model_name, signature_name=signature)

    def predict_response(self, signature: str, probs: Array) -> Any:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        best = top_k(probs, self.top_k_classes, self.labels)
        response = predict_pb2.PredictResponse(model_spec=self.spec(signature))
        outputs = {
            contract.PROBABILITIES_OUTPUT: tf.make_tensor_proto(probs, dtype=tf.float32),
            contract.TOP_K_SCORES_OUTPUT: tf.make_tensor_proto(best.scores, dtype=tf.float32),
            contract.TOP_K_CLASS_IDS_OUTPUT: tf.make_tensor_proto(best.class_ids, dtype=tf.int32),
            contract.TOP_K_LABELS_OUTPUT: tf.make_tensor_proto(best.labels, dtype=tf.string),
        }
        if best.keys is not None:
            outputs[contract.TOP_K_KEYS_OUTPUT] = tf.make_tensor_proto(best.keys, dtype=tf.string)
        for alias, tensor in outputs.items():
            response.outputs[alias].CopyFrom(tensor)
        return response

    def predict(self, signature: str, alias: str, value: Any, probs: Array) -> Any:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

        request = predict_pb2.PredictRequest(model_spec=self.spec(signature))
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(
                request=request, response=self.predict_response(signature, probs)
            )
        )

    def classify(self, images: Sequence[bytes], probs: Array) -> Any:
        """A Classify record: one tf.Example per image, every class in class-id order."""
        import tensorflow as tf
        from tensorflow_serving.apis import classification_pb2, input_pb2, prediction_log_pb2

        examples = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        contract.EXAMPLE_IMAGE_FEATURE: tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[data])
                        )
                    }
                )
            )
            for data in images
        ]
        spec = self.spec(contract.CLASSIFY_SIGNATURE)
        request = classification_pb2.ClassificationRequest(
            model_spec=spec,
            input=input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples)),
        )
        result = classification_pb2.ClassificationResult(
            classifications=[
                classification_pb2.Classifications(
                    classes=[
                        classification_pb2.Class(label=name, score=float(score))
                        for name, score in zip(self.labels.names, row, strict=True)
                    ]
                )
                for row in probs
            ]
        )
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(
                request=request,
                response=classification_pb2.ClassificationResponse(model_spec=spec, result=result),
            )
        )


def write_warmup(
    path: Path,
    image_size: int | Sequence[int],
    model_name: str = contract.DEFAULT_MODEL_NAME,
    *,
    model: Any,
    labels: Labels,
    model_outputs: str,
    top_k_classes: int,
    interpolation: str = "nearest",
    preprocess_input: Callable[[Array], Array] | None = None,
) -> int:
    """Write the warmup TFRecord file with Keras-reference responses; returns the record count.

    ``image_size`` is the model's input size as the export has it (a side, or (height, width)).
    ``model_outputs`` is what the Keras model returns ("logits" gets softmax, as in the graph).
    ``preprocess_input`` overrides Keras Xception's (x / 127.5 - 1) for other preprocess modes.
    The records: each format alone and all formats in one batch (bytes), two pixel images,
    one preprocessed image, and a Classify of a BMP and a JPEG.
    """
    import tensorflow as tf

    reference = KerasReference(
        model,
        image_size,
        model_outputs,
        interpolation,
        preprocess_input or xception_preprocess_input,
    )
    records = _Records(model_name, labels, top_k_classes)
    images = warmup_images(image_size)
    logs = [
        records.predict(
            contract.BYTES_SIGNATURE,
            contract.IMAGE_BYTES_INPUT,
            np.array(batch, dtype=object),
            reference.from_bytes(batch),
        )
        for batch in [[images[fmt]] for fmt in FORMATS] + [[images[fmt] for fmt in FORMATS]]
    ]
    h, w = height_width(image_size)
    pixels = np.stack([warmup_image((h, w), 5), warmup_image((h, w), 6)])
    logs.append(
        records.predict(
            contract.PIXELS_SIGNATURE,
            contract.PIXELS_INPUT,
            pixels,
            reference.from_pixels(pixels),
        )
    )
    preprocessed = reference.preprocess_input(pixels[:1].astype(np.float32))
    logs.append(
        records.predict(
            contract.PREPROCESSED_SIGNATURE,
            contract.PREPROCESSED_INPUT,
            preprocessed,
            reference.from_preprocessed(preprocessed),
        )
    )
    classify_images = [images["BMP"], images["JPEG"]]
    logs.append(records.classify(classify_images, reference.from_bytes(classify_images)))
    assert len(logs) <= MAX_RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return len(logs)
