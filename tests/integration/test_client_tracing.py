"""Client tracing: with opentelemetry-instrumentation-grpc, each call is a client span whose W3C
traceparent reaches the server; the client's own span around image preparation carries the model,
signature, count and bytes, and a bad image sets its status. Without OpenTelemetry the client
works unchanged. A loopback gRPC server records what arrives (no model needed)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from xception_client import AsyncClient, Client, InvalidImage, ModelNotFound, tracing

from tests.fixtures.tracing import RECORDER_ANSWER, Recorder, recording_grpc_server, traced_grpc

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, Recorder]]:
    with recording_grpc_server() as running:
        yield running


def _span(spans: Any, name: str) -> Any:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_call_span_sends_traceparent_and_image_span_has_the_attributes(
    recorder: tuple[str, Recorder], sample_jpeg: bytes
) -> None:
    target, handler = recorder
    handler.calls.clear()
    with traced_grpc() as exporter, Client(target, model_name="xception") as client:
        tracer = trace.get_tracer("test")
        with (
            tracer.start_as_current_span("request") as root,
            pytest.raises(ModelNotFound, match=re.escape(RECORDER_ANSWER)),
        ):
            client.predict(sample_jpeg)
        spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    prepare = _span(spans, tracing.PREPARE_SPAN)
    call = _span(spans, PREDICT)
    assert prepare.context.trace_id == call.context.trace_id == trace_id
    assert dict(prepare.attributes) == {
        "xception.model.name": "xception",
        "xception.model.signature": "serving_default",
        "xception.image.count": 1,
        "xception.image.bytes": len(sample_jpeg),
    }
    assert prepare.status.status_code is StatusCode.UNSET
    assert call.kind is trace.SpanKind.CLIENT
    assert call.status.status_code is StatusCode.ERROR  # NOT_FOUND from the server
    [(method, metadata)] = handler.calls
    assert method == PREDICT
    # W3C traceparent: version-traceid-spanid-flags, the ids of the client's call span.
    version, tid, sid, _flags = metadata["traceparent"].split("-")
    assert version == "00"
    assert int(tid, 16) == trace_id
    assert int(sid, 16) == call.context.span_id


def test_bad_image_sets_the_span_status_and_sends_nothing(
    recorder: tuple[str, Recorder],
) -> None:
    target, handler = recorder
    handler.calls.clear()
    with traced_grpc() as exporter, Client(target, model_version=3) as client:
        with pytest.raises(InvalidImage) as raised:
            client.predict_batch([b"not an image", b"GIF89a"])
        spans = exporter.get_finished_spans()
    prepare = _span(spans, tracing.PREPARE_SPAN)
    assert prepare.status.status_code is StatusCode.ERROR
    assert str(raised.value) in str(prepare.status.description)
    assert prepare.attributes["xception.image.count"] == 2
    assert prepare.attributes["xception.model.version"] == 3
    assert "xception.image.bytes" not in prepare.attributes
    assert [e.name for e in prepare.events] == ["exception"]
    assert handler.calls == []
    assert [s.name for s in spans] == [tracing.PREPARE_SPAN]


async def test_async_client_calls_carry_traceparent(
    recorder: tuple[str, Recorder], sample_jpeg: bytes
) -> None:
    target, handler = recorder
    handler.calls.clear()
    with traced_grpc() as exporter:
        async with AsyncClient(target) as client:
            tracer = trace.get_tracer("test")
            with (
                tracer.start_as_current_span("request") as root,
                pytest.raises(ModelNotFound, match=re.escape(RECORDER_ANSWER)),
            ):
                await client.predict(sample_jpeg)
        spans = exporter.get_finished_spans()
    call = _span(spans, PREDICT)
    prepare = _span(spans, tracing.PREPARE_SPAN)
    [(_, metadata)] = handler.calls
    # Both are children of the caller's span: preparation first, then the call.
    trace_id = root.get_span_context().trace_id
    assert int(metadata["traceparent"].split("-")[1], 16) == call.context.trace_id == trace_id
    assert prepare.context.trace_id == trace_id
    assert prepare.parent.span_id == call.parent.span_id == root.get_span_context().span_id
    assert prepare.end_time <= call.start_time


def test_without_opentelemetry_the_client_runs_and_imports_none_of_it(
    recorder: tuple[str, Recorder], sample_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, handler = recorder
    handler.calls.clear()
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import now raises ImportError
    tracing._tracer.cache_clear()
    try:
        with (
            Client(target) as client,
            pytest.raises(ModelNotFound, match=re.escape(RECORDER_ANSWER)),
        ):
            client.predict(sample_jpeg)
        with pytest.raises(ImportError, match=r"xception-client\[tracing\]"):
            tracing.instrument_grpc()
        assert "traceparent" not in handler.calls[0][1]
    finally:
        tracing._tracer.cache_clear()
