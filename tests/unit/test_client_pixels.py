"""The client's pixel path for non-square models: images go out as [N, H, W, 3] with height first,
unresized (keras-image-helper passed (h, w) to Pillow as (w, h) and transposed such sizes)."""

from __future__ import annotations

import io

import numpy as np
import xception_contract as contract
from PIL import Image
from xception_client import Client


def _png(height: int, width: int) -> bytes:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, :, 0] = np.arange(width, dtype=np.uint8)[None, :]  # columns differ: a transpose shows
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixel_requests_keep_height_then_width() -> None:
    with Client("127.0.0.1:1", signature=contract.PIXELS_SIGNATURE, timeout=1.0) as client:
        request = client._predict_request([_png(80, 72), _png(80, 72)], top_k=1)
    tensor = request.inputs[contract.PIXELS_INPUT]
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 80, 72, 3]
    pixels = np.frombuffer(tensor.tensor_content, np.uint8).reshape(2, 80, 72, 3)
    np.testing.assert_array_equal(pixels[0, 5, :, 0], np.arange(72, dtype=np.uint8))
