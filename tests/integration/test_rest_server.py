"""RestServer over real loopback sockets (fake half_plus_two core): HTTP/1.1 keep-alive, body cap,
graceful stop, ephemeral port."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
from xception_serving.api.rest.handler import RestServer
from xception_serving.observability.metrics import Metrics

from tests.unit.test_rest_api import PROMETHEUS, HalfPlusTwoCore


@pytest.fixture
def server() -> Iterator[RestServer]:
    rest = RestServer(
        HalfPlusTwoCore(delay_s=0.0),
        Metrics(),
        host="127.0.0.1",
        port=0,
        monitoring_path=PROMETHEUS,
        num_threads=2,
        max_body_bytes=64 * 1024,
    )
    rest.start()
    try:
        yield rest
    finally:
        rest.stop(grace=1)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_server_binds_an_ephemeral_loopback_port_and_keeps_connections_alive(
    server: RestServer,
) -> None:
    assert server.port > 0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = b'{"instances": [2.0, 3.0, 4.0]}'
        status, headers, out = request(conn, "POST", "/v1/models/half_plus_two:predict", body)
        assert (status, json.loads(out)) == (200, {"predictions": [3.0, 3.5, 4.0]})
        assert headers["Content-Type"] == "application/json"
        first_socket = conn.sock
        status, _, out = request(conn, "GET", "/v1/models/half_plus_two")
        assert status == 200
        assert conn.sock is first_socket  # HTTP/1.1 keep-alive: same connection reused
        status, _, out = request(conn, "GET", PROMETHEUS)
        assert status == 200 and b"# TYPE" in out
    finally:
        conn.close()


def test_oversized_body_is_refused_with_413_before_it_is_read(server: RestServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, _, out = request(
            conn, "POST", "/v1/models/half_plus_two:predict", b"[" * (128 * 1024)
        )
        assert status == 413
        assert b"exceeds max_body of 65536" in out
    finally:
        conn.close()


def test_stop_finishes_in_flight_request_then_refuses_connections() -> None:
    core = HalfPlusTwoCore(delay_s=0.8)
    rest = RestServer(
        core, Metrics(), host="127.0.0.1", port=0, monitoring_path=None, num_threads=2
    )
    rest.start()
    results: list[tuple[int, bytes]] = []

    def slow_call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
        status, _, out = request(
            conn, "POST", "/v1/models/half_plus_two:predict", b'{"instances": [2.0]}'
        )
        results.append((status, out))
        conn.close()

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)  # the request is inside the core now
    started = time.monotonic()
    rest.stop(grace=10)
    caller.join(timeout=10)
    assert results and results[0][0] == 200
    assert json.loads(results[0][1]) == {"predictions": [3.0]}
    assert time.monotonic() - started < 5
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", rest.port, timeout=2).connect()
