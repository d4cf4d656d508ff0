"""``AsyncClient``: the asyncio twin of :class:`~xception_client.Client`, on ``grpc.aio``.

Same constructor, same method names, same errors; methods are coroutines and ``predict_many`` is an
async generator. Create it inside a running event loop::

    async with AsyncClient("localhost:8500") as client:
        predictions = await client.predict("cat.jpg")
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import numpy as np
import xception_contract as contract

from . import _channel, _stream, _wire
from ._stream import Result
from .client import DEFAULT_IMAGES_PER_REQUEST, _Base
from .errors import XceptionClientError
from .images import ImageInput
from .metadata import ModelMetadata, ModelVersionStatus
from .predictions import Prediction
from .verify import DEFAULT_ATOL, RecordResult, VerifyReport

__all__ = ["AsyncClient"]


class AsyncClient(_Base):
    """Asyncio client; see :class:`~xception_client.Client` for the arguments."""

    _open_channel = staticmethod(_channel.open_aio_channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; in-flight calls are cancelled. Safe to call twice."""
        await self._channel.close()

    async def _call(
        self,
        method: _wire.Method[Any, Any],
        request: Any,
        timeout: float | None,
        *,
        image_call: bool = False,
    ) -> Any:
        try:
            return await self._calls[method.path](
                request, timeout=self._deadline(timeout), wait_for_ready=self._wait_for_ready
            )
        except grpc.RpcError as error:
            raise self._error(error, image_call=image_call) from error

    async def predict(
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
        return (await self.predict_batch([image], top_k=top_k, timeout=timeout))[0]

    async def predict_batch(
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
        response = await self._call(_wire.PREDICT, request, timeout, image_call=True)
        return self._parse_predict(response, top_k)

    async def predict_many(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        top_k: int = contract.DEFAULT_TOP_K,
        concurrency: int = 8,
        images_per_request: int = DEFAULT_IMAGES_PER_REQUEST,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Prediction] | XceptionClientError]:
        """Classify a stream of images, ``images_per_request`` per Predict and at most
        ``concurrency`` requests in flight, yielding one result per image in input order (see
        :meth:`Client.predict_many`).

        Raises:
            XceptionClientError: while iterating, the first image that fails (any of those
                :meth:`predict_batch` raises), unless ``return_exceptions=True`` yields it in
                its place.
            ValueError: concurrency or images_per_request < 1, or a bad timeout.
        """
        _stream.check_options(concurrency, images_per_request)
        pending: deque[asyncio.Task[list[Result]]] = deque()
        try:
            async for group in _stream.abatches(images, images_per_request):
                pending.append(asyncio.ensure_future(self._group_results(group, top_k, timeout)))
                while len(pending) >= concurrency:
                    for result in _stream.surface(await pending.popleft(), return_exceptions):
                        yield result
            while pending:
                for result in _stream.surface(await pending.popleft(), return_exceptions):
                    yield result
        finally:
            for task in pending:
                task.cancel()

    async def _group_results(
        self, group: list[ImageInput], top_k: int, timeout: float | None
    ) -> list[Result]:
        """One result per image of ``group``: one request, or, if it holds a bad image, one
        request per image so only that one fails."""
        try:
            return list(await self.predict_batch(group, top_k=top_k, timeout=timeout))
        except XceptionClientError as error:
            results = _stream.failure_results(group, error)
        if results is not None:
            return results
        return [
            result
            for image in group
            for result in await self._group_results([image], top_k, timeout)
        ]

    async def probabilities(
        self, images: Sequence[ImageInput], *, timeout: float | None = None
    ) -> np.ndarray[Any, Any]:
        """Every class's probability, float32 [N, C] (see :meth:`Client.probabilities`).

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
        response = await self._call(_wire.PREDICT, request, timeout, image_call=True)
        return _wire.parse_probabilities(response)

    async def metadata(self, *, timeout: float | None = None) -> ModelMetadata:
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
        request = _wire.metadata_request(self._model)
        return _wire.parse_metadata(await self._call(_wire.GET_MODEL_METADATA, request, timeout))

    async def status(self, *, timeout: float | None = None) -> list[ModelVersionStatus]:
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
        request = _wire.status_request(self._model)
        return _wire.parse_status(await self._call(_wire.GET_MODEL_STATUS, request, timeout))

    async def check_model(self, *, timeout: float | None = None) -> ModelMetadata:
        """Raise :class:`~xception_client.ModelMismatch` if the served signature differs from
        what this client sends and reads; return the metadata otherwise.

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
        return self._check(await self.metadata(timeout=timeout))

    async def verify(
        self,
        artifact: str | os.PathLike[str],
        *,
        atol: float = DEFAULT_ATOL,
        timeout: float | None = None,
    ) -> VerifyReport:
        """Check that the served model reproduces an artifact's reference answers (see
        :meth:`Client.verify`); records are replayed one at a time, so latencies are per call.

        Differences and failed replays are in the report; only reading the artifact and
        the metadata raise.

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
        served = await self.metadata(timeout=timeout)
        results: list[RecordResult] = []
        for record, method, request in job.calls():
            started = time.perf_counter()
            try:
                response, error = await self._call(method, request, timeout), None
            except XceptionClientError as failure:
                response, error = None, failure
            results.append(job.result(record, response, error, time.perf_counter() - started))
        return job.report(served, results)
