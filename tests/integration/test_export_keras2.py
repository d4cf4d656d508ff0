"""Users' fine-tuned Xceptions in every file format they hold, exported with ``--model`` and
``--labels`` alone, against the reference pipeline of the Keras that wrote them.

Keras 2 (tf_keras, TF <= 2.15): full-model ``.h5``, ``model.save(dir)`` SavedModel (with
keras_metadata.pb), ``tf.saved_model.save(model, dir)`` (no Keras metadata). Keras 3: ``.keras``
and ``.h5``. The model is the course's shape (frozen Xception base, pooling, Dense(100, relu),
Dropout, linear Dense(10)) at a non-square 80x72 input, so (H, W) is exercised end to end.
Reference: ``load_img(target_size=(80, 72))`` -> float32 -> ``xception.preprocess_input`` ->
``model.predict`` of the in-memory model that was saved -> softmax. Run with ``-s`` for figures.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.classifiers import course_classifier, softmax
from tests.fixtures.images import IMAGE_FORMATS, image_bytes

SIZE = (80, 72)  # (height, width): non-square, Xception needs >= 71 on each side
CLASSES = [f"class_{i}" for i in range(10)]
PROBABILITY_TOLERANCE = 1e-5
# (height, width) of source images: upscale, downscale, odd, tall, wide, exactly the target.
# (96, 108): 96 -> 80 rows puts a tie of Pillow's running sum (0.6 + 12 * 1.2 = 15) on row 12,
# where a constant-folded division moved the whole row.
SOURCE_SIZES = ((80, 72), (35, 53), (97, 131), (200, 150), (72, 300), (301, 73), (19, 7), (96, 108))
# Format -> (Keras that wrote it, what the export loads it with).
FORMATS = {
    "keras2_h5": ("2", "tf_keras"),
    "keras2_saved_model": ("2", "tf_keras"),
    "tf_saved_model": ("2", "tf.saved_model"),
    "keras3_keras": ("3", "keras"),
    "keras3_h5": ("3", "keras"),
}


def _xception_tf(x: np.ndarray) -> np.ndarray:
    return x / np.float32(127.5) - np.float32(1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path]]:
    """Format -> (the in-memory model that was saved, the saved path)."""
    import keras
    import tensorflow as tf
    import tf_keras

    root = tmp_path_factory.mktemp("users_models")
    tf_keras.utils.set_random_seed(3)
    base2 = tf_keras.applications.Xception(weights=None, include_top=False, input_shape=(*SIZE, 3))
    model2 = course_classifier(tf_keras, base2, SIZE, len(CLASSES), _xception_tf)
    model2.save(root / "xception_v4_1_13_0.903.h5")  # ModelCheckpoint's kind of file
    model2.save(root / "keras2_saved_model")  # tf_keras writes keras_metadata.pb
    tf.saved_model.save(model2, str(root / "clothing-model"))  # the course's serving chapter
    keras.utils.set_random_seed(3)
    base3 = keras.applications.Xception(weights=None, include_top=False, input_shape=(*SIZE, 3))
    model3 = course_classifier(keras, base3, SIZE, len(CLASSES), _xception_tf)
    model3.save(root / "clothes.keras")
    model3.save(root / "clothes.h5")
    return {
        "keras2_h5": (model2, root / "xception_v4_1_13_0.903.h5"),
        "keras2_saved_model": (model2, root / "keras2_saved_model"),
        "tf_saved_model": (model2, root / "clothing-model"),
        "keras3_keras": (model3, root / "clothes.keras"),
        "keras3_h5": (model3, root / "clothes.h5"),
    }


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("".join(f"{name}\n" for name in CLASSES))
    return path


def _reference_input(data: bytes, keras_major: str) -> np.ndarray:
    if keras_major == "2":
        import tf_keras as k
    else:
        import keras as k
    img = k.utils.load_img(io.BytesIO(data), target_size=SIZE)
    return np.asarray(k.applications.xception.preprocess_input(np.array(img, dtype="float32")))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_users_model_file_exports_with_model_and_labels_alone_and_matches_its_keras(
    fmt: str,
    models: dict[str, tuple[Any, Path]],
    labels_file: Path,
    images_by_format: dict[str, bytes],
    tmp_path: Path,
) -> None:
    import tensorflow as tf
    from xception_export import cli, inspection
    from xception_export.preflight import check_version

    model, path = models[fmt]
    keras_major, loader = FORMATS[fmt]
    base = tmp_path / "clothes"
    argv = ["--model", str(path), "--labels", str(labels_file), "--model-base-path", str(base)]
    assert cli.main(argv) == 0
    version_dir = base / "1"

    info = inspection.describe(version_dir)
    meta = info["metadata"]
    assert meta["loaded_with"] == loader and meta["model_outputs"] == "logits"
    assert meta["preprocess"] == "tf" and meta["input_size"] == list(SIZE)
    assert "image_size" not in meta  # only square inputs have a side
    for signature, alias in (
        (contract.PIXELS_SIGNATURE, contract.PIXELS_INPUT),
        (contract.PREPROCESSED_SIGNATURE, contract.PREPROCESSED_INPUT),
    ):
        assert info["signatures"][signature]["inputs"][alias]["shape"] == [-1, *SIZE, 3]
    assert "Input: 80x72 (height x width)" in inspection.format_text(info)

    names = list(images_by_format)
    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures[contract.BYTES_SIGNATURE](
        **{contract.IMAGE_BYTES_INPUT: tf.constant([images_by_format[n] for n in names])}
    )
    got = out[contract.PROBABILITIES_OUTPUT].numpy()
    x = np.stack([_reference_input(images_by_format[n], keras_major) for n in names])
    want = softmax(model.predict(x, verbose=0))
    diff = np.abs(got - want)
    print(f"\n[parity] {fmt:18s} probabilities max abs diff {diff.max():.3g} over {len(names)}")
    assert diff.max() <= PROBABILITY_TOLERANCE
    # The reference must discriminate between images, or the comparison proves nothing.
    assert np.abs(want[0] - want[6]).max() > 1e-3

    # And TF Serving's runtime path: every signature and warmup record in a TF1 Session. Keras 3
    # exports are checked there by test_tfserving_session_path; the tf_keras-loaded and graph-read
    # models are new, so each is checked here (about 10 s each).
    if keras_major == "2":
        report = check_version(version_dir)
        assert report.ok, report


@pytest.fixture(scope="module")
def graph_preprocess() -> Any:
    import tensorflow as tf
    from xception_export import normalization, preprocess

    constants = normalization.make_constants("tf")
    fn = tf.function(
        lambda images: preprocess.preprocess_batch(
            images,
            size=SIZE,
            interpolation="nearest",
            max_pixels=contract.DEFAULT_MAX_PIXELS,
            normalizer=normalization.normalizer("tf", constants),
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    return lambda batch: np.asarray(fn(tf.constant(batch)))


@pytest.mark.parametrize("variant", IMAGE_FORMATS)
def test_non_square_preprocessing_is_exactly_keras2_and_keras3_load_img(
    variant: str, graph_preprocess: Any
) -> None:
    batch = [image_bytes(variant, h, w, seed=i) for i, (h, w) in enumerate(SOURCE_SIZES)]
    got = graph_preprocess(batch)
    assert got.shape == (len(batch), *SIZE, 3)
    for keras_major in ("2", "3"):
        want = np.stack([_reference_input(b, keras_major) for b in batch])
        diff = np.abs(got - want).max()
        print(f"\n[parity] input {variant:17s} 80x72 vs Keras {keras_major}: max diff {diff:.3g}")
        assert diff == 0.0


def test_saved_model_without_keras_metadata_or_readable_head_names_outputs(
    tmp_path: Path, labels_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tensorflow as tf
    from xception_export import cli

    class Module(tf.Module):  # not Keras: no layers, an output no head detection can read
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": tf.tile(tf.reduce_mean(x, axis=[1, 2]), [1, 4])[:, :10]}

    module = Module()
    path = tmp_path / "plain"
    tf.saved_model.save(module, str(path), signatures=module.__call__)
    argv = ["--model", str(path), "--labels", str(labels_file), "--model-base-path", str(tmp_path)]
    assert cli.main(argv) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no Keras metadata (no keras_metadata.pb)" in line
    assert "pass --outputs logits or --outputs probabilities and --preprocess" in line
    assert cli.main([*argv, "--preprocess", "tf"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("pass --outputs logits or --outputs probabilities")
    # Given what was missing, it exports.
    assert cli.main([*argv, "--preprocess", "tf", "--outputs", "logits"]) == 0


def test_the_file_itself_says_which_keras_wrote_it(tmp_path: Path) -> None:
    """.h5 keras_version, .keras metadata.json (tf_keras >= 2.13 writes .keras too), SavedModel
    keras_metadata.pb: Keras 2 files load with tf_keras, Keras 3 files with keras."""
    import keras
    import tf_keras
    from xception_export import keras2, sources

    def tiny(k: Any) -> Any:
        inputs = k.Input((8, 8, 3))
        x = k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(2, 3)(inputs))
        return k.Model(inputs, k.layers.Dense(3, activation="softmax")(x))

    old, new = tiny(tf_keras), tiny(keras)
    for name, model, written_by in (
        ("old.h5", old, "2"),
        ("old.keras", old, "2"),
        ("old_dir", old, "2"),
        ("new.h5", new, "3"),
        ("new.keras", new, "3"),
    ):
        model.save(tmp_path / name)
        assert keras2.is_keras2_file(tmp_path / name) == (written_by == "2"), name
    source = sources.user_model(str(tmp_path / "old.keras"), None, "auto", "tf")
    assert (source.loader, source.outputs) == ("tf_keras", "probabilities")
    assert source.input_size == (8, 8)
    (tmp_path / "not_a_model.h5").write_bytes(b"not HDF5")
    assert not keras2.is_keras2_file(tmp_path / "not_a_model.h5")
