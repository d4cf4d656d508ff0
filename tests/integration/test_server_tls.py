"""TLS and mutual TLS on gRPC from TF Serving's SSLConfig (PEM contents inline)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from xception_serving.config.files import SSLConfig

from tests.fixtures.pki import Pki, make_pki
from tests.fixtures.rpc import assert_refused_in_the_tls_handshake
from tests.fixtures.servers import in_process_server


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _status(channel: grpc.Channel) -> int:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    return stub.GetModelStatus(request, timeout=10).model_version_status[0].version


def test_tls_server_answers_tls_clients_and_refuses_plaintext(
    pki: Pki, half_plus_two_base: Path
) -> None:
    ssl = SSLConfig(server_key=pki.server_key.decode(), server_cert=pki.server_cert.decode())
    with in_process_server({"default": half_plus_two_base}, ssl=ssl) as (_core, target):
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        with grpc.secure_channel(target, credentials) as channel:
            assert _status(channel) == 123
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
            _status(channel)
        assert_refused_in_the_tls_handshake(info.value, target)


def test_mutual_tls_requires_a_client_certificate_signed_by_custom_ca(
    pki: Pki, half_plus_two_base: Path
) -> None:
    ssl = SSLConfig(
        server_key=pki.server_key.decode(),
        server_cert=pki.server_cert.decode(),
        custom_ca=pki.ca.decode(),
        client_verify=True,
    )
    with in_process_server({"default": half_plus_two_base}, ssl=ssl) as (_core, target):
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki.ca,
            private_key=pki.client_key,
            certificate_chain=pki.client_cert,
        )
        with grpc.secure_channel(target, with_cert) as channel:
            assert _status(channel) == 123
        without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        with (
            grpc.secure_channel(target, without_cert) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            _status(channel)
        assert_refused_in_the_tls_handshake(info.value, target)
