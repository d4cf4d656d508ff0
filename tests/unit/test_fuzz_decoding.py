"""Fuzzing the in-graph image decoding (xception_export.preprocess, the code every exported bytes
and classify signature runs): arbitrary bytes, image magic followed by noise, and valid images
of every format with bytes flipped or cut.

Every input must either become a finite float32 [1, S, S, 3] in [-1, 1] or fail with
InvalidArgumentError (TF Serving answers INVALID_ARGUMENT); never another error, never a crash,
never a hang. Bounded by example count and a wall-clock budget, with a floor on the examples
really checked (tests/fixtures/fuzz.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.fuzz import FuzzRun
from tests.fixtures.images import image_bytes

SIZE = 71
# Lower than the export's default so a header mutated into a "valid" large size decodes in
# milliseconds and a few MB; the limit check itself is the same code.
MAX_PIXELS = 1_000_000
TIME_CAP_S = 45.0
SLOWEST_EXAMPLE_S = 10.0
EXAMPLES = 150
# Examples that must really be checked: all 150 take well under a second on a shared 2-core
# machine, so only one about a hundred times slower runs out of the budget and fails. And how
# many must take each way (five runs of 150 gave 9-31 decoded, 119-141 invalid).
FLOOR = 100
FLOOR_DECODED = 2
FLOOR_INVALID = 50
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # shared CI machines: slow is not a failure; a hang is (SLOWEST_EXAMPLE_S)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SEEDS: dict[str, bytes] = {
    variant: image_bytes(variant, height=23, width=31, seed=i)
    for i, variant in enumerate(
        ["jpeg_baseline", "jpeg_progressive", "jpeg_gray", "jpeg_cmyk", "png_rgb", "png_rgba",
         "png_p", "png_16bit_gray", "gif", "bmp"]
    )
}
MAGIC = [b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n",
         b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a", b"GIF87a", b"BM"]


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
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        # Headers are where decoders branch: bias flips toward the first 64 bytes.
        limit = 64 if draw(st.booleans()) else len(data)
        at = draw(st.integers(0, min(limit, len(data)) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        st.tuples(st.sampled_from(MAGIC), st.binary(max_size=256)).map(lambda t: t[0] + t[1]),
        mutated_images(),
    )


@pytest.mark.timeout(300)
def test_fuzz_decoder_returns_a_normalised_image_or_invalid_argument(
    decode: Callable[[bytes], Any],
) -> None:
    import tensorflow as tf

    run = FuzzRun("decoder", budget_s=TIME_CAP_S, example_cap_s=SLOWEST_EXAMPLE_S)

    @FUZZ
    @given(_inputs())
    @run.example
    def check(data: bytes) -> None:
        try:
            out = decode(data)
        except tf.errors.InvalidArgumentError as error:
            assert error.message  # names the problem
            run.outcome("invalid")
        else:
            assert out.shape == (1, SIZE, SIZE, 3) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= -1.0 and out.max() <= 1.0
            run.outcome("decoded")

    check()
    # Most of the examples really ran, and the generator reaches both outcomes (a fuzzer that
    # only ever fails parsing tests little).
    run.assert_checked(at_least=FLOOR, invalid=FLOOR_INVALID, decoded=FLOOR_DECODED)


def test_every_seed_image_decodes(decode: Callable[[bytes], Any]) -> None:
    for variant, data in SEEDS.items():
        assert decode(data).shape == (1, SIZE, SIZE, 3), variant
