"""The ``preprocess_input`` modes of ``keras.applications`` (imagenet_utils), in-graph and exact,
and which one a model expects, told from its layer names.

Keras runs them on float32 numpy arrays, so each step here is the same float32 op in the same
order. Divisors are variables, not constants: graph constant folding turns ``x / c`` into
``x * (1 / c)``, which is 1 ulp off for many values (111 of 256 for 127.5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

import numpy as np

from xception_export.errors import ExportError

if TYPE_CHECKING:
    import tensorflow as tf

MODES: Final = ("tf", "torch", "caffe", "none")
PREPROCESS_CHOICES: Final = ("auto", *MODES)

# What each mode computes, for metadata, `inspect` and the README.
DESCRIPTIONS: Final = {
    "tf": "x / 127.5 - 1 (imagenet_utils mode 'tf': Xception, Inception, MobileNet, ResNetV2)",
    "torch": "(x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225] "
    "(imagenet_utils mode 'torch': DenseNet)",
    "caffe": "RGB -> BGR, x - [103.939, 116.779, 123.68] "
    "(imagenet_utils mode 'caffe': ResNet, VGG)",
    "none": "raw 0..255 float32 (the model scales inside: EfficientNet, ConvNeXt, MobileNetV3)",
}

TORCH_MEAN: Final = (0.485, 0.456, 0.406)
TORCH_STD: Final = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR: Final = (103.939, 116.779, 123.68)


def make_constants(mode: str) -> dict[str, tf.Variable]:
    """The non-foldable divisors ``mode`` needs, as variables for the module to track."""
    import tensorflow as tf

    def var(value: float | tuple[float, ...], name: str) -> tf.Variable:
        return tf.Variable(value, trainable=False, dtype=tf.float32, name=name)

    if mode == "tf":
        return {"divisor": var(127.5, "divisor")}
    if mode == "torch":
        return {"divisor": var(255.0, "divisor"), "std": var(TORCH_STD, "std")}
    if mode in ("caffe", "none"):
        return {}
    raise ValueError(f"preprocess mode must be one of {', '.join(MODES)}; got {mode!r}")


def normalizer(mode: str, constants: dict[str, tf.Variable]) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from uint8/float RGB pixels [..., 3] to the model's float32 input."""
    import tensorflow as tf

    def tf_mode(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.float32) / constants["divisor"] - 1.0

    def torch_mode(x: tf.Tensor) -> tf.Tensor:
        scaled = tf.cast(x, tf.float32) / constants["divisor"]
        return (scaled - tf.constant(TORCH_MEAN, tf.float32)) / constants["std"]

    def caffe_mode(x: tf.Tensor) -> tf.Tensor:
        bgr = tf.reverse(tf.cast(x, tf.float32), axis=[-1])
        return bgr - tf.constant(CAFFE_MEAN_BGR, tf.float32)

    def none_mode(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.float32)

    functions = {"tf": tf_mode, "torch": torch_mode, "caffe": caffe_mode, "none": none_mode}
    if mode not in functions:
        raise ValueError(f"preprocess mode must be one of {', '.join(MODES)}; got {mode!r}")
    return functions[mode]


# Layer names keras.applications gives its bases (Keras 2 and 3), per family, and the mode that
# family's preprocess_input uses. Checked in order: the first family whose marker is present wins.
_FAMILIES: Final = (
    ("Xception", ("block14_sepconv2", "block2_sepconv1"), "tf"),
    ("DenseNet", ("pool2_conv", "conv2_block1_concat"), "torch"),
    ("ResNetV2", ("post_bn", "conv2_block1_preact_bn"), "tf"),
    ("ResNet", ("conv1_conv", "conv2_block1_out"), "caffe"),
    ("VGG", ("block5_conv3",), "caffe"),
    ("InceptionV3", ("mixed10",), "tf"),
    ("InceptionResNetV2", ("conv_7b", "block35_1"), "tf"),
    ("MobileNet", ("conv_dw_1", "conv_pw_13"), "tf"),
    ("MobileNetV2", ("expanded_conv_depthwise", "block_16_project"), "tf"),
    ("NASNet", ("stem_conv1",), "tf"),
)
# Layers that scale pixels inside the model (EfficientNet, ConvNeXt, RegNet, MobileNetV3): the
# model takes raw 0..255 input, whatever its base.
SCALING_LAYER_TYPES: Final = ("Rescaling", "Normalization")


def detect_mode(
    layer_names: Iterable[str], layer_types: Iterable[str], where: str
) -> tuple[str, str]:
    """(mode, why) for a model with these (nested) layer names and class names.

    Raises ExportError naming --preprocess when no known base or scaling layer is found.
    """
    types = set(layer_types)
    scaling = sorted(types.intersection(SCALING_LAYER_TYPES))
    if scaling:
        return "none", f"a {scaling[0]} layer inside the model"
    names = set(layer_names)
    for family, markers, mode in _FAMILIES:
        if any(marker in names for marker in markers):
            return mode, f"keras.applications {family} layer names"
    raise ExportError(
        f"cannot tell which preprocess_input {where} expects (no keras.applications base or "
        "Rescaling/Normalization layer among its layers); pass --preprocess "
        f"{'|'.join(MODES)}"
    )


def reference_preprocess_input(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """Keras's own ``imagenet_utils.preprocess_input`` for ``mode`` on float32 numpy arrays (the
    reference the graph is held to; "none" passes the pixels through)."""

    def run(x: np.ndarray) -> np.ndarray:
        import keras

        x = np.array(x, dtype=np.float32)  # a copy: Keras works in place
        if mode == "none":
            return x
        out = keras.applications.imagenet_utils.preprocess_input(x, mode=mode)
        return np.asarray(out, dtype=np.float32)

    if mode not in MODES:
        raise ValueError(f"preprocess mode must be one of {', '.join(MODES)}; got {mode!r}")
    return run
