"""Every ``keras.applications`` preprocessing mode, baked into the graph with exact parity.

Each mode's classifier is built on a ``weights=None`` base whose ``preprocess_input`` uses that
mode (tf: MobileNet, caffe: ResNet50, torch: DenseNet121, none: MobileNetV3Small, which scales
inside), exported with ``--preprocess`` left on auto, and compared with ``load_img`` ->
``imagenet_utils.preprocess_input(mode)`` -> ``model.predict`` -> softmax. Run with ``-s`` for
the figures.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.classifiers import course_classifier, softmax
from tests.fixtures.images import IMAGE_FORMATS, image_bytes

SIZE = (32, 32)  # the smallest input these bases take: fast exports
CLASSES = ["a", "b", "c", "d", "e"]
PROBABILITY_TOLERANCE = 1e-5
SOURCE_SIZES = ((32, 32), (35, 53), (97, 131), (19, 7), (40, 32))


def _bases() -> dict[str, Callable[[], Any]]:
    import keras

    apps = keras.applications
    common: dict[str, Any] = {"weights": None, "include_top": False, "input_shape": (*SIZE, 3)}
    return {
        "tf": lambda: apps.MobileNet(alpha=0.25, **common),
        "caffe": lambda: apps.ResNet50(**common),
        "torch": lambda: apps.DenseNet121(**common),
        "none": lambda: apps.MobileNetV3Small(minimalistic=True, **common),
    }


def _reference_input(data: bytes, mode: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    import keras

    x = np.array(keras.utils.load_img(io.BytesIO(data), target_size=size), dtype="float32")
    if mode == "none":
        return x
    return np.asarray(keras.applications.imagenet_utils.preprocess_input(x, mode=mode))


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("".join(f"{name}\n" for name in CLASSES))
    return path


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "none"])
def test_mode_is_detected_from_the_base_and_exports_with_parity(
    mode: str, labels_file: Path, images_by_format: dict[str, bytes], tmp_path: Path
) -> None:
    import keras
    import tensorflow as tf
    from xception_export import inspection, normalization
    from xception_export.api import export

    keras.utils.set_random_seed(5)
    reference = normalization.reference_preprocess_input(mode)
    model = course_classifier(keras, _bases()[mode](), SIZE, len(CLASSES), reference)
    path = tmp_path / f"{mode}.keras"
    model.save(path)
    result = export(tmp_path / "out", model=path, labels=labels_file, log=lambda _m: None)
    assert result.metadata["preprocess"] == mode
    assert result.metadata["normalization"] == normalization.DESCRIPTIONS[mode]
    text = inspection.format_text(inspection.describe(result.version_dir))
    assert f"Preprocess baked in: {mode} = " in text

    names = list(images_by_format)
    loaded = tf.saved_model.load(str(result.version_dir))
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant([images_by_format[n] for n in names])}
    )
    got = out[contract.PROBABILITIES_OUTPUT].numpy()
    x = np.stack([_reference_input(images_by_format[n], mode) for n in names])
    want = softmax(model.predict(x, verbose=0))
    diff = np.abs(got - want).max()
    print(f"\n[parity] preprocess {mode:5s} probabilities max abs diff {diff:.3g}")
    assert diff <= PROBABILITY_TOLERANCE
    assert np.abs(want[0] - want[6]).max() > 1e-3  # the head discriminates between images
    # The pixel signature applies the same mode.
    pixels = np.stack(
        [
            np.array(keras.utils.load_img(io.BytesIO(images_by_format[n]), target_size=SIZE))
            for n in names
        ]
    ).astype(np.uint8)
    from_pixels = loaded.signatures[contract.PIXELS_SIGNATURE](
        **{contract.PIXELS_INPUT: tf.constant(pixels)}
    )[contract.PROBABILITIES_OUTPUT].numpy()
    np.testing.assert_array_equal(from_pixels, got)


@pytest.fixture(scope="module")
def graph_normalize() -> Callable[[list[bytes], str], np.ndarray]:
    import tensorflow as tf
    from xception_export import normalization, preprocess

    cache: dict[str, Any] = {}

    def run(batch: list[bytes], mode: str) -> np.ndarray:
        if mode not in cache:
            norm = normalization.normalizer(mode, normalization.make_constants(mode))
            cache[mode] = tf.function(
                lambda images: preprocess.preprocess_batch(
                    images,
                    size=SIZE,
                    interpolation="nearest",
                    max_pixels=contract.DEFAULT_MAX_PIXELS,
                    normalizer=norm,
                ),
                input_signature=[tf.TensorSpec([None], tf.string)],
            )
        return np.asarray(cache[mode](tf.constant(batch)))

    return run


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "none"])
def test_normalized_input_is_exactly_keras_preprocess_input(
    mode: str, graph_normalize: Callable[[list[bytes], str], np.ndarray]
) -> None:
    batch = [
        image_bytes(variant, h, w, seed=i)
        for i, variant in enumerate(IMAGE_FORMATS)
        for h, w in SOURCE_SIZES[i % 2 :: 2]
    ]
    got = graph_normalize(batch, mode)
    want = np.stack([_reference_input(b, mode) for b in batch])
    diff = np.abs(got - want).max()
    print(f"\n[parity] preprocess {mode:5s} input max abs diff {diff:.3g} over {len(batch)} images")
    assert diff == 0.0


def test_constant_divisors_would_drift_so_the_exactness_check_can_fail() -> None:
    """The same torch-mode graph with folded constants is off by an ulp on some values."""
    import tensorflow as tf

    values = np.arange(256, dtype=np.float32).reshape(1, -1, 1, 1) * np.ones((1, 1, 1, 3), "f4")

    @tf.function
    def folded(x: tf.Tensor) -> tf.Tensor:
        mean = tf.constant([0.485, 0.456, 0.406])
        return (x / 255.0 - mean) / tf.constant([0.229, 0.224, 0.225])

    want = _torch_reference(values)
    assert np.abs(folded(tf.constant(values)).numpy() - want).max() > 0


def _torch_reference(x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch"))


def test_keras2_bases_are_told_apart_too() -> None:
    """tf_keras names some layers differently (DenseNet's conv1/conv): detection still works."""
    import tf_keras
    from xception_export import normalization, sources

    apps = tf_keras.applications
    common: dict[str, Any] = {"weights": None, "include_top": False, "input_shape": (*SIZE, 3)}
    for build, mode in (
        (lambda: apps.ResNet50(**common), "caffe"),
        (lambda: apps.ResNet50V2(**common), "tf"),
        (lambda: apps.DenseNet121(**common), "torch"),
        (lambda: apps.EfficientNetB0(**common), "none"),
    ):
        names, types = sources._layer_names(build())
        assert normalization.detect_mode(names, types, "m")[0] == mode


def test_a_model_without_a_known_base_needs_preprocess(tmp_path: Path, labels_file: Path) -> None:
    import keras
    from xception_export.api import export
    from xception_export.errors import ExportError

    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, keras.layers.Dense(len(CLASSES))(x)).save(path)
    with pytest.raises(ExportError, match=r"cannot tell which preprocess_input .* --preprocess"):
        export(tmp_path / "out", model=path, labels=labels_file, log=lambda _m: None)
    done = export(
        tmp_path / "out",
        model=path,
        labels=labels_file,
        preprocess_mode="caffe",
        log=lambda _m: None,
    )
    assert done.metadata["preprocess"] == "caffe"
    assert done.metadata["preprocess_detected_from"] == "--preprocess"


def test_a_saved_model_without_keras_metadata_shows_its_scaling_layer(tmp_path: Path) -> None:
    """From the graph alone (op scope names), a model that scales inside takes mode none."""
    import keras
    import tensorflow as tf
    from xception_export import sources

    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    tf.saved_model.save(model, str(tmp_path / "scaled"))
    source = sources.user_model(str(tmp_path / "scaled"), None, "auto")
    assert (source.loader, source.outputs) == ("tf.saved_model", "logits")
    assert source.preprocess == "none"
