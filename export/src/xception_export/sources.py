"""Where the Keras model comes from: Keras's Xception with ImageNet, local or random weights, or a
user's fine-tuned classifier (``.keras``, ``.h5`` or SavedModel directory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from xception_export.errors import ExportError, UsageError

if TYPE_CHECKING:
    import keras

# Keras's own names for the ImageNet top weights (keras/src/applications/xception.py).
IMAGENET_WEIGHTS_FILE: Final = "xception_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_WEIGHTS_URL: Final = (
    "https://storage.googleapis.com/tensorflow/keras-applications/xception/" + IMAGENET_WEIGHTS_FILE
)
IMAGENET_WEIGHTS_MD5: Final = "0a58e3b7378bc2990ea3b43d5981f1f6"
MIN_IMAGE_SIZE: Final = 71  # Xception's smallest input
OUTPUT_KINDS: Final = ("auto", "logits", "probabilities")


@dataclass(frozen=True)
class ModelSource:
    """A loaded Keras model plus what the export needs to know about it."""

    model: keras.Model
    image_size: int
    num_classes: int
    outputs: str  # "logits" or "probabilities": what the model itself returns
    kind: str  # "keras.applications.Xception" or "model"
    weights: str  # "imagenet", "random", a weights path, or the model path


def keras_models_cache() -> Path:
    """Keras's download cache for application weights (honours KERAS_HOME)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _imagenet_weights_file() -> str:
    import keras

    cached = keras_models_cache() / IMAGENET_WEIGHTS_FILE
    try:
        return str(
            keras.utils.get_file(
                IMAGENET_WEIGHTS_FILE,
                IMAGENET_WEIGHTS_URL,
                cache_subdir="models",
                file_hash=IMAGENET_WEIGHTS_MD5,
            )
        )
    except Exception as err:  # Keras raises bare Exception on fetch failure
        raise ExportError(
            f"cannot get the ImageNet weights (not in the Keras cache at {cached} and the download "
            f"failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}); put "
            f"{IMAGENET_WEIGHTS_FILE} there, pass --weights PATH to a local .h5 file, or use "
            "--weights random for an untrained plumbing-test model"
        ) from err


def xception(weights: str, image_size: int) -> ModelSource:
    """Keras Xception with its 1000-class softmax top.

    ``weights`` is "imagenet", "random" or the path of a local Keras Xception weights file.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise UsageError(
            f"--image-size must be at least {MIN_IMAGE_SIZE} for Xception. "
            f"Received: --image-size={image_size}"
        )
    if weights not in ("imagenet", "random") and not Path(weights).is_file():
        raise UsageError(
            "--weights must be 'imagenet', 'random' or an existing Keras Xception weights file. "
            f"Received: --weights={weights}"
        )
    import keras

    weights_file = _imagenet_weights_file() if weights == "imagenet" else weights
    # Build without weights at the requested size, then load: the top (global pooling + dense)
    # fits any size, and this sidesteps Keras's "imagenet needs 299" input-shape check.
    model = keras.applications.Xception(
        weights=None, include_top=True, input_shape=(image_size, image_size, 3), classes=1000
    )
    if weights != "random":
        try:
            model.load_weights(weights_file)
        except Exception as err:
            raise ExportError(
                f"cannot load Xception weights from {weights_file}: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from err
    return ModelSource(
        model=model,
        image_size=image_size,
        num_classes=1000,
        outputs="probabilities",
        kind="keras.applications.Xception",
        weights=weights if weights in ("imagenet", "random") else str(Path(weights).resolve()),
    )


def user_model(path: str, image_size: int | None, outputs: str) -> ModelSource:
    """A fine-tuned classifier from ``.keras``, ``.h5`` or a SavedModel directory.

    The model must take ``preprocess_input`` output (float32 in [-1, 1], as models trained the
    ML-Zoomcamp way through ``ImageDataGenerator(preprocessing_function=preprocess_input)`` do) and
    return [N, C] probabilities or logits.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"--model must be an existing .keras, .h5 or SavedModel path. Received: --model={path}"
        )
    import keras

    try:
        if p.is_dir():
            model = _saved_model_as_keras(p, image_size)
        else:
            model = keras.models.load_model(p, compile=False)
    except (UsageError, ExportError):
        raise
    except Exception as err:
        raise ExportError(
            f"cannot load the model at {path}: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    size = _square_size(model, image_size, path)
    out_shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    if out_shape is None or len(out_shape) != 2 or out_shape[1] is None:
        raise ExportError(
            f"the model at {path} must have one output of shape [batch, classes]; "
            f"it has {model.output_shape}"
        )
    kind = outputs if outputs != "auto" else detect_outputs(model, path)
    return ModelSource(
        model=model,
        image_size=size,
        num_classes=int(out_shape[1]),
        outputs=kind,
        kind="model",
        weights=str(p.resolve()),
    )


def _saved_model_as_keras(path: Path, image_size: int | None) -> keras.Model:
    import keras
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise ExportError(f"the SavedModel at {path} has no serving_default signature")
    specs = list(sig.structured_input_signature[1].values())
    if len(specs) != 1 or specs[0].shape.rank != 4:
        raise ExportError(
            f"the SavedModel at {path} must take one [batch, height, width, 3] input; "
            f"its serving_default takes {specs}"
        )
    shape = specs[0].shape.as_list()
    height, width = shape[1], shape[2]
    if height is None or width is None:
        if image_size is None:
            raise UsageError(
                f"the model at {path} has a dynamic input size; give --image-size. "
                "Received: --image-size=None"
            )
        height = width = image_size
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    inp = keras.Input((height, width, 3))
    out = layer(inp)
    if isinstance(out, dict):
        if len(out) != 1:
            raise ExportError(f"the SavedModel at {path} has {len(out)} outputs; expected one")
        out = next(iter(out.values()))
    return keras.Model(inp, out)


def _square_size(model: keras.Model, image_size: int | None, path: str) -> int:
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[3] not in (3, None):
        raise ExportError(
            f"the model at {path} must take one [batch, height, width, 3] input; it takes {shape}"
        )
    height, width = shape[1], shape[2]
    if height is None and width is None:
        if image_size is None:
            raise UsageError(
                f"the model at {path} has a dynamic input size; give --image-size. "
                "Received: --image-size=None"
            )
        return image_size
    if height != width:
        raise ExportError(
            f"the model at {path} takes {height}x{width} inputs; only square sizes are supported"
        )
    if image_size is not None and image_size != height:
        raise UsageError(
            f"--image-size conflicts with the model's fixed input size {height}. "
            f"Received: --image-size={image_size}"
        )
    return int(height)


def detect_outputs(model: keras.Model, path: str = "the model") -> str:
    """'probabilities' if the model ends in softmax, 'logits' if its last layer is linear."""
    import keras

    last = model.layers[-1] if model.layers else None
    if isinstance(last, keras.layers.Softmax):
        return "probabilities"
    activation: Any = getattr(last, "activation", None)
    name = getattr(activation, "__name__", None)
    if name == "softmax":
        return "probabilities"
    if name == "linear":
        return "logits"
    if isinstance(last, keras.layers.Activation) and name is None:
        name = str(getattr(last, "activation", ""))
    raise ExportError(
        f"cannot tell whether {path} outputs logits or probabilities (last layer "
        f"{type(last).__name__ if last else None} with activation {name}); pass --outputs "
        "logits or --outputs probabilities"
    )
