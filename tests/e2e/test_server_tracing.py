"""The local server's spans continue the caller's trace: xception-serve with
OTEL_TRACES_EXPORTER=console prints a server span for a traced client call, with the client's
trace id and the client call span as its parent."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from xception_client import Client
from xception_contract import DEFAULT_MODEL_NAME

from tests.fixtures.models import ExportedModel
from tests.fixtures.servers import start_local_server
from tests.fixtures.tracing import traced_grpc

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _console_spans(text: str) -> list[dict[str, Any]]:
    """ConsoleSpanExporter prints each span as an indented JSON object starting at column 0."""
    spans = []
    for match in re.finditer(r"^\{\n.*?^\}$", text, flags=re.MULTILINE | re.DOTALL):
        try:
            spans.append(json.loads(match.group(0)))
        except json.JSONDecodeError:
            continue
    return spans


def test_server_console_spans_carry_the_client_calls_trace(
    small_xception_model: ExportedModel,
    sample_jpeg: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "xception-serve-test")
    with start_local_server(
        model_name=DEFAULT_MODEL_NAME, model_base_path=Path(small_xception_model.base_path)
    ) as server:
        with traced_grpc() as exporter, Client(server.grpc_target) as client:
            with trace.get_tracer("test").start_as_current_span("request"):
                assert client.predict(sample_jpeg, top_k=1)
            [call] = [s for s in exporter.get_finished_spans() if s.name == PREDICT]
        trace_id = f"0x{call.context.trace_id:032x}"
        deadline = time.monotonic() + 10
        while trace_id not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.log_text()
    served = [s for s in _console_spans(log) if s.get("context", {}).get("trace_id") == trace_id]
    assert served, f"no server span with trace id {trace_id} in:\n{log[-3000:]}"
    [span] = served
    assert span["name"] == PREDICT
    assert span["kind"] == "SpanKind.SERVER"
    assert span["parent_id"] == f"0x{call.context.span_id:016x}"
    assert span["resource"]["attributes"]["service.name"] == "xception-serve-test"
