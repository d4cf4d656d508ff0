"""Server spans for the local server, configured by OpenTelemetry's standard environment variables.

TF Serving records no trace spans; the local server can take part so a client's trace shows the
server side too. Each gRPC call becomes a server span that continues the caller's
trace (the W3C ``traceparent`` header sent by opentelemetry-instrumentation-grpc's client side).

Read from the environment, as OpenTelemetry's SDKs do:
  OTEL_TRACES_EXPORTER   console (spans as JSON on stdout) | otlp (needs
                         opentelemetry-exporter-otlp) | none; unset means no tracing at all
  OTEL_SERVICE_NAME      the service name on every span (default xception-serve)
  OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_* and the rest: read by the SDK and exporter themselves

Nothing of OpenTelemetry is imported unless OTEL_TRACES_EXPORTER names an exporter; if it does and
the packages are missing, startup fails with one line naming them (a silently untraced server is
harder to debug than a refused start).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import grpc
from xception_contract import extras

DEFAULT_SERVICE_NAME = "xception-serve"
EXPORTERS = ("console", "otlp", "none")


class TracingConfigError(RuntimeError):
    """OTEL_* asks for something this installation cannot do; the message is one line."""


def server_interceptors(
    environ: Mapping[str, str] | None = None,
) -> list[grpc.ServerInterceptor]:
    """gRPC server interceptors that record server spans, or [] when tracing is off."""
    env = os.environ if environ is None else environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return []
    if exporter_name not in EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported by xception-serve; "
            f"use one of {', '.join(EXPORTERS)}"
        )
    try:
        from opentelemetry.instrumentation.grpc import server_interceptor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as error:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name} needs opentelemetry-sdk and "
            f"opentelemetry-instrumentation-grpc ({error.name} is missing): "
            f"{extras.install_hint('tracing')}"
        ) from error
    # The SDK merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME into this default.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)})
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    if exporter_name == "console":
        # Synchronous, so each span is on stdout when its call returns (a log, not a pipeline).
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise TracingConfigError(
                "OTEL_TRACES_EXPORTER=otlp needs pip install opentelemetry-exporter-otlp"
            ) from error
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return [server_interceptor(tracer_provider=provider)]  # type: ignore[no-untyped-call]
