"""The serving graph: a ``tf.Module`` wrapping the Keras model with preprocessing, labels and the
four signatures of the model contract (see xception_contract)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xception_contract as contract

from xception_export import normalization, preprocess
from xception_export.labels import Labels
from xception_export.reference import height_width

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

LABELS_ASSET = "labels.txt"
KEYS_ASSET = "label_keys.txt"


def write_label_assets(labels: Labels, directory: Path) -> tuple[Path, Path | None]:
    """Write labels (and keys) one per line; the graph reads them back as SavedModel assets."""
    directory.mkdir(parents=True, exist_ok=True)
    names = directory / LABELS_ASSET
    names.write_text("".join(f"{n}\n" for n in labels.names), encoding="utf-8")
    keys = None
    if labels.keys is not None:
        keys = directory / KEYS_ASSET
        keys.write_text("".join(f"{k}\n" for k in labels.keys), encoding="utf-8")
    return names, keys


def _table(asset: Any) -> Any:
    import tensorflow as tf

    init = tf.lookup.TextFileInitializer(
        asset,
        key_dtype=tf.int64,
        key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string,
        value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
    )
    return tf.lookup.StaticHashTable(init, default_value="")


def tf_variables(model: Any) -> list[Any]:
    """The model's variables as plain ``tf.Variable``s, each once.

    Keras 3 wraps each in a ``keras.Variable`` whose ``.value`` is the tf.Variable; Keras 2
    (tf_keras) models hold tf.Variables directly. ``variables`` rather than ``weights``, so that
    state outside the weights (e.g. seed generators) is restored too if the graph reads it.
    """
    import tensorflow as tf

    found: dict[int, Any] = {}
    for variable in model.variables:
        plain = variable if isinstance(variable, tf.Variable) else variable.value
        found.setdefault(id(plain), plain)
    return list(found.values())


def build_module(
    model: keras.Model,
    *,
    image_size: preprocess.Size,
    num_classes: int,
    model_outputs: str,
    labels_file: Path,
    keys_file: Path | None,
    top_k: int,
    interpolation: str,
    max_pixels: int,
    limits: preprocess.DecodeLimits = preprocess.DEFAULT_LIMITS,
    preprocess_mode: str = "tf",
) -> tf.Module:
    """A module whose tf.functions are the serving signatures; save with :func:`signatures_of`.

    ``image_size`` is (height, width) or a square side; ``preprocess_mode`` the model's
    ``preprocess_input`` (normalization.MODES), applied in the graph to the bytes and pixels;
    ``max_pixels`` and ``limits`` are checked in the graph before each decode.
    """
    import tensorflow as tf

    module = tf.Module()
    normalize = _track_state(module, model, preprocess_mode, labels_file, keys_file)
    height, width = height_width(image_size)
    square = [None, height, width, 3]  # [N, H, W, 3], square or not
    predict = _network_function(
        module,
        model,
        square=square,
        model_outputs=model_outputs,
        num_classes=num_classes,
        top_k=top_k,
        has_keys=keys_file is not None,
    )
    module.predict = predict

    def from_bytes(images: tf.Tensor, name: str) -> tf.Tensor:
        return preprocess.preprocess_batch(
            images,
            size=(height, width),
            interpolation=interpolation,
            max_pixels=max_pixels,
            normalizer=normalize,
            name=name,
            limits=limits,
        )

    _attach_signatures(module, predict, from_bytes, normalize, square, num_classes)
    return module


def _track_state(
    module: tf.Module,
    model: keras.Model,
    preprocess_mode: str,
    labels_file: Path,
    keys_file: Path | None,
) -> preprocess.Normalizer:
    """Put on ``module`` what the SavedModel must restore (network variables, normalization
    constants, label tables); returns the normalizer that reads those constants."""
    import tensorflow as tf

    # TF Serving restores variables through the SavedModel's saver and runs the graph in a
    # Session; it never reads the object graph. A Keras 3 model attached to the module is saved
    # only in that object graph, so every read in a Session fails with "Could not find variable".
    # Track the underlying tf.Variables instead (each saved once, restored by the saver) and
    # keep the Keras object out of the module: the network is called from a closure.
    module.network_variables = tf_variables(model)
    # Variables, not constants: constant folding would turn x / 127.5 into a 1-ulp-off multiply.
    module.normalization = normalization.make_constants(preprocess_mode)
    normalize = normalization.normalizer(preprocess_mode, module.normalization)
    module.labels_asset = tf.saved_model.Asset(str(labels_file))
    module.labels_table = _table(module.labels_asset)
    if keys_file is not None:
        module.keys_asset = tf.saved_model.Asset(str(keys_file))
        module.keys_table = _table(module.keys_asset)
    return normalize


def _network_function(
    module: tf.Module,
    model: keras.Model,
    *,
    square: list[int | None],
    model_outputs: str,
    num_classes: int,
    top_k: int,
    has_keys: bool,
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """The network plus top-k and labels as one tf.function that every signature calls, so the
    (large) Xception graph is traced and stored once instead of once per signature."""
    import tensorflow as tf

    def run_network(x: tf.Tensor) -> dict[str, tf.Tensor]:
        # An empty batch otherwise fails deep in the network ("Incompatible shapes: [0,S,S,3] vs.
        # [32]" on CPU), which reads like a model bug: name the problem instead.
        non_empty = tf.debugging.assert_greater(
            tf.shape(x)[0], 0, message="empty batch: the request holds no image"
        )
        with tf.control_dependencies([non_empty]):
            x = tf.identity(x)
        out = model(x, training=False)
        out = tf.cast(out, tf.float32)
        probs = tf.nn.softmax(out, axis=-1) if model_outputs == "logits" else out
        probs = tf.ensure_shape(probs, [None, num_classes])
        scores, ids = tf.math.top_k(probs, k=top_k)
        ids = tf.cast(ids, tf.int32)
        result = {
            contract.PROBABILITIES_OUTPUT: probs,
            contract.TOP_K_SCORES_OUTPUT: scores,
            contract.TOP_K_CLASS_IDS_OUTPUT: ids,
            contract.TOP_K_LABELS_OUTPUT: module.labels_table.lookup(tf.cast(ids, tf.int64)),
        }
        if has_keys:
            result[contract.TOP_K_KEYS_OUTPUT] = module.keys_table.lookup(tf.cast(ids, tf.int64))
        return result

    predict: Callable[[tf.Tensor], dict[str, tf.Tensor]] = tf.function(
        run_network, input_signature=[tf.TensorSpec(square, tf.float32)]
    )
    return predict


def _attach_signatures(
    module: tf.Module,
    predict: Callable[[tf.Tensor], dict[str, tf.Tensor]],
    from_bytes: Callable[[tf.Tensor, str], tf.Tensor],
    normalize: preprocess.Normalizer,
    square: list[int | None],
    num_classes: int,
) -> None:
    """The four signatures as tf.functions on ``module``, each feeding ``predict``."""
    import tensorflow as tf

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(from_bytes(image_bytes, contract.IMAGE_BYTES_INPUT))

    def serve_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(tf.ensure_shape(normalize(pixels), square))

    def serve_preprocessed(preprocessed: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict(preprocessed)

    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(
            inputs, {contract.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
        )
        x = from_bytes(
            features[contract.EXAMPLE_IMAGE_FEATURE],
            f"{contract.CLASSIFY_INPUT} {contract.EXAMPLE_IMAGE_FEATURE}",
        )
        probs = predict(x)[contract.PROBABILITIES_OUTPUT]
        all_ids = tf.range(num_classes, dtype=tf.int64)
        classes = module.labels_table.lookup(all_ids)
        classes = tf.tile(classes[tf.newaxis, :], [tf.shape(probs)[0], 1])
        return {contract.CLASSIFY_CLASSES_OUTPUT: classes, contract.CLASSIFY_SCORES_OUTPUT: probs}

    module.serve_bytes = tf.function(
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=contract.IMAGE_BYTES_INPUT)],
    )
    module.serve_pixels = tf.function(
        serve_pixels, input_signature=[tf.TensorSpec(square, tf.uint8, name=contract.PIXELS_INPUT)]
    )
    module.serve_preprocessed = tf.function(
        serve_preprocessed,
        input_signature=[tf.TensorSpec(square, tf.float32, name=contract.PREPROCESSED_INPUT)],
    )
    module.classify = tf.function(
        classify,
        input_signature=[tf.TensorSpec([None], tf.string, name=contract.CLASSIFY_INPUT)],
    )


def signatures_of(module: tf.Module) -> dict[str, Any]:
    """Signature name -> concrete function, for ``tf.saved_model.save``."""
    return {
        contract.BYTES_SIGNATURE: module.serve_bytes.get_concrete_function(),
        contract.PIXELS_SIGNATURE: module.serve_pixels.get_concrete_function(),
        contract.PREPROCESSED_SIGNATURE: module.serve_preprocessed.get_concrete_function(),
        contract.CLASSIFY_SIGNATURE: module.classify.get_concrete_function(),
    }


METHOD_NAMES = {
    contract.BYTES_SIGNATURE: contract.PREDICT_METHOD,
    contract.PIXELS_SIGNATURE: contract.PREDICT_METHOD,
    contract.PREPROCESSED_SIGNATURE: contract.PREDICT_METHOD,
    contract.CLASSIFY_SIGNATURE: contract.CLASSIFY_METHOD,
}


def set_method_names(export_dir: Path) -> None:
    """Give each SignatureDef its TF Serving method name (tf.saved_model.save writes predict for
    all), then rewrite the fingerprint so it matches the edited saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    pb = export_dir / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pb.read_bytes())
    for meta in saved.meta_graphs:
        for name, sig in meta.signature_def.items():
            if name in METHOD_NAMES:
                sig.method_name = METHOD_NAMES[name]
    pb.write_bytes(saved.SerializeToString(deterministic=True))
    fingerprint = export_dir / "fingerprint.pb"
    if fingerprint.exists():
        fingerprint.unlink()
        fingerprinting_utils.write_fingerprint(str(export_dir))
