"""Compatibility tier: two Session runs at once under the TensorFlow inside the pinned TF Serving
release, as its batch threads make them when num_batch_threads is 2 (serving/batching-cpu.config,
the Kubernetes cpu overlay, KServe's cpu runtime).

Each caller must get its own image's answer, the same as with one run at a time, and an image
that cannot be decoded must fail only its own run while the other in flight answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xception_contract as contract

from tests.compat import test_pinned_tfserving_release as release
from tests.fixtures.images import image_bytes
from tests.fixtures.models import ExportedModel
from tests.fixtures.pinned_session import Answer, run_images_under

pinned_python = release.pinned_python  # the pinned release's venv (built once, then cached)

BAD = "text-not-an-image"
IMAGES = {
    **{
        f"{variant}-{seed}": image_bytes(variant, seed=seed)
        for variant in ("jpeg_420", "png_rgb", "gif", "jpeg_progressive")
        for seed in range(3)
    },
    BAD: b"this is text, not an image",
}
# Two runs share the intra-op pool, so oneDNN may split a reduction differently.
FLOAT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def answers(
    pinned_python: Path, small_xception_model: ExportedModel
) -> dict[int, dict[str, Answer]]:
    from xception_export import preflight
    from xception_serving.launch_tfserving import TFS_VERSION

    by_in_flight = {}
    for in_flight in (1, 2):
        version, answered = run_images_under(
            pinned_python, preflight.__file__, small_xception_model.version_dir, IMAGES, in_flight
        )
        assert version == TFS_VERSION
        by_in_flight[in_flight] = answered
    return by_in_flight


def test_two_runs_in_flight_give_each_caller_the_answer_it_gets_alone(
    answers: dict[int, dict[str, Answer]],
) -> None:
    alone, together = answers[1], answers[2]
    good = [name for name in IMAGES if name != BAD]
    top_classes = set()
    for name in good:
        assert alone[name].error is None and together[name].error is None, name
        assert sorted(alone[name].outputs) == sorted(together[name].outputs)
        for alias, tensor in alone[name].outputs.items():
            other = together[name].outputs[alias]
            assert other["shape"] == tensor["shape"], (name, alias)
            if tensor["dtype"].startswith("float"):
                np.testing.assert_allclose(
                    other["values"], tensor["values"], atol=FLOAT_TOLERANCE, err_msg=name
                )
            else:
                assert other["values"] == tensor["values"], (name, alias)
        top_classes.add(str(alone[name].outputs[contract.TOP_K_CLASS_IDS_OUTPUT]["values"]))
    # The images answer differently, so a mixed-up answer could not pass as a right one.
    assert len(top_classes) > 1


def test_an_undecodable_image_in_flight_fails_alone_naming_itself(
    answers: dict[int, dict[str, Answer]],
) -> None:
    for answered in answers.values():
        assert answered[BAD].first_line().startswith("INVALID_ARGUMENT: "), answered[BAD].error
        assert "image_bytes[0]" in answered[BAD].first_line()
    assert answers[1][BAD].first_line() == answers[2][BAD].first_line()
