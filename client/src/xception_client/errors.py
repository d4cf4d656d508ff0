"""One exception tree for everything the client raises, mapped from gRPC status codes.

::

    XceptionClientError                 base class of everything below
    ├── InvalidArgument                 INVALID_ARGUMENT, OUT_OF_RANGE
    │   └── InvalidImage                rejected locally, or by the server on predict
    ├── ModelNotFound                   NOT_FOUND; an unknown version label (INVALID_ARGUMENT)
    ├── SignatureNotFound               FAILED_PRECONDITION (TF Serving: signature key not found)
    ├── ModelMismatch                   check_model(): unexpected served signature
    ├── ArtifactError                   verify(): an unreadable artifact (corrupt, no references)
    │   └── ArtifactNotFound            verify(): the path is no version directory or base path
    ├── TopKTooLarge (also ValueError)  top_k above the K best classes the model exports
    ├── ServerUnavailable               UNAVAILABLE (after retries; a full batch queue), CANCELLED
    │   └── NotAGrpcServer              the target speaks HTTP/1.x (a REST port?)
    ├── DeadlineExceeded                DEADLINE_EXCEEDED (the call's timeout fired)
    ├── ResourceExhausted               RESOURCE_EXHAUSTED (message too large, calls in flight)
    ├── AuthenticationError             UNAUTHENTICATED, PERMISSION_DENIED (TLS / mTLS refused)
    └── ServerError                     any other code: INTERNAL, UNKNOWN, UNIMPLEMENTED, ...

Errors from the server carry its message in ``details`` and its gRPC ``code``; they are raised
``from`` the original ``grpc.RpcError`` so the full gRPC context stays in the traceback.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "AuthenticationError",
    "DeadlineExceeded",
    "InvalidArgument",
    "InvalidImage",
    "ModelMismatch",
    "ModelNotFound",
    "NotAGrpcServer",
    "ResourceExhausted",
    "ServerError",
    "ServerUnavailable",
    "SignatureNotFound",
    "TopKTooLarge",
    "XceptionClientError",
    "from_rpc_error",
]


class XceptionClientError(Exception):
    """Base class of every error the client raises.

    ``code`` is the gRPC status code when the error came from a call (None for local checks);
    ``details`` is the server's (or the local check's) message.
    """

    grpc_codes: ClassVar[tuple[grpc.StatusCode, ...]] = ()

    def __init__(self, details: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details if code is None else f"{code.name}: {details}")
        self.details = details
        self.code = code


class InvalidArgument(XceptionClientError):
    """The server rejected the request as malformed (INVALID_ARGUMENT, OUT_OF_RANGE)."""

    grpc_codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


class InvalidImage(InvalidArgument):
    """An image could not be used: rejected locally before sending, or by the server's decoder."""


class ModelNotFound(XceptionClientError):
    """No such model, version or version label is being served (NOT_FOUND)."""

    grpc_codes = (grpc.StatusCode.NOT_FOUND,)


class SignatureNotFound(XceptionClientError):
    """The model has no signature with the requested key (TF Serving: FAILED_PRECONDITION)."""

    grpc_codes = (grpc.StatusCode.FAILED_PRECONDITION,)


class ModelMismatch(XceptionClientError):
    """The served model's signature differs from what this client expects (see Client.check_model).

    ``problems`` lists each difference as one sentence.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class ArtifactError(XceptionClientError):
    """An exported artifact verify cannot use: a corrupt warmup file, records without reference
    answers, an unreadable saved_model.pb."""


class ArtifactNotFound(ArtifactError):
    """The path given to verify is neither a version directory nor a base path holding one."""


class TopKTooLarge(XceptionClientError, ValueError):
    """``top_k`` asked for more classes than the model's top_k_* outputs hold."""

    def __init__(self, requested: int, exported: int) -> None:
        super().__init__(
            f"top_k={requested} but the served model exports its {exported} best classes "
            f"(top_k_* outputs). Use top_k <= {exported}, probabilities() for every class, "
            f"or re-export the model with --top-k {requested}."
        )
        self.requested = requested
        self.exported = exported


class ServerUnavailable(XceptionClientError):
    """The server could not be reached, went away, or refused the call for now (its batch queue
    full), after the channel's retries (UNAVAILABLE)."""

    grpc_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class NotAGrpcServer(ServerUnavailable):
    """The target speaks HTTP/1.1, not gRPC: most likely a REST port (TF Serving's is 8501)."""


class DeadlineExceeded(XceptionClientError, TimeoutError):
    """The call did not finish within its timeout (DEADLINE_EXCEEDED)."""

    grpc_codes = (grpc.StatusCode.DEADLINE_EXCEEDED,)


class ResourceExhausted(XceptionClientError):
    """A limit was hit: message size, or the server's limit on calls in flight (TF Serving's
    --grpc_max_threads) (RESOURCE_EXHAUSTED). A full batch queue is UNAVAILABLE instead."""

    grpc_codes = (grpc.StatusCode.RESOURCE_EXHAUSTED,)


class AuthenticationError(XceptionClientError):
    """The server refused the credentials (UNAUTHENTICATED, PERMISSION_DENIED)."""

    grpc_codes = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class ServerError(XceptionClientError):
    """Any other gRPC failure: INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ABORTED, ..."""


# Filled from each class's declared codes, so the docstring tree, the classes and the lookup agree.
_BY_CODE: dict[grpc.StatusCode, type[XceptionClientError]] = {
    code: cls
    for cls in (
        InvalidArgument,
        ModelNotFound,
        SignatureNotFound,
        ServerUnavailable,
        DeadlineExceeded,
        ResourceExhausted,
        AuthenticationError,
    )
    for code in cls.grpc_codes
}

# gRPC core's wording when the peer answered a gRPC call with HTTP/1.x instead of HTTP/2.
_HTTP1_MARKERS = ("http1.x server", "Failed parsing HTTP/2", "Expected SETTINGS frame")
_LABEL_MARKER = "version label"
# gRPC core's wording when the peer hung up before HTTP/2 started: what a TLS server does to a
# plaintext client, and a mutual-TLS server to a client without an accepted certificate.
_CLOSED_MARKER = "Socket closed"


def from_rpc_error(
    error: grpc.RpcError, *, target: str = "", image_call: bool = False
) -> XceptionClientError:
    """Translate a ``grpc.RpcError`` (sync or aio) into this module's tree.

    ``image_call`` marks calls that carry images (predict): there INVALID_ARGUMENT means the
    server could not use an image, so it becomes :class:`InvalidImage`.
    """
    code = _call_code(error)
    details = _call_details(error)
    if code == grpc.StatusCode.UNAVAILABLE and any(m in details for m in _HTTP1_MARKERS):
        return NotAGrpcServer(
            f"{target or 'the target'} does not speak gRPC (it answered HTTP/1.x): is it a REST "
            "port? "
            f"Point the client at the gRPC port (TF Serving's default is 8500). ({details})",
            code=code,
        )
    if code == grpc.StatusCode.UNAVAILABLE and _CLOSED_MARKER in details:
        return ServerUnavailable(
            f"{target or 'the target'} closed the connection without answering. A TLS server "
            "does this to a plaintext client (pass tls=True or tls=TLS(...)), and a mutual-TLS "
            "server to a client without an accepted certificate (TLS(certificate_chain=..., "
            f"private_key=...)); otherwise the server went away. ({details})",
            code=code,
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT and _LABEL_MARKER in details:
        return ModelNotFound(details, code=code)
    if code == grpc.StatusCode.INVALID_ARGUMENT and image_call:
        return InvalidImage(details, code=code)
    cls = _BY_CODE.get(code, ServerError) if code is not None else ServerError
    return cls(details, code=code)


def _call_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else None


def _call_details(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    result = details() if callable(details) else None
    return str(result) if result else str(error)
