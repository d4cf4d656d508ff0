"""A user's fine-tuned classifier through ``--model`` + ``--labels``: the ML-Zoomcamp chapter 8
shape (frozen Xception base, pooling, dense head with logits)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.images import image_bytes

SIZE = 71
CLASSES = ("dress", "hat", "longsleeve")


def _fine_tuned(head_activation: str | None) -> Any:
    import keras

    keras.utils.set_random_seed(3)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    head = keras.layers.Dense(len(CLASSES), activation=head_activation, name="head")
    model = keras.Model(inputs, head(features))
    # Random features are ~1e-5: scale the head so logits differ between images.
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 2e5, bias])
    return model


def _tiny(head_activation: str | None) -> Any:
    """A small non-Xception classifier: enough for head detection, seconds to build."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation=head_activation)(x))


@pytest.fixture(scope="module")
def logits_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fine_tuned") / "clothes.keras"
    _fine_tuned(None).save(path)
    return path


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path


def test_fine_tuned_logits_model_exports_with_softmax_in_graph_and_its_labels(
    tmp_path: Path, logits_model_path: Path, labels_file: Path
) -> None:
    import keras
    import tensorflow as tf
    from xception_export.api import export

    result = export(
        tmp_path / "clothes", model=logits_model_path, labels=labels_file, top_k=2, log=print
    )
    assert result.metadata["model_outputs"] == "logits"
    assert result.metadata["source"] == "model" and result.metadata["label_keys"] is False
    assert (result.num_classes, result.image_size, result.version) == (3, SIZE, 1)

    images = [image_bytes("jpeg_baseline", 90, 120, seed=s) for s in range(3)]
    loaded = tf.saved_model.load(str(result.version_dir))
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant(images)}
    )
    assert contract.TOP_K_KEYS_OUTPUT not in out  # plain-text labels have no keys

    reference = keras.models.load_model(logits_model_path, compile=False)
    x = np.stack(
        [
            keras.applications.xception.preprocess_input(
                np.array(keras.utils.load_img(io.BytesIO(b), target_size=(SIZE, SIZE)), "float32")
            )
            for b in images
        ]
    )
    logits = reference.predict(x, verbose=0)
    want = np.asarray(tf.nn.softmax(logits))
    got = out[contract.PROBABILITIES_OUTPUT].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(want[0] - want[1]).max() > 1e-3  # the head discriminates between images
    labels = out[contract.TOP_K_LABELS_OUTPUT].numpy()
    ids = out[contract.TOP_K_CLASS_IDS_OUTPUT].numpy()
    assert labels.shape == (3, 2)
    assert [[CLASSES[i] for i in row] for row in ids] == [
        [s.decode() for s in row] for row in labels
    ]


def test_label_count_must_match_model_output_width(tmp_path: Path, logits_model_path: Path) -> None:
    from xception_export.api import export
    from xception_export.errors import UsageError

    labels = tmp_path / "labels.json"
    labels.write_text('["a", "b"]')
    with pytest.raises(UsageError, match=r"2 labels but the model outputs 3 classes"):
        export(tmp_path / "m", model=logits_model_path, labels=labels, log=lambda _m: None)
    assert not (tmp_path / "m").exists()


def test_softmax_head_is_detected_and_outputs_override_is_recorded(tmp_path: Path) -> None:
    from xception_export import sources

    model = _tiny("softmax")
    assert sources.detect_outputs(model) == "probabilities"
    path = tmp_path / "softmax.keras"
    model.save(path)
    assert sources.user_model(str(path), None, "auto", "tf").outputs == "probabilities"
    assert sources.user_model(str(path), None, "logits", "tf").outputs == "logits"
    assert sources.user_model(str(path), None, "auto", "tf").image_size == 32


def test_sigmoid_head_needs_an_explicit_outputs_choice() -> None:
    from xception_export import sources
    from xception_export.errors import ExportError

    with pytest.raises(ExportError, match="--outputs"):
        sources.detect_outputs(_tiny("sigmoid"))
