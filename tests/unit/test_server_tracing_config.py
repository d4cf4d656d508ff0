"""xception-serve's tracing setup from OTEL_* variables: off unless an exporter is named, a server
interceptor for console, and one clear line for what it cannot do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from xception_serving.observability import tracing


@pytest.mark.parametrize("exporter", [None, "none", ""])
def test_no_exporter_means_no_interceptor(exporter: str | None) -> None:
    env = {} if exporter is None else {"OTEL_TRACES_EXPORTER": exporter}
    assert tracing.server_interceptors(env) == []


# Run in a fresh interpreter: OpenTelemetry keeps process-wide state (the global provider, the
# instrumentation's suppression flags) that other tests in the same run set and leave behind.
_CONSOLE_SPAN = """
import sys
from types import SimpleNamespace

import grpc
from xception_serving.observability import tracing


class Context:
    def invocation_metadata(self):
        return ()

    def peer(self):
        return "ipv4:127.0.0.1:5555"


[interceptor] = tracing.server_interceptors(
    {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "xception-test"}
)
method = "/tensorflow.serving.PredictionService/Predict"
echo = grpc.unary_unary_rpc_method_handler(lambda request, _ctx: b"ok:" + request)
handler = interceptor.intercept_service(
    lambda _details: echo, SimpleNamespace(method=method, invocation_metadata=())
)
sys.stderr.write(repr(handler.unary_unary(b"ping", Context())))
"""


def test_console_exporter_gives_one_server_interceptor_that_prints_each_calls_span() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CONSOLE_SPAN], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # The call goes through, and its server span is on stdout when it returns (console: sync).
    assert done.stderr.endswith("b'ok:ping'")
    span = json.loads(done.stdout)
    assert (span["name"], span["kind"]) == (
        "/tensorflow.serving.PredictionService/Predict",
        "SpanKind.SERVER",
    )
    assert span["attributes"]["rpc.service"] == "tensorflow.serving.PredictionService"
    assert span["attributes"]["rpc.method"] == "Predict"
    assert span["resource"]["attributes"]["service.name"] == "xception-test"


def test_unknown_exporter_is_one_line_naming_the_value() -> None:
    with pytest.raises(tracing.TracingConfigError) as raised:
        tracing.server_interceptors({"OTEL_TRACES_EXPORTER": "jaeger"})
    message = str(raised.value)
    assert "'jaeger'" in message and "console, otlp, none" in message
    assert "\n" not in message
