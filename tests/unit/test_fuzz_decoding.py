"""Fuzzing the in-graph image decoding (xception_export.preprocess, the code every exported bytes
and classify signature runs): valid images of every format as they are, the same with bytes
overwritten, inserted, deleted or cut, image magic followed by noise, and noise.

Every input either becomes a finite float32 [1, S, S, 3] in [-1, 1] or fails with
InvalidArgumentError (TF Serving answers INVALID_ARGUMENT) from one of the graph's own checks,
naming the image, or from one of TensorFlow's image kernels; a valid image always decodes; never
another error, never a crash, never a hang. Bounded by example count and a wall-clock budget,
with floors on the examples really checked and on each outcome (tests/fixtures/fuzz.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fixtures.fuzz import FuzzRun, damaged
from tests.fixtures.images import image_bytes

SIZE = 71
# Lower than the export's default so a header mutated into a "valid" large size decodes in
# milliseconds and a few MB; the limit check itself is the same code.
MAX_PIXELS = 1_000_000
TIME_CAP_S = 45.0
SLOWEST_EXAMPLE_S = 10.0
EXAMPLES = 300
# Examples that must really be checked: all 300 take well under a second on a shared 2-core
# machine, so only one about a hundred times slower runs out of the budget and fails. And how
# many must take each way (five runs of 300 gave 33-50 decoded, 250-267 invalid).
FLOOR = 250
FLOOR_DECODED = 15
FLOOR_INVALID = 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # shared CI machines: slow is not a failure; a hang is (SLOWEST_EXAMPLE_S)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SEEDS: dict[str, bytes] = {
    variant: image_bytes(variant, height=23, width=31, seed=i)
    for i, variant in enumerate(
        [
            "jpeg_baseline",
            "jpeg_progressive",
            "jpeg_gray",
            "jpeg_cmyk",
            "png_rgb",
            "png_rgba",
            "png_p",
            "png_16bit_gray",
            "gif",
            "bmp",
        ]
    )
}
MAGIC = [
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    b"GIF89a",
    b"GIF87a",
    b"BM",
]


@pytest.fixture(scope="module")
def decode() -> Callable[[bytes], Any]:
    import tensorflow as tf
    from xception_export import preprocess

    divisor = tf.Variable(127.5)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(images: tf.Tensor) -> tf.Tensor:
        return preprocess.preprocess_batch(
            images, size=SIZE, interpolation="nearest", max_pixels=MAX_PIXELS, divisor=divisor
        )

    def call(data: bytes) -> Any:
        return run(tf.constant([data])).numpy()

    call(SEEDS["png_rgb"])  # trace once, outside the timed examples
    return call


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes): a seed image with a byte or two overwritten ("touched"), with up to eight
    edits ("damaged"), as it is ("seed"), image magic followed by noise ("magic"), or noise."""
    kind = draw(st.sampled_from(["touched", "damaged", "seed", "magic", "noise"]))
    if kind == "noise":
        return kind, draw(st.binary(max_size=512))
    if kind == "magic":
        return kind, draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=256))
    seed = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    if kind == "seed":
        return kind, seed
    if kind == "touched":
        return kind, draw(damaged(seed, header=64, edits=2, kinds=("overwrite",)))
    return kind, draw(damaged(seed, header=64, edits=8))


# The graph's own checks (preprocess.decode_rgb), each naming the image, and the TensorFlow
# kernels whose errors reach the caller as they are, naming their node.
GRAPH_CHECKS = re.compile(
    r"assertion failed: \[image_bytes\[0\]:\] \[(?:empty image \(0 bytes\)|unsupported or "
    r"undecodable image format \(expected JPEG, PNG, GIF or BMP\); first bytes:|image too large: "
    r"more than --max-pixels=\d+ pixels; header says height x width =|truncated (?:PNG|GIF|BMP) "
    r"header \(\d+ bytes needed\), got bytes:|image header declares zero size:)\]"
)
IMAGE_KERNELS = {"ExtractJpegShape", "DecodeJpeg", "DecodePng", "DecodeGif", "DecodeBmp"}


def refusal_source(message: str) -> str | None:
    """ "check" or the kernel's op name for a refusal the decoder may give; None otherwise."""
    if GRAPH_CHECKS.search(message):
        return "check"
    nodes = re.findall(r"\{\{node ([^}]+)\}\}", message)
    ops = {node.rsplit("/", 1)[-1] for node in nodes}
    if len(ops) == 1 and ops <= IMAGE_KERNELS:
        return ops.pop()
    return None


@pytest.mark.timeout(300)
def test_fuzz_decoder_returns_a_normalised_image_or_invalid_argument(
    decode: Callable[[bytes], Any],
) -> None:
    import tensorflow as tf

    run = FuzzRun("decoder", budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)

    def check(case: tuple[str, bytes]) -> None:
        kind, data = case
        try:
            out = decode(data)
        except tf.errors.InvalidArgumentError as error:
            assert kind != "seed", error.message
            source = refusal_source(error.message)
            assert source is not None, error.message
            run.outcome("invalid", source)
        else:
            assert out.shape == (1, SIZE, SIZE, 3) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= -1.0 and out.max() <= 1.0
            run.outcome("decoded", kind)

    run.fuzz(inputs(), check, settings=FUZZ)
    # Most of the examples really ran, and the generator reaches both outcomes (a fuzzer that
    # only ever fails parsing tests little).
    run.assert_checked(at_least=FLOOR, invalid=FLOOR_INVALID, decoded=FLOOR_DECODED)


def test_every_seed_image_decodes(decode: Callable[[bytes], Any]) -> None:
    for variant, data in SEEDS.items():
        assert decode(data).shape == (1, SIZE, SIZE, 3), variant
