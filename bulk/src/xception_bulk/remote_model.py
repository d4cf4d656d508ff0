# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""Remote mode: workers classify through a running TF Serving (or xception-serve) with the
thin client, so they need no TensorFlow.

Beam's ``RemoteModelHandler`` gives the retries with exponential backoff and the client-side
throttling (it backs off when the server starts refusing). Only transient failures are retried:
UNAVAILABLE (server restarting, connection lost) and RESOURCE_EXHAUSTED (queue full). An
INVALID_ARGUMENT is an image the server cannot use: never retried, the batch is bisected so
only that image fails. Anything else (or a transient failure that outlasts the retries) sends
the batch to the dead-letter output, where each of its images becomes an error record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler
from xception_client import (
    TLS,
    Client,
    InvalidArgument,
    NotAGrpcServer,
    ResourceExhausted,
    ServerUnavailable,
)

from .isolate import Outcome, Prepared, isolate
from .records import Classified

__all__ = ["RemoteTarget", "ServedModelHandler", "is_transient"]


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """Where the served model is and how to reach it (the client CLI's connection flags). The
    PEMs are their contents, read by the launcher: the workers need not have its files."""

    server: str
    model_name: str
    version: int
    timeout: float
    ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    tls: bool = False
    authority: str | None = None

    def client(self) -> Client:
        """A client pinned to ``version``, so one run's answers all come from one version."""
        return Client(
            self.server,
            model_name=self.model_name,
            model_version=self.version,
            timeout=self.timeout,
            tls=TLS.from_flags(self.tls, self.ca_cert, self.client_cert, self.client_key),
            channel_options=[("grpc.default_authority", self.authority)] if self.authority else [],
        )


def is_transient(error: Exception) -> bool:
    """Worth retrying the whole batch later: the server is away or overloaded."""
    if isinstance(error, NotAGrpcServer):
        return False  # a REST port: the same answer every time
    return isinstance(error, (ServerUnavailable, ResourceExhausted))


def client_refusal(error: Exception) -> tuple[str, str] | None:
    """The server's INVALID_ARGUMENT (or the client's own image check) as a per-image failure."""
    if not isinstance(error, InvalidArgument):
        return None
    code = error.code.name if error.code is not None else "INVALID_ARGUMENT"
    return code, error.details


class ServedModelHandler(RemoteModelHandler[Prepared, PredictionResult, Client]):
    """RunInference handler calling Predict on the served model, ``batch_size`` images a call."""

    def __init__(
        self,
        target: RemoteTarget,
        *,
        top_k: int,
        with_probabilities: bool,
        batch_size: int,
        num_retries: int = 5,
        throttle_delay_secs: int = 5,
    ) -> None:
        super().__init__(
            namespace="xception_bulk",
            num_retries=num_retries,
            throttle_delay_secs=throttle_delay_secs,
            retry_filter=is_transient,
        )
        self._target = target
        self._top_k = top_k
        self._with_probabilities = with_probabilities
        self._batch_size = batch_size

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # RemoteModelHandler.__init__ takes no batching arguments. Full requests of batch_size
        # images (only a bundle's last one is shorter), not BatchElements' growth from 1.
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def create_client(self) -> Client:
        return self._target.client()

    def request(
        self,
        batch: Sequence[Prepared],
        model: Client,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        def classify(images: Sequence[Prepared]) -> list[Classified]:
            return self._classify(model, images)

        outcomes: list[Outcome] = isolate(batch, classify, client_refusal)
        model_id = f"{self._target.server}/{self._target.model_name}/{self._target.version}"
        return [PredictionResult(outcome.ref, outcome, model_id) for outcome in outcomes]

    def _classify(self, client: Client, images: Sequence[Prepared]) -> list[Classified]:
        data = [image for _ref, image in images]
        ranked = client.predict_batch(data, top_k=self._top_k)
        # A second call for every class's score: the client's predict API returns the top-k only.
        probabilities = client.probabilities(data) if self._with_probabilities else None
        results = []
        for row, ((ref, _image), top) in enumerate(zip(images, ranked, strict=True)):
            probs = (
                tuple(float(p) for p in probabilities[row]) if probabilities is not None else None
            )
            results.append(Classified(ref, tuple(top), probs))
        return results

    def get_num_bytes(self, batch: Sequence[Prepared]) -> int:
        return sum(len(data) for _ref, data in batch)
