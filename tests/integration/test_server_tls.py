"""TLS and mutual TLS on gRPC from TF Serving's SSLConfig (PEM contents inline)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from xception_serving.config_files import SSLConfig

from tests.fixtures.servers import in_process_server


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert(
    subject: str, key, issuer_name: str, issuer_key, *, ca: bool, san: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki() -> dict[str, str]:
    ca_key = _key()
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True, san=False)
    server_key, client_key = _key(), _key()
    return {
        "ca": _pem(ca),
        "server_key": _pem_key(server_key),
        "server_cert": _pem(_cert("localhost", server_key, "test-ca", ca_key, ca=False, san=True)),
        "client_key": _pem_key(client_key),
        "client_cert": _pem(_cert("client", client_key, "test-ca", ca_key, ca=False, san=False)),
    }


def _status(channel: grpc.Channel) -> int:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    return stub.GetModelStatus(request, timeout=10).model_version_status[0].version


def test_tls_server_answers_tls_clients_and_refuses_plaintext(
    pki: dict[str, str], half_plus_two_base: Path
) -> None:
    ssl = SSLConfig(server_key=pki["server_key"], server_cert=pki["server_cert"])
    with in_process_server({"default": half_plus_two_base}, ssl=ssl) as (_core, target):
        credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"].encode())
        with grpc.secure_channel(target, credentials) as channel:
            assert _status(channel) == 123
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
            _status(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_signed_by_custom_ca(
    pki: dict[str, str], half_plus_two_base: Path
) -> None:
    ssl = SSLConfig(
        server_key=pki["server_key"],
        server_cert=pki["server_cert"],
        custom_ca=pki["ca"],
        client_verify=True,
    )
    with in_process_server({"default": half_plus_two_base}, ssl=ssl) as (_core, target):
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].encode(),
            private_key=pki["client_key"].encode(),
            certificate_chain=pki["client_cert"].encode(),
        )
        with grpc.secure_channel(target, with_cert) as channel:
            assert _status(channel) == 123
        without_cert = grpc.ssl_channel_credentials(root_certificates=pki["ca"].encode())
        with (
            grpc.secure_channel(target, without_cert) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            _status(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
