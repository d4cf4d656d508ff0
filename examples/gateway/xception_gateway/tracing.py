"""The gateway's tracing, on when OTEL_TRACES_EXPORTER names an exporter (needs the `tracing`
extra): a tracer provider from the standard OTEL_* variables unless the process already has one
(e.g. under `opentelemetry-instrument`), opentelemetry-instrumentation-grpc on the gateway's
channel, and each HTTP caller's W3C traceparent continued by the spans of its model call."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from xception_client.tracing import instrument_grpc

DEFAULT_SERVICE_NAME = "xception-gateway"


def configure() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        name = os.environ.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "console").strip().lower()
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:  # console: synchronous, so spans appear as requests finish
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
    instrument_grpc()


@contextmanager
def caller_context(headers: Mapping[str, str]) -> Iterator[None]:
    """The caller's trace for the block, unless a server span is already current (recent FastAPI
    releases open one per request themselves, continuing the same header): then nest under it."""
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)
