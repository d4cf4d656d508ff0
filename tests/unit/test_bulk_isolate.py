"""Bisection: a batch the model refuses is split until each refusing image fails alone; good
images are classified in their order, a transient error propagates (so the batch is retried
whole), and the remote handler retries only UNAVAILABLE and RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from xception_bulk.isolate import Prepared, isolate
from xception_bulk.records import Classified, Failure, ImageRef
from xception_bulk.remote_model import client_refusal, is_transient
from xception_client import (
    InvalidImage,
    NotAGrpcServer,
    ResourceExhausted,
    ServerUnavailable,
)


class Refused(Exception):
    pass


class FakeModel:
    """Refuses any batch holding a b"bad" image, as the graph refuses a whole batch."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: Sequence[Prepared]) -> list[Classified]:
        self.calls.append(len(batch))
        if any(data == b"bad" for _ref, data in batch):
            raise Refused("cannot decode")
        return [Classified(ref, ()) for ref, _data in batch]


def refused(error: Exception) -> tuple[str, str] | None:
    return ("INVALID_ARGUMENT", str(error)) if isinstance(error, Refused) else None


def batch_of(*kinds: str) -> list[Prepared]:
    return [(ImageRef(f"{n}.jpg"), kind.encode()) for n, kind in enumerate(kinds)]


def test_a_good_batch_is_one_call() -> None:
    model = FakeModel()
    outcomes = isolate(batch_of("ok", "ok", "ok"), model, refused)
    assert [o.ref.path for o in outcomes] == ["0.jpg", "1.jpg", "2.jpg"]
    assert all(isinstance(o, Classified) for o in outcomes)
    assert model.calls == [3]


@pytest.mark.parametrize("bad_at", [0, 3, 7])
def test_one_bad_image_in_eight_fails_alone_and_the_rest_are_classified(bad_at: int) -> None:
    kinds = ["ok"] * 8
    kinds[bad_at] = "bad"
    model = FakeModel()
    outcomes = isolate(batch_of(*kinds), model, refused)
    assert [o.ref.path for o in outcomes] == [f"{n}.jpg" for n in range(8)]
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert failures == [
        Failure(ImageRef(f"{bad_at}.jpg"), "inference", "INVALID_ARGUMENT", "cannot decode")
    ]
    assert len(model.calls) == 7  # the batch, then two halves at each of 3 levels


def test_every_bad_image_fails_and_no_image_is_lost_or_repeated() -> None:
    outcomes = isolate(batch_of("bad", "ok", "bad", "bad", "ok"), FakeModel(), refused)
    assert [o.ref.path for o in outcomes] == [f"{n}.jpg" for n in range(5)]
    assert [type(o).__name__ for o in outcomes] == [
        "Failure",
        "Classified",
        "Failure",
        "Failure",
        "Classified",
    ]


def test_an_error_that_is_no_refusal_propagates() -> None:
    def unavailable(batch: Sequence[Prepared]) -> list[Classified]:
        raise ServerUnavailable("down", code=grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(ServerUnavailable):
        isolate(batch_of("ok", "ok"), unavailable, refused)


def test_a_model_answering_the_wrong_number_of_images_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="answered 1 images for a batch of 2"):
        isolate(batch_of("ok", "ok"), lambda batch: [Classified(batch[0][0], ())], refused)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ServerUnavailable("down", code=grpc.StatusCode.UNAVAILABLE), True),
        (ResourceExhausted("queue full", code=grpc.StatusCode.RESOURCE_EXHAUSTED), True),
        (NotAGrpcServer("a REST port", code=grpc.StatusCode.UNAVAILABLE), False),
        (InvalidImage("bad", code=grpc.StatusCode.INVALID_ARGUMENT), False),
        (RuntimeError("bug"), False),
    ],
)
def test_only_unavailable_and_resource_exhausted_are_retried(
    error: Exception, transient: bool
) -> None:
    assert is_transient(error) is transient


def test_the_servers_invalid_argument_is_a_per_image_refusal_with_its_code() -> None:
    error = InvalidImage("jpeg::Uncompress failed", code=grpc.StatusCode.INVALID_ARGUMENT)
    assert client_refusal(error) == ("INVALID_ARGUMENT", "jpeg::Uncompress failed")
    assert client_refusal(InvalidImage("empty")) == ("INVALID_ARGUMENT", "empty")
    assert client_refusal(ServerUnavailable("down")) is None
