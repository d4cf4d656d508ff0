"""Model sources: Keras-format (.h5, as Keras ships the ImageNet weights) weight files, and the
offline ImageNet failure message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xception_export import sources
from xception_export.errors import ExportError


def test_weights_path_loads_a_keras_h5_weights_file_like_the_imagenet_one(tmp_path: Path) -> None:
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(11)
    original = keras.applications.Xception(weights=None, input_shape=(71, 71, 3))
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:  # the legacy layout Keras's download uses
        legacy_h5_format.save_weights_to_hdf5_group(f, original)
    source = sources.xception(str(path), 71)
    assert source.weights == str(path.resolve()) and source.outputs == "probabilities"
    for mine, theirs in zip(source.model.weights, original.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_offline_imagenet_failure_names_cache_path_and_alternatives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import keras

    def offline(*_args: object, **_kwargs: object) -> str:
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ExportError) as info:
        sources.xception("imagenet", 299)
    message = str(info.value)
    assert str(tmp_path / "keras-home" / "models" / sources.IMAGENET_WEIGHTS_FILE) in message
    assert "--weights PATH" in message and "--weights random" in message
    assert "URL fetch failure" in message


def _tiny_classifier(size: int | None = 32) -> Any:
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("form", ["h5", "saved_model"])
def test_model_path_accepts_h5_and_saved_model_directories(tmp_path: Path, form: str) -> None:
    import tensorflow as tf
    from xception_export.api import export

    from tests.fixtures.images import image_bytes

    model = _tiny_classifier()
    if form == "h5":
        path = tmp_path / "model.h5"
        model.save(path)
        outputs = "auto"
    else:
        path = tmp_path / "saved"
        model.export(str(path))  # Keras 3 SavedModel: a serving_default signature, no layers
        outputs = "auto"  # read from the graph: its output is a Softmax op
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    # A tiny model has no keras.applications base to tell its preprocess_input from.
    result = export(
        tmp_path / "out",
        model=path,
        labels=labels,
        outputs=outputs,
        preprocess_mode="tf",
        log=print,
    )
    assert result.metadata["model_outputs"] == "probabilities"
    assert (result.image_size, result.num_classes, result.top_k) == (32, 3, 3)
    loaded = tf.saved_model.load(str(result.version_dir))
    data = image_bytes("png_rgb", 40, 50)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))
    pixels = tf.io.decode_png(data, channels=3)
    from xception_export.preprocess import resize

    x = resize(pixels, 32, "nearest")[tf.newaxis] / 127.5 - 1.0
    np.testing.assert_allclose(
        out["probabilities"].numpy(), np.asarray(model(x)), rtol=0, atol=1e-6
    )


def test_dynamic_size_model_needs_image_size(tmp_path: Path) -> None:
    from xception_export.errors import UsageError

    path = tmp_path / "dynamic.keras"
    _tiny_classifier(None).save(path)
    with pytest.raises(UsageError, match="--image-size"):
        sources.user_model(str(path), None, "auto", "tf")
    assert sources.user_model(str(path), 48, "auto", "tf").image_size == 48
    assert sources.user_model(str(path), (48, 40), "auto", "tf").input_size == (48, 40)
