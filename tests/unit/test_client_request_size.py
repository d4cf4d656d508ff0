"""Client.request_size: the bytes of the PredictRequest predict_batch sends, measured against TF
Serving's own messages (tensorflow_serving.apis) built for the same images; nothing is sent."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import xception_contract as contract
from PIL import Image
from xception_client import AsyncClient, Client, InvalidImage

UNREACHABLE = "127.0.0.1:1"  # channels connect lazily: request_size never dials it


def _jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _official_request(model_name: str, signature: str) -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    return request


def test_request_size_is_tf_servings_predict_request_for_the_same_jpegs() -> None:
    from tensorflow.core.framework import types_pb2

    jpegs = [_jpeg(64, 48, 1), _jpeg(40, 30, 2)]
    expected = _official_request("m", contract.BYTES_SIGNATURE)
    tensor = expected.inputs[contract.IMAGE_BYTES_INPUT]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(jpegs)
    tensor.string_val.extend(jpegs)
    with Client(UNREACHABLE, model_name="m") as client:
        assert client.request_size(jpegs) == expected.ByteSize()
        assert client.request_size(jpegs[:1]) < client.request_size(jpegs)


def test_request_size_of_the_pixel_signature_counts_the_uint8_tensor() -> None:
    from tensorflow.core.framework import types_pb2

    pixels = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    expected = _official_request("m", contract.PIXELS_SIGNATURE)
    tensor = expected.inputs[contract.PIXELS_INPUT]
    tensor.dtype = types_pb2.DT_UINT8
    for size in pixels.shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = pixels.tobytes()
    with Client(UNREACHABLE, model_name="m", signature=contract.PIXELS_SIGNATURE) as client:
        assert client.request_size(list(pixels)) == expected.ByteSize()


def test_request_size_checks_the_images_as_a_call_would() -> None:
    with Client(UNREACHABLE) as client:
        with pytest.raises(ValueError, match="images is empty; give at least one image"):
            client.request_size([])
        with pytest.raises(InvalidImage):
            client.request_size([b"not an image"])


async def test_the_async_twin_gives_the_same_size() -> None:
    jpegs = [_jpeg(32, 24, 4)]
    with Client(UNREACHABLE, model_name="m") as client:
        size = client.request_size(jpegs)
    async with AsyncClient(UNREACHABLE, model_name="m") as client:
        assert client.request_size(jpegs) == size
