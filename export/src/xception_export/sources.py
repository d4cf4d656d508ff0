"""Where the Keras model comes from: Keras's Xception with ImageNet, local or random weights, or a
user's fine-tuned classifier (``.keras``, ``.h5`` or SavedModel directory)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from xception_export import keras2, normalization, saved_model_graph
from xception_export.errors import ExportError, UsageError
from xception_export.reference import height_width

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


ImageSize = tuple[int, int]  # (height, width), as keras.utils.load_img's target_size


@dataclass(frozen=True)
class ModelSource:
    """A loaded Keras model plus what the export needs to know about it."""

    model: Any  # a keras.Model, or a tf_keras one for Keras 2 files
    input_size: ImageSize
    num_classes: int
    outputs: str  # "logits" or "probabilities": what the model itself returns
    kind: str  # "keras.applications.Xception" or "model"
    weights: str  # "imagenet", "random", a weights path, or the model path
    preprocess: str = "tf"  # a normalization.MODES entry: the preprocess_input the model takes
    preprocess_reason: str = "keras.applications.Xception"  # how the mode was chosen
    loader: str = "keras"  # "tf_keras" (Keras 2 files), "keras" or "tf.saved_model" (no metadata)

    @property
    def image_size(self) -> int:
        """The side of a square input (ValueError if the input is not square; see input_size)."""
        return square_side(self.input_size)


def square_side(input_size: tuple[int, int]) -> int:
    """``height`` of a square (height, width); ValueError naming the size otherwise."""
    height, width = input_size
    if height != width:
        raise ValueError(f"the input is {height}x{width}, not square; use input_size")
    return height


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


def format_size(size: ImageSize) -> str:
    """``--image-size`` spelling: "S" for square, "H,W" otherwise."""
    return str(size[0]) if size[0] == size[1] else f"{size[0]},{size[1]}"


def xception(weights: str, image_size: int | ImageSize) -> ModelSource:
    """Keras Xception with its 1000-class softmax top, at (height, width) ``image_size``.

    ``weights`` is "imagenet", "random" or the path of a local Keras Xception weights file.
    """
    size = height_width(image_size)
    if min(size) < MIN_IMAGE_SIZE:
        raise UsageError(
            f"--image-size must be at least {MIN_IMAGE_SIZE} on each side for Xception. "
            f"Received: --image-size={format_size(size)}"
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
        weights=None, include_top=True, input_shape=(*size, 3), classes=1000
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
        input_size=size,
        num_classes=1000,
        outputs="probabilities",
        kind="keras.applications.Xception",
        weights=weights if weights in ("imagenet", "random") else str(Path(weights).resolve()),
    )


def user_model(
    path: str,
    image_size: int | ImageSize | None,
    outputs: str,
    preprocess: str = "auto",
) -> ModelSource:
    """A fine-tuned classifier from ``.keras``, ``.h5`` or a SavedModel directory.

    Keras 2 files (an .h5 whose ``keras_version`` is 2.x, a SavedModel with keras_metadata.pb)
    load with tf_keras, Keras 3 files with keras; a SavedModel without Keras metadata is wrapped
    as it is and read from its graph. The model must return [N, C] probabilities or logits;
    ``outputs`` and ``preprocess`` ("auto": told from the model) say what it returns and takes.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(
            f"--model must be an existing .keras, .h5 or SavedModel path. Received: --model={path}"
        )
    requested = None if image_size is None else height_width(image_size)
    graph_facts: saved_model_graph.GraphFacts | None = None
    is_keras2 = keras2.is_keras2_file(p)
    try:
        if is_keras2:
            model = keras2.load(p)
        elif p.is_dir():
            graph_facts = saved_model_graph.facts(p)
            model = _saved_model_as_keras(p, requested)
        else:
            import keras

            model = keras.models.load_model(p, compile=False)
    except (UsageError, ExportError):
        raise
    except Exception as err:
        raise ExportError(
            f"cannot load the model at {path}: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    size = _input_size(model, requested, path)
    out_shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    if out_shape is None or len(out_shape) != 2 or out_shape[1] is None:
        raise ExportError(
            f"the model at {path} must have one output of shape [batch, classes]; "
            f"it has {model.output_shape}"
        )
    if graph_facts is None:
        kind = outputs if outputs != "auto" else detect_outputs(model, path)
        names, types = _layer_names(model)
    else:
        names = set(graph_facts.names)
        # A graph shows layers only by their scope names ("rescaling", "normalization_1").
        types = {
            t
            for t in normalization.SCALING_LAYER_TYPES
            if any(n == t.lower() or n.startswith(f"{t.lower()}_") for n in names)
        }
        kind = outputs if outputs != "auto" else _graph_outputs(graph_facts, path, preprocess)
    if preprocess == "auto":
        mode, reason = normalization.detect_mode(names, types, f"the model at {path}")
    elif preprocess in normalization.MODES:
        mode, reason = preprocess, "--preprocess"
    else:
        raise UsageError(
            f"--preprocess must be one of {', '.join(normalization.PREPROCESS_CHOICES)}. "
            f"Received: --preprocess={preprocess}"
        )
    return ModelSource(
        model=model,
        input_size=size,
        num_classes=int(out_shape[1]),
        outputs=kind,
        kind="model",
        weights=str(p.resolve()),
        preprocess=mode,
        preprocess_reason=reason,
        loader="tf_keras" if is_keras2 else ("tf.saved_model" if graph_facts else "keras"),
    )


def _layer_names(model: Any) -> tuple[set[str], set[str]]:
    """Names and class names of every layer, nested models included (Keras 2 and 3)."""
    names: set[str] = set()
    types: set[str] = set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        names.add(str(layer.name))
        types.add(type(layer).__name__)
        stack.extend(getattr(layer, "layers", []))
    return names, types


def _graph_outputs(graph_facts: saved_model_graph.GraphFacts, path: str, preprocess: str) -> str:
    kind = saved_model_graph.head_kind(graph_facts.output_op)
    if kind is None:
        # Name --preprocess in the same line when the graph cannot tell that either, so a
        # non-Keras module needs one retry, not two.
        also = ""
        if preprocess == "auto":
            try:
                normalization.detect_mode(graph_facts.names, (), path)
            except ExportError:
                also = f" and --preprocess {'|'.join(normalization.MODES)} (no known base either)"
        raise ExportError(
            f"the SavedModel at {path} has no Keras metadata (no {keras2.KERAS_METADATA_FILE}) "
            f"and its serving_default output comes from a {graph_facts.output_op or 'unknown'} "
            "op, so whether it returns logits or probabilities cannot be told; pass --outputs "
            f"logits or --outputs probabilities{also}"
        )
    return kind


def _saved_model_as_keras(path: Path, image_size: ImageSize | None) -> keras.Model:
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
    height, width = _resolve_input_size(specs[0].shape.as_list(), image_size, str(path))
    layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    inp = keras.Input((height, width, 3))
    out = layer(inp)
    if isinstance(out, dict):
        if len(out) != 1:
            raise ExportError(f"the SavedModel at {path} has {len(out)} outputs; expected one")
        out = next(iter(out.values()))
    return keras.Model(inp, out)


def _input_size(model: Any, image_size: ImageSize | None, path: str) -> ImageSize:
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[3] not in (3, None):
        raise ExportError(
            f"the model at {path} must take one [batch, height, width, 3] input; it takes {shape}"
        )
    return _resolve_input_size(shape, image_size, path)


def _resolve_input_size(
    shape: Sequence[int | None], image_size: ImageSize | None, path: str
) -> ImageSize:
    """The model's (H, W): its own where fixed, --image-size where dynamic; they must agree."""
    height, width = shape[1], shape[2]
    if height is None or width is None:
        if image_size is None:
            raise UsageError(
                f"the model at {path} has a dynamic input size; give --image-size S or H,W. "
                "Received: --image-size=None"
            )
        fixed = (height, width)
        for axis, (given, own) in enumerate(zip(image_size, fixed, strict=True)):
            if own is not None and own != given:
                raise UsageError(
                    f"--image-size conflicts with the model's fixed "
                    f"{('height', 'width')[axis]} {own}. "
                    f"Received: --image-size={format_size(image_size)}"
                )
        return image_size
    size = (int(height), int(width))
    if image_size is not None and image_size != size:
        raise UsageError(
            f"--image-size conflicts with the model's fixed input size {format_size(size)}. "
            f"Received: --image-size={format_size(image_size)}"
        )
    return size


def detect_outputs(model: Any, path: str = "the model") -> str:
    """'probabilities' if the model ends in softmax, 'logits' if its last layer is linear.

    Works on Keras 3 and Keras 2 (tf_keras) models alike: both name the activation function.
    """
    last = model.layers[-1] if model.layers else None
    if type(last).__name__ == "Softmax":
        return "probabilities"
    activation: Any = getattr(last, "activation", None)
    name = getattr(activation, "__name__", None)
    if name == "softmax":
        return "probabilities"
    if name == "linear":
        return "logits"
    if type(last).__name__ == "Activation" and name is None:
        name = str(getattr(last, "activation", ""))
    raise ExportError(
        f"cannot tell whether {path} outputs logits or probabilities (last layer "
        f"{type(last).__name__ if last else None} with activation {name}); pass --outputs "
        "logits or --outputs probabilities"
    )
