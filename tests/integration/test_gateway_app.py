"""The gateway's rules without a model server: each request's remaining deadline is the gRPC
call's timeout, the client's errors map to their HTTP codes, and URL fetches refuse non-public
addresses unless allowed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from xception_client import errors
from xception_client.predictions import Prediction
from xception_gateway import Settings, create_app
from xception_gateway.app import http_status
from xception_gateway.fetch import FetchError, fetch_image

from tests.fixtures.images import image_bytes
from tests.fixtures.rpc import loopback_grpc_server
from tests.fixtures.tracing import recording_grpc_server, traced_grpc


class _FakeClient:
    def __init__(self, error: Exception | None = None) -> None:
        self.timeouts: list[float] = []
        self.error = error

    async def predict(self, data: bytes, *, top_k: int, timeout: float) -> list[Prediction]:
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return [Prediction(label="tabby", key="n02123045", score=0.9, class_id=281)][:top_k]


@contextmanager
def _app(fake: _FakeClient, timeout: float = 10.0) -> Iterator[TestClient]:
    app = create_app(Settings(target="127.0.0.1:1", timeout=timeout, tracing=False))
    with TestClient(app) as client:  # runs the lifespan (opens a channel that is never used)
        app.state.client = fake
        yield client


def test_the_remaining_deadline_is_the_grpc_timeout() -> None:
    fake = _FakeClient()
    with _app(fake, timeout=10.0) as http:
        ok = http.post("/predict", files={"file": ("a.jpg", b"jpeg", "image/jpeg")},
                       headers={"X-Request-Timeout": "2"})  # fmt: skip
        default = http.post("/predict", files={"file": ("a.jpg", b"jpeg", "image/jpeg")})
    assert ok.status_code == default.status_code == 200
    assert ok.json()["predictions"][0]["label"] == "tabby"
    assert 1.5 < fake.timeouts[0] <= 2.0  # the header shortens the 10 s default
    assert 9.5 < fake.timeouts[1] <= 10.0
    with _app(_FakeClient()) as http:
        bad = http.post(
            "/predict", files={"file": ("a", b"x")}, headers={"X-Request-Timeout": "soon"}
        )
    assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.RpcError:
    class _Error(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return code

        def details(self) -> str:
            return details

    return _Error()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
def test_client_errors_map_to_http_codes(code: grpc.StatusCode, status: int) -> None:
    error = errors.from_rpc_error(
        _rpc_error(code, "Servable not found for request: Latest(x)"),
        target="127.0.0.1:1",
        image_call=True,
    )
    assert http_status(error) == status
    with _app(_FakeClient(error)) as http:
        response = http.post("/predict", files={"file": ("a", b"x")})
    assert response.status_code == status
    assert "\n" not in response.json()["error"]


def test_url_fetch_refuses_loopback_unless_allowed() -> None:
    with pytest.raises(FetchError, match="not a public address"):
        asyncio.run(fetch_image("http://127.0.0.1:9/x.jpg", max_bytes=10, timeout=2))
    with pytest.raises(FetchError, match="cannot fetch"):  # allowed, then nothing listens on 9
        asyncio.run(
            fetch_image("http://127.0.0.1:9/x.jpg", max_bytes=10, timeout=2, allow_private=True)
        )


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCEPTION_SERVER", "tfs:8500")
    monkeypatch.setenv("GATEWAY_TIMEOUT", "3.5")
    settings: Any = Settings()
    assert settings.target == "tfs:8500"
    assert settings.timeout == 3.5
    assert settings.allow_private_urls is False


def test_tracing_continues_the_http_callers_trace_into_the_grpc_call() -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with traced_grpc() as exporter, recording_grpc_server() as (target, recorder):
        app = create_app(Settings(target=target, tracing=True))
        with TestClient(app) as http:
            response = http.post(
                "/predict",
                files={"file": ("cat.jpg", image_bytes("jpeg_baseline"), "image/jpeg")},
                headers={"traceparent": f"00-{trace_id}-{parent}-01"},
            )
        spans = exporter.get_finished_spans()
    assert response.status_code == 404  # the recorder answers NOT_FOUND
    [(_method, metadata)] = recorder.calls
    assert metadata["traceparent"].split("-")[1] == trace_id
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span: Any) -> list[int]:
        chain = []
        while span.parent is not None:
            chain.append(span.parent.span_id)
            span = by_id.get(span.parent.span_id)
            if span is None:
                break
        return chain

    by_name = {s.name: s for s in spans}
    for name in ("xception_client.prepare_images", "/tensorflow.serving.PredictionService/Predict"):
        # A child of the caller's span, directly or through the framework's HTTP server span.
        assert int(parent, 16) in ancestors(by_name[name]), name
        assert f"{by_name[name].context.trace_id:032x}" == trace_id


class _Slow(grpc.GenericRpcHandler):
    """Records how much time each call has left when it arrives, then outlives it."""

    def __init__(self) -> None:
        self.remaining: list[float] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        def slow(_request: bytes, context: grpc.ServicerContext) -> bytes:
            self.remaining.append(float(context.time_remaining() or 0.0))
            time.sleep(1.5)
            return b""

        return grpc.unary_unary_rpc_method_handler(slow)


def test_the_grpc_server_sees_the_http_requests_deadline() -> None:
    handler = _Slow()
    with loopback_grpc_server(handler, workers=2) as target:
        app = create_app(Settings(target=target, timeout=10.0, tracing=False))
        with TestClient(app) as http:
            started = time.monotonic()
            response = http.post(
                "/predict",
                files={"file": ("cat.jpg", image_bytes("jpeg_baseline"), "image/jpeg")},
                headers={"X-Request-Timeout": "0.5"},
            )
            elapsed = time.monotonic() - started
    error = {"error": "DEADLINE_EXCEEDED: Deadline Exceeded"}
    assert (response.status_code, response.json()) == (504, error)
    [remaining] = handler.remaining
    assert 0.2 < remaining <= 0.5  # the gRPC deadline is the HTTP request's, not the 10 s default
    # The gateway answered at about the deadline, not when the server finished (1.5 s).
    assert 0.45 <= elapsed < 1.4, elapsed
