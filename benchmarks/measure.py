"""One driver measured: a warmed-up closed-loop series over the concurrency levels (the results'
``served`` rows) and a futures stream (client CPU per image), each logged as it is measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from benchmarks import load, stats
from benchmarks.progress import log

Row = dict[str, Any]  # one JSON object of the results
STREAM_IMAGES = 24  # images per client-CPU stream against the real server
MAX_REQUESTS = 100_000  # per point: a bound, never reached at the speeds measured here
T = TypeVar("T")


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` starting at its ``turn``-th entry: each pass measures them in another order, so
    no item always meets the same phase of a shared machine's load."""
    start = turn % len(items)
    return [*items[start:], *items[:start]]


def measure_point(
    driver: load.Driver,
    *,
    batching: bool | None,
    concurrency: int,
    seconds: float,
    bytes_per_image: float,
) -> Row:
    """One ``served`` row: ``concurrency`` closed-loop workers for ``seconds``."""
    result = load.closed_loop(
        driver,
        concurrency=concurrency,
        duration_s=seconds,
        max_requests=MAX_REQUESTS,
        min_requests=concurrency,
    )
    variant = driver.name
    if result.completed == 0:
        raise RuntimeError(f"{variant} c={concurrency}: every request failed: {result.first_error}")
    row: Row = {
        "variant": variant,
        "concurrency": concurrency,
        "batching": batching,
        "throughput": stats.throughput(result.completed, result.elapsed_s),
        **stats.summarize_latencies(result.latencies_s),
        "requests": result.completed,
        "errors": result.errors,
        "seconds": result.elapsed_s,
        "request_bytes_per_image": bytes_per_image,
        "client_cpu_ms_per_image": 1000.0 * result.cpu_s / result.completed,
    }
    if result.first_error:
        row["first_error"] = result.first_error
    log(
        f"  {variant:<14} batching={batching!s:<5} c={concurrency:<3} "
        f"{row['throughput']:6.2f} img/s  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms"
        f"  cpu {row['client_cpu_ms_per_image']:.2f} ms/img  n={result.completed}"
        + (f" errors={result.errors} ({result.first_error})" if result.errors else "")
    )
    return row


def warm_up(driver: load.Driver, concurrency: int, seconds: float) -> None:
    result = load.closed_loop(
        driver,
        concurrency=concurrency,
        duration_s=seconds,
        max_requests=4 * concurrency,
        min_requests=concurrency,
    )
    if result.completed == 0:
        raise RuntimeError(f"warm-up failed: {result.first_error}")


def mean_bytes(driver: load.Driver, data: Sequence[bytes]) -> float:
    """The driver's mean request size per image over ``data``."""
    return sum(driver.request_bytes(d) for d in data) / len(data)


def run_series(
    driver: load.Driver,
    *,
    batching: bool | None,
    levels: Sequence[int],
    seconds: float,
    data: Sequence[bytes],
    warm_seconds: float,
) -> list[Row]:
    """A warm-up at the highest level, then one row per concurrency level."""
    per_image = mean_bytes(driver, data)
    warm_up(driver, max(levels), warm_seconds)
    return [
        measure_point(
            driver, batching=batching, concurrency=c, seconds=seconds, bytes_per_image=per_image
        )
        for c in levels
    ]


def measure_stream(
    driver: load.StreamDriver,
    data: Sequence[bytes],
    concurrency: int,
    *,
    count: int | None = None,
    images_per_request: int | None = None,
) -> Row:
    """Client CPU and throughput of one stream of ``count`` images (default: the image set, at
    most STREAM_IMAGES) with ``concurrency`` requests in flight."""
    count = count or min(len(data), STREAM_IMAGES)
    result = load.stream_cpu(lambda: driver.stream(count, concurrency, images_per_request))
    packing = {} if images_per_request is None else {"images_per_request": images_per_request}
    figures: Row = {
        "variant": driver.name,
        **packing,
        "images": result.images,
        "throughput": stats.throughput(result.images, result.wall_s),
        "client_cpu_ms_per_image": 1000.0 * result.cpu_s / max(1, result.images),
        "request_bytes_per_image": mean_bytes(driver, data),
    }
    shown = f" ({packing})" if packing else ""
    log(
        f"  {driver.name:<14} stream of {result.images} at {concurrency} in flight{shown}: "
        f"{figures['throughput']:.2f} img/s, client CPU {figures['client_cpu_ms_per_image']:.2f} "
        f"ms/img, {figures['request_bytes_per_image'] / 1024:.1f} KB/img"
    )
    return figures
