"""The exported SavedModel, reloaded in-process: every signature's outputs and the contract."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.images import encode, photo_like
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


def test_pixels_and_preprocessed_signatures_agree_with_bytes_signature(
    loaded: Any, small_xception_model: ExportedModel
) -> None:
    import tensorflow as tf

    size = small_xception_model.image_size
    pixels = photo_like(size, size, seed=5)
    png = encode("png_rgb", pixels)
    by_bytes = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant([png])}
    )
    by_pixels = loaded.signatures[contract.PIXELS_SIGNATURE](
        **{contract.PIXELS_INPUT: tf.constant(pixels[np.newaxis])}
    )
    x = pixels[np.newaxis].astype("float32") / np.float32(127.5) - np.float32(1.0)
    by_preprocessed = loaded.signatures[contract.PREPROCESSED_SIGNATURE](
        **{contract.PREPROCESSED_INPUT: tf.constant(x)}
    )
    for out in (by_pixels, by_preprocessed):
        assert set(out) == set(by_bytes)
        np.testing.assert_allclose(
            out[contract.PROBABILITIES_OUTPUT].numpy(),
            by_bytes[contract.PROBABILITIES_OUTPUT].numpy(),
            rtol=0,
            atol=1e-6,
        )
        np.testing.assert_array_equal(
            out[contract.TOP_K_CLASS_IDS_OUTPUT].numpy(),
            by_bytes[contract.TOP_K_CLASS_IDS_OUTPUT].numpy(),
        )


def test_top_k_outputs_are_consistent_with_probabilities_and_imagenet_labels(
    loaded: Any, small_xception_model: ExportedModel, images_by_format: dict[str, bytes]
) -> None:
    import tensorflow as tf
    from xception_export.labels import imagenet_labels

    batch = [images_by_format["jpeg_444"], images_by_format["png_p"]]
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant(batch)}
    )
    k = small_xception_model.top_k
    probs = out[contract.PROBABILITIES_OUTPUT].numpy()
    ids = out[contract.TOP_K_CLASS_IDS_OUTPUT].numpy()
    scores = out[contract.TOP_K_SCORES_OUTPUT].numpy()
    labels = out[contract.TOP_K_LABELS_OUTPUT].numpy()
    keys = out[contract.TOP_K_KEYS_OUTPUT].numpy()
    assert ids.dtype == np.int32
    assert ids.shape == scores.shape == labels.shape == keys.shape == (2, k)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    imagenet = imagenet_labels()
    for row in range(2):
        np.testing.assert_array_equal(ids[row], np.argsort(-probs[row], kind="stable")[:k])
        np.testing.assert_array_equal(scores[row], probs[row][ids[row]])
        assert [s.decode() for s in labels[row]] == [imagenet.names[i] for i in ids[row]]
        assert [s.decode() for s in keys[row]] == [imagenet.keys[i] for i in ids[row]]


def test_classify_signature_returns_every_label_with_its_score(
    loaded: Any, small_xception_model: ExportedModel, images_by_format: dict[str, bytes]
) -> None:
    import tensorflow as tf
    from xception_export.labels import imagenet_labels

    def example(data: bytes) -> bytes:
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        return tf.train.Example(
            features=tf.train.Features(feature={contract.EXAMPLE_IMAGE_FEATURE: feature})
        ).SerializeToString()

    batch = [images_by_format["gif"], images_by_format["bmp"]]
    out = loaded.signatures[contract.CLASSIFY_SIGNATURE](
        **{contract.CLASSIFY_INPUT: tf.constant([example(b) for b in batch])}
    )
    classes = out[contract.CLASSIFY_CLASSES_OUTPUT].numpy()
    scores = out[contract.CLASSIFY_SCORES_OUTPUT].numpy()
    assert classes.shape == scores.shape == (2, small_xception_model.num_classes)
    assert [c.decode() for c in classes[1]] == list(imagenet_labels().names)
    direct = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant(batch)}
    )
    np.testing.assert_allclose(
        scores, direct[contract.PROBABILITIES_OUTPUT].numpy(), rtol=0, atol=1e-6
    )


def test_saved_model_declares_contract_signatures_and_tf_serving_method_names(
    small_xception_model: ExportedModel,
) -> None:
    from xception_export.inspection import describe

    info = describe(small_xception_model.version_dir)
    sigs = info["signatures"]
    s, c = small_xception_model.image_size, small_xception_model.num_classes
    k = small_xception_model.top_k
    predict_outputs = {
        contract.PROBABILITIES_OUTPUT: ("DT_FLOAT", [-1, c]),
        contract.TOP_K_SCORES_OUTPUT: ("DT_FLOAT", [-1, k]),
        contract.TOP_K_CLASS_IDS_OUTPUT: ("DT_INT32", [-1, k]),
        contract.TOP_K_LABELS_OUTPUT: ("DT_STRING", [-1, k]),
        contract.TOP_K_KEYS_OUTPUT: ("DT_STRING", [-1, k]),
    }
    expected_inputs = {
        contract.BYTES_SIGNATURE: (contract.IMAGE_BYTES_INPUT, "DT_STRING", [-1]),
        contract.PIXELS_SIGNATURE: (contract.PIXELS_INPUT, "DT_UINT8", [-1, s, s, 3]),
        contract.PREPROCESSED_SIGNATURE: (contract.PREPROCESSED_INPUT, "DT_FLOAT", [-1, s, s, 3]),
    }
    for name, (alias, dtype, shape) in expected_inputs.items():
        sig = sigs[name]
        assert sig["method_name"] == contract.PREDICT_METHOD
        assert {a: (t["dtype"], t["shape"]) for a, t in sig["inputs"].items()} == {
            alias: (dtype, shape)
        }
        assert {a: (t["dtype"], t["shape"]) for a, t in sig["outputs"].items()} == predict_outputs
    classify = sigs[contract.CLASSIFY_SIGNATURE]
    assert classify["method_name"] == contract.CLASSIFY_METHOD
    assert classify["inputs"][contract.CLASSIFY_INPUT]["dtype"] == "DT_STRING"
    assert {a: (t["dtype"], t["shape"]) for a, t in classify["outputs"].items()} == {
        contract.CLASSIFY_CLASSES_OUTPUT: ("DT_STRING", [-1, c]),
        contract.CLASSIFY_SCORES_OUTPUT: ("DT_FLOAT", [-1, c]),
    }


def test_artifact_layout_labels_metadata_and_hashes(small_xception_model: ExportedModel) -> None:
    import hashlib

    from xception_export.artifact import read_metadata

    d = small_xception_model.version_dir
    assert d == small_xception_model.base_path / str(small_xception_model.version)
    for rel in (
        "saved_model.pb",
        "variables/variables.index",
        "assets/labels.txt",
        "assets/label_keys.txt",
        "assets.extra/tf_serving_warmup_requests",
    ):
        assert (d / rel).is_file(), rel
    assert (d / "assets/labels.txt").read_text().splitlines()[0] == "tench"
    meta = read_metadata(d)
    assert meta is not None
    assert meta["image_size"] == small_xception_model.image_size
    assert meta["num_classes"] == 1000 and meta["label_keys"] is True
    assert meta["interpolation"] == "nearest" and meta["top_k"] == small_xception_model.top_k
    assert meta["untrained"] is False  # a weights file, not --weights random
    hashes = meta["content_sha256"]
    assert "saved_model.pb" in hashes and "assets.extra/tf_serving_warmup_requests" in hashes
    for rel, digest in hashes.items():
        assert hashlib.sha256((d / rel).read_bytes()).hexdigest() == digest, rel


def test_warmup_records_replay_against_every_signature(
    loaded: Any, small_xception_model: ExportedModel
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = small_xception_model.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    seen = set()
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 0 < len(records) <= 1000
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.HasField("predict_log"):
            request = log.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        else:
            request = log.classify_log.request
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            inputs = {contract.CLASSIFY_INPUT: tf.constant(examples)}
        name = request.model_spec.signature_name
        out = loaded.signatures[name](**inputs)
        assert all(v.shape[0] == next(iter(inputs.values())).shape[0] for v in out.values())
        seen.add(name)
    assert seen == {
        contract.BYTES_SIGNATURE,
        contract.PIXELS_SIGNATURE,
        contract.PREPROCESSED_SIGNATURE,
        contract.CLASSIFY_SIGNATURE,
    }
