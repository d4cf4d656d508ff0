"""Optional OpenTelemetry tracing (``pip install 'xception-client[tracing]'``).

TF Serving emits no spans of its own (tensorflow/serving#1994), so traces come from the callers:

- gRPC calls: OpenTelemetry's ``opentelemetry-instrumentation-grpc`` makes each call a client span
  and sends its context to the server as a W3C ``traceparent`` header. :func:`instrument_grpc`
  turns it on for sync and asyncio channels opened afterwards (or use the instrumentors directly,
  or ``opentelemetry-instrument``).
- Image preparation: the client's own span, ``xception_client.prepare_images``, around loading and
  validating the images of a request, with the model, version, signature, image count and bytes
  as attributes; a bad image sets the span's status to ERROR.

Nothing of OpenTelemetry is imported until the first request, and not at all when it is not
installed: then the span is a no-op and the client behaves exactly as without this module. With
the API but no SDK configured, OpenTelemetry's own no-op tracer is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from typing import Any, Protocol

from . import _wire

__all__ = ["PREPARE_SPAN", "ImageSpan", "instrument_grpc", "prepare_images_span"]

PREPARE_SPAN = "xception_client.prepare_images"
INSTALL_HINT = "tracing needs OpenTelemetry: pip install 'xception-client[tracing]'"


class ImageSpan(Protocol):
    def set_bytes(self, total: int) -> None: ...


class _NoSpan:
    def set_bytes(self, total: int) -> None:
        pass


class _Span:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set_bytes(self, total: int) -> None:
        self._span.set_attribute("xception.image.bytes", total)


@cache
def _tracer() -> Any | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("xception_client")


@contextlib.contextmanager
def prepare_images_span(model: _wire.ModelRef, count: int) -> Iterator[ImageSpan]:
    """A span around building one request's images; errors inside set its status."""
    tracer = _tracer()
    if tracer is None:
        yield _NoSpan()
        return
    from opentelemetry.trace import Status, StatusCode

    attributes: dict[str, str | int] = {
        "xception.model.name": model.name,
        "xception.model.signature": model.signature,
        "xception.image.count": count,
    }
    if model.version is not None:
        attributes["xception.model.version"] = model.version
    if model.version_label is not None:
        attributes["xception.model.version_label"] = model.version_label
    # The exception is recorded and the status set here, with the one-line message, rather than by
    # the SDK's default handler, so the status always carries our message.
    with tracer.start_as_current_span(
        PREPARE_SPAN, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield _Span(span)
        except Exception as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise


def instrument_grpc(tracer_provider: Any | None = None) -> None:
    """Instrument gRPC client channels (sync and asyncio) created from now on.

    Raises ImportError naming the extra when opentelemetry-instrumentation-grpc is missing.
    """
    try:
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcInstrumentorClient,
        )
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    instrumentors = (GrpcInstrumentorClient(), GrpcAioInstrumentorClient())  # type: ignore[no-untyped-call]
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider)
