"""xception-serve's tracing setup from OTEL_* variables: off unless an exporter is named, a server
interceptor for console, and one clear line for what it cannot do."""

from __future__ import annotations

import pytest
from xception_serving import tracing


@pytest.mark.parametrize("exporter", [None, "none", ""])
def test_no_exporter_means_no_interceptor(exporter: str | None) -> None:
    env = {} if exporter is None else {"OTEL_TRACES_EXPORTER": exporter}
    assert tracing.server_interceptors(env) == []


def test_console_exporter_gives_one_server_interceptor() -> None:
    [interceptor] = tracing.server_interceptors({"OTEL_TRACES_EXPORTER": "console"})
    assert hasattr(interceptor, "intercept_service")


def test_unknown_exporter_is_one_line_naming_the_value() -> None:
    with pytest.raises(tracing.TracingConfigError) as raised:
        tracing.server_interceptors({"OTEL_TRACES_EXPORTER": "jaeger"})
    message = str(raised.value)
    assert "'jaeger'" in message and "console, otlp, none" in message
    assert "\n" not in message
