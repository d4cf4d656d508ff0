"""Security: TLS and mutual TLS between the project's client and the server (certificates made
here with `cryptography`), loopback-only binding by default, and no file path reachable from a
request. The fuzzing of the gRPC request handling is in test_fuzz_grpc_requests.py.

The CLI path (`--ssl_config_file`, default `--host`) runs as a subprocess; mutual TLS and paths
use the in-process server (same GrpcServer and ServingCore, seconds instead of a TensorFlow
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
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from xception_client import TLS, Client, ServerUnavailable
from xception_serving.config.files import SSLConfig

from tests.fixtures.pki import Pki, make_pki
from tests.fixtures.rest import error_text
from tests.fixtures.rpc import rpc_error
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
        with Client(
            tls_server.grpc_target, model_name=MODEL, tls=TLS(root_certificates=roots), timeout=30
        ) as client:
            (status,) = client.status()
            assert status.state == "AVAILABLE"
            assert "serving_default" in client.metadata().signatures


def test_plaintext_client_against_a_tls_server_fails_fast_with_a_clear_error(
    tls_server: ServerProcess,
) -> None:
    started = time.monotonic()
    with (
        Client(tls_server.grpc_target, model_name=MODEL, retries=0, timeout=20) as client,
        pytest.raises(ServerUnavailable) as info,
    ):
        client.status()
    assert time.monotonic() - started < 10  # refused, not left waiting for the deadline
    assert "A TLS server does this to a plaintext client" in str(info.value)
    assert "tls=" in str(info.value)


def test_client_that_does_not_trust_the_server_certificate_is_refused(
    tls_server: ServerProcess, pki: Pki
) -> None:
    with (
        Client(
            tls_server.grpc_target,
            model_name=MODEL,
            retries=0,
            timeout=20,
            tls=TLS(root_certificates=pki.stranger_ca),
        ) as client,
        pytest.raises(ServerUnavailable) as info,
    ):
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
    tls = TLS(
        root_certificates=pki.ca, certificate_chain=pki.client_cert, private_key=pki.client_key
    )
    with Client(mtls_target, model_name=MODEL, tls=tls, timeout=30) as client:
        assert client.status()[0].state == "AVAILABLE"


@pytest.mark.parametrize("credentials", ["none", "stranger"])
def test_mutual_tls_refuses_a_client_without_an_accepted_certificate(
    mtls_target: str, pki: Pki, credentials: str
) -> None:
    tls = (
        TLS(root_certificates=pki.ca)
        if credentials == "none"
        else TLS(
            root_certificates=pki.ca,
            certificate_chain=pki.stranger_cert,
            private_key=pki.stranger_key,
        )
    )
    with (
        Client(mtls_target, model_name=MODEL, tls=tls, retries=0, timeout=20) as client,
        pytest.raises(ServerUnavailable) as info,
    ):
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
            status = get_model_status_pb2.GetModelStatusRequest(model_spec=request.model_spec)
            metadata = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=request.model_spec, metadata_field=["signature_def"]
            )
            # A name is only ever a key among the served models: TF Serving's "not found".
            for call, sent, message in (
                (predict.Predict, request, f"Servable not found for request: Latest({name})"),
                (models.GetModelStatus, status, f"Could not find any versions of model {name}"),
                (
                    predict.GetModelMetadata,
                    metadata,
                    f"Servable not found for request: Latest({name})",
                ),
            ):
                error = rpc_error(call, sent, timeout=10)
                assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, message)
        # Labels and signature names that are paths: refused with TF Serving's codes and words.
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = "../trap"
        error = rpc_error(predict.Predict, request, timeout=10)
        assert (error.code(), error.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: ../trap",
        )
        request.model_spec.ClearField("version_label")
        request.model_spec.signature_name = "../../trap/1/saved_model.pb"
        error = rpc_error(predict.Predict, request, timeout=10)
        assert (error.code(), error.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "../../trap/1/saved_model.pb" not found.',
        )
    assert core.manager.model_names() == [MODEL]  # nothing else was ever loaded


def test_rest_paths_that_name_files_are_refused(path_trap: Any) -> None:
    from xception_serving.api.rest.handler import RestApi

    root, core, _ = path_trap
    api = RestApi(core, core.metrics, monitoring_path=None)
    trap = str(root / "trap")
    not_found = "Servable not found for request: Latest({})"
    cases = [  # (method, URI, HTTP status, TF Serving's error)
        ("POST", "/v1/models/..%2Ftrap:predict", 404, not_found.format("../trap")),
        ("POST", "/v1/models/%2E%2E%2F%2E%2E%2Ftrap:predict", 404, not_found.format("../../trap")),
        ("POST", f"/v1/models/{'%2F'.join(trap.split('/'))}:predict", 404, not_found.format(trap)),
        (
            "POST",
            "/v1/models/../trap:predict",
            400,
            "Malformed request: POST /v1/models/../trap:predict",
        ),
        (
            "POST",
            f"/v1/models/{MODEL}/labels/..%2Ftrap:predict",
            400,
            "Unrecognized servable version label: ../trap",
        ),
        ("GET", "/v1/models/..%2Ftrap", 404, "Could not find any versions of model ../trap"),
        ("GET", "/v1/models/%2Fetc%2Fpasswd/metadata", 404, not_found.format("/etc/passwd")),
        ("GET", "/v1/../../etc/passwd", 400, "Malformed request: GET /v1/../../etc/passwd"),
    ]
    for method, uri, status, message in cases:
        response = api.handle(method, uri, {}, b'{"instances": [2.0]}')
        # Not the trap model's answer ({"predictions": [102.0]}), but TF Serving's refusal.
        assert (response.status, error_text(response.body)) == (status, message), uri
    assert core.manager.model_names() == [MODEL]
