"""The REST port against hostile clients: each probe gets its whole expected answer, the log gets
no traceback for a client's mistake, slow clients cannot starve a good one, and the server's
memory stays put.

One real `python -m xception_serving` serves TF Serving's half_plus_two with a small connection
limit and a 1 s request read deadline (set through the flags), so the slow-client probes take
seconds. The refusal of a caller when every connection has a request in service needs requests
that stay in service, so it runs on the in-process HTTP server with a handler that waits.

Timings are checked only against bounds far from the measured values (the good request during
the slow-connection probe answered in well under 0.1 s, and the read deadline fired 1.0-1.3 s after
the first byte; the bounds are 5 s and 1-6 s).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from xception_serving.api.rest.handler import json_error_page
from xception_serving.api.rest.http_server import HttpResponse, RestLimits, WaitressServer
from xception_serving.testing.process import ServerProcess

from tests.fixtures.servers import start_local_server

MODEL = "half_plus_two"
PREDICT = f"/v1/models/{MODEL}:predict"
MAX_CONNECTIONS = 4
READ_TIMEOUT_S = 1.0
GOOD_ANSWER = b'{\n    "predictions": [2.5, 3.0\n    ]\n}'
# Growth of the server's resident memory over all probes: measured at 1-3 MiB.
RSS_GROWTH_BOUND_MIB = 100


@pytest.fixture(scope="module")
def server(half_plus_two_base: Path) -> Iterator[ServerProcess]:
    with start_local_server(
        model_name=MODEL,
        model_base_path=half_plus_two_base,
        rest=True,
        extra_args=[
            f"--rest_api_max_connections={MAX_CONNECTIONS}",
            f"--rest_api_request_read_timeout_in_ms={int(READ_TIMEOUT_S * 1000)}",
        ],
    ) as process:
        yield process


def rest_port(server: ServerProcess) -> int:
    assert server.rest_url is not None
    return int(server.rest_url.rsplit(":", 1)[1])


def call(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def error_body(message: bytes) -> bytes:
    """TF Serving's error JSON (rapidjson PrettyWriter), byte for byte."""
    return b'{\n    "error": "' + message + b'"\n}'


def rss_mib(server: ServerProcess) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def rss_before(server: ServerProcess) -> float:
    """The server's memory once it has answered a good request, before any probe."""
    assert call(rest_port(server), "POST", PREDICT, b'{"instances": [1.0, 2.0]}') == (
        200,
        GOOD_ANSWER,
    )
    return rss_mib(server)


# -- bodies and URLs ------------------------------------------------------------------------------

PROBES = {
    # 2,000 '[' in 4 KB: refused at the bracket that opens level 513 (root object is level 1).
    "deep JSON": (
        "POST",
        PREDICT,
        b'{"instances":' + b"[" * 2000 + b"1.0" + b"]" * 2000 + b"}",
        400,
        error_body(
            b"JSON Parse error: Nesting of arrays and objects is deeper than the "
            b"limit of 512 levels. at offset: 524"
        ),
    ),
    # absl::SimpleAtoi fails past int64 at any length; ParseModelInfo returns before the JSON.
    "version of 5,000 digits": (
        "GET",
        f"/v1/models/{MODEL}/versions/{'9' * 5000}",
        None,
        400,
        b"",
    ),
    # rapidjson 1.1.0: a high surrogate without its pair fails at the escape's backslash.
    "signature name with a lone high surrogate": (
        "POST",
        PREDICT,
        b'{"signature_name": "\\ud800", "instances": [1.0]}',
        400,
        error_body(b"JSON Parse error: The surrogate pair in string is invalid. at offset: 20"),
    ),
    # rapidjson 1.1.0 keeps a lone low surrogate as three bytes, which name no signature.
    "signature name with a lone low surrogate": (
        "POST",
        PREDICT,
        b'{"signature_name": "\\udc00", "instances": [1.0]}',
        400,
        error_body(b'Serving signature name: \\"\xed\xb0\x80\\" not found in signature def'),
    ),
    "signature name that is not UTF-8": (
        "POST",
        PREDICT,
        b'{"signature_name": "\xff", "instances": [1.0]}',
        400,
        error_body(b'Serving signature name: \\"\xff\\" not found in signature def'),
    ),
    # 100 dimensions: TensorFlow holds it, a Python Session (fed through numpy) cannot.
    "tensor of 100 dimensions": (
        "POST",
        PREDICT,
        b'{"instances": [' + b"[" * 99 + b"1.0" + b"]" * 99 + b"]}",
        501,
        error_body(
            b"A tensor of 100 dimensions is not supported by this server: it holds "
            b"at most 64 (TensorFlow Serving, 254)."
        ),
    ),
    # An error quoting an 8 MB body quotes its first 256 bytes (TF Serving 2.18+), whole tokens.
    "error quoting an 8 MB body": (
        "POST",
        PREDICT,
        b'{"instances": "' + b"a" * 300 + b'", "inputs": [' + b"1.5, " * 1_600_000 + b"2]}",
        400,
        error_body(
            b'JSON Value: {\\n    \\"instances\\": \\"' + b"a" * 300 + b'\\" Not formatted '
            b"correctly expecting only one of 'inputs' or 'instances' keys to exist "
        ),
    ),
    # 300 dimensions: past TensorShape's 254, Tensor::FromProto fails in TF Serving too.
    "tensor of 300 dimensions": (
        "POST",
        PREDICT,
        b'{"instances": [' + b"[" * 299 + b"1.0" + b"]" * 299 + b"]}",
        400,
        error_body(b"tensor parsing error: x"),
    ),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_hostile_request_gets_its_whole_answer_and_leaves_no_traceback(
    server: ServerProcess, rss_before: float, probe: str
) -> None:
    method, path, body, status, answer = PROBES[probe]
    log_before = server.log_text()
    assert call(rest_port(server), method, path, body) == (status, answer)
    assert call(rest_port(server), "POST", PREDICT, b'{"instances": [1.0, 2.0]}') == (
        200,
        GOOD_ANSWER,
    )
    assert server.log_text() == log_before  # TF Serving logs nothing for these either


# -- slow clients -------------------------------------------------------------------------------


def open_slow_request(port: int) -> socket.socket:
    """A connection that has sent the start of a request head and no more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    return sock


def answer_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (it must close within the socket timeout);
    a reset counts as a close."""
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


READ_TIMEOUT_BODY = error_body(b"The request was not received in full within 1 s.")
READ_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(READ_TIMEOUT_BODY), READ_TIMEOUT_BODY)
)


def test_a_request_trickling_in_is_cut_at_its_whole_request_deadline(
    server: ServerProcess, rss_before: float
) -> None:
    sock = open_slow_request(rest_port(server))
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:  # a header byte every 0.1 s: an idle timeout would never fire
        while not stop.wait(0.1):
            try:
                sock.send(b"X")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    try:
        answer = answer_of(sock)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sock.close()
    assert answer == READ_TIMEOUT_ANSWER
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 5


def test_slow_connections_past_the_limit_cannot_keep_a_good_caller_out(
    server: ServerProcess, rss_before: float
) -> None:
    port = rest_port(server)
    slow = [open_slow_request(port) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # all of them accepted and holding a slot, or evicted for the next
        started = time.monotonic()
        answer = call(port, "POST", PREDICT, b'{"instances": [1.0, 2.0]}', timeout=10)
        elapsed = time.monotonic() - started
        assert answer == (200, GOOD_ANSWER)
        assert elapsed < 5
        # Every slow one is gone by its deadline: evicted (closed unanswered) or answered 408.
        for sock in slow:
            assert answer_of(sock) in (b"", READ_TIMEOUT_ANSWER)
    finally:
        for sock in slow:
            sock.close()
    assert server.log_text().count("Traceback") == 0


def test_memory_stays_put_over_every_probe(server: ServerProcess, rss_before: float) -> None:
    # Runs after the probes above (file order): one more round of each, then the check.
    for method, path, body, status, _ in PROBES.values():
        assert call(rest_port(server), method, path, body)[0] == status
    assert rss_mib(server) - rss_before < RSS_GROWTH_BOUND_MIB
    assert "Traceback" not in server.log_text()


# -- every connection in service -------------------------------------------------------------------


def test_a_caller_past_the_limit_is_answered_503_at_once_when_all_are_in_service() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def waiting_handler(method: str, uri: str, headers: object, body: bytes) -> HttpResponse:
        entered.release()
        release.wait(30)
        return HttpResponse(200, [("Content-Type", "text/plain")], b"done")

    http_server = WaitressServer(
        waiting_handler,
        host="127.0.0.1",
        port=0,
        num_threads=4,
        max_body_bytes=1 << 20,
        limits=RestLimits(max_connections=2, request_read_timeout_s=5),
        error_page=json_error_page,
    )
    http_server.start()
    results: list[tuple[int, bytes]] = []
    try:
        busy = [
            threading.Thread(
                target=lambda: results.append(
                    call(http_server.port, "GET", "/v1/models/m", timeout=30)
                )
            )
            for _ in range(2)
        ]
        for thread in busy:
            thread.start()
        for _ in busy:
            assert entered.acquire(timeout=10)  # both requests are in service
        started = time.monotonic()
        refused = call(http_server.port, "GET", "/v1/models/m", timeout=10)
        assert time.monotonic() - started < 5
        assert refused == (
            503,
            error_body(
                b"The server has 2 connections with requests in service (its limit); try again "
                b"later."
            ),
        )
        release.set()
        for thread in busy:
            thread.join(10)
        assert results == [(200, b"done"), (200, b"done")]
        # Once they are done, the next caller is served.
        assert call(http_server.port, "GET", "/v1/models/m", timeout=10) == (200, b"done")
    finally:
        release.set()
        http_server.stop(1)
