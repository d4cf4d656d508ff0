"""Client behaviour against an in-process gRPC server speaking TF Serving's API (no model needed).

The fake server is built on tensorflow-serving-api's own messages, so this also proves the client
talks to TF Serving's method paths and message types. The real local server is exercised in
test_client_local_server.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
import xception_contract as contract
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2
from xception_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidImage,
    ModelNotFound,
    NotAGrpcServer,
    ServerUnavailable,
)

from tests.fixtures.pki import Pki, make_pki

K = 5
BAD_PNG = "Invalid PNG data, size 12"  # what the fake answers an image holding b"BAD"
BLANK_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da63600000000200010be5d3a50000000049454e44ae426082"
)


@dataclass
class FakeState:
    name: str = "fake"
    calls: int = 0
    fail_unavailable: int = 0  # fail this many calls with UNAVAILABLE first
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _predict(
    state: FakeState, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
) -> predict_pb2.PredictResponse:
    with state.lock:
        state.calls += 1
        if state.fail_unavailable > 0:
            state.fail_unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    if request.model_spec.name != contract.DEFAULT_MODEL_NAME:
        context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"Servable not found for request: Latest({request.model_spec.name})",
        )
    images = list(request.inputs[contract.IMAGE_BYTES_INPUT].string_val)
    if any(b"BAD" in image for image in images):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, BAD_PNG)
    if state.delay:
        time.sleep(state.delay)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    # Class ids derived from each image's length, so ordering mistakes are visible.
    ids = np.array([[(len(image) + rank) % 1000 for rank in range(K)] for image in images])
    scores = np.tile(np.linspace(0.5, 0.1, K, dtype=np.float32), (len(images), 1))
    for alias, values, kind in (
        (contract.TOP_K_SCORES_OUTPUT, scores, "float_val"),
        (contract.TOP_K_CLASS_IDS_OUTPUT, ids, "int_val"),
        (
            contract.TOP_K_LABELS_OUTPUT,
            [[f"class{i}".encode() for i in row] for row in ids],
            "string_val",
        ),
        (
            contract.TOP_K_KEYS_OUTPUT,
            [[f"n{i:08d}".encode() for i in row] for row in ids],
            "string_val",
        ),
    ):
        tensor = response.outputs[alias]
        tensor.dtype = {"float_val": 1, "int_val": 3, "string_val": 7}[kind]
        tensor.tensor_shape.dim.add().size = len(images)
        tensor.tensor_shape.dim.add().size = K
        getattr(tensor, kind).extend(np.asarray(values).ravel().tolist())
    response.outputs[contract.TOP_K_LABELS_OUTPUT].tensor_shape.dim[0].size = len(images)
    return response


def _status(
    state: FakeState,
    request: get_model_status_pb2.GetModelStatusRequest,
    context: grpc.ServicerContext,
) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=3, state=30)
    return response


@dataclass
class FakeServer:
    target: str
    state: FakeState
    server: grpc.Server


def _start(state: FakeState, credentials: grpc.ServerCredentials | None = None) -> FakeServer:
    """The fake on a free loopback port: Predict and GetModelStatus, plaintext or with TLS."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService",
                {
                    "Predict": grpc.unary_unary_rpc_method_handler(
                        lambda r, c: _predict(state, r, c),
                        request_deserializer=predict_pb2.PredictRequest.FromString,
                        response_serializer=predict_pb2.PredictResponse.SerializeToString,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "tensorflow.serving.ModelService",
                {
                    "GetModelStatus": grpc.unary_unary_rpc_method_handler(
                        lambda r, c: _status(state, r, c),
                        request_deserializer=get_model_status_pb2.GetModelStatusRequest.FromString,
                        response_serializer=get_model_status_pb2.GetModelStatusResponse.SerializeToString,
                    ),
                },
            ),
        ]
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        # The target names 127.0.0.1, which the test certificate carries as an IP address, not
        # "localhost": that may resolve to ::1 first, where nothing listens, and a refused
        # connection would pass for the TLS refusal a test expects.
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return FakeServer(f"127.0.0.1:{port}", state, server)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    running = _start(FakeState())
    yield running
    running.server.stop(grace=None)


def _image(n: int) -> bytes:
    return BLANK_PNG + b"\0" * n  # trailing bytes change the length, not the decodability


def assert_refused_by_the_server(error: object) -> None:
    """The fake's INVALID_ARGUMENT for a b"BAD" image, raised as InvalidImage."""
    assert isinstance(error, InvalidImage)
    assert (error.code, error.details) == (grpc.StatusCode.INVALID_ARGUMENT, BAD_PNG)


NOT_AN_IMAGE = b"not an image"
# The client's own refusal of NOT_AN_IMAGE, before anything is sent.
NOT_AN_IMAGE_DETAILS = (
    "image <bytes> is not in a known image format (12 bytes, starting 6e 6f 74 20 61 6e 20 69)"
)


def test_predict_returns_top_k_best_first_with_labels_and_keys(fake: FakeServer) -> None:
    with Client(fake.target) as client:
        predictions = client.predict(_image(3), top_k=3)
    base = len(_image(3))
    assert [(p.class_id, p.label, p.key) for p in predictions] == [
        (base + r, f"class{base + r}", f"n{base + r:08d}") for r in range(3)
    ]
    assert [p.score for p in predictions] == sorted((p.score for p in predictions), reverse=True)


def test_predict_batch_sends_one_request_and_keeps_order(fake: FakeServer) -> None:
    with Client(fake.target) as client:
        results = client.predict_batch([_image(n) for n in (5, 1, 9)], top_k=1)
    assert [r[0].class_id for r in results] == [len(_image(n)) for n in (5, 1, 9)]
    assert fake.state.calls == 1


@pytest.mark.parametrize("per_request", [1, 2, 4])
def test_predict_many_streams_in_order_with_bounded_concurrency(
    fake: FakeServer, per_request: int
) -> None:
    fake.state.delay = 0.05
    consumed = 0

    def images() -> Iterator[bytes]:
        nonlocal consumed
        for n in range(25):
            consumed += 1
            yield _image(n)

    with Client(fake.target) as client:
        stream = client.predict_many(
            images(), top_k=1, concurrency=3, images_per_request=per_request
        )
        first = next(stream)
        # Lazily consumed: no more than `concurrency` requests of `per_request` images ahead.
        assert consumed <= 3 * per_request
        rest = list(stream)
    assert [r[0].class_id for r in [first, *rest]] == [len(_image(n)) for n in range(25)]
    assert fake.state.calls == -(-25 // per_request)  # packed: ceil(25 / per_request) calls


def test_predict_many_packs_four_images_per_request_by_default(fake: FakeServer) -> None:
    with Client(fake.target) as client:
        results = list(client.predict_many([_image(n) for n in range(9)], top_k=1))
    assert [r[0].class_id for r in results] == [len(_image(n)) for n in range(9)]
    assert fake.state.calls == 3


def test_a_bad_image_in_a_packed_request_fails_only_itself(fake: FakeServer) -> None:
    inputs = [_image(1), _image(2) + b"BAD", _image(3), _image(4), _image(5)]
    with Client(fake.target) as client:
        results = list(
            client.predict_many(inputs, top_k=1, images_per_request=4, return_exceptions=True)
        )
    assert_refused_by_the_server(results[1])
    good = [results[i][0].class_id for i in (0, 2, 3, 4)]  # type: ignore[index]
    assert good == [len(inputs[i]) for i in (0, 2, 3, 4)]
    # The packed request failed as a whole, then its 4 images went one by one; + the 5th.
    assert fake.state.calls == 1 + 4 + 1


def test_predict_many_refuses_a_non_positive_images_per_request(fake: FakeServer) -> None:
    with Client(fake.target) as client, pytest.raises(ValueError, match="images_per_request"):
        list(client.predict_many([_image(1)], images_per_request=0))


def test_predict_many_reports_bad_images_in_place_when_asked(fake: FakeServer) -> None:
    inputs = [_image(1), _image(1) + b"BAD", NOT_AN_IMAGE, _image(2)]
    with Client(fake.target) as client:
        results = list(client.predict_many(inputs, top_k=1, return_exceptions=True))
        assert_refused_by_the_server(results[1])
        rejected = results[2]
        assert isinstance(rejected, InvalidImage)
        assert (rejected.code, rejected.details) == (None, NOT_AN_IMAGE_DETAILS)  # never sent
        assert [r[0].class_id for r in (results[0], results[3])] == [  # type: ignore[index]
            len(_image(1)),
            len(_image(2)),
        ]
        with pytest.raises(InvalidImage) as info:
            list(client.predict_many(inputs, top_k=1))
        assert_refused_by_the_server(info.value)  # the first bad one in order


def test_wrong_model_name_raises_model_not_found_with_server_message(fake: FakeServer) -> None:
    with Client(fake.target, model_name="nope") as client, pytest.raises(ModelNotFound) as info:
        client.predict(_image(1))
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.details == "Servable not found for request: Latest(nope)"
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_unavailable_is_retried_by_the_channel_but_invalid_argument_never(
    fake: FakeServer,
) -> None:
    fake.state.fail_unavailable = 2
    with Client(fake.target, retries=3) as client:
        assert client.predict(_image(1), top_k=1)[0].class_id == len(_image(1))
        assert fake.state.calls == 3
        fake.state.calls = 0
        with pytest.raises(InvalidImage) as bad:
            client.predict(_image(1) + b"BAD")
        assert_refused_by_the_server(bad.value)
        assert fake.state.calls == 1
    fake.state.fail_unavailable, fake.state.calls = 2, 0
    with Client(fake.target, retries=0) as client, pytest.raises(ServerUnavailable) as down:
        client.predict(_image(1))
    assert (down.value.code, down.value.details) == (grpc.StatusCode.UNAVAILABLE, "try again")
    assert fake.state.calls == 1


def test_deadline_fires_on_time(fake: FakeServer) -> None:
    fake.state.delay = 2.0
    with Client(fake.target, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            client.predict(_image(1))
        assert time.monotonic() - started < 1.5
    assert (info.value.code, info.value.details) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "Deadline Exceeded",  # gRPC's own words
    )


def test_top_k_above_exported_k_is_refused_and_remembered(fake: FakeServer) -> None:
    from xception_client import TopKTooLarge

    with Client(fake.target) as client:
        with pytest.raises(TopKTooLarge, match="exports its 5 best"):
            client.predict(_image(1), top_k=6)
        calls = fake.state.calls
        with pytest.raises(TopKTooLarge, match="exports its 5 best"):
            client.predict(_image(1), top_k=6)
        assert fake.state.calls == calls  # known now: refused before sending


def test_status_reports_each_version_and_its_state(fake: FakeServer) -> None:
    with Client(fake.target) as client:
        (status,) = client.status()
    assert (status.version, status.state) == (3, "AVAILABLE")


def test_nothing_listening_raises_server_unavailable_quickly() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=5.0, retries=1) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable) as info:
            client.predict(_image(1))
        assert time.monotonic() - started < 5.0
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    # gRPC's words around the operating system's, naming the address it tried.
    assert f"127.0.0.1:{port}: Failed to connect to remote host: Connection refused" in (
        info.value.details
    )


class _Rest(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST
    do_PRI = do_POST

    def log_message(self, *args: object) -> None:
        pass


def test_rest_port_gives_a_clear_not_a_grpc_server_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    target = f"127.0.0.1:{server.server_address[1]}"
    try:
        with (
            Client(target, timeout=5.0, retries=0) as client,
            pytest.raises(NotAGrpcServer, match="REST port") as info,
        ):
            client.predict(_image(1))
        assert target in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_round_robin_spreads_calls_over_a_comma_separated_target() -> None:
    servers = [_start(FakeState(name=str(i))) for i in range(3)]
    try:
        target = ",".join(s.target for s in servers)
        with Client(target) as client:
            for _ in range(30):
                client.predict(_image(1), top_k=1)
        counts = [s.state.calls for s in servers]
        assert sum(counts) == 30 and min(counts) >= 6, counts
    finally:
        for s in servers:
            s.server.stop(grace=None)


async def test_async_client_has_the_same_methods_and_results(fake: FakeServer) -> None:
    async with AsyncClient(fake.target) as client:
        one = await client.predict(_image(2), top_k=2)
        batch = await client.predict_batch([_image(2), _image(4)], top_k=2)

        async def images():  # type: ignore[no-untyped-def]
            for n in range(6):
                yield _image(n)

        many = [r async for r in client.predict_many(images(), top_k=1, concurrency=2)]
        with pytest.raises(ModelNotFound) as info:
            await AsyncClient(fake.target, model_name="nope").predict(_image(1))
        assert info.value.details == "Servable not found for request: Latest(nope)"
        (status,) = await client.status()
    assert one == batch[0]
    assert [r[0].class_id for r in many] == [len(_image(n)) for n in range(6)]  # type: ignore[index]
    assert fake.state.calls == 1 + 1 + 2 + 1  # predict, batch, 6 images as 4 + 2, not found
    assert status.state == "AVAILABLE"
    sync_methods = {m for m in dir(Client) if not m.startswith("_")}
    async_methods = {m for m in dir(AsyncClient) if not m.startswith("_")}
    assert sync_methods == async_methods


async def test_async_deadline_fires_on_time(fake: FakeServer) -> None:
    fake.state.delay = 2.0
    async with AsyncClient(fake.target, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await client.predict(_image(1))
        assert time.monotonic() - started < 1.5
    assert info.value.details == "Deadline Exceeded"
    await asyncio.sleep(0)


# --- TLS and mutual TLS, with throw-away certificates made here ---


def _start_tls(pki: Pki, *, require_client_cert: bool) -> FakeServer:
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_cert)],
        root_certificates=pki.ca,
        require_client_auth=require_client_cert,
    )
    return _start(FakeState(), credentials)


def test_tls_and_mutual_tls_with_a_private_ca(tmp_path: Path) -> None:
    from xception_client import TLS

    pki = make_pki()
    paths = pki.write(tmp_path)  # the client takes PEM files as well as bytes
    tls = _start_tls(pki, require_client_cert=False)
    mtls = _start_tls(pki, require_client_cert=True)
    try:
        with Client(tls.target, tls=TLS(root_certificates=paths["ca"])) as client:
            assert client.status()[0].state == "AVAILABLE"
        with (
            Client(tls.target, timeout=5.0, retries=0) as plaintext,
            pytest.raises(ServerUnavailable) as refused,
        ):
            plaintext.status()  # plaintext client against a TLS server: refused, no hang
        assert refused.value.details.startswith(
            f"{tls.target} closed the connection without answering. A TLS server does this to a "
            "plaintext client"
        ), refused.value.details
        client_tls = TLS(
            root_certificates=paths["ca"],
            certificate_chain=paths["client_cert"],
            private_key=paths["client_key"],
        )
        with Client(mtls.target, tls=client_tls) as client:
            assert client.status()[0].state == "AVAILABLE"
        with (
            Client(
                mtls.target, tls=TLS(root_certificates=paths["ca"]), timeout=5.0, retries=0
            ) as anonymous,
            pytest.raises(ServerUnavailable) as refused,
        ):
            anonymous.status()  # no client certificate under mutual TLS: refused
        assert refused.value.details.startswith(f"{mtls.target} closed the connection"), (
            refused.value.details
        )
        assert "a mutual-TLS server to a client without an accepted certificate" in (
            refused.value.details
        )
    finally:
        tls.server.stop(grace=None)
        mtls.server.stop(grace=None)


def test_predict_many_cancels_in_flight_calls_when_the_caller_stops_early(
    fake: FakeServer,
) -> None:
    fake.state.delay = 0.3
    with Client(fake.target) as client:
        stream = client.predict_many((_image(n) for n in range(100)), top_k=1, concurrency=4)
        next(stream)
        stream.close()
    time.sleep(0.5)
    assert fake.state.calls <= 8  # not 100: the generator stopped submitting and cancelled


async def test_the_async_twin_packs_requests_and_isolates_a_bad_image(fake: FakeServer) -> None:
    inputs = [_image(1), _image(2), _image(3) + b"BAD", _image(4)]
    async with AsyncClient(fake.target) as client:
        results = [
            r
            async for r in client.predict_many(
                inputs, top_k=1, images_per_request=4, return_exceptions=True
            )
        ]
        with pytest.raises(InvalidImage) as info:
            [r async for r in client.predict_many(inputs, top_k=1)]
    assert_refused_by_the_server(info.value)
    assert_refused_by_the_server(results[2])
    good = [results[i][0].class_id for i in (0, 1, 3)]  # type: ignore[index]
    assert good == [len(inputs[i]) for i in (0, 1, 3)]
