"""examples/gateway over HTTP, as a subprocess in front of the local server: upload and URL give
labelled top-k, a bad image is 400, a too-large upload 413, a spent deadline 504, and once the
model server is stopped /predict and /readyz answer 503 while /healthz stays 200."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from xception_contract import DEFAULT_MODEL_NAME
from xception_serving.testing.process import free_port

from tests.fixtures.models import ExportedModel
from tests.fixtures.servers import ServerProcess, start_local_server

ROOT = Path(__file__).resolve().parents[2]
MAX_IMAGE_BYTES = 200_000
BATCH_WAIT = 2.0  # seconds the model server holds a lone request (see the stack fixture)


@dataclass
class Stack:
    server: ServerProcess
    gateway: str  # http://127.0.0.1:<port>
    images: str  # http://127.0.0.1:<port> serving /cat.jpg


def _image_server(jpeg: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = jpeg if self.path == "/cat.jpg" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def stack(
    small_xception_model: ExportedModel,
    sample_jpeg: bytes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    batching = tmp_path_factory.mktemp("gateway-batching") / "batching.config"
    # A lone request waits BATCH_WAIT for its batch to fill: a server slower than a short
    # deadline, so the deadline test sees the gateway give up at the deadline, not at the answer.
    batching.write_text(
        f"max_batch_size {{ value: 64 }} batch_timeout_micros {{ value: {BATCH_WAIT * 1e6:.0f} }} "
        "num_batch_threads { value: 1 }"
    )
    with ExitStack() as exit_stack:
        server = exit_stack.enter_context(
            start_local_server(
                model_name=DEFAULT_MODEL_NAME,
                model_base_path=Path(small_xception_model.base_path),
                extra_args=["--enable_batching", f"--batching_parameters_file={batching}"],
            )
        )
        images = _image_server(sample_jpeg)
        exit_stack.callback(images.shutdown)
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "examples" / "gateway"),
            "XCEPTION_SERVER": server.grpc_target,
            "GATEWAY_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
            "GATEWAY_ALLOW_PRIVATE_URLS": "1",  # the test's image server is on loopback
        }
        gateway = subprocess.Popen(
            [sys.executable, "-m", "xception_gateway", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        exit_stack.callback(gateway.wait, 30)
        exit_stack.callback(gateway.terminate)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert gateway.poll() is None, gateway.stdout.read().decode() if gateway.stdout else ""
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        yield Stack(server, url, f"http://127.0.0.1:{images.server_address[1]}")


def test_ready_when_the_model_is_available(stack: Stack) -> None:
    response = httpx.get(f"{stack.gateway}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json()["ready"] is True
    assert response.json()["versions"] == [1]


def test_upload_and_url_give_the_same_labelled_top_k(stack: Stack, sample_jpeg: bytes) -> None:
    upload = httpx.post(
        f"{stack.gateway}/predict?top_k=3",
        files={"file": ("cat.jpg", sample_jpeg, "image/jpeg")},
        timeout=30,
    )
    assert upload.status_code == 200, upload.text
    body = upload.json()
    assert body["model"] == DEFAULT_MODEL_NAME
    predictions = body["predictions"]
    assert len(predictions) == 3
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    by_url = httpx.post(
        f"{stack.gateway}/predict?top_k=3", json={"url": f"{stack.images}/cat.jpg"}, timeout=30
    )
    assert by_url.status_code == 200, by_url.text
    assert by_url.json()["predictions"] == predictions


@pytest.mark.parametrize(
    ("request_kwargs", "status", "words"),
    [
        ({"files": {"file": ("x.jpg", b"not an image at all", "image/jpeg")}}, 400, "image"),
        ({"files": {"file": ("x.jpg", b"\xff" * (MAX_IMAGE_BYTES + 1), "image/jpeg")}}, 413,
         str(MAX_IMAGE_BYTES)),
        ({"json": {"url": "file:///etc/passwd"}}, 400, "http:// or https://"),
        ({"json": {"nothing": 1}}, 400, "url"),
    ],
)  # fmt: skip
def test_bad_requests_get_their_code_and_a_one_line_error(
    stack: Stack, request_kwargs: dict[str, object], status: int, words: str
) -> None:
    response = httpx.post(f"{stack.gateway}/predict", timeout=30, **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error


def test_a_url_that_is_missing_is_400_naming_the_status(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway}/predict", json={"url": f"{stack.images}/missing.jpg"}, timeout=30
    )
    assert response.status_code == 400
    assert "HTTP 404" in response.json()["error"]


def test_the_request_deadline_reaches_the_grpc_call(stack: Stack, sample_jpeg: bytes) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{stack.gateway}/predict",
        files={"file": ("cat.jpg", sample_jpeg, "image/jpeg")},
        headers={"X-Request-Timeout": "0.5"},
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert (response.status_code, response.json()) == (
        504,
        {"error": "DEADLINE_EXCEEDED: Deadline Exceeded"},
    )
    # Answered at about the 0.5 s deadline (generous bound), well before the server's answer.
    assert 0.45 <= elapsed < BATCH_WAIT - 0.5, elapsed


def test_server_stopped_is_503_and_the_gateway_stays_alive(
    stack: Stack, sample_jpeg: bytes
) -> None:
    assert stack.server.stop() == 0
    response = httpx.post(
        f"{stack.gateway}/predict",
        files={"file": ("cat.jpg", sample_jpeg, "image/jpeg")},
        timeout=30,
    )
    assert response.status_code == 503, response.text
    assert "\n" not in response.json()["error"]
    assert httpx.get(f"{stack.gateway}/readyz", timeout=30).status_code == 503
    assert httpx.get(f"{stack.gateway}/healthz", timeout=10).status_code == 200
