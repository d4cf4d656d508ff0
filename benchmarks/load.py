"""Load generators, and the drivers that give them our client and REST to call.

Three ways to ask the same server for the same answer, one driver each:

- ``OursGrpc``: the project's ``xception_client.Client`` sending the encoded JPEG bytes to the
  bytes signature (the server decodes and resizes in the graph);
- ``usual_way.UsualGrpc``: the usual way, the image decoded, resized and normalised on the client
  and sent as a float32 tensor through TF Serving's own Python stubs (see usual_way.py);
- ``RestB64``: TF Serving's REST ``:predict`` with ``{"instances": [{"b64": ...}]}``.

A driver is called as ``driver(worker, request_index)`` for one request of one image, and says
how many bytes its request for an image is (``request_bytes``). Client CPU time is
``time.process_time()`` of this process (every thread, gRPC's included) divided by the images
completed; the server is another process. Two measurements:

- ``closed_loop``: one thread per in-flight request, each blocking on its call, so per-request
  latency is exact. A thread blocked in grpcio's synchronous call costs CPU while it waits
  (measured here: ~5 ms per second of waiting), so its CPU figure grows with latency;
- ``stream_cpu``: one thread keeps ``concurrency`` requests in flight with futures, the way
  ``Client.predict_many`` does. This is the client-side cost of classifying a stream of images and
  the figure the side-by-side comparison uses.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from xception_client import Client


class Driver(Protocol):
    """One way of asking the server for one image's answer (see the module docstring)."""

    name: str  # the results' ``variant``

    def request_bytes(self, data: bytes) -> int: ...

    def __call__(self, worker: int, index: int) -> None: ...

    def close(self) -> None: ...


class StreamDriver(Driver, Protocol):
    def stream(self, count: int, concurrency: int, images_per_request: int | None = None) -> int:
        """Classify ``count`` images with ``concurrency`` requests in flight from one thread,
        ``images_per_request`` per request (the driver's own choice when None); the number of
        images classified."""
        ...


@dataclass
class RunResult:
    """One closed-loop run: concurrency workers for a duration (or a request cap)."""

    concurrency: int
    completed: int
    errors: int
    elapsed_s: float
    cpu_s: float
    latencies_s: list[float] = field(default_factory=list)
    first_error: str | None = None


def closed_loop(
    work: Callable[[int, int], None],
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    min_requests: int = 0,
) -> RunResult:
    """``concurrency`` threads call ``work(worker, request_index)`` back to back until the
    duration is over (but at least ``min_requests`` started) or ``max_requests`` started."""
    lock = threading.Lock()
    counter = iter(range(max_requests))
    latencies: list[float] = []
    errors: list[str] = []
    last_done = [0.0]
    started = time.perf_counter()
    deadline = started + duration_s

    def worker(index: int) -> None:
        while True:
            with lock:
                request = next(counter, None)
                if request is None or (time.perf_counter() >= deadline and request >= min_requests):
                    return
            t0 = time.perf_counter()
            try:
                work(index, request)
            except Exception as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            t1 = time.perf_counter()
            with lock:
                latencies.append(t1 - t0)
                last_done[0] = max(last_done[0], t1)

    cpu0 = time.process_time()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + 120)  # bounded: a request has its own deadline
    cpu = time.process_time() - cpu0
    elapsed = (last_done[0] - started) if latencies else time.perf_counter() - started
    return RunResult(
        concurrency=concurrency,
        completed=len(latencies),
        errors=len(errors),
        elapsed_s=elapsed,
        cpu_s=cpu,
        latencies_s=latencies,
        first_error=errors[0] if errors else None,
    )


@dataclass
class StreamResult:
    images: int
    cpu_s: float
    wall_s: float


def stream_cpu(run: Callable[[], int]) -> StreamResult:
    """Time ``run()`` (which returns the images it classified) in CPU and wall seconds."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    count = run()
    return StreamResult(count, time.process_time() - cpu0, time.perf_counter() - wall0)


class OursGrpc:
    """The project's Client, bytes signature."""

    name = "grpc-bytes"

    def __init__(
        self, target: str, model_name: str, images: Sequence[bytes], timeout: float
    ) -> None:
        self._client = Client(target, model_name=model_name, timeout=timeout, retries=0)
        self._images = images

    def request_bytes(self, data: bytes) -> int:
        return self._client.request_size([data])

    def __call__(self, worker: int, index: int) -> None:
        self._client.predict(self._images[index % len(self._images)])

    def stream(self, count: int, concurrency: int, images_per_request: int | None = None) -> int:
        """``count`` images through ``Client.predict_many`` (bounded in-flight window), packed
        ``images_per_request`` per call (the client's default when None)."""
        images = (self._images[i % len(self._images)] for i in range(count))
        if images_per_request is None:
            answers = self._client.predict_many(images, concurrency=concurrency)
        else:
            answers = self._client.predict_many(
                images, concurrency=concurrency, images_per_request=images_per_request
            )
        return sum(1 for _ in answers)

    def close(self) -> None:
        self._client.close()


class RestB64:
    """TF Serving REST :predict, {"instances": [{"b64": ...}]}, one keep-alive connection per
    worker (http.client, standard library)."""

    name = "rest-b64"

    def __init__(
        self, rest_url: str, model_name: str, images: Sequence[bytes], timeout: float
    ) -> None:
        parsed = urllib.parse.urlsplit(rest_url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 8501
        self._path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}:predict"
        self._images = images
        self._timeout = timeout
        self._local = threading.local()

    @staticmethod
    def body(data: bytes) -> bytes:
        return json.dumps({"instances": [{"b64": base64.b64encode(data).decode("ascii")}]}).encode()

    def request_bytes(self, data: bytes) -> int:
        return len(self.body(data))

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def __call__(self, worker: int, index: int) -> None:
        body = self.body(self._images[index % len(self._images)])
        conn = self._connection()
        try:
            conn.request("POST", self._path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
        predictions = json.loads(payload)["predictions"]
        if len(predictions) != 1:
            raise RuntimeError(f"expected 1 prediction, got {len(predictions)}")

    def close(self) -> None:
        pass
