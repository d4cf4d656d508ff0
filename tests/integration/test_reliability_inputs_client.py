"""What the client refuses before sending, against no server at all (nothing listens on port 1, so
a request that left the client would fail as unavailable): bad images, an empty batch, pixels off
the model's size. The inputs are the ones test_reliability_inputs_server.py sends the server."""

from __future__ import annotations

import numpy as np
import pytest
import xception_contract as contract
from xception_client import Client, InvalidImage, ServerUnavailable

from tests.fixtures.reliability import BAD_IMAGES, BOMB_SIDE, JPEG, SIZE


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "random_bytes",
        "text_file",
        "jpeg_sos_marker_broken",
        "jpeg_sof_nine_components",
        "png_bomb",
        "jpeg_bomb",
        "gif_bomb",
        "file_path_not_image",
    ],
)
def test_client_rejects_bad_images_before_sending(case: str) -> None:
    # Nothing listens on port 1: a request that left the client would fail as unavailable.
    data = BAD_IMAGES[case][0]
    with Client("127.0.0.1:1", timeout=5, retries=0) as client, pytest.raises(InvalidImage) as info:
        client.predict(data)
    assert info.value.code is None  # a local check, not a server answer
    if case == "empty":
        assert info.value.details == "image <bytes> is empty (0 bytes)"
    elif case.endswith("_bomb"):
        side = 65535 if case == "gif_bomb" else BOMB_SIDE
        # The client's words, then Pillow's bomb check naming the declared pixel count.
        assert info.value.details.startswith(
            f"image <bytes> declares too many pixels (Image size ({side * side} pixels) exceeds"
        ), info.value.details
    else:  # Pillow cannot open it (the broken JPEGs too): the size and first bytes, for a log
        assert info.value.details == (
            f"image <bytes> is not in a known image format ({len(data)} bytes,"
            f" starting {data[:8].hex(' ')})"
        )


def test_client_rejects_empty_batch_and_off_size_pixels_before_sending() -> None:
    with Client("127.0.0.1:1", timeout=5, retries=0) as client:
        with pytest.raises(ValueError, match="images is empty"):
            client.predict_batch([])
        with pytest.raises(ServerUnavailable) as info:
            client.predict(JPEG)  # the control: a good image does try to reach the server
        assert "127.0.0.1:1: Failed to connect to remote host: Connection refused" in (
            info.value.details
        ), info.value.details
    pixels = Client("127.0.0.1:1", timeout=5, retries=0, signature=contract.PIXELS_SIGNATURE)
    with pixels, pytest.raises(InvalidImage, match="model's size"):
        pixels.predict_batch(
            [np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((SIZE + 1, SIZE, 3), np.uint8)]
        )
