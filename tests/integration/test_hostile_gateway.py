"""The HTTP gateway under an attacker's probes on loopback, each with its exact answer.

Malformed bodies are 400 naming the fault. A gzip bomb, an upload or a JSON body over its cap is
413, decided while the bytes stream in (a declared Content-Length at once), costing about the cap:
no temporary file, and memory measured as the peak RSS of a gateway subprocess. Peak RSS, not
tracemalloc, because it also counts what C code holds (zlib's output, socket and server buffers)
and spikes that are freed before an "after" reading; the kernel's high-water mark (VmHWM, reset
through /proc/<pid>/clear_refs) records it. A body that stalls is 408 at the request's deadline,
and a good request from another caller is answered meanwhile. The backend is a fake gRPC server
answering every Predict with one canned top-1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import xception_contract as contract
from fastapi.testclient import TestClient
from xception_client._proto import serving_pb2
from xception_gateway import Settings, create_app
from xception_gateway.fetch import FetchError, TooLarge, fetch_image
from xception_serving.testing.process import free_port

from tests.fixtures.images import image_bytes
from tests.fixtures.rpc import loopback_grpc_server, wait_for

ROOT = Path(__file__).resolve().parents[2]
CAP = 1024 * 1024  # GATEWAY_MAX_IMAGE_BYTES for the gateway under test
TIMEOUT = 3  # GATEWAY_TIMEOUT (s)
FORM_CAP = CAP + 64 * 1024  # the multipart body: the image plus the form around it
BOMB_BYTES = 32 * 1024 * 1024  # inflated size; about 32 KiB on the wire
JPEG = image_bytes("jpeg_baseline")
GOOD_ANSWER = {
    "model": contract.DEFAULT_MODEL_NAME,
    "predictions": [{"label": "tabby", "key": None, "score": pytest.approx(0.9), "class_id": 281}],
}
USAGE = 'send a multipart `file` upload, or a `url` (form field or JSON {"url": "https://..."})'


def _canned_predict_response() -> bytes:
    response = serving_pb2.PredictResponse()
    for alias, kind, dtype, value in (
        (contract.TOP_K_SCORES_OUTPUT, "float_val", 1, 0.9),
        (contract.TOP_K_CLASS_IDS_OUTPUT, "int_val", 3, 281),
        (contract.TOP_K_LABELS_OUTPUT, "string_val", 7, b"tabby"),
    ):
        tensor = response.outputs[alias]
        tensor.dtype = dtype
        tensor.tensor_shape.dim.add().size = 1
        tensor.tensor_shape.dim.add().size = 1
        getattr(tensor, kind).append(value)
    return bytes(response.SerializeToString())


def _backend() -> Any:
    """TF Serving's Predict, answering every call with one canned top-1 (tabby, 0.9)."""
    answer = _canned_predict_response()
    predict = grpc.unary_unary_rpc_method_handler(lambda _request, _context: answer)
    return grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": predict}
    )


def _compressed(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    return b"".join([compressor.compress(block) for _ in range(size // len(block))]) + (
        compressor.flush()
    )


@functools.cache
def _routes() -> dict[str, tuple[str, bytes]]:
    """Path -> (Content-Encoding, body) of the image server."""
    bomb = _gzip_bomb(BOMB_BYTES)
    return {
        "/bomb.jpg": ("gzip", bomb),
        "/deflate-bomb.jpg": ("deflate", _compressed(bytes(BOMB_BYTES), zlib.MAX_WBITS)),
        "/cat.jpg.gz": ("gzip", _compressed(JPEG, zlib.MAX_WBITS | 16)),
        "/cat.jpg.zlib": ("deflate", _compressed(JPEG, zlib.MAX_WBITS)),
        "/cat.jpg.deflate": ("deflate", _compressed(JPEG, -zlib.MAX_WBITS)),  # no zlib header
        "/cat.jpg.br": ("br", JPEG),
        "/not-gzip.jpg": ("gzip", JPEG),
    }


@contextmanager
def _image_server() -> Iterator[str]:
    routes = _routes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            encoding, body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the gateway hung up past its cap
                self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    tmpdir: Path
    images: str  # the image server's base URL

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def good_request(self) -> httpx.Response:
        return httpx.post(f"{self.url}/predict?top_k=1",
                          files={"file": ("cat.jpg", JPEG, "image/jpeg")}, timeout=30)  # fmt: skip

    def kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    @contextmanager
    def peak_growth_mib(self) -> Iterator[list[float]]:
        """Yields a list that holds, after the block, how far the gateway's peak RSS rose above
        its RSS before the block (MiB)."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # resets VmHWM
        except OSError as error:
            pytest.skip(f"cannot reset the peak RSS of a process here: {error}")
        before = self.kib("VmRSS")
        growth: list[float] = []
        yield growth
        growth.append((self.kib("VmHWM") - before) / 1024)

    @contextmanager
    def temp_files_opened(self) -> Iterator[set[str]]:
        """Yields a set that collects, while the block runs, every file under the gateway's
        TMPDIR that it holds open (tempfile's files have no name there: O_TMPFILE)."""
        seen: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            fds = Path(f"/proc/{self.process.pid}/fd")
            while not done.is_set():
                for fd in fds.iterdir():
                    try:
                        target = os.readlink(fd)
                        if target.startswith(str(self.tmpdir)):
                            seen.add(f"{target} ({os.stat(fd).st_size} bytes)")
                    except OSError:  # closed meanwhile
                        continue
                time.sleep(0.005)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            done.set()
            thread.join()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmpdir = tmp_path_factory.mktemp("gateway-tmp")
    log = tmp_path_factory.mktemp("gateway-log") / "gateway.log"
    with ExitStack() as stack:
        target = stack.enter_context(loopback_grpc_server(_backend()))
        images = stack.enter_context(_image_server())
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "gateway"), str(ROOT)]),
            "XCEPTION_SERVER": target,
            "GATEWAY_MAX_IMAGE_BYTES": str(CAP),
            "GATEWAY_TIMEOUT": str(TIMEOUT),
            "GATEWAY_ALLOW_PRIVATE_URLS": "1",  # the image server is on loopback
            "TMPDIR": str(tmpdir),
        }
        out = stack.enter_context(log.open("wb"))
        process = subprocess.Popen([sys.executable, "-m", "xception_gateway", "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        stack.callback(process.wait, 30)
        stack.callback(process.terminate)
        gw = Gateway(process, port, tmpdir, images)

        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{gw.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, "the gateway to answer /healthz", timeout=60)
        assert gw.good_request().json() == GOOD_ANSWER  # warm: imports and channel are done
        yield gw


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    seconds: float
    closed: bool  # the gateway closed the connection after answering
    sent: int  # body bytes the caller got to send before the answer


def _exchange(port: int, head: bytes, parts: Iterable[bytes] = (), limit: float = 30) -> Answer:
    """Sends `head`, then `parts` for as long as the gateway takes them, until it answers."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.setblocking(False)
        queue: Iterator[bytes] | None = iter(parts)
        pending, sent, received = b"", 0, b""
        while not _complete(received):
            assert time.monotonic() - started < limit, f"no answer in {limit} s"
            if not pending and queue is not None:
                pending = next(queue, b"")
                queue = queue if pending else None
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 0.1)
            if readable:
                data = sock.recv(65536)
                assert data, f"closed without an answer: {received!r}"
                received += data
            elif writable:
                try:
                    count = sock.send(pending)
                except OSError:  # the gateway answered and closed while we were sending
                    pending, queue = b"", None
                    continue
                sent, pending = sent + count, pending[count:]
        seconds = time.monotonic() - started
        sock.settimeout(5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except OSError:  # reset: it closed with some of our bytes unread
            closed = True
    header, _, body = received.partition(b"\r\n\r\n")
    status = int(header.split(b" ")[1])
    return Answer(status, json.loads(body), dict(_headers(received)), seconds, closed, sent)


def _complete(response: bytes) -> bool:
    _, found, body = response.partition(b"\r\n\r\n")
    return bool(found) and len(body) >= int(dict(_headers(response))["content-length"])


def _headers(response: bytes) -> list[tuple[str, str]]:
    lines = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]


def _post(path: str, content_type: str, length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: {content_type}\r\n"
            f"{framing}\r\n{extra}\r\n").encode()  # fmt: skip


def _chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked framing, without the last chunk: the body never says it has ended."""
    for part in parts:
        yield b"%x\r\n%s\r\n" % (len(part), part)


def _filler(total: int, byte: bytes = b"\xff", piece: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, total, piece):
        yield byte * min(piece, total - start)


BOUNDARY = "hostile-boundary"
FILE_PART_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                  'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()  # fmt: skip
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


# -- malformed bodies: 400 naming the fault ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{bad", "the JSON body is not valid JSON (Expecting property name enclosed in double "
                  "quotes: line 1 column 2 (char 1))"),
        (b"", 'the JSON body is empty; send {"url": "https://..."}'),
        (b'{"url": 123}', 'the JSON body\'s "url" must be a string; received a number'),
        (b'{"url": ["https://x/a.jpg"]}',
         'the JSON body\'s "url" must be a string; received an array'),
        (b'{"url": null}', 'the JSON body\'s "url" must be a string; received null'),
        (b'["https://x/a.jpg"]',
         'the JSON body must be an object {"url": "https://..."}; received an array'),
        (b'{"nothing": 1}', "the JSON body has no \"url\" field (its fields: 'nothing')"),
        (b'\xff{"url": "https://x/a.jpg"}',
         "the JSON body is not UTF-8 text (invalid start byte at byte 0)"),
        (b"[" * 60_000, "the JSON body is nested too deeply"),
    ],
    ids=["not-json", "empty", "url-number", "url-array", "url-null", "array", "no-url",
         "not-utf8", "deep"],
)  # fmt: skip
def test_a_malformed_json_body_is_400_naming_what_is_wrong(
    gateway: Gateway, body: bytes, error: str
) -> None:
    response = httpx.post(f"{gateway.url}/predict", content=body,
                          headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
    assert (response.status_code, response.json()) == (400, {"error": error})


def _form(*parts: tuple[str, bytes]) -> bytes:
    fields = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value + b"\r\n"
        for name, value in parts
    )  # fmt: skip
    return fields + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("multipart/form-data", b"x", "the multipart body has no boundary in its Content-Type"),
        (MULTIPART, b"garbage", "the multipart body is malformed (Expected boundary character "
                                "45, got 103 at index 2)"),
        (MULTIPART, _form(("file", JPEG))[:-40], "the multipart body ends before its closing "
                                                 "boundary"),
        (MULTIPART, _form(("top_k", b"3")), f"{USAGE}; the form has neither"),
        (MULTIPART, _form(("url", b"https://x/\xff.jpg")),
         "the form field `url` is not UTF-8 text"),
        ("text/plain", b"https://x/a.jpg", f"{USAGE}; received Content-Type 'text/plain'"),
        ("", b"https://x/a.jpg", f"{USAGE}; received no Content-Type"),
    ],
    ids=["no-boundary", "garbage", "truncated", "neither", "url-not-utf8", "text", "untyped"],
)  # fmt: skip
def test_a_malformed_form_or_untyped_body_is_400_naming_what_is_wrong(
    gateway: Gateway, content_type: str, body: bytes, error: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{gateway.url}/predict", content=body, headers=headers, timeout=30)
    assert (response.status_code, response.json()) == (400, {"error": error})


def test_a_top_k_that_is_not_a_number_is_400_not_fastapis_422(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/predict?top_k=three",
                          files={"file": ("cat.jpg", JPEG, "image/jpeg")}, timeout=30)  # fmt: skip
    assert (response.status_code, response.json()) == (400, {
        "error": "top_k: Input should be a valid integer, unable to parse string as an integer; "
                 "received 'three'"})  # fmt: skip


# -- bodies over their caps: 413 while they stream in, never spooled -------------------------------


def test_an_upload_declared_over_the_cap_is_413_before_its_body_is_sent(gateway: Gateway) -> None:
    length = 3 * 1024 * 1024
    answer = _exchange(gateway.port, _post("/predict", MULTIPART, length))  # no body at all
    assert (answer.status, answer.body) == (413, {"error": (
        f"the multipart body is over {FORM_CAP} bytes (Content-Length: {length}): the upload may "
        f"be {CAP} bytes, plus 65536 for the form")})  # fmt: skip
    assert answer.closed and answer.headers["connection"] == "close"
    assert answer.seconds < TIMEOUT - 0.5  # answered at once, not when the deadline passed


def test_a_chunked_upload_is_413_once_past_the_cap_and_never_spooled(gateway: Gateway) -> None:
    # 3 MiB offered, but only the cap plus 64 KiB is sent: a gateway that read to the end (or
    # spooled the part first) would wait for the rest and answer 408 at the deadline instead.
    offered = _chunked([FILE_PART_HEAD, *_filler(CAP + 64 * 1024)])
    with gateway.temp_files_opened() as temp_files, gateway.peak_growth_mib() as growth:
        answer = _exchange(gateway.port, _post("/predict", MULTIPART, None), offered)
    assert (answer.status, answer.body) == (413, {"error": f"the upload is over {CAP} bytes"})
    assert answer.closed and answer.seconds < TIMEOUT - 0.5
    assert temp_files == set() and list(gateway.tmpdir.iterdir()) == []
    assert growth[0] < 16, f"peak RSS rose {growth[0]:.1f} MiB for a {CAP >> 20} MiB cap"


def test_a_3_mib_upload_sent_whole_is_413_and_the_gateway_stops_reading_it(
    gateway: Gateway,
) -> None:
    size = 3 * 1024 * 1024
    body = [FILE_PART_HEAD, *_filler(size), f"\r\n--{BOUNDARY}--\r\n".encode()]
    length = sum(map(len, body))
    with gateway.temp_files_opened() as temp_files:
        answer = _exchange(gateway.port, _post("/predict", MULTIPART, length), body)
    assert (answer.status, answer.body) == (413, {"error": (
        f"the multipart body is over {FORM_CAP} bytes (Content-Length: {length}): the upload may "
        f"be {CAP} bytes, plus 65536 for the form")})  # fmt: skip
    assert answer.closed and answer.seconds < TIMEOUT - 0.5
    assert temp_files == set() and list(gateway.tmpdir.iterdir()) == []


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
def test_a_json_body_over_64_kib_is_413(gateway: Gateway, declared: bool) -> None:
    content = b'{"url": "https://x/a.jpg", "pad": "' + b"a" * (100 * 1024 * 1024) + b'"}'
    if declared:  # the length says it all: nothing needs to be sent
        answer = _exchange(gateway.port, _post("/predict", "application/json", len(content)))
        error = f"the JSON body is over 65536 bytes (Content-Length: {len(content)})"
    else:  # only 128 KiB of it is ever sent
        parts = _chunked([content[i : i + 16384] for i in range(0, 128 * 1024, 16384)])
        answer = _exchange(gateway.port, _post("/predict", "application/json", None), parts)
        error = "the JSON body is over 65536 bytes"
    assert (answer.status, answer.body) == (413, {"error": error})
    assert answer.closed and answer.seconds < TIMEOUT - 0.5


# -- a body that stalls: 408 at the deadline, while others are served ----------------------------


def test_a_body_declared_at_a_gigabyte_is_413_at_once_not_held(gateway: Gateway) -> None:
    head = _post("/predict", MULTIPART, 10**9)
    answer = _exchange(gateway.port, head, [FILE_PART_HEAD])  # ...and then it stalls
    assert (answer.status, answer.body) == (413, {"error": (
        f"the multipart body is over {FORM_CAP} bytes (Content-Length: 1000000000): the upload "
        f"may be {CAP} bytes, plus 65536 for the form")})  # fmt: skip
    assert answer.closed and answer.seconds < TIMEOUT - 0.5


@pytest.mark.parametrize(
    ("length", "deadline"),
    [(1000, 1.0), (None, float(TIMEOUT))],
    ids=["declared-1000-with-a-1s-header", "chunked-with-the-default-3s"],
)
def test_a_stalled_body_is_408_at_the_deadline_while_a_good_request_answers(
    gateway: Gateway, length: int | None, deadline: float
) -> None:
    header = f"X-Request-Timeout: {deadline:g}\r\n" if deadline != TIMEOUT else ""
    head = _post("/predict", MULTIPART, length, header)
    start = FILE_PART_HEAD if length is not None else next(_chunked([FILE_PART_HEAD]))
    with ThreadPoolExecutor(1) as pool:
        stalled = pool.submit(_exchange, gateway.port, head, [start])
        time.sleep(0.2)
        good = gateway.good_request()
        assert not stalled.done()  # the good request was answered while the probe was held
        answer = stalled.result()
    assert (good.status_code, good.json()) == (200, GOOD_ANSWER)
    error = f"the request body did not arrive within the request's deadline ({deadline:g} s)"
    assert (answer.status, answer.body) == (408, {"error": error})
    assert answer.closed and answer.headers["connection"] == "close"
    # At about the deadline (generous: the caller's clock starts before the gateway's).
    assert deadline - 0.1 <= answer.seconds < deadline + 1.5, answer.seconds


# -- fetched images: the cap counts decompressed bytes -------------------------------------------


def test_a_gzip_bomb_is_413_and_costs_about_the_cap(gateway: Gateway) -> None:
    url = f"{gateway.images}/bomb.jpg"
    with gateway.peak_growth_mib() as growth:
        response = httpx.post(f"{gateway.url}/predict", json={"url": url}, timeout=30)
    assert (response.status_code, response.json()) == (413, {
        "error": f"the image at {url} is over {CAP} bytes once decompressed (gzip)"})  # fmt: skip
    # Inflating httpx's way (each raw chunk whole) rose 64 MiB here; measured 6 MiB since.
    assert growth[0] < 24, f"peak RSS rose {growth[0]:.1f} MiB for a {CAP >> 20} MiB cap"


def test_eight_gzip_bombs_at_once_cost_about_eight_caps_while_a_good_request_answers(
    gateway: Gateway,
) -> None:
    url = f"{gateway.images}/bomb.jpg"

    def bomb() -> httpx.Response:
        return httpx.post(f"{gateway.url}/predict", json={"url": url}, timeout=30)

    with gateway.peak_growth_mib() as growth, ThreadPoolExecutor(9) as pool:
        bombs = [pool.submit(bomb) for _ in range(8)]
        good = pool.submit(gateway.good_request).result()
        answers = [(b.result().status_code, b.result().json()) for b in bombs]
    error = {"error": f"the image at {url} is over {CAP} bytes once decompressed (gzip)"}
    assert answers == [(413, error)] * 8
    assert (good.status_code, good.json()) == (200, GOOD_ANSWER)
    # 466 MiB inflating httpx's way; 16 MiB since.
    assert growth[0] < 48, f"peak RSS rose {growth[0]:.1f} MiB for 8 x {CAP >> 20} MiB caps"


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    with _image_server() as base:
        yield base


@pytest.mark.parametrize("path", ["/cat.jpg.gz", "/cat.jpg.zlib", "/cat.jpg.deflate"])
def test_a_gzip_or_deflate_image_is_decoded(images: str, path: str) -> None:
    data = asyncio.run(fetch_image(f"{images}{path}", max_bytes=CAP, timeout=10,
                                   allow_private=True))  # fmt: skip
    assert data == JPEG


def test_a_deflate_bomb_stops_at_the_cap_without_inflating_a_chunk_whole(images: str) -> None:
    url = f"{images}/deflate-bomb.jpg"
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as refused:
            asyncio.run(fetch_image(url, max_bytes=CAP, timeout=10, allow_private=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = f"the image at {url} is over {CAP} bytes once decompressed (deflate)"
    assert str(refused.value) == error
    assert peak < 8 * CAP, f"{peak} bytes allocated at the peak"  # not one inflated 64 KiB chunk


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/cat.jpg.br", "GET {url} answered Content-Encoding 'br'; the gateway decodes gzip and "
                        "deflate only"),
        ("/not-gzip.jpg", "cannot decode the gzip body of {url}: Error -3 while decompressing "
                          "data: incorrect header check"),
    ],
    ids=["brotli", "not-gzip"],
)  # fmt: skip
def test_a_body_the_gateway_cannot_decode_is_refused_naming_why(
    images: str, path: str, error: str
) -> None:
    url = f"{images}{path}"
    with pytest.raises(FetchError) as refused:
        asyncio.run(fetch_image(url, max_bytes=CAP, timeout=10, allow_private=True))
    assert str(refused.value) == error.format(url=url)


def test_the_private_address_refusal_names_the_variable_that_lifts_it() -> None:
    app = create_app(Settings(target="127.0.0.1:1", tracing=False, allow_private_urls=False))
    with TestClient(app) as http:
        response = http.post("/predict", json={"url": "http://127.0.0.1:9/x.jpg"})
    assert (response.status_code, response.json()) == (400, {"error": (
        "refusing to fetch from 127.0.0.1 (127.0.0.1): not a public address "
        "(GATEWAY_ALLOW_PRIVATE_URLS=1 allows it)")})  # fmt: skip
