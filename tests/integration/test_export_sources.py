"""Model sources: Keras-format (.h5, as Keras ships the ImageNet weights) weight files, and the
offline ImageNet failure message."""

from __future__ import annotations

from pathlib import Path

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
