"""The artifact's reference answers are Keras's: every warmup record's response equals an
independent Keras pipeline computed here from the record's own input (encoded bytes written to a
file -> ``keras.utils.load_img`` -> ``img_to_array`` -> ``preprocess_input`` -> the model rebuilt
from the export's weights file, called directly), within 1e-5; and the records cover JPEG, PNG,
GIF and BMP, a batch, and every signature, within TF Serving's 1000-record limit."""

from __future__ import annotations

import io
import json
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


def test_reference_answers_equal_an_independent_keras_pipeline(
    small_xception_model: ExportedModel, keras_model: Any, tmp_path: Path
) -> None:
    import keras
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    names, wnids = _imagenet()
    path = small_xception_model.version_dir / WARMUP
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 0 < len(records) <= 1000
    formats: set[str] = set()
    signatures: set[str] = set()
    largest_batch = 0
    worst = 0.0
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.HasField("classify_log"):
            request, response = log.classify_log.request, log.classify_log.response
            images = [
                e.features.feature[contract.EXAMPLE_IMAGE_FEATURE].bytes_list.value[0]
                for e in request.input.example_list.examples
            ]
            x = keras.applications.xception.preprocess_input(_from_files(images, tmp_path))
        else:
            request, response = log.predict_log.request, log.predict_log.response
            [(alias, tensor)] = request.inputs.items()
            value = tf.make_ndarray(tensor)
            if alias == contract.IMAGE_BYTES_INPUT:
                images = list(value)
                x = keras.applications.xception.preprocess_input(_from_files(images, tmp_path))
            else:
                images = []
                x = value.astype("float32")
                if alias == contract.PIXELS_INPUT:
                    x = keras.applications.xception.preprocess_input(x)
        signature = request.model_spec.signature_name
        signatures.add(signature)
        formats.update(Image.open(io.BytesIO(data)).format or "?" for data in images)
        expected = np.asarray(keras_model(x, training=False), dtype=np.float64)  # ends in softmax
        largest_batch = max(largest_batch, len(expected))
        if log.HasField("classify_log"):
            rows = response.result.classifications
            assert [[c.label for c in row.classes] for row in rows] == [names] * len(expected)
            served = np.array([[c.score for c in row.classes] for row in rows])
        else:
            out = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
            served = out[contract.PROBABILITIES_OUTPUT]
            ids = out[contract.TOP_K_CLASS_IDS_OUTPUT]
            np.testing.assert_array_equal(ids, np.argsort(-expected, axis=1)[:, : ids.shape[1]])
            np.testing.assert_allclose(
                out[contract.TOP_K_SCORES_OUTPUT],
                np.take_along_axis(expected, ids, 1),
                atol=TOLERANCE,
                rtol=0,
            )
            assert out[contract.TOP_K_LABELS_OUTPUT].tolist() == [
                [names[i].encode() for i in row] for row in ids
            ]
            assert out[contract.TOP_K_KEYS_OUTPUT].tolist() == [
                [wnids[i].encode() for i in row] for row in ids
            ]
        assert served.shape == expected.shape
        worst = max(worst, float(np.abs(served - expected).max()))
    print(f"\nreference vs independent Keras: max |dp| {worst:.3g} over {len(records)} records")
    assert worst <= TOLERANCE
    assert formats == {"JPEG", "PNG", "GIF", "BMP"}
    assert largest_batch >= 2
    assert signatures == {
        contract.BYTES_SIGNATURE,
        contract.PIXELS_SIGNATURE,
        contract.PREPROCESSED_SIGNATURE,
        contract.CLASSIFY_SIGNATURE,
    }
    assert path.stat().st_size < 1_000_000  # at 71x71; about 2 MB at 299x299
