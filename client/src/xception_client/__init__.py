"""Thin gRPC client for an Xception classifier served by TensorFlow Serving. No TensorFlow needed.

::

    from xception_client import Client

    with Client("localhost:8500") as client:
        for p in client.predict("cat.jpg"):
            print(f"{p.score:.3f} {p.label}")

Nothing here opens a connection at import time; each client owns one channel.
"""

from __future__ import annotations

from ._channel import TLS
from .aio import AsyncClient
from .client import Client
from .errors import (
    ArtifactError,
    ArtifactNotFound,
    AuthenticationError,
    DeadlineExceeded,
    InvalidArgument,
    InvalidImage,
    ModelMismatch,
    ModelNotFound,
    NotAGrpcServer,
    ResourceExhausted,
    ServerError,
    ServerUnavailable,
    SignatureNotFound,
    TopKTooLarge,
    XceptionClientError,
)
from .images import EncodedImage, load_image
from .metadata import ModelMetadata, ModelVersionStatus, Signature, TensorSpec
from .predictions import Prediction, decode_predictions
from .verify import RecordResult, SignatureResult, VerifyReport

__all__ = [
    "TLS",
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
    "TensorSpec",
    "TopKTooLarge",
    "VerifyReport",
    "XceptionClientError",
    "decode_predictions",
    "load_image",
]
