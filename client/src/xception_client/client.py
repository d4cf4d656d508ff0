"""The synchronous client. ``aio.AsyncClient`` is its twin with the same methods on ``grpc.aio``."""

from __future__ import annotations

import io
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar, overload

import grpc
import numpy as np
import xception_contract as contract
from PIL import Image

from . import _channel, _stream, _wire
from ._channel import TLS, ChannelOption
from ._stream import Result
from .errors import (
    InvalidImage,
    ModelMismatch,
    TopKTooLarge,
    XceptionClientError,
    from_rpc_error,
)
from .images import ImageInput, load_image
from .metadata import ModelMetadata, ModelVersionStatus, signature_problems
from .predictions import Prediction
from .tracing import prepare_images_span
from .verify import DEFAULT_ATOL, RecordResult, Verification, VerifyReport

__all__ = ["DEFAULT_IMAGES_PER_REQUEST", "DEFAULT_RETRIES", "DEFAULT_TIMEOUT", "Client"]

DEFAULT_TIMEOUT = 10.0  # seconds, for every call
DEFAULT_RETRIES = 3  # extra attempts after UNAVAILABLE (gRPC service-config retry policy)
# predict_many's packing: measured with `make bench` (client CPU per image, see the README);
# at most the CPU batching config's max_batch_size (4), far below the GPU one's (64).
DEFAULT_IMAGES_PER_REQUEST = 4
_SIGNATURES = (contract.BYTES_SIGNATURE, contract.PIXELS_SIGNATURE)
# predict() sends no output_filter: top_k_keys exists only for models whose labels have keys, and
# filtering on a missing alias is an error in TF Serving. The cost is the probabilities output
# (4 bytes x C per image) riding along.

T = TypeVar("T")


class _Base:
    """Configuration, validation and request building shared by Client and AsyncClient (no I/O)."""

    # The twins differ only in the channel they open (grpc.Channel or grpc.aio.Channel).
    _open_channel: Callable[[_channel.ChannelConfig], Any]

    def __init__(
        self,
        target: str = f"localhost:{contract.DEFAULT_GRPC_PORT}",
        *,
        model_name: str = contract.DEFAULT_MODEL_NAME,
        model_version: int | None = None,
        version_label: str | None = None,
        signature: str = contract.BYTES_SIGNATURE,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        tls: bool | TLS | None = None,
        compression: str | None = None,
        channel_options: Sequence[ChannelOption] = (),
        max_pixels: int = contract.DEFAULT_MAX_PIXELS,
        apply_exif_orientation: bool = False,
        wait_for_ready: bool = False,
    ) -> None:
        if model_version is not None and version_label is not None:
            raise ValueError(
                "give model_version or version_label, not both; received: "
                f"model_version={model_version}, version_label={version_label!r}"
            )
        if signature not in _SIGNATURES:
            raise ValueError(
                f"signature must be one of {_SIGNATURES}; received: signature={signature!r}"
            )
        self._timeout = _check_timeout(timeout)
        self._model = _wire.ModelRef(model_name, model_version, version_label, signature)
        self._config = _channel.make_config(
            target,
            retries=retries,
            tls=tls,
            compression=compression,
            extra_options=channel_options,
        )
        self.target = target
        self._max_pixels = max_pixels
        self._exif = apply_exif_orientation
        self._wait_for_ready = wait_for_ready
        self._exported_k: int | None = None  # learned from the first response
        self._channel = type(self)._open_channel(self._config)
        self._calls = {
            method.path: self._channel.unary_unary(
                method.path,
                request_serializer=method.serializer,
                response_deserializer=method.deserializer,
            )
            for method in (
                _wire.PREDICT,
                _wire.CLASSIFY,
                _wire.GET_MODEL_METADATA,
                _wire.GET_MODEL_STATUS,
            )
        }

    @property
    def timeout(self) -> float:
        """Default deadline of every call, in seconds."""
        return self._timeout

    def request_size(self, images: Sequence[ImageInput]) -> int:
        """Bytes of the serialized PredictRequest that ``predict_batch(images)`` sends.

        The images are loaded and checked as for that call (a bad one raises
        :class:`~xception_client.InvalidImage`), but nothing is sent. The figure is the protobuf
        message alone, before gRPC's framing and any compression: the number to compare with
        another client's request for the same images.

        Raises:
            InvalidImage: an image the client cannot load or use.
            ValueError: no images.
        """
        if not images:
            raise ValueError("images is empty; give at least one image")
        return int(self._images_request(images).ByteSize())

    def _deadline(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else _check_timeout(timeout)

    def _predict_request(self, images: Sequence[ImageInput], top_k: int) -> Any:
        if not images:
            raise ValueError("images is empty; give at least one image")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1; received: top_k={top_k}")
        if self._exported_k is not None and top_k > self._exported_k:
            raise TopKTooLarge(top_k, self._exported_k)
        return self._images_request(images)

    def _images_request(self, images: Sequence[ImageInput], outputs: Sequence[str] = ()) -> Any:
        """The PredictRequest of the client's signature for ``images`` (loaded and checked)."""
        with prepare_images_span(self._model, len(images)) as span:
            if self._model.signature == contract.PIXELS_SIGNATURE:
                pixels = self._pixels(images)
                span.set_bytes(pixels.nbytes)
                return _wire.predict_pixels_request(self._model, pixels, outputs)
            encoded = [
                load_image(
                    image, max_pixels=self._max_pixels, apply_exif_orientation=self._exif
                ).data
                for image in images
            ]
            span.set_bytes(sum(len(data) for data in encoded))
            return _wire.predict_bytes_request(self._model, encoded, outputs)

    def _pixels(self, images: Sequence[ImageInput]) -> np.ndarray[Any, Any]:
        arrays = []
        for image in images:
            encoded = load_image(
                image, max_pixels=self._max_pixels, apply_exif_orientation=self._exif
            )
            with Image.open(io.BytesIO(encoded.data)) as decoded:
                arrays.append(np.asarray(decoded.convert("RGB"), dtype=np.uint8))
        if len({a.shape for a in arrays}) != 1:
            raise InvalidImage(
                "the pixel signature needs every image at the model's size; received shapes "
                f"{sorted({a.shape for a in arrays})}"
            )
        return np.stack(arrays)

    def _parse_predict(self, response: Any, top_k: int) -> list[list[Prediction]]:
        try:
            return _wire.parse_top_k(response, top_k)
        except TopKTooLarge as error:
            self._exported_k = error.exported
            raise

    def _probabilities_request(self, images: Sequence[ImageInput]) -> Any:
        if not images:
            raise ValueError("images is empty; give at least one image")
        return self._images_request(images, (contract.PROBABILITIES_OUTPUT,))

    def _error(self, error: grpc.RpcError, *, image_call: bool = False) -> XceptionClientError:
        return from_rpc_error(error, target=self.target, image_call=image_call)

    def _check(self, metadata: ModelMetadata) -> ModelMetadata:
        problems = signature_problems(metadata, self._model.signature)
        if problems:
            raise ModelMismatch(problems)
        return metadata

    def _verification(self, artifact: str | os.PathLike[str], atol: float) -> Verification:
        # Replays go to the client's model name and version (or label); signatures come from
        # each record, so the client's own signature setting does not apply.
        return Verification(artifact, self._model, self.target, atol)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.target!r}, model_name={self._model.name!r}, "
            f"signature={self._model.signature!r}, timeout={self._timeout})"
        )


class Client(_Base):
    """A gRPC client for the Xception model served by TF Serving (or the local server).

    ::

        with Client("localhost:8500") as client:
            for p in client.predict("cat.jpg", top_k=3):
                print(p.label, p.score)

    ``target`` is ``"host:port"``, ``"dns:///host:port"`` (all addresses, round-robin; use a
    Kubernetes headless Service), or ``"h1:p1,h2:p2"``. ``timeout`` (seconds) is the deadline of
    every call unless a method's ``timeout=`` overrides it. ``retries`` is how many times gRPC
    retries a call that failed with UNAVAILABLE (0 disables). ``tls=True`` uses the system's roots;
    pass :class:`TLS` for a private CA or mutual TLS. ``compression`` is None, "gzip" or "deflate".
    ``channel_options`` are extra gRPC channel arguments (they override the defaults).
    ``wait_for_ready=True`` makes calls wait (within their deadline) for an unreachable server
    instead of failing fast.
    """

    _open_channel = staticmethod(_channel.open_channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; in-flight calls are cancelled. Safe to call twice."""
        self._channel.close()

    def _call(
        self,
        method: _wire.Method[Any, Any],
        request: Any,
        timeout: float | None,
        *,
        image_call: bool = False,
    ) -> Any:
        try:
            return self._calls[method.path](
                request, timeout=self._deadline(timeout), wait_for_ready=self._wait_for_ready
            )
        except grpc.RpcError as error:
            raise self._error(error, image_call=image_call) from error

    def predict(
        self,
        image: ImageInput,
        *,
        top_k: int = contract.DEFAULT_TOP_K,
        timeout: float | None = None,
    ) -> list[Prediction]:
        """Classify one image: its ``top_k`` best classes, best first.

        Raises:
            InvalidImage: an image the client cannot load or use, or one the server's decoder
                rejects.
            SignatureNotFound: the served model has no signature of this client's name.
            InvalidArgument: any other request the server rejects as malformed.
            TopKTooLarge: top_k above the K best classes the model exports.
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
            ValueError: top_k < 1 or a timeout that is not a positive number.
        """
        return self.predict_batch([image], top_k=top_k, timeout=timeout)[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        *,
        top_k: int = contract.DEFAULT_TOP_K,
        timeout: float | None = None,
    ) -> list[list[Prediction]]:
        """Classify several images in one request (one list of predictions per image, in order).

        Raises:
            InvalidImage: an image the client cannot load or use, or one the server's decoder
                rejects.
            SignatureNotFound: the served model has no signature of this client's name.
            InvalidArgument: any other request the server rejects as malformed.
            TopKTooLarge: top_k above the K best classes the model exports.
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
            ValueError: no images, top_k < 1, or a timeout that is not a positive number.
        """
        request = self._predict_request(images, top_k)
        response = self._call(_wire.PREDICT, request, timeout, image_call=True)
        return self._parse_predict(response, top_k)

    @overload
    def predict_many(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = ...,
        concurrency: int = ...,
        images_per_request: int = ...,
        timeout: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> Iterator[list[Prediction]]: ...

    @overload
    def predict_many(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = ...,
        concurrency: int = ...,
        images_per_request: int = ...,
        timeout: float | None = ...,
        return_exceptions: Literal[True],
    ) -> Iterator[list[Prediction] | XceptionClientError]: ...

    def predict_many(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = contract.DEFAULT_TOP_K,
        concurrency: int = 8,
        images_per_request: int = DEFAULT_IMAGES_PER_REQUEST,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[list[Prediction] | XceptionClientError]:
        """Classify a stream of images, at most ``concurrency`` requests in flight.

        ``images_per_request`` consecutive images share one Predict: grpcio's per-call CPU is
        most of the client's cost, so packing cuts it per image (keep it at or below the
        server's ``max_batch_size``). Each image still gets its own result, in input order, as
        soon as its request is answered; the input iterable is consumed lazily (at most
        ``concurrency * images_per_request`` ahead), so it may be unbounded. An image the
        client rejects is left out of its request, and a request the server rejects as a bad
        image is re-sent one image at a time, so a bad image fails only itself. Every request
        has the same per-call ``timeout``. With ``return_exceptions=True`` a failed image yields
        its :class:`XceptionClientError` in place instead of stopping the stream.

        Raises:
            XceptionClientError: while iterating, the first image that fails (any of those
                :meth:`predict_batch` raises), unless ``return_exceptions=True`` yields it in
                its place.
            ValueError: concurrency or images_per_request < 1, or a bad timeout.
        """
        _stream.check_options(concurrency, images_per_request)
        deadline = self._deadline(timeout)
        pending: deque[tuple[list[ImageInput], Any]] = deque()  # (images, future or error)

        def emit() -> Iterator[Result]:
            group, sent = pending.popleft()
            results = self._group_results(group, sent, top_k, deadline)
            return _stream.surface(results, return_exceptions)

        try:
            for group in _stream.batches(images, images_per_request):
                pending.extend(self._submit(group, top_k, deadline))
                while len(pending) >= concurrency:
                    yield from emit()
            while pending:
                yield from emit()
        finally:  # the caller stopped early or an error escaped: drop what is still in flight
            for _group, sent in pending:
                if not isinstance(sent, XceptionClientError):
                    sent.cancel()

    def _send(self, group: list[ImageInput], top_k: int, deadline: float) -> Any:
        """A Predict future for ``group``, or the error the client rejects it with."""
        try:
            request = self._predict_request(group, top_k)
        except XceptionClientError as error:
            return error
        stub = self._calls[_wire.PREDICT.path]
        return stub.future(request, timeout=deadline, wait_for_ready=self._wait_for_ready)

    def _submit(
        self, group: list[ImageInput], top_k: int, deadline: float
    ) -> list[tuple[list[ImageInput], Any]]:
        """``group`` sent as one request; if the client rejects it, each image alone."""
        sent = self._send(group, top_k, deadline)
        if isinstance(sent, XceptionClientError) and len(group) > 1:
            # find the image the client rejects; send the others
            return [([image], self._send([image], top_k, deadline)) for image in group]
        return [(group, sent)]

    def _answer(self, sent: Any, top_k: int) -> list[list[Prediction]]:
        """The predictions of a sent request (waiting for it), or its error raised."""
        if isinstance(sent, XceptionClientError):
            raise sent
        try:
            return self._parse_predict(sent.result(), top_k)
        except grpc.RpcError as error:
            raise self._error(error, image_call=True) from error

    def _group_results(
        self, group: list[ImageInput], sent: Any, top_k: int, deadline: float
    ) -> list[Result]:
        """One result per image of ``group``; a bad image's request is re-sent image by image."""
        try:
            return list(self._answer(sent, top_k))
        except XceptionClientError as error:
            results = _stream.failure_results(group, error)
        if results is not None:
            return results
        return [
            result
            for image in group
            for result in self._group_results(
                [image], self._send([image], top_k, deadline), top_k, deadline
            )
        ]

    def probabilities(
        self, images: Sequence[ImageInput], *, timeout: float | None = None
    ) -> np.ndarray[Any, Any]:
        """Every class's probability, float32 [len(images), C], from the probabilities output.

        Use it when you need more than the K best classes the model exports (top_k_* outputs).

        Raises:
            InvalidImage: an image the client cannot load or use, or one the server's decoder
                rejects.
            SignatureNotFound: the served model has no signature of this client's name.
            InvalidArgument: any other request the server rejects as malformed.
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
            ValueError: no images, or a timeout that is not a positive number.
        """
        request = self._probabilities_request(images)
        response = self._call(_wire.PREDICT, request, timeout, image_call=True)
        return _wire.parse_probabilities(response)

    def metadata(self, *, timeout: float | None = None) -> ModelMetadata:
        """The model's signatures, from TF Serving's GetModelMetadata.

        Raises:
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
        """
        response = self._call(
            _wire.GET_MODEL_METADATA, _wire.metadata_request(self._model), timeout
        )
        return _wire.parse_metadata(response)

    def status(self, *, timeout: float | None = None) -> list[ModelVersionStatus]:
        """Every version the server tracks for the model, newest first (GetModelStatus).

        Raises:
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
        """
        response = self._call(_wire.GET_MODEL_STATUS, _wire.status_request(self._model), timeout)
        return _wire.parse_status(response)

    def check_model(self, *, timeout: float | None = None) -> ModelMetadata:
        """Read the model's metadata and raise :class:`ModelMismatch` explaining any difference
        between the served signature and what this client sends and reads.

        Raises:
            ModelMismatch: the served signature differs; ``problems`` lists each difference.
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
        """
        return self._check(self.metadata(timeout=timeout))

    def verify(
        self,
        artifact: str | os.PathLike[str],
        *,
        atol: float = DEFAULT_ATOL,
        timeout: float | None = None,
    ) -> VerifyReport:
        """Check that the served model reproduces an exported artifact's reference answers.

        ``artifact`` is a version directory or a base path (its highest version). The served
        SignatureDefs are compared with the artifact's ``saved_model.pb``, then every warmup
        record is replayed with its own signature: probabilities within ``atol``, top-k labels,
        ids and keys equal unless two classes tie within ``atol``. Differences are in the
        report (``report.passed``, ``report.first_failure``), not raised; an unusable artifact
        raises :class:`ArtifactError`, an unreachable server the usual errors. Failed replays
        are in the report too: only reading the artifact and the metadata raise.

        Raises:
            ArtifactNotFound: ``artifact`` is neither a version directory nor a base path
                holding one.
            ArtifactError: the artifact is unusable (a corrupt warmup file, records without
                reference answers).
            ValueError: atol is not a finite number >= 0.
            ServerUnavailable: the server could not be reached, or refused the call for now
                (its batch queue full), after the channel's retries; NotAGrpcServer when the
                target answers HTTP/1.x (a REST port).
            DeadlineExceeded: the call did not finish within its timeout.
            ModelNotFound: no such model, version or version label is served.
            AuthenticationError: the server refused the TLS credentials.
            ResourceExhausted: a message size limit, or the server's limit on calls in flight.
            ServerError: any other failure the server reports (INTERNAL, UNIMPLEMENTED, ...).
        """
        job = self._verification(artifact, atol)
        served = self.metadata(timeout=timeout)
        results: list[RecordResult] = []
        for record, method, request in job.calls():
            started = time.perf_counter()
            try:
                response, error = self._call(method, request, timeout), None
            except XceptionClientError as failure:
                response, error = None, failure
            results.append(job.result(record, response, error, time.perf_counter() - started))
        return job.report(served, results)


def _check_timeout(timeout: float) -> float:
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds; received: {timeout!r}")
    return float(timeout)
