"""Parity with the Keras reference pipeline: ``keras.utils.load_img(target_size=(S, S))`` ->
float32 -> ``xception.preprocess_input`` -> ``model.predict``, on images generated here.

The export matches it to a normalized input within 1.2e-7 (the float32 ulp near 1, which
XLA/grappler rounding may cost) and to probabilities within 1e-5, for every image format and
size. Run with ``-s`` to see the per-format figures.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.images import EXTRA_FORMATS, IMAGE_FORMATS, image_bytes
from tests.fixtures.models import ExportedModel

INPUT_TOLERANCE = 1.2e-7
PROBABILITY_TOLERANCE = 1e-5
# (height, width) of source images: upscale, downscale, odd, tall, wide, exactly the target.
SIZES = ((71, 71), (35, 53), (97, 131), (200, 150), (72, 300), (301, 73), (19, 7), (143, 142))


def reference_input(data: bytes, size: int, interpolation: str = "nearest") -> np.ndarray:
    import keras

    img = keras.utils.load_img(
        io.BytesIO(data), target_size=(size, size), interpolation=interpolation
    )
    x = np.array(img, dtype="float32")
    return keras.applications.xception.preprocess_input(x)


@pytest.fixture(scope="module")
def graph_preprocess() -> Any:
    """The export's own in-graph preprocessing, compiled once per (size, interpolation)."""
    import tensorflow as tf
    from xception_export import preprocess

    divisor = tf.Variable(127.5, trainable=False)
    cache: dict[tuple[int, str], Any] = {}

    def run(batch: list[bytes], size: int, interpolation: str = "nearest") -> np.ndarray:
        key = (size, interpolation)
        if key not in cache:
            cache[key] = tf.function(
                lambda images: preprocess.preprocess_batch(
                    images,
                    size=size,
                    interpolation=interpolation,
                    max_pixels=contract.DEFAULT_MAX_PIXELS,
                    divisor=divisor,
                ),
                input_signature=[tf.TensorSpec([None], tf.string)],
            )
        return np.asarray(cache[key](tf.constant(batch)))

    return run


@pytest.mark.parametrize("variant", IMAGE_FORMATS)
def test_graph_preprocessing_matches_keras_within_one_ulp_every_size(
    variant: str, graph_preprocess: Any
) -> None:
    size = 71
    batch = [image_bytes(variant, h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    got = graph_preprocess(batch, size)
    want = np.stack([reference_input(b, size) for b in batch])
    diff = np.abs(got - want)
    print(f"\n[parity] input {variant:17s} max abs diff {diff.max():.3g} over {len(SIZES)} sizes")
    assert diff.max() <= INPUT_TOLERANCE


@pytest.mark.parametrize("size", [71, 96, 299])
def test_graph_preprocessing_matches_keras_at_other_target_sizes(
    size: int, graph_preprocess: Any
) -> None:
    batch = [image_bytes(v, 120 + i, 97 + 3 * i, seed=i) for i, v in enumerate(IMAGE_FORMATS)]
    got = graph_preprocess(batch, size)
    want = np.stack([reference_input(b, size) for b in batch])
    assert np.abs(got - want).max() <= INPUT_TOLERANCE


@pytest.mark.parametrize("variant", EXTRA_FORMATS)
def test_graph_preprocessing_matches_keras_on_edge_cases(
    variant: str, graph_preprocess: Any
) -> None:
    batch = [image_bytes(variant, h, w, seed=i) for i, (h, w) in enumerate(SIZES[:4])]
    got = graph_preprocess(batch, 71)
    want = np.stack([reference_input(b, 71) for b in batch])
    diff = np.abs(got - want)
    print(f"\n[parity] input {variant:17s} max abs diff {diff.max():.3g}")
    assert diff.max() <= INPUT_TOLERANCE


def test_exported_probabilities_match_keras_predict_for_every_format(
    small_xception_model: ExportedModel,
    small_xception_weights: Path,
    images_by_format: dict[str, bytes],
) -> None:
    import keras
    import tensorflow as tf

    size = small_xception_model.image_size
    loaded = tf.saved_model.load(str(small_xception_model.version_dir))
    names = list(images_by_format)
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant([images_by_format[n] for n in names])}
    )
    got = out[contract.PROBABILITIES_OUTPUT].numpy()
    reference = keras.applications.Xception(
        weights=None, include_top=True, input_shape=(size, size, 3), classes=1000
    )
    reference.load_weights(str(small_xception_weights))
    x = np.stack([reference_input(images_by_format[n], size) for n in names])
    want = reference.predict(x, verbose=0)
    for i, name in enumerate(names):
        diff = np.abs(got[i] - want[i]).max()
        print(f"\n[parity] probabilities {name:17s} max abs diff {diff:.3g}")
    assert np.abs(got - want).max() <= PROBABILITY_TOLERANCE
    # The reference must discriminate between images, or the comparison proves nothing.
    assert np.abs(want[0] - want[6]).max() > 1e-3


# Non-nearest filters replay Pillow's fixed-point two-pass resampler (horizontal pass first, as
# Pillow <= 12 always did). Pillow 13 sometimes runs the vertical pass first when both axes change;
# the uint8 rounding between the passes then differs by a few grey levels on some pixels. When only
# one axis changes the result is identical. Measured bounds, with margin:
FILTER_MAX_LEVELS = {"bilinear": 2, "bicubic": 10, "hamming": 2, "box": 2, "lanczos": 16}
FILTER_MEAN_LEVELS = 0.1


@pytest.mark.parametrize("interpolation", sorted(FILTER_MAX_LEVELS))
def test_graph_filters_stay_within_bound_of_pillow(
    interpolation: str, graph_preprocess: Any
) -> None:
    batch = [image_bytes("png_rgb", h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    got = graph_preprocess(batch, 71, interpolation)
    want = np.stack([reference_input(b, 71, interpolation) for b in batch])
    levels = np.abs(got - want) * 127.5
    print(f"\n[parity] {interpolation:8s} max {levels.max():.2f} levels, mean {levels.mean():.4f}")
    assert levels.max() <= FILTER_MAX_LEVELS[interpolation] + 1e-3
    assert levels.mean() <= FILTER_MEAN_LEVELS


@pytest.mark.parametrize("interpolation", sorted(FILTER_MAX_LEVELS))
def test_graph_filters_match_pillow_exactly_when_one_axis_changes(
    interpolation: str, graph_preprocess: Any
) -> None:
    batch = [image_bytes("png_rgb", h, w, seed=i) for i, (h, w) in enumerate(((71, 150), (40, 71)))]
    got = graph_preprocess(batch, 71, interpolation)
    want = np.stack([reference_input(b, 71, interpolation) for b in batch])
    assert np.abs(got - want).max() <= INPUT_TOLERANCE


def test_naive_tf_pipeline_is_caught_by_the_parity_check(graph_preprocess: Any) -> None:
    """The check above can fail: tf.io.decode_image + tf.image.resize(nearest) drift visibly."""
    import tensorflow as tf

    data = image_bytes("jpeg_420", 200, 150, seed=3)
    naive = tf.image.resize(
        tf.io.decode_image(data, channels=3, expand_animations=False), [71, 71], method="nearest"
    )
    naive_x = naive.numpy().astype("float32") / 127.5 - 1.0
    assert np.abs(naive_x - reference_input(data, 71)).max() > 100 * INPUT_TOLERANCE
    assert np.abs(graph_preprocess([data], 71)[0] - reference_input(data, 71)).max() <= (
        INPUT_TOLERANCE
    )
