"""Load generators: closed-loop workers that each send one image per request and time it.

Three ways to ask the same server for the same answer:

- ``OursGrpc``: the project's ``xception_client.Client`` sending the encoded JPEG bytes to the
  bytes signature (the server decodes and resizes in the graph);
- ``UsualGrpc``: the ML-Zoomcamp module-10 way: Pillow decode, Keras ``load_img``-style nearest
  resize to SxS, float32 ``x / 127.5 - 1`` on the client, a float32 tensor (``tensor_content``) to
  the ``serving_preprocessed`` signature. Its messages are the client's own TF Serving messages
  (wire-identical to ``tensorflow_serving.apis``; importing those would pull TensorFlow into this
  process, whose CPU time is what we measure);
- ``RestB64``: TF Serving's REST ``:predict`` with ``{"instances": [{"b64": ...}]}``.

Client CPU time is ``time.process_time()`` of this process (every thread, gRPC's included)
divided by the images completed; the server is another process. Two measurements:

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
import io
import json
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import xception_contract as contract
from PIL import Image
from xception_client import Client
from xception_client import _wire as wire  # the client's message builders: request sizes

MAX_MESSAGE = 64 * 1024 * 1024


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


def keras_style_preprocess(data: bytes, size: int) -> np.ndarray[Any, Any]:
    """keras.utils.load_img(target_size=(S, S)) (nearest) + img_to_array + preprocess_input."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        resized = rgb.resize((size, size), Image.Resampling.NEAREST)
        x = np.asarray(resized, dtype=np.float32)
    x = x / np.float32(127.5) - np.float32(1.0)
    return x[np.newaxis]


def preprocessed_request(model: wire.ModelRef, x: np.ndarray[Any, Any]) -> Any:
    """PredictRequest with a float32 tensor in tensor_content (as tf.make_tensor_proto does)."""
    from xception_client._proto import serving_pb2 as pb
    from xception_client._proto import tensorflow_pb2 as tfpb

    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=model.name,
                                                        signature_name=model.signature))
    tensor = request.inputs[contract.PREPROCESSED_INPUT]
    tensor.dtype = tfpb.DT_FLOAT
    tensor.tensor_shape.CopyFrom(
        tfpb.TensorShapeProto(dim=[tfpb.TensorShapeProto.Dim(size=d) for d in x.shape])
    )
    tensor.tensor_content = np.ascontiguousarray(x, dtype="<f4").tobytes()
    return request


class OursGrpc:
    """The project's Client, bytes signature."""

    name = "grpc-bytes"

    def __init__(self, target: str, model_name: str, images: Sequence[bytes], timeout: float):
        self._client = Client(target, model_name=model_name, timeout=timeout, retries=0)
        self._images = images

    def request_bytes(self, data: bytes) -> int:
        ref = wire.ModelRef(self._client._model.name, signature=contract.BYTES_SIGNATURE)
        return int(wire.predict_bytes_request(ref, [data]).ByteSize())

    def __call__(self, worker: int, index: int) -> None:
        self._client.predict(self._images[index % len(self._images)])

    def stream(self, count: int, concurrency: int, images_per_request: int | None = None) -> int:
        """``count`` images through ``Client.predict_many`` (bounded in-flight window), packed
        ``images_per_request`` per call (the client's default when None)."""
        images = (self._images[i % len(self._images)] for i in range(count))
        packing = {} if images_per_request is None else {"images_per_request": images_per_request}
        return sum(1 for _ in self._client.predict_many(images, concurrency=concurrency,
                                                        **packing))

    def close(self) -> None:
        self._client.close()


class UsualGrpc:
    """Client-side decode/resize/normalise, float32 tensor to serving_preprocessed."""

    name = "usual-float32"

    def __init__(self, target: str, model_name: str, images: Sequence[bytes], size: int,
                 timeout: float):
        self._channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.max_receive_message_length", MAX_MESSAGE)],
        )
        self._predict = self._channel.unary_unary(
            wire.PREDICT.path,
            request_serializer=wire.PREDICT.serializer,
            response_deserializer=wire.PREDICT.deserializer,
        )
        self._model = wire.ModelRef(model_name, signature=contract.PREPROCESSED_SIGNATURE)
        self._images = images
        self._size = size
        self._timeout = timeout

    def request_bytes(self, data: bytes) -> int:
        x = keras_style_preprocess(data, self._size)
        return int(preprocessed_request(self._model, x).ByteSize())

    def __call__(self, worker: int, index: int) -> None:
        x = keras_style_preprocess(self._images[index % len(self._images)], self._size)
        response = self._predict(preprocessed_request(self._model, x), timeout=self._timeout)
        wire.parse_top_k(response, contract.DEFAULT_TOP_K)

    def stream(self, count: int, concurrency: int) -> int:
        """The same window of futures as ``Client.predict_many``, preparing each request as it
        is submitted."""
        pending: deque[Any] = deque()
        done = 0
        for i in range(count):
            x = keras_style_preprocess(self._images[i % len(self._images)], self._size)
            request = preprocessed_request(self._model, x)
            pending.append(self._predict.future(request, timeout=self._timeout))
            if len(pending) >= concurrency:
                wire.parse_top_k(pending.popleft().result(), contract.DEFAULT_TOP_K)
                done += 1
        while pending:
            wire.parse_top_k(pending.popleft().result(), contract.DEFAULT_TOP_K)
            done += 1
        return done

    def close(self) -> None:
        self._channel.close()


class RestB64:
    """TF Serving REST :predict, {"instances": [{"b64": ...}]}, one keep-alive connection per
    worker (http.client, standard library)."""

    name = "rest-b64"

    def __init__(self, rest_url: str, model_name: str, images: Sequence[bytes], timeout: float):
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
        conn = getattr(self._local, "conn", None)
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
