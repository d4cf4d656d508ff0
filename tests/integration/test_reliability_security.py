"""Security: TLS and mutual TLS between the project's client and the server (certificates made
here with `cryptography`), loopback-only binding by default, no file path reachable from a
request, and a bounded fuzz of the server's request parsing over gRPC.

The CLI path (`--ssl_config_file`, default `--host`) runs as a subprocess; mutual TLS, paths and
fuzzing use the in-process server (same GrpcServer and ServingCore, seconds instead of a TensorFlow
start). test_server_tls covers the same TLS settings with raw gRPC channels.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from xception_client import TLS, Client, ServerUnavailable
from xception_serving.config.files import SSLConfig

from tests.fixtures.fuzz import FuzzRun
from tests.fixtures.pki import Pki, make_pki
from tests.fixtures.servers import (
    ServerProcess,
    in_process_server,
    start_local_server,
    write_half_plus_two,
)

MODEL = "default"  # the half_plus_two fixture's name in these tests


# -- certificates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _ssl(pki: Pki, *, mutual: bool) -> SSLConfig:
    return SSLConfig(
        server_key=pki.server_key.decode(),
        server_cert=pki.server_cert.decode(),
        custom_ca=pki.ca.decode() if mutual else "",
        client_verify=mutual,
    )


# -- TLS through the CLI -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(
    pki: Pki, half_plus_two_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    ssl_file = tmp_path_factory.mktemp("tls") / "ssl.config"
    ssl_file.write_text(text_format.MessageToString(_ssl(pki, mutual=False)))
    ssl_file.chmod(0o600)
    with start_local_server(
        model_name=MODEL,
        model_base_path=half_plus_two_base,
        rest=True,  # both ports, for the binding check
        extra_args=[f"--ssl_config_file={ssl_file}"],
    ) as server:
        yield server


def test_project_client_talks_to_the_server_over_tls(
    tls_server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.ca)
    for roots in (pki.ca, ca_file):  # PEM bytes or a path
        with Client(tls_server.grpc_target, model_name=MODEL, tls=TLS(root_certificates=roots),
                    timeout=30) as client:
            (status,) = client.status()
            assert status.state == "AVAILABLE"
            assert "serving_default" in client.metadata().signatures


def test_plaintext_client_against_a_tls_server_fails_fast_with_a_clear_error(
    tls_server: ServerProcess,
) -> None:
    started = time.monotonic()
    with Client(tls_server.grpc_target, model_name=MODEL, retries=0, timeout=20) as client, \
            pytest.raises(ServerUnavailable) as info:
        client.status()
    assert time.monotonic() - started < 10  # refused, not left waiting for the deadline
    assert "A TLS server does this to a plaintext client" in str(info.value)
    assert "tls=" in str(info.value)


def test_client_that_does_not_trust_the_server_certificate_is_refused(
    tls_server: ServerProcess, pki: Pki
) -> None:
    with Client(tls_server.grpc_target, model_name=MODEL, retries=0, timeout=20,
                tls=TLS(root_certificates=pki.stranger_ca)) as client, \
            pytest.raises(ServerUnavailable) as info:
        client.status()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    return inodes


def _decode_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = _socket_inodes(pid)
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.split(":")
                found.add((str(_decode_address(address)), int(port, 16)))
    return found


def test_server_listens_on_loopback_only_by_default(tls_server: ServerProcess) -> None:
    assert tls_server.rest_url is not None
    grpc_port = int(tls_server.grpc_target.rsplit(":", 1)[1])
    rest_port = int(tls_server.rest_url.rsplit(":", 1)[1])
    sockets = listening_sockets(tls_server.process.pid)
    assert {port for _, port in sockets} == {grpc_port, rest_port}, sockets
    for address, port in sockets:
        assert ipaddress.ip_address(address).is_loopback, f"port {port} bound on {address}"


# -- mutual TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_target(pki: Pki, half_plus_two_base: Path) -> Iterator[str]:
    with in_process_server({MODEL: half_plus_two_base}, ssl=_ssl(pki, mutual=True)) as (_, target):
        yield target


def test_mutual_tls_admits_a_client_with_a_certificate_from_the_trusted_ca(
    mtls_target: str, pki: Pki
) -> None:
    tls = TLS(root_certificates=pki.ca, certificate_chain=pki.client_cert,
              private_key=pki.client_key)
    with Client(mtls_target, model_name=MODEL, tls=tls, timeout=30) as client:
        assert client.status()[0].state == "AVAILABLE"


@pytest.mark.parametrize("credentials", ["none", "stranger"])
def test_mutual_tls_refuses_a_client_without_an_accepted_certificate(
    mtls_target: str, pki: Pki, credentials: str
) -> None:
    tls = (
        TLS(root_certificates=pki.ca)
        if credentials == "none"
        else TLS(root_certificates=pki.ca, certificate_chain=pki.stranger_cert,
                 private_key=pki.stranger_key)
    )
    with Client(mtls_target, model_name=MODEL, tls=tls, retries=0, timeout=20) as client, \
            pytest.raises(ServerUnavailable) as info:
        client.status()
    assert "without an accepted certificate" in str(info.value)


# -- no file path reachable from a request -----------------------------------------------------


@pytest.fixture(scope="module")
def path_trap(tmp_path_factory: pytest.TempPathFactory, half_plus_two_base: Path) -> Iterator[Any]:
    """Served: models/default. Not served, one `..` away: trap/1, a model that answers y=100."""
    root = tmp_path_factory.mktemp("paths")
    shutil.copytree(half_plus_two_base, root / "models" / MODEL)
    write_half_plus_two(root / "trap", 1, offset=100.0)
    with in_process_server({MODEL: root / "models" / MODEL}) as (core, target):
        yield root, core, target


def _names_reaching_the_trap(root: Path) -> list[str]:
    return [
        "../trap", "../../trap", "../../paths0/trap", f"{MODEL}/../../trap", str(root / "trap"),
        str(root / "trap" / "1"), "/etc/passwd", "..", ".", f"{MODEL}/123", "file:///etc/passwd",
        "trap", "%2e%2e/trap",
    ]  # fmt: skip


def test_model_names_that_are_paths_are_not_found_and_never_load_anything(path_trap: Any) -> None:
    root, core, target = path_trap
    with grpc.insecure_channel(target) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        for name in _names_reaching_the_trap(root):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            tensor = request.inputs["x"]
            tensor.dtype = types_pb2.DT_FLOAT
            tensor.tensor_shape.dim.add().size = 1
            tensor.float_val.append(2.0)
            with pytest.raises(grpc.RpcError) as info:
                predict.Predict(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, (name, info.value.details())
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = name
            with pytest.raises(grpc.RpcError) as info:
                models.GetModelStatus(status, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, name
            metadata = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"]
            )
            metadata.model_spec.name = name
            with pytest.raises(grpc.RpcError) as info:
                predict.GetModelMetadata(metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, name
        # Labels and signature names that are paths: refused with TF Serving's codes.
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = "../trap"
        with pytest.raises(grpc.RpcError) as info:
            predict.Predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        request.model_spec.ClearField("version_label")
        request.model_spec.signature_name = "../../trap/1/saved_model.pb"
        with pytest.raises(grpc.RpcError) as info:
            predict.Predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert core.manager.model_names() == [MODEL]  # nothing else was ever loaded


def test_rest_paths_that_name_files_are_refused(path_trap: Any) -> None:
    from xception_serving.rest import RestApi

    root, core, _ = path_trap
    api = RestApi(core, core.metrics, monitoring_path=None)
    body = b'{"instances": [2.0]}'
    requests = [
        ("POST", "/v1/models/..%2Ftrap:predict"),
        ("POST", "/v1/models/%2E%2E%2F%2E%2E%2Ftrap:predict"),
        ("POST", f"/v1/models/{'%2F'.join(str(root / 'trap').split('/'))}:predict"),
        ("POST", "/v1/models/../trap:predict"),
        ("POST", f"/v1/models/{MODEL}/labels/..%2Ftrap:predict"),
        ("GET", "/v1/models/..%2Ftrap"),
        ("GET", "/v1/models/%2Fetc%2Fpasswd/metadata"),
        ("GET", "/v1/../../etc/passwd"),
    ]
    for method, uri in requests:
        response = api.handle(method, uri, {}, body)
        assert response.status in (400, 404), (uri, response.status, response.body[:200])
        # Not the trap model's answer ({"predictions": [102.0]}): the error body may echo the
        # temp path, which can hold "102" itself (pytest-102), so match the JSON, not the digits.
        assert b'"predictions"' not in response.body and b"102.0" not in response.body
    assert core.manager.model_names() == [MODEL]


# -- fuzzing the gRPC request parsing ----------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,  # a slow example on a shared machine is not a failure; a hang is (timeouts)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
FUZZ_TIME_CAP_S = 40.0
CALL_TIMEOUT_S = 20.0  # a call over it is DEADLINE_EXCEEDED, a failure (REQUEST_ERRORS)
# Examples each fuzz test must really check: all 150 take well under a second against the
# in-process server, so only a machine about a hundred times slower runs out of the budget.
FUZZ_FLOOR = 100
REQUEST_TYPES = {
    "/tensorflow.serving.PredictionService/Predict": predict_pb2.PredictRequest,
    "/tensorflow.serving.PredictionService/Classify": classification_pb2.ClassificationRequest,
    "/tensorflow.serving.PredictionService/Regress": regression_pb2.RegressionRequest,
    "/tensorflow.serving.PredictionService/MultiInference": inference_pb2.MultiInferenceRequest,
    "/tensorflow.serving.PredictionService/GetModelMetadata":
        get_model_metadata_pb2.GetModelMetadataRequest,
    "/tensorflow.serving.ModelService/GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
}
# What a request can legitimately be refused with. INTERNAL / UNKNOWN would be an unhandled
# exception in the server, DEADLINE_EXCEEDED a hang.
REQUEST_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}


@pytest.fixture(scope="module")
def fuzz_target(half_plus_two_base: Path) -> Iterator[str]:
    with in_process_server({MODEL: half_plus_two_base}) as (_, target):
        yield target


def _raw_calls(channel: grpc.Channel) -> dict[str, Any]:
    return {
        method: channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for method in REQUEST_TYPES
    }


def _parses(method: str, data: bytes) -> bool:
    try:
        REQUEST_TYPES[method]().ParseFromString(data)
    except DecodeError:
        return False
    return True


def _assert_still_serving(channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    assert stub.GetModelStatus(request, timeout=30).model_version_status


@st.composite
def _tensors(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        dtype=draw(st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT64,
                                    types_pb2.DT_UINT8, types_pb2.DT_INVALID, 77]))
    )
    # Tiny or absurd sizes only (see tests/unit/test_fuzz_tensors.py).
    dims = st.one_of(st.integers(0, 3), st.integers(2**45, 2**62), st.just(-1))
    for size in draw(st.lists(dims, max_size=3)):
        proto.tensor_shape.dim.add().size = size
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=24), max_size=3)))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=32))
    return proto


_NAMES = st.one_of(st.sampled_from([MODEL, "", "../default", MODEL + "\x00"]), st.text(max_size=12))
_SIGNATURES = st.one_of(
    st.sampled_from(["", "serving_default", "classify_x_to_y", "regress_x_to_y",
                     "regress_x_to_y2", "classify_x2_to_y3"]),
    st.text(max_size=12),
)


@st.composite
def _predict_requests(draw: st.DrawFn) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if draw(st.integers(0, 9)):
        request.model_spec.name = draw(_NAMES)
        request.model_spec.signature_name = draw(_SIGNATURES)
        choice = draw(st.integers(0, 2))
        if choice == 1:
            request.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == 2:
            request.model_spec.version_label = draw(st.text(max_size=8))
    for alias in draw(st.lists(st.sampled_from(["x", "inputs", "y", ""]), max_size=2)):
        request.inputs[alias].CopyFrom(draw(_tensors()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["y", "scores", "z"]), max_size=2)))
    return request


@st.composite
def _example_requests(draw: st.DrawFn) -> tuple[str, Any]:
    method = draw(st.sampled_from([
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/Regress",
        "/tensorflow.serving.PredictionService/MultiInference",
    ]))
    request = REQUEST_TYPES[method]()
    spec = request.model_spec if hasattr(request, "model_spec") else None
    if spec is not None:
        spec.name = draw(_NAMES)
        spec.signature_name = draw(_SIGNATURES)
    else:
        for _ in range(draw(st.integers(0, 3))):
            task = request.tasks.add()
            task.model_spec.name = draw(_NAMES)
            task.model_spec.signature_name = draw(_SIGNATURES)
            task.method_name = draw(st.sampled_from([
                "tensorflow/serving/classify", "tensorflow/serving/regress", "nope"]))
    examples = (
        request.input.example_list_with_context.examples
        if draw(st.booleans())
        else request.input.example_list.examples
    )
    for _ in range(draw(st.integers(0, 3))):
        example = examples.add()
        for key in draw(st.lists(st.sampled_from(["x", "x2", "other"]), max_size=2)):
            feature = example.features.feature[key]
            kind = draw(st.integers(0, 2))
            if kind == 0:
                feature.float_list.value.extend(draw(st.lists(st.floats(width=32), max_size=3)))
            elif kind == 1:
                feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=8), max_size=2)))
            else:
                feature.int64_list.value.extend(draw(st.lists(st.integers(-5, 5), max_size=3)))
    return method, request


def _fuzz_run(name: str) -> FuzzRun:
    return FuzzRun(name, budget_s=FUZZ_TIME_CAP_S, example_cap_s=CALL_TIMEOUT_S + 5)


def _check_answer(call: Any, payload: bytes, may_fail_to_parse: bool, run: FuzzRun) -> None:
    try:
        call(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.INTERNAL and may_fail_to_parse:
            assert "deserializ" in str(error.details()).lower(), error.details()
            run.outcome("not a message")
            return
        assert code in REQUEST_ERRORS, f"{code}: {error.details()}"
        assert error.details(), code
        run.outcome(code.name)
    else:
        run.outcome("OK")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_arbitrary_bytes_at_every_method_get_an_answer(fuzz_target: str) -> None:
    run = _fuzz_run("bytes at every method")
    with grpc.insecure_channel(fuzz_target) as channel:
        calls = _raw_calls(channel)

        @FUZZ
        @given(st.sampled_from(sorted(calls)), st.binary(max_size=300))
        @run.example
        def check(method: str, data: bytes) -> None:
            _check_answer(calls[method], data, not _parses(method, data), run)

        check()
        _assert_still_serving(channel)
    run.assert_checked(at_least=FUZZ_FLOOR)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_arbitrary_request_messages_get_an_answer(fuzz_target: str) -> None:
    run = _fuzz_run("request messages")
    with grpc.insecure_channel(fuzz_target) as channel:
        calls = _raw_calls(channel)
        predict = calls["/tensorflow.serving.PredictionService/Predict"]

        @FUZZ
        @given(st.one_of(
            _predict_requests().map(lambda r: ("/tensorflow.serving.PredictionService/Predict", r)),
            _example_requests(),
        ))
        @run.example
        def check(case: tuple[str, Any]) -> None:
            method, request = case
            call = predict if method.endswith("/Predict") else calls[method]
            _check_answer(call, request.SerializeToString(), False, run)

        check()
        _assert_still_serving(channel)
    run.assert_checked(at_least=FUZZ_FLOOR)
