"""Compatibility tier: our exports under the TensorFlow inside the pinned TF Serving image.

The launcher pins one TF Serving release (``xception_serving.launch_tfserving.TFS_VERSION``); its
image
embeds the TensorFlow of the same version. This tier installs that TensorFlow in a venv of its
own (once, into the cache), exports two models with the project's TensorFlow, loads each through
the Session path under the pinned TensorFlow, replays every warmup record, and compares every
signature's outputs with the project's TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.models import build_sensitive_xception

TOLERANCE = 1e-6
FINE_TUNED_SIZE = 71
FINE_TUNED_CLASSES = 10


@pytest.fixture(scope="module")
def pinned_python() -> Path:
    from xception_export import tfserving_env
    from xception_serving.launch_tfserving import TFS_VERSION

    return tfserving_env.ensure_env(TFS_VERSION, log=print)


@pytest.fixture(scope="module")
def imagenet_style_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """299x299 Xception, 1000 classes, ImageNet labels with wnid keys; image-sensitive weights."""
    from xception_export.api import export

    weights = tmp_path_factory.mktemp("weights") / "xception299.weights.h5"
    build_sensitive_xception(299).save_weights(str(weights))
    base = tmp_path_factory.mktemp("imagenet") / "xception"
    return export(base, weights=str(weights), model_version=1, log=lambda _m: None).version_dir


@pytest.fixture(scope="module")
def fine_tuned_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen Xception base, pooling and a linear Dense head saved as .keras (logits)."""
    import keras
    from xception_export.api import export

    keras.utils.set_random_seed(11)
    base_model = keras.applications.Xception(
        weights=None, include_top=False, input_shape=(FINE_TUNED_SIZE, FINE_TUNED_SIZE, 3)
    )
    base_model.trainable = False
    inputs = keras.Input((FINE_TUNED_SIZE, FINE_TUNED_SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(base_model(inputs, training=False))
    # Random-init features are tiny; a large head makes logits differ between images.
    head = keras.layers.Dense(
        FINE_TUNED_CLASSES, kernel_initializer=keras.initializers.RandomNormal(stddev=300.0)
    )
    model = keras.Model(inputs, head(features))
    folder = tmp_path_factory.mktemp("fine_tuned")
    model.save(folder / "clothing.keras")
    labels = folder / "labels.txt"
    labels.write_text("".join(f"class-{i}\n" for i in range(FINE_TUNED_CLASSES)))
    return export(
        folder / "models" / "clothing",
        model=folder / "clothing.keras",
        labels=labels,
        model_version=1,
        log=lambda _m: None,
    ).version_dir


def _compare(pinned: Any, ours: Any) -> float:
    """Max |difference| over every numeric output; other outputs must be equal."""
    assert len(pinned.records) == len(ours.records) >= 5
    worst = 0.0
    for theirs, mine in zip(pinned.records, ours.records, strict=True):
        assert (theirs.kind, theirs.signatures) == (mine.kind, mine.signatures)
        assert sorted(theirs.outputs) == sorted(mine.outputs)
        for alias, tensor in mine.outputs.items():
            other = theirs.outputs[alias]
            assert other["shape"] == tensor["shape"], (mine.index, alias)
            if tensor["dtype"].startswith("float"):
                diff = np.abs(np.asarray(other["values"]) - np.asarray(tensor["values"]))
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
            else:
                assert other["values"] == tensor["values"], (mine.index, alias)
    return worst


@pytest.mark.parametrize("model", ["imagenet_style_version", "fine_tuned_version"])
def test_every_warmup_record_answers_the_same_under_the_pinned_tf_serving_tensorflow(
    model: str, pinned_python: Path, request: pytest.FixtureRequest
) -> None:
    from xception_export import preflight, tfserving_env
    from xception_serving.launch_tfserving import TFS_VERSION

    version_dir = request.getfixturevalue(model)
    pinned = tfserving_env.run_preflight(pinned_python, version_dir, "serve")
    assert pinned.tensorflow_version == TFS_VERSION
    assert pinned.ok, pinned.load_error or pinned.signature_status()
    assert set(pinned.signature_status().values()) == {"OK"}
    ours = preflight.check_version(version_dir)
    assert ours.ok
    worst = _compare(pinned, ours)
    print(
        f"\n{model}: TF {pinned.tensorflow_version} vs TF {ours.tensorflow_version}, "
        f"{len(ours.records)} warmup records, every signature: max |d| = {worst:.3g}"
    )
    assert worst <= TOLERANCE
