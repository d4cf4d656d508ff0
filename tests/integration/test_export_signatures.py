"""The exported SavedModel, reloaded in-process: every signature's outputs and the contract."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xception_client import contract

from tests.fixtures.models import ExportedModel


@pytest.fixture(scope="module")
def loaded(small_xception_model: ExportedModel) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(small_xception_model.version_dir))


def _keras_reference(weights: Path, size: int) -> Any:
    import keras

    model = keras.applications.Xception(
        weights=None, include_top=True, input_shape=(size, size, 3), classes=1000
    )
    model.load_weights(str(weights))
    return model


def _reference_input(data: bytes, size: int) -> np.ndarray:
    import keras

    img = keras.utils.load_img(io.BytesIO(data), target_size=(size, size))
    x = np.array(img, dtype="float32")[np.newaxis]
    return keras.applications.xception.preprocess_input(x)


def test_bytes_signature_matches_keras_reference_on_mixed_batch(
    loaded: Any,
    small_xception_model: ExportedModel,
    small_xception_weights: Path,
    images_by_format: dict[str, bytes],
) -> None:
    import tensorflow as tf

    size = small_xception_model.image_size
    batch = [images_by_format[f] for f in ("jpeg_baseline", "png_rgba", "gif", "bmp")]
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant(batch)}
    )
    reference = _keras_reference(small_xception_weights, size)
    expected = reference.predict(
        np.concatenate([_reference_input(b, size) for b in batch]), verbose=0
    )
    probs = out[contract.PROBABILITIES_OUTPUT].numpy()
    assert probs.shape == (4, 1000)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    # The predictions must depend on the image, or the comparison above proves nothing.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
