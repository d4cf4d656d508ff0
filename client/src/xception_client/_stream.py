"""What ``Client.predict_many`` and ``AsyncClient.predict_many`` share (no I/O): their options,
packing images into requests, the results of a failed request, and yielding or raising them."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import TypeVar

from .errors import InvalidImage, XceptionClientError
from .predictions import Prediction

__all__ = ["Result", "abatches", "batches", "check_options", "failure_results", "surface"]

Result = list[Prediction] | XceptionClientError  # one image's answer in the stream
T = TypeVar("T")


def check_options(concurrency: int, images_per_request: int) -> None:
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1; received: concurrency={concurrency}")
    if images_per_request < 1:
        raise ValueError(
            f"images_per_request must be >= 1; received: images_per_request={images_per_request}"
        )


def batches(images: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive groups of ``size`` (the last may be shorter), each as soon as it is full."""
    iterator = iter(images)
    while True:
        group = list(islice(iterator, size))
        if group:
            yield group
        if len(group) < size:  # the input ended: do not ask it again
            return


async def abatches(images: Iterable[T] | AsyncIterable[T], size: int) -> AsyncIterator[list[T]]:
    """:func:`batches` for an iterable or an async iterable."""
    if not isinstance(images, AsyncIterable):
        for batch in batches(images, size):
            yield batch
        return
    group: list[T] = []
    async for image in images:
        group.append(image)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def failure_results(group: list[T], error: XceptionClientError) -> list[Result] | None:
    """The results of ``group`` whose request failed with ``error``, or None when each image
    must be sent alone: a bad image among several fails only itself."""
    if isinstance(error, InvalidImage) and len(group) > 1:
        return None
    return [error] * len(group)


def surface(results: Iterable[Result], return_exceptions: bool) -> Iterator[Result]:
    """Yield each result in order; a failure is raised instead unless ``return_exceptions``."""
    for result in results:
        if isinstance(result, XceptionClientError) and not return_exceptions:
            raise result
        yield result
