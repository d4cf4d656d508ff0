"""The Keras reference pipeline, outside the exported graph: what ``xception-client verify`` holds a
server to.

``keras.utils.load_img`` on the encoded bytes -> float32 array -> ``preprocess_input`` ->
``model.predict`` -> softmax when the export adds it -> top-k in numpy. Nothing here runs the
serving graph, so reference answers written into the artifact are an independent parity proof.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xception_export.labels import Labels

Array = np.ndarray[Any, Any]


def xception_preprocess_input(x: Array) -> Array:
    import keras

    return np.asarray(keras.applications.xception.preprocess_input(x), dtype=np.float32)


def height_width(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a model input size given as a side or as (height, width)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def softmax(logits: Array) -> Array:
    """Softmax over the last axis, in float64 (the reference is the exact value, not TF's)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e: Array = np.exp(z)
    probs: Array = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


@dataclass(frozen=True)
class TopK:
    """Per row the ``k`` best classes, best first (ties: lower class id first, as tf.math.top_k)."""

    scores: Array  # float32 [N, K]
    class_ids: Array  # int32 [N, K]
    labels: Array  # bytes [N, K]
    keys: Array | None  # bytes [N, K], when the labels have keys


@dataclass(frozen=True)
class KerasReference:
    """The Keras model plus what the export wraps around it."""

    model: Any  # keras.Model (Keras 3) or tf_keras.Model
    image_size: int | Sequence[int]  # a side, or (height, width)
    model_outputs: str  # "logits": the export adds softmax; "probabilities": it does not
    interpolation: str = "nearest"
    preprocess_input: Callable[[Array], Array] = xception_preprocess_input

    def load(self, data: bytes) -> Array:
        """``load_img`` -> float32 pixels [H, W, 3], exactly as a Keras user would load a file."""
        import keras

        image = keras.utils.load_img(
            io.BytesIO(data),
            target_size=height_width(self.image_size),
            interpolation=self.interpolation,
        )
        return np.array(image, dtype=np.float32)

    def from_bytes(self, images: Sequence[bytes]) -> Array:
        """Probabilities float32 [N, C] of encoded images."""
        return self.from_pixels(np.stack([self.load(data) for data in images]))

    def from_pixels(self, pixels: Array) -> Array:
        """Probabilities of pixel arrays [N, H, W, 3] (uint8 or float) at the model's size."""
        return self.from_preprocessed(self.preprocess_input(np.asarray(pixels, np.float32)))

    def from_preprocessed(self, x: Array) -> Array:
        """Probabilities of already preprocessed model inputs."""
        out = np.asarray(self.model.predict(np.asarray(x, np.float32), verbose=0))
        out = out.astype(np.float32)
        return softmax(out) if self.model_outputs == "logits" else out


def top_k(probabilities: Array, k: int, labels: Labels) -> TopK:
    """The k best classes of each row with their labels (and keys), derived in numpy."""
    probs = np.asarray(probabilities, dtype=np.float32)
    # A stable sort of the negated scores keeps equal scores in class-id order, like TF's top_k.
    ids = np.argsort(-probs, axis=-1, kind="stable")[:, :k].astype(np.int32)
    scores = np.take_along_axis(probs, ids, axis=-1)
    names = np.array([n.encode() for n in labels.names], dtype=object)
    keys = None
    if labels.keys is not None:
        keys = np.array([key.encode() for key in labels.keys], dtype=object)[ids]
    return TopK(scores=scores, class_ids=ids, labels=names[ids], keys=keys)
