"""Public surface of xception_client: exports, error tree, constructor checks, channel defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
import xception_client
import xception_contract as contract
from xception_client import (
    Client,
    Prediction,
    XceptionClientError,
    _channel,
    decode_predictions,
    errors,
)
from xception_client.metadata import ModelMetadata, Signature, TensorSpec, signature_problems

PACKAGE = Path(xception_client.__file__).parent


def test_public_names_are_pinned() -> None:
    assert sorted(xception_client.__all__) == [
        "ArtifactError",
        "ArtifactNotFound",
        "AsyncClient",
        "AuthenticationError",
        "Client",
        "DeadlineExceeded",
        "EncodedImage",
        "InvalidArgument",
        "InvalidImage",
        "ModelMetadata",
        "ModelMismatch",
        "ModelNotFound",
        "ModelVersionStatus",
        "NotAGrpcServer",
        "Prediction",
        "RecordResult",
        "ResourceExhausted",
        "ServerError",
        "ServerUnavailable",
        "Signature",
        "SignatureNotFound",
        "SignatureResult",
        "TLS",
        "TensorSpec",
        "TopKTooLarge",
        "VerifyReport",
        "XceptionClientError",
        "decode_predictions",
        "load_image",
    ]
    for name in xception_client.__all__:
        assert hasattr(xception_client, name), name


def test_package_ships_py_typed_and_protos() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert {p.name for p in (PACKAGE / "_proto").glob("*.proto")} == {
        "serving.proto",
        "tensorflow.proto",
    }


def _tree(cls: type, depth: int = 0) -> list[str]:
    lines = [f"{'  ' * depth}{cls.__name__}"]
    for sub in sorted(cls.__subclasses__(), key=lambda c: c.__name__):
        if sub.__module__ == errors.__name__:
            lines += _tree(sub, depth + 1)
    return lines


def test_error_tree_is_pinned_and_drawn_in_the_docstring() -> None:
    assert _tree(XceptionClientError) == [
        "XceptionClientError",
        "  ArtifactError",
        "    ArtifactNotFound",
        "  AuthenticationError",
        "  DeadlineExceeded",
        "  InvalidArgument",
        "    InvalidImage",
        "  ModelMismatch",
        "  ModelNotFound",
        "  ResourceExhausted",
        "  ServerError",
        "  ServerUnavailable",
        "    NotAGrpcServer",
        "  SignatureNotFound",
        "  TopKTooLarge",
    ]
    drawn = set(re.findall(r"[├└]── (\w+)", errors.__doc__ or ""))
    assert drawn == {line.strip() for line in _tree(XceptionClientError)[1:]}
    assert issubclass(errors.DeadlineExceeded, TimeoutError)
    assert issubclass(errors.TopKTooLarge, ValueError)


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "image_call", "expected"),
    [
        (
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(x)",
            False,
            errors.ModelNotFound,
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
            True,
            errors.ModelNotFound,
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "Invalid JPEG data", True, errors.InvalidImage),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field x is not supported",
            False,
            errors.InvalidArgument,
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "x" not found.',
            True,
            errors.SignatureNotFound,
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses",
            False,
            errors.ServerUnavailable,
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "Trying to connect an http1.x server (HTTP status 400)",
            False,
            errors.NotAGrpcServer,
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", True, errors.DeadlineExceeded),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max",
            False,
            errors.ResourceExhausted,
        ),
        (grpc.StatusCode.UNAUTHENTICATED, "no cert", False, errors.AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, "denied", False, errors.AuthenticationError),
        (grpc.StatusCode.INTERNAL, "boom", True, errors.ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found", False, errors.ServerError),
    ],
)
def test_rpc_errors_map_to_the_typed_tree_with_the_server_message(
    code: grpc.StatusCode, details: str, image_call: bool, expected: type
) -> None:
    error = errors.from_rpc_error(_FakeRpcError(code, details), target="h:1", image_call=image_call)
    assert type(error) is expected
    assert error.code == code
    assert details in error.details


def test_not_a_grpc_server_error_points_at_the_grpc_port() -> None:
    error = errors.from_rpc_error(
        _FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Trying to connect an http1.x server"),
        target="localhost:8501",
    )
    assert "localhost:8501" in str(error) and "8500" in str(error)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds; received: 0"),
        ({"timeout": float("inf")}, "received: inf"),
        ({"retries": -1}, "retries=-1"),
        ({"model_version": 1, "version_label": "stable"}, "not both"),
        ({"signature": "nope"}, "signature='nope'"),
        ({"compression": "brotli"}, "compression='brotli'"),
    ],
)
def test_client_rejects_bad_arguments_echoing_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Client("localhost:1", **kwargs)


def test_client_constructor_is_keyword_only_after_target() -> None:
    with pytest.raises(TypeError):
        Client("localhost:1", "xception")  # type: ignore[misc]


def test_predict_rejects_bad_top_k_and_empty_batch_before_sending() -> None:
    with Client("127.0.0.1:1", timeout=1.0) as client:
        with pytest.raises(ValueError, match="top_k=0"):
            client.predict(b"x", top_k=0)
        with pytest.raises(ValueError, match="empty"):
            client.predict_batch([])
        with pytest.raises(xception_client.InvalidImage):
            client.predict(b"not an image")


def test_comma_separated_target_becomes_a_static_multi_address_uri() -> None:
    assert _channel.resolve_target("127.0.0.1:1,127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert _channel.resolve_target("[::1]:1, [::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert _channel.resolve_target("localhost:7,127.0.0.1:8").startswith(("ipv4:", "ipv6:"))
    for passthrough in ("localhost:8500", "dns:///svc.ns:8500", "ipv4:1.2.3.4:1,1.2.3.5:1"):
        assert _channel.resolve_target(passthrough) == passthrough
    with pytest.raises(ValueError, match="'nope'"):
        _channel.resolve_target("127.0.0.1:1,nope")
    with pytest.raises(ValueError, match=r"cannot resolve 'no-such-host\.invalid'"):
        _channel.resolve_target("127.0.0.1:1,no-such-host.invalid:2")


def test_service_config_retries_unavailable_only_and_balances_round_robin() -> None:
    config = json.loads(_channel.service_config(3))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert {n["service"] for n in method["name"]} == {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    }
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] == 4
    assert (
        json.loads(_channel.service_config(50))["methodConfig"][0]["retryPolicy"]["maxAttempts"]
        == 5
    )
    assert "methodConfig" not in json.loads(_channel.service_config(0))


def test_channel_options_raise_message_limits_and_let_users_override() -> None:
    options = dict(_channel.channel_options(3))
    assert options["grpc.max_receive_message_length"] > 4 * 1024 * 1024
    assert options["grpc.max_send_message_length"] > 4 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] >= 10_000
    overridden = dict(_channel.channel_options(3, [("grpc.max_receive_message_length", 123)]))
    assert overridden["grpc.max_receive_message_length"] == 123


def test_mutual_tls_needs_both_certificate_and_key() -> None:
    with pytest.raises(ValueError, match="both"):
        Client("localhost:1", tls=xception_client.TLS(certificate_chain=b"x"))


def test_tls_flags_give_tls_when_any_asks_for_it_and_plaintext_otherwise() -> None:
    TLS = xception_client.TLS
    assert TLS.from_flags(False, None, None, None) is None
    assert TLS.from_flags(True, None, None, None) == TLS()
    assert TLS.from_flags(False, "ca.pem", None, None) == TLS(root_certificates="ca.pem")
    assert TLS.from_flags(False, None, b"cert", b"key") == TLS(
        certificate_chain=b"cert", private_key=b"key"
    )


def test_decode_predictions_has_keras_shape() -> None:
    batch = [[Prediction("tabby", "n02123045", 0.7, 281), Prediction("cat", None, 0.2, 1)]]
    assert decode_predictions(batch) == [[("n02123045", "tabby", 0.7), ("", "cat", 0.2)]]


def test_a_prediction_is_immutable() -> None:
    prediction = Prediction("tabby", None, 0.5, 1)
    with pytest.raises(AttributeError):
        prediction.score = 1.0  # type: ignore[misc]


def _metadata(**outputs: TensorSpec) -> ModelMetadata:
    good = {
        contract.TOP_K_SCORES_OUTPUT: TensorSpec("DT_FLOAT", (None, 5)),
        contract.TOP_K_CLASS_IDS_OUTPUT: TensorSpec("DT_INT32", (None, 5)),
        contract.TOP_K_LABELS_OUTPUT: TensorSpec("DT_STRING", (None, 5)),
    }
    good.update(outputs)
    signature = Signature(
        contract.PREDICT_METHOD,
        {contract.IMAGE_BYTES_INPUT: TensorSpec("DT_STRING", (None,))},
        good,
    )
    return ModelMetadata("xception", 1, {contract.BYTES_SIGNATURE: signature})


def test_signature_check_accepts_the_contract_and_explains_mismatches() -> None:
    assert signature_problems(_metadata(), contract.BYTES_SIGNATURE) == []
    (problem,) = signature_problems(
        _metadata(top_k_scores=TensorSpec("DT_DOUBLE", (None, 5))), contract.BYTES_SIGNATURE
    )
    expected = "expected output 'top_k_scores' DT_FLOAT [-1, K], server has DT_DOUBLE [-1, 5]"
    assert expected in problem
    (missing,) = signature_problems(_metadata(), contract.PIXELS_SIGNATURE)
    assert "no signature 'serving_pixels' (it has: serving_default)" in missing
    wrong_input = _metadata()
    sig = wrong_input.signatures[contract.BYTES_SIGNATURE]
    bad = ModelMetadata(
        "xception",
        1,
        {
            contract.BYTES_SIGNATURE: Signature(
                sig.method_name,
                {"input_8": TensorSpec("DT_FLOAT", (None, 299, 299, 3))},
                sig.outputs,
            )
        },
    )
    (problem,) = signature_problems(bad, contract.BYTES_SIGNATURE)
    assert "expected input 'image_bytes' DT_STRING, server has inputs 'input_8' DT_FLOAT" in problem


def test_async_client_takes_exactly_the_client_constructor_arguments() -> None:
    import inspect

    from xception_client import AsyncClient, Client

    assert inspect.signature(AsyncClient) == inspect.signature(Client)
    assert "timeout" in inspect.signature(Client).parameters


_PUBLIC_CALLS = (
    "predict",
    "predict_batch",
    "predict_many",
    "probabilities",
    "metadata",
    "status",
    "check_model",
    "verify",
)


def _raises_section(doc: str) -> list[str]:
    """The exception names of a docstring's ``Raises:`` section, in order."""
    _, found, rest = doc.partition("\n        Raises:\n")
    assert found, "no Raises: section"
    return re.findall(r"^            (\w+):", rest, re.M)


@pytest.mark.parametrize("cls", [xception_client.Client, xception_client.AsyncClient])
@pytest.mark.parametrize("name", _PUBLIC_CALLS)
def test_each_public_call_documents_the_typed_errors_it_raises(cls: type, name: str) -> None:
    named = _raises_section(getattr(cls, name).__doc__ or "")
    known = set(errors.__all__) | {"ValueError"}
    assert named and set(named) <= known, f"{cls.__name__}.{name} names {set(named) - known}"
    if name != "predict_many":  # it raises them while iterating, as XceptionClientError
        # Every call may meet these: the server down, the deadline, no such model.
        assert {"ServerUnavailable", "DeadlineExceeded", "ModelNotFound"} <= set(named)
