"""The streaming rules both clients' ``predict_many`` share: options, lazy packing into requests,
what a failed request yields, and raising or yielding a failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import pytest
from xception_client import _stream
from xception_client.errors import DeadlineExceeded, InvalidImage


class CountingImages:
    """An endless image source that counts how many images were taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        while True:
            self.taken += 1
            yield self.taken


@pytest.mark.parametrize(
    ("concurrency", "per_request", "named"),
    [(0, 1, "concurrency=0"), (1, 0, "images_per_request=0"), (-2, 4, "concurrency=-2")],
)
def test_options_below_one_are_refused_naming_the_option_and_its_value(
    concurrency: int, per_request: int, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        _stream.check_options(concurrency, per_request)


def test_batches_pack_in_order_with_a_shorter_last_request() -> None:
    assert list(_stream.batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(_stream.batches([], 3)) == []


def test_batches_take_no_more_images_than_the_requests_they_yield() -> None:
    images = CountingImages()
    stream = _stream.batches(images, 4)
    assert next(stream) == [1, 2, 3, 4] and images.taken == 4
    assert next(stream) == [5, 6, 7, 8] and images.taken == 8


def test_batches_do_not_ask_an_ended_input_again() -> None:
    asked = 0

    def images() -> Iterator[int]:
        nonlocal asked
        asked += 1
        yield from (1, 2, 3)

    assert list(_stream.batches(images(), 2)) == [[1, 2], [3]]
    assert asked == 1


def test_async_batches_pack_plain_and_async_iterables_alike() -> None:
    async def agen() -> AsyncIterator[int]:
        for n in range(5):
            yield n

    async def collect(source: Iterable[int] | AsyncIterable[int]) -> list[list[int]]:
        return [group async for group in _stream.abatches(source, 2)]

    expected = [[0, 1], [2, 3], [4]]
    assert asyncio.run(collect(range(5))) == expected
    assert asyncio.run(collect(agen())) == expected


def test_a_bad_image_among_several_means_send_each_alone() -> None:
    assert _stream.failure_results(["a", "b"], InvalidImage("not an image")) is None


def test_a_bad_lone_image_and_any_other_error_fail_every_image_of_the_request() -> None:
    bad = InvalidImage("not an image")
    assert _stream.failure_results(["a"], bad) == [bad]
    late = DeadlineExceeded("too slow")
    assert _stream.failure_results(["a", "b", "c"], late) == [late, late, late]


def test_surface_raises_the_first_failure_unless_failures_are_returned() -> None:
    failure = DeadlineExceeded("too slow")
    results: list[_stream.Result] = [[], failure, []]
    assert list(_stream.surface(results, return_exceptions=True)) == results
    stream = _stream.surface(results, return_exceptions=False)
    assert next(stream) == []
    with pytest.raises(DeadlineExceeded):
        next(stream)
