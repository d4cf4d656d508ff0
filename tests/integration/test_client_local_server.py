"""The client against the real local server (tests/fixtures/servers.py) and a small exported model.

Shared fixtures used: ``xception_server`` (session; ``.grpc_target``, ``.rest_url``) serving
``small_xception_model`` (71x71 Xception, 1000 ImageNet labels with wnid keys, top-k 5) under the
contract's default model name. The restart test starts its own servers on one fixed port,
because it kills one and starts the next on the same address.
"""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import xception_contract as contract
from PIL import Image
from xception_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidImage,
    ModelNotFound,
    NotAGrpcServer,
    Prediction,
    ServerUnavailable,
)
from xception_serving.testing.process import free_port

from tests.fixtures.servers import start_local_server

SIZE = 71  # the small model's input size


def _picture(seed: int, width: int = 120, height: int = 90) -> Image.Image:
    """Smooth, seeded pictures: different seeds give visibly different images."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [
        np.sin(x * rng.uniform(2, 12) + y * rng.uniform(2, 12) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    return Image.fromarray(((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8))


def _encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def _model_name(server: Any) -> str:
    return str(getattr(server, "model_name", contract.DEFAULT_MODEL_NAME))


@pytest.fixture
def client(xception_server: Any) -> Iterator[Client]:
    with Client(
        xception_server.grpc_target, model_name=_model_name(xception_server), timeout=30.0
    ) as c:
        yield c


def _ids(predictions: list[Prediction]) -> list[int]:
    return [p.class_id for p in predictions]


def test_predict_jpeg_gives_top_k_imagenet_labels_consistent_with_probabilities(
    client: Client,
) -> None:
    jpeg = _encoded(_picture(1, 640, 480), "JPEG", quality=90)
    predictions = client.predict(jpeg)
    assert len(predictions) == contract.DEFAULT_TOP_K
    scores = [p.score for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(p.key is not None and p.key.startswith("n") and p.label for p in predictions)
    # Cross-check the top_k_* outputs against the full probabilities output of another call.
    probabilities = client.probabilities([jpeg])
    assert probabilities.shape == (1, 1000)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    expected = np.argsort(-probabilities[0], kind="stable")[: len(predictions)]
    np.testing.assert_allclose(scores, probabilities[0][expected], rtol=1e-5)
    assert set(_ids(predictions)) == set(expected.tolist())


def test_predict_batch_of_mixed_inputs_matches_one_by_one(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    _picture(3).save(path)
    inputs: list[Any] = [
        _encoded(_picture(2), "JPEG", quality=90),
        path,
        _encoded(_picture(4), "GIF"),
        _encoded(_picture(5), "BMP"),
        _encoded(_picture(6), "WEBP", lossless=True),  # re-encoded as PNG by the client
        np.asarray(_picture(7)),
        _picture(8),
    ]
    batch = client.predict_batch(inputs, top_k=3)
    singles = [client.predict(image, top_k=3) for image in inputs]
    assert [_ids(b) for b in batch] == [_ids(s) for s in singles]
    for b, s in zip(batch, singles, strict=True):
        np.testing.assert_allclose([p.score for p in b], [p.score for p in s], atol=1e-5)
    assert len({tuple(_ids(b)) for b in batch}) > 1  # the model does look at the images


def test_webp_and_its_lossless_png_give_the_same_prediction(client: Client) -> None:
    picture = _picture(9)
    from_webp = client.predict(_encoded(picture, "WEBP", lossless=True))
    from_png = client.predict(_encoded(picture, "PNG"))
    assert _ids(from_webp) == _ids(from_png)


def test_predict_many_streams_the_same_results_in_order(client: Client) -> None:
    images = [_encoded(_picture(seed), "JPEG") for seed in range(10, 16)]
    expected = client.predict_batch(images, top_k=2)
    streamed = list(client.predict_many(iter(images), top_k=2, concurrency=3))
    assert [_ids(r) for r in streamed] == [_ids(e) for e in expected]


def test_pixel_signature_agrees_with_bytes_signature_at_model_size(xception_server: Any) -> None:
    pixels = np.asarray(_picture(20, SIZE, SIZE))
    target, name = xception_server.grpc_target, _model_name(xception_server)
    with Client(target, model_name=name, signature=contract.PIXELS_SIGNATURE) as pixel_client:
        pixel_client.check_model()
        via_pixels = pixel_client.predict(pixels)
    with Client(target, model_name=name) as bytes_client:
        via_png = bytes_client.predict(pixels)  # lossless PNG, decoded and resized to itself
    assert _ids(via_pixels) == _ids(via_png)


async def test_async_client_matches_sync_client(client: Client, xception_server: Any) -> None:
    images = [_encoded(_picture(seed), "JPEG") for seed in (30, 31, 32)]
    expected = [_ids(r) for r in client.predict_batch(images)]
    async with AsyncClient(
        xception_server.grpc_target, model_name=_model_name(xception_server), timeout=30.0
    ) as aclient:
        one = await aclient.predict(images[0])
        batch = await aclient.predict_batch(images)
        many = [r async for r in aclient.predict_many(images, concurrency=2)]
        metadata = await aclient.check_model()
        (status, *_) = await aclient.status()
    assert _ids(one) == expected[0]
    assert [_ids(r) for r in batch] == expected
    assert [_ids(r) for r in many if isinstance(r, list)] == expected
    assert contract.BYTES_SIGNATURE in metadata.signatures
    assert status.state == "AVAILABLE"


def test_metadata_status_and_check_model(client: Client) -> None:
    metadata = client.check_model()
    signature = metadata.signatures[contract.BYTES_SIGNATURE]
    assert str(signature.inputs[contract.IMAGE_BYTES_INPUT]) == "DT_STRING [-1]"
    assert signature.outputs[contract.TOP_K_SCORES_OUTPUT].shape == (None, 5)
    assert metadata.version is not None
    (status, *_) = client.status()
    assert (status.version, status.state) == (metadata.version, "AVAILABLE")


def test_top_k_above_the_exported_k_is_explained(client: Client) -> None:
    from xception_client import TopKTooLarge

    with pytest.raises(TopKTooLarge, match="exports its 5 best"):
        client.predict(_encoded(_picture(40), "PNG"), top_k=6)


@pytest.mark.parametrize(
    ("spec", "details"),
    [
        ({"model_name": "no_such_model"}, "Servable not found for request: Latest(no_such_model)"),
        ({"model_version": 999}, "Servable not found for request: Specific({model}, 999)"),
        ({"version_label": "no_such_label"}, "Unrecognized servable version label: no_such_label"),
    ],
    ids=["name", "version", "label"],
)
def test_unknown_model_version_or_label_raises_model_not_found(
    xception_server: Any, spec: dict[str, Any], details: str
) -> None:
    model = _model_name(xception_server)
    kwargs = {"model_name": model, **spec}
    with Client(xception_server.grpc_target, **kwargs) as c, pytest.raises(ModelNotFound) as info:
        c.predict(_encoded(_picture(41), "PNG"))
    assert info.value.details == details.format(model=model)  # TF Serving's words


def test_truncated_jpeg_is_refused_by_the_server_as_invalid_image(client: Client) -> None:
    jpeg = _encoded(_picture(42, 300, 200), "JPEG", quality=90)
    with pytest.raises(InvalidImage) as info:
        client.predict(jpeg[: len(jpeg) // 3])  # header intact: passes the local check
    # Answered by the server (a code), with TensorFlow's JPEG decoder error, not rejected locally.
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details.startswith(
        "jpeg::Uncompress failed. Invalid JPEG data or crop window."
    ), info.value.details
    assert len(client.predict(jpeg)) == contract.DEFAULT_TOP_K  # and the server keeps serving


def test_tiny_deadline_raises_deadline_exceeded(client: Client) -> None:
    with pytest.raises(DeadlineExceeded) as info:
        client.predict(_encoded(_picture(43, 640, 480), "JPEG"), timeout=0.001)
    # Whichever ends the call first: gRPC's own timer on the client, or the server's Session run
    # ending at the deadline it was given (TensorFlow's words, as TF Serving sends them).
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details in ("Deadline Exceeded", "Timed out waiting for notification")


def test_rest_port_raises_not_a_grpc_server(xception_server: Any) -> None:
    rest = str(xception_server.rest_url).split("://", 1)[-1].rstrip("/")
    with Client(rest, timeout=10.0, retries=0) as c, pytest.raises(NotAGrpcServer, match="8500"):
        c.status()


# --- restart: kill the server, start a new one on the same port, the same client recovers ---


@pytest.mark.slow
def test_same_client_recovers_after_the_server_is_killed_and_restarted(
    small_xception_model: Any,
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    image = _encoded(_picture(50), "JPEG")
    base = small_xception_model.base_path
    with (
        Client(target, timeout=20.0, retries=4) as client,
        Client(target, timeout=120.0, wait_for_ready=True) as patient,
    ):
        with start_local_server(model_base_path=base, grpc_port=port) as first:
            before = client.predict(image)
            first.stop(signal.SIGKILL)
        with pytest.raises(ServerUnavailable) as down:  # fails fast after retries, no hang
            client.predict(image, timeout=10.0)
        assert down.value.code == grpc.StatusCode.UNAVAILABLE
        assert "Connection refused" in down.value.details, down.value.details
        # A wait_for_ready call issued while the server is down completes once it is back.
        waited: list[list[Prediction]] = []
        waiter = threading.Thread(target=lambda: waited.append(patient.predict(image)))
        waiter.start()
        with start_local_server(model_base_path=base, grpc_port=port):
            after = client.predict(image)  # same client, same channel: reconnected by gRPC
            waiter.join(timeout=60)
            assert not waiter.is_alive()
    assert _ids(after) == _ids(before)
    assert waited and _ids(waited[0]) == _ids(before)
