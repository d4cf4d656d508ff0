"""Compatibility tier: the decode-cost refusals and hostile-looking legitimate images under the
TensorFlow inside the pinned TF Serving release.

The exported graph refuses, before decoding, JPEGs of more than --max-jpeg-scans scans, GIFs of
more than --max-gif-blocks blocks before the first image, PNGs of more than --max-png-text-chunks
zTXt/iTXt chunks, and images whose header declares more than --max-pixels pixels. Those checks are
ordinary graph ops (string ops, while loops, Assert under control dependencies), so a TensorFlow
release that schedules or words them differently would let a bomb through to its decoder or
answer with another message. Here one small export runs through a TF1 Session, as TF Serving
runs it, under the pinned release's TensorFlow (its venv, as the release test builds it) and
under ours, on every bomb kind and on legitimate images that walk the same checks: each bomb is
refused INVALID_ARGUMENT naming its flag, in the same words as ours; each legitimate image gets
the same top-k as ours.

A Session step ends only when every op it started has, so a bomb whose check did not gate its
decoder would answer only after the decode. The refusal bound is generous on purpose: refusals
were measured at 1-90 ms under both TensorFlows here (once 0.67 s: the 16 MB one, at load 6),
while the scan and zTXt bombs below take 15-43 s in tf.io.decode_jpeg / decode_png alone (both
TensorFlows, as the machine's load varied); 5 s is far from both.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xception_contract as contract

from benchmarks.decode_cost import (
    gif_extension_bomb,
    gif_photo,
    gif_sub_block_bomb,
    jpeg_photo,
    jpeg_scan_bomb,
    png_photo,
    png_with_chunks,
    png_ztxt_bomb,
)
from tests.compat import test_pinned_tfserving_release as release
from tests.fixtures.images import bmp_declaring, gif_declaring, jpeg_declaring, png_declaring
from tests.fixtures.models import ExportedModel
from tests.fixtures.pinned_session import Answer, run_images, run_images_under
from tests.integration.test_hostile_images import GIF_BLOCKS, JPEG_SCANS, PNG_TEXTS

pinned_python = release.pinned_python  # the pinned release's venv (built once, then cached)

REFUSAL_SECONDS = 5.0  # measured 0.001-0.09 s, once 0.67 s; see the module docstring
DECLARED_SIDE = 65000  # 65000 x 65000 x 3 would be 12.7 GB decoded
# Each bomb's Assert data after the image's index, as the status message prints it.
TOO_LARGE = (
    f"[image too large: more than --max-pixels={contract.DEFAULT_MAX_PIXELS} pixels; header says "
    f"height x width =] [{DECLARED_SIDE}] [{DECLARED_SIDE}]"
)

BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    # These two decode for 15-43 s alone (136 kB and 16 MB): the refusal bound can tell.
    "jpeg-2000px-8010-scans": (lambda: jpeg_scan_bomb(2000, 8000), f"[{JPEG_SCANS}]"),
    "png-2000-ztxt-of-8mb": (lambda: png_ztxt_bomb(png_photo(64), 2000), f"[{PNG_TEXTS}]"),
    # giflib reads these in under 0.1 s; their cost was the graph's own walk to the first image.
    "gif-100k-sub-blocks": (lambda: gif_sub_block_bomb(100_000), f"[{GIF_BLOCKS}]"),
    "gif-100k-extensions": (lambda: gif_extension_bomb(100_000), f"[{GIF_BLOCKS}]"),
    # Refused from the header: a decode would allocate 12.7 GB.
    "png-declares-65000px": (lambda: png_declaring(DECLARED_SIDE, DECLARED_SIDE), TOO_LARGE),
    "jpeg-declares-65000px": (lambda: jpeg_declaring(DECLARED_SIDE, DECLARED_SIDE), TOO_LARGE),
    "gif-declares-65000px": (lambda: gif_declaring(DECLARED_SIDE, DECLARED_SIDE), TOO_LARGE),
    "bmp-declares-65000px": (lambda: bmp_declaring(DECLARED_SIDE, DECLARED_SIDE), TOO_LARGE),
}


def _png_with_text_chunks(side: int) -> bytes:
    """A PNG with one tEXt, one zTXt and one iTXt chunk (two of them compressed: under 8)."""
    png = png_with_chunks(png_photo(side), 1, b"tEXt", b"Title\x00a cat")
    png = png_with_chunks(png, 1, b"zTXt", b"Comment\x00\x00" + zlib.compress(b"shot on film"))
    return png_with_chunks(png, 1, b"iTXt", b"Author\x00\x00\x00en\x00\x00someone")


LEGIT: dict[str, Callable[[], bytes]] = {
    "jpeg-progressive": lambda: jpeg_photo(131, progressive=True),
    "gif-animated-3-frames": lambda: gif_photo(97, frames=3),
    "png-text-chunks": lambda: _png_with_text_chunks(83),
    # At each limit, not over it: decoded, not refused.
    "jpeg-at-32-scans": lambda: jpeg_scan_bomb(64, contract.DEFAULT_MAX_JPEG_SCANS - 10),
    "gif-at-1024-blocks": lambda: gif_sub_block_bomb(contract.DEFAULT_MAX_GIF_BLOCKS - 2),
    "png-at-8-ztxt": lambda: png_ztxt_bomb(
        png_photo(64), contract.DEFAULT_MAX_PNG_TEXT_CHUNKS, expands_to=1000
    ),
}
WARM_UP = "warm-up"  # first, untimed: the first Session run sets the executor up


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    made = {WARM_UP: jpeg_photo(64)}
    made.update({name: make() for name, make in LEGIT.items()})
    made.update({name: make() for name, (make, _assertion) in BOMBS.items()})
    return made


@pytest.fixture(scope="module")
def pinned_answers(
    pinned_python: Path, small_xception_model: ExportedModel, images: dict[str, bytes]
) -> dict[str, Answer]:
    from xception_export import preflight
    from xception_serving.launch_tfserving import TFS_VERSION

    version, answers = run_images_under(
        pinned_python, preflight.__file__, small_xception_model.version_dir, images
    )
    assert version == TFS_VERSION
    return answers


@pytest.fixture(scope="module")
def our_answers(small_xception_model: ExportedModel, images: dict[str, bytes]) -> dict[str, Answer]:
    from xception_export import preflight

    return run_images(preflight, small_xception_model.version_dir, images)


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_pinned_tensorflow_refuses_each_bomb_before_decoding_naming_its_flag(
    bomb: str, pinned_answers: dict[str, Answer], our_answers: dict[str, Answer]
) -> None:
    theirs, ours = pinned_answers[bomb], our_answers[bomb]
    expected = f"INVALID_ARGUMENT: assertion failed: [image_bytes[0]:] {BOMBS[bomb][1]}"
    assert theirs.first_line() == expected
    assert ours.first_line() == expected
    assert theirs.seconds < REFUSAL_SECONDS and ours.seconds < REFUSAL_SECONDS


@pytest.mark.parametrize("image", list(LEGIT))
def test_pinned_tensorflow_answers_a_legitimate_image_with_our_top_k(
    image: str, pinned_answers: dict[str, Answer], our_answers: dict[str, Answer]
) -> None:
    theirs, ours = pinned_answers[image], our_answers[image]
    assert theirs.error is None and ours.error is None, (theirs.error, ours.error)
    assert sorted(theirs.outputs) == sorted(ours.outputs)
    for alias, tensor in ours.outputs.items():
        other = theirs.outputs[alias]
        assert other["shape"] == tensor["shape"] == [1, *tensor["shape"][1:]], alias
        if tensor["dtype"].startswith("float"):
            worst = np.abs(np.asarray(other["values"]) - np.asarray(tensor["values"])).max()
            assert worst <= release.TOLERANCE, (alias, worst)
        else:
            assert other["values"] == tensor["values"], alias


def test_legitimate_images_get_different_top_k_so_the_comparison_has_teeth(
    our_answers: dict[str, Answer],
) -> None:
    alias = contract.TOP_K_SCORES_OUTPUT
    scores = {tuple(our_answers[name].outputs[alias]["values"]) for name in LEGIT}
    assert len(scores) == len(LEGIT)
