"""Limits and bad inputs, enforced inside the exported graph: INVALID_ARGUMENT naming the problem,
and the pixel limit read from the header before any full decode allocates memory."""

from __future__ import annotations

import resource
from typing import Any

import numpy as np
import pytest
import xception_contract as contract

from tests.fixtures.images import (
    bmp_declaring,
    gif_declaring,
    image_bytes,
    jpeg_declaring,
    png_declaring,
)
from tests.fixtures.models import ExportedModel, bytes_signature_caller


@pytest.fixture(scope="module")
def bytes_signature(small_xception_model: ExportedModel) -> Any:
    call = bytes_signature_caller(small_xception_model.version_dir)

    return call


def _expect_invalid(call: Any, batch: list[bytes], *fragments: str) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        call(batch)
    message = info.value.message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bytes_signature_rejects_empty_input_naming_the_index(bytes_signature: Any) -> None:
    ok = image_bytes("png_rgb", 30, 30)
    _expect_invalid(bytes_signature, [ok, b""], "image_bytes[1]:", "empty image")


def test_bytes_signature_rejects_random_bytes_as_unsupported_format(bytes_signature: Any) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=500, dtype=np.uint8).tobytes()
    _expect_invalid(bytes_signature, [noise], "image_bytes[0]:", "unsupported")


def test_bytes_signature_rejects_webp_and_tiff_as_unsupported_format(bytes_signature: Any) -> None:
    tiff = image_bytes("png_rgb", 8, 8)  # re-encode below
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.open(BytesIO(tiff)).save(buffer, format="TIFF")
    _expect_invalid(bytes_signature, [buffer.getvalue()], "unsupported")


def test_bytes_signature_rejects_truncated_jpeg(bytes_signature: Any) -> None:
    data = image_bytes("jpeg_baseline", 80, 80)
    _expect_invalid(
        bytes_signature,
        [data[: len(data) // 2]],
        "jpeg::Uncompress failed. Invalid JPEG data or crop window.",
        "DecodeJpeg",
    )


def test_bytes_signature_rejects_header_only_png(bytes_signature: Any) -> None:
    _expect_invalid(
        bytes_signature,
        [png_declaring(20, 20)],
        "Invalid PNG. Failed to initialize decoder.",
        "DecodePng",
    )


@pytest.mark.parametrize(
    "make",
    [png_declaring, jpeg_declaring, gif_declaring, bmp_declaring],
    ids=["png", "jpeg", "gif", "bmp"],
)
def test_bytes_signature_rejects_huge_declared_size_before_decoding(
    bytes_signature: Any, make: Any
) -> None:
    # 65000 x 65000 x 3 would be 12.7 GB if decoded; the file itself is tiny.
    data = make(65000, 65000)
    assert len(data) < 4096
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _expect_invalid(bytes_signature, [data], "image too large", "65000")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024  # far below the 12.7 GB a full decode would need


def test_pixel_limit_is_inclusive_and_configurable() -> None:
    import tensorflow as tf
    from xception_export import preprocess

    divisor = tf.Variable(127.5)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(images: tf.Tensor) -> tf.Tensor:
        return preprocess.preprocess_batch(
            images, size=71, interpolation="nearest", max_pixels=20 * 30, divisor=divisor
        )

    assert run(tf.constant([image_bytes("png_rgb", 20, 30)])).shape == (1, 71, 71, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max-pixels=600"):
        run(tf.constant([image_bytes("png_rgb", 20, 31)]))


def test_many_frame_gif_decodes_only_the_first_frame(bytes_signature: Any) -> None:
    import io

    import tensorflow as tf
    from PIL import Image
    from xception_export.preprocess import gif_first_frame

    # 100 frames of 2000x2000: 1.2 GB if every frame were decoded, 84 kB on disk.
    base = Image.new("P", (2000, 2000), color=0)
    base.putpalette([i % 256 for i in range(768)])
    frames = []
    for i in range(100):
        frame = base.copy()
        frame.putpixel((i, i), 1 + i % 200)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    data = buffer.getvalue()
    assert tf.io.decode_gif(gif_first_frame(tf.constant(data))).shape == (1, 2000, 2000, 3)
    out = bytes_signature([data])
    assert out[contract.PROBABILITIES_OUTPUT].shape == (1, 1000)
