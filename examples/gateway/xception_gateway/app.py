"""The gateway's routes.

    POST /predict          multipart `file` (an upload) or `url` (form field or JSON {"url": ...});
                           ?top_k=N; optional X-Request-Timeout: seconds (capped by the setting)
                           -> {"model", "version"?, "predictions": [{"label", "key", "score",
                               "class_id"}]}
    GET  /healthz          200 while the process runs
    GET  /readyz           200 when a version of the model is AVAILABLE, else 503

Every request has one deadline, set when its headers arrive: reading the body, the URL fetch and
the gRPC call share it, and the gRPC call gets what is left as its timeout, so TF Serving stops
working on a request the HTTP caller has given up on. Bodies are read under caps as they stream
in (body.py). Errors map to HTTP codes by the client's exception tree: 400 bad body, image or
argument, 404 unknown model or signature, 408 body not received by the deadline, 413 too large,
503 server unavailable, 504 deadline, 502 anything else from the server; the body is
{"error": "<one line>"}.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from xception_client import (
    AsyncClient,
    DeadlineExceeded,
    InvalidArgument,
    ModelNotFound,
    ResourceExhausted,
    ServerUnavailable,
    SignatureNotFound,
    TopKTooLarge,
    XceptionClientError,
)
from xception_contract import DEFAULT_MODEL_NAME, DEFAULT_TOP_K

from xception_gateway.body import read_image_request
from xception_gateway.errors import HttpError
from xception_gateway.fetch import FetchError, TooLarge, fetch_image


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """From the environment by default (GATEWAY_* and the client's XCEPTION_* names)."""

    target: str = field(default_factory=lambda: os.environ.get("XCEPTION_SERVER", "localhost:8500"))
    model: str = field(default_factory=lambda: os.environ.get("XCEPTION_MODEL", DEFAULT_MODEL_NAME))
    # Whole-request deadline (fetch + gRPC); X-Request-Timeout may only shorten it.
    timeout: float = field(default_factory=lambda: _env_float("GATEWAY_TIMEOUT", 10.0))
    url_timeout: float = field(default_factory=lambda: _env_float("GATEWAY_URL_TIMEOUT", 5.0))
    max_image_bytes: int = field(
        default_factory=lambda: int(os.environ.get("GATEWAY_MAX_IMAGE_BYTES", 10 * 1024 * 1024))
    )
    allow_private_urls: bool = field(
        default_factory=lambda: os.environ.get("GATEWAY_ALLOW_PRIVATE_URLS", "") == "1"
    )
    tracing: bool = field(default_factory=lambda: os.environ.get("OTEL_TRACES_EXPORTER", "")
                          not in ("", "none"))  # fmt: skip


def http_status(error: XceptionClientError) -> int:
    """The HTTP code for one of the client's errors."""
    if isinstance(error, (InvalidArgument, TopKTooLarge)):
        return 400
    if isinstance(error, (ModelNotFound, SignatureNotFound)):
        return 404
    if isinstance(error, (ServerUnavailable, ResourceExhausted)):
        return 503
    if isinstance(error, DeadlineExceeded):
        return 504
    return 502


def _one_line(message: object) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else "error"


def _refusal(status: int, message: str) -> JSONResponse:
    # Refusals may come before the body was read to its end (a bad argument, a body over the cap
    # or past the deadline): Connection: close stops the server reading and dropping the rest.
    return JSONResponse({"error": _one_line(message)}, status_code=status,
                        headers={"Connection": "close"})  # fmt: skip


def _validation_message(error: RequestValidationError) -> str:
    """FastAPI's first complaint about a query argument, as one line naming it."""
    first = error.errors()[0] if error.errors() else {}
    name = ".".join(str(part) for part in first.get("loc", ())[1:]) or "argument"
    return f"{name}: {first.get('msg', 'invalid')}; received {first.get('input')!r}"


async def _image(request: Request, settings: Settings, timeout: float, deadline: float) -> bytes:
    # The deadline covers reading the body: a caller that stalls mid-body gets 408 at the deadline.
    try:
        sent = await asyncio.wait_for(
            read_image_request(request, settings.max_image_bytes), deadline - time.monotonic()
        )
    except TimeoutError:
        message = f"the request body did not arrive within the request's deadline ({timeout:g} s)"
        raise HttpError(408, message) from None
    if sent.data is not None:
        return sent.data
    url = sent.url or ""
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise HttpError(504, "the request's deadline passed before the URL was fetched")
    try:
        return await fetch_image(
            url,
            max_bytes=settings.max_image_bytes,
            timeout=min(settings.url_timeout, budget),
            allow_private=settings.allow_private_urls,
        )
    except TooLarge as error:
        raise HttpError(413, str(error)) from None
    except FetchError as error:
        raise HttpError(400, str(error)) from None


def _timeout(request: Request, settings: Settings) -> float:
    timeout = settings.timeout
    header = request.headers.get("x-request-timeout")
    if header is not None:
        try:
            requested = float(header)
        except ValueError:
            message = f"X-Request-Timeout must be seconds; received {header!r}"
            raise HttpError(400, message) from None
        if not requested > 0:
            raise HttpError(400, f"X-Request-Timeout must be > 0; received {header!r}")
        timeout = min(timeout, requested)
    return timeout


@contextmanager
def _caller_trace(request: Request, settings: Settings) -> Iterator[None]:
    """Continue the HTTP caller's trace (its W3C traceparent header) in the model call's spans."""
    if not settings.tracing:
        yield
        return
    from xception_gateway.tracing import caller_context

    with caller_context(request.headers):
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="xception-gateway", lifespan=_lifespan(settings))
    _add_error_handlers(app)
    _add_health_routes(app, settings)
    _add_predict_route(app, settings)
    return app


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: tracing set up, then the one AsyncClient every request uses."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.tracing:
            from xception_gateway.tracing import configure

            configure()  # before the channel opens, so its calls are spans with traceparent
        # The AsyncClient's channel belongs to this event loop: create it inside the lifespan.
        async with AsyncClient(settings.target, model_name=settings.model,
                               timeout=settings.timeout) as client:  # fmt: skip
            app.state.client = client
            yield

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Refusals, bad query arguments and the client's errors as {"error": "<one line>"}."""

    @app.exception_handler(HttpError)
    async def _http_error(_request: Request, error: HttpError) -> JSONResponse:
        return _refusal(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def _bad_argument(_request: Request, error: RequestValidationError) -> JSONResponse:
        return _refusal(400, _validation_message(error))

    @app.exception_handler(XceptionClientError)
    async def _client_error(_request: Request, error: XceptionClientError) -> JSONResponse:
        return JSONResponse({"error": _one_line(error)}, status_code=http_status(error))


def _add_health_routes(app: FastAPI, settings: Settings) -> None:
    """/healthz (the process runs) and /readyz (a version of the model is AVAILABLE)."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        client: AsyncClient = request.app.state.client
        try:
            statuses = await client.status(timeout=min(settings.timeout, 2.0))
        except XceptionClientError as error:
            return JSONResponse({"ready": False, "error": _one_line(error)}, status_code=503)
        available = [s.version for s in statuses if s.state == "AVAILABLE"]
        if not available:
            states = ", ".join(f"{s.version}: {s.state}" for s in statuses) or "no versions"
            return JSONResponse({"ready": False, "error": states}, status_code=503)
        return JSONResponse({"ready": True, "model": settings.model, "versions": available})


def _add_predict_route(app: FastAPI, settings: Settings) -> None:
    """POST /predict: one image within one deadline, its labelled predictions as JSON."""

    @app.post("/predict")
    async def predict(request: Request, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        if top_k < 1:
            raise HttpError(400, f"top_k must be >= 1; received {top_k}")
        timeout = _timeout(request, settings)
        deadline = time.monotonic() + timeout
        data = await _image(request, settings, timeout, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpError(504, "the request's deadline passed before the model was called")
        client: AsyncClient = request.app.state.client
        with _caller_trace(request, settings):
            predictions = await client.predict(data, top_k=top_k, timeout=remaining)
        return {
            "model": settings.model,
            "predictions": [
                {"label": p.label, "key": p.key, "score": p.score, "class_id": p.class_id}
                for p in predictions
            ],
        }
