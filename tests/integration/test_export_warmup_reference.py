"""The artifact's reference answers are Keras's: every warmup record's response equals an
independent Keras pipeline computed here from the record's own input (encoded bytes written to a
file -> ``keras.utils.load_img`` -> ``img_to_array`` -> ``preprocess_input`` -> the model rebuilt
from the export's weights file, called directly), within 1e-5; and the records cover JPEG, PNG,
GIF and BMP, a batch, and every signature, within TF Serving's 1000-record limit."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract
from PIL import Image

from tests.fixtures.models import SMALL_IMAGE_SIZE, ExportedModel

TOLERANCE = 1e-5
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


@pytest.fixture(scope="module")
def keras_model(small_xception_weights: Path) -> Any:
    import keras

    model = keras.applications.Xception(
        weights=None, include_top=True, input_shape=(SMALL_IMAGE_SIZE, SMALL_IMAGE_SIZE, 3)
    )
    model.load_weights(str(small_xception_weights))
    return model


def _imagenet() -> tuple[list[str], list[str]]:
    index = json.loads(
        resources.files("xception_export").joinpath("data", "imagenet_class_index.json").read_text()
    )
    return [index[str(i)][1] for i in range(1000)], [index[str(i)][0] for i in range(1000)]


def _from_files(images: list[bytes], tmp_path: Path) -> np.ndarray:
    import keras

    rows = []
    for n, data in enumerate(images):
        path = tmp_path / f"image-{n}"
        path.write_bytes(data)
        img = keras.utils.load_img(str(path), target_size=(SMALL_IMAGE_SIZE, SMALL_IMAGE_SIZE))
        rows.append(keras.utils.img_to_array(img, dtype="float32"))
    return np.stack(rows)


@dataclass(frozen=True)
class Replayed:
    """One warmup record, and what the independent Keras pipeline answers for its input."""

    log: Any  # a PredictionLog: classify_log or predict_log
    images: list[bytes]  # the record's encoded images; none when it carries pixels
    expected: np.ndarray  # the Keras model's probabilities, float64, one row per image

    @property
    def is_classify(self) -> bool:
        return bool(self.log.HasField("classify_log"))

    @property
    def request(self) -> Any:
        return self.log.classify_log.request if self.is_classify else self.log.predict_log.request

    @property
    def response(self) -> Any:
        return self.log.classify_log.response if self.is_classify else self.log.predict_log.response

    def predict_outputs(self) -> dict[str, np.ndarray]:
        import tensorflow as tf

        return {k: tf.make_ndarray(v) for k, v in self.response.outputs.items()}


def _keras_input(log: Any, tmp_path: Path) -> tuple[list[bytes], np.ndarray]:
    """The record's images and the model input Keras makes of its request: encoded bytes through
    files and ``load_img``, pixels through ``preprocess_input``, preprocessed values as they are."""
    import keras
    import tensorflow as tf

    if log.HasField("classify_log"):
        images = [
            e.features.feature[contract.EXAMPLE_IMAGE_FEATURE].bytes_list.value[0]
            for e in log.classify_log.request.input.example_list.examples
        ]
        return images, keras.applications.xception.preprocess_input(_from_files(images, tmp_path))
    [(alias, tensor)] = log.predict_log.request.inputs.items()
    value = tf.make_ndarray(tensor)
    if alias == contract.IMAGE_BYTES_INPUT:
        images = list(value)
        return images, keras.applications.xception.preprocess_input(_from_files(images, tmp_path))
    x = value.astype("float32")
    if alias == contract.PIXELS_INPUT:
        x = keras.applications.xception.preprocess_input(x)
    return [], x


@pytest.fixture(scope="module")
def warmup_file(small_xception_model: ExportedModel) -> Path:
    return small_xception_model.version_dir / WARMUP


@pytest.fixture(scope="module")
def replayed(
    warmup_file: Path, keras_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> list[Replayed]:
    """Every warmup record with the independent Keras pipeline's answer (computed once)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    tmp_path = tmp_path_factory.mktemp("warmup-images")
    result = []
    for raw in tf.data.TFRecordDataset(str(warmup_file)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        images, x = _keras_input(log, tmp_path)
        expected = np.asarray(keras_model(x, training=False), dtype=np.float64)  # ends in softmax
        result.append(Replayed(log, images, expected))
    return result


def _served_probabilities(record: Replayed) -> np.ndarray:
    if record.is_classify:
        return np.array(
            [[c.score for c in row.classes] for row in record.response.result.classifications]
        )
    return record.predict_outputs()[contract.PROBABILITIES_OUTPUT]


def test_reference_probabilities_equal_an_independent_keras_pipeline(
    replayed: list[Replayed],
) -> None:
    assert replayed
    worst = 0.0
    for record in replayed:
        served = _served_probabilities(record)
        assert served.shape == record.expected.shape
        worst = max(worst, float(np.abs(served - record.expected).max()))
    print(f"\nreference vs independent Keras: max |dp| {worst:.3g} over {len(replayed)} records")
    assert worst <= TOLERANCE


def test_classify_reference_answers_list_every_imagenet_label_for_every_image(
    replayed: list[Replayed],
) -> None:
    names, _ = _imagenet()
    classify = [record for record in replayed if record.is_classify]
    assert classify
    for record in classify:
        rows = record.response.result.classifications
        assert [[c.label for c in row.classes] for row in rows] == [names] * len(record.expected)


def test_predict_reference_top_k_ids_and_scores_follow_the_keras_probabilities(
    replayed: list[Replayed],
) -> None:
    predict = [record for record in replayed if not record.is_classify]
    assert predict
    for record in predict:
        out = record.predict_outputs()
        ids = out[contract.TOP_K_CLASS_IDS_OUTPUT]
        expected = record.expected
        np.testing.assert_array_equal(ids, np.argsort(-expected, axis=1)[:, : ids.shape[1]])
        np.testing.assert_allclose(
            out[contract.TOP_K_SCORES_OUTPUT],
            np.take_along_axis(expected, ids, 1),
            atol=TOLERANCE,
            rtol=0,
        )


def test_predict_reference_top_k_labels_and_keys_are_the_imagenet_names_of_the_ids(
    replayed: list[Replayed],
) -> None:
    names, wnids = _imagenet()
    predict = [record for record in replayed if not record.is_classify]
    assert predict
    for record in predict:
        out = record.predict_outputs()
        ids = out[contract.TOP_K_CLASS_IDS_OUTPUT]
        assert out[contract.TOP_K_LABELS_OUTPUT].tolist() == [
            [names[i].encode() for i in row] for row in ids
        ]
        assert out[contract.TOP_K_KEYS_OUTPUT].tolist() == [
            [wnids[i].encode() for i in row] for row in ids
        ]


def test_warmup_records_cover_jpeg_png_gif_and_bmp(replayed: list[Replayed]) -> None:
    formats = {
        Image.open(io.BytesIO(data)).format or "?" for record in replayed for data in record.images
    }
    assert formats == {"JPEG", "PNG", "GIF", "BMP"}


def test_warmup_records_include_a_batch_of_several_images(replayed: list[Replayed]) -> None:
    assert max((len(record.expected) for record in replayed), default=0) >= 2


def test_warmup_records_exercise_every_signature(replayed: list[Replayed]) -> None:
    signatures = {record.request.model_spec.signature_name for record in replayed}
    assert signatures == {
        contract.BYTES_SIGNATURE,
        contract.PIXELS_SIGNATURE,
        contract.PREPROCESSED_SIGNATURE,
        contract.CLASSIFY_SIGNATURE,
    }


def test_warmup_records_stay_within_tf_servings_1000_record_limit(
    replayed: list[Replayed],
) -> None:
    assert 0 < len(replayed) <= 1000


def test_warmup_file_stays_under_a_megabyte_at_the_test_image_size(warmup_file: Path) -> None:
    assert warmup_file.stat().st_size < 1_000_000  # at 71x71; about 2 MB at 299x299
