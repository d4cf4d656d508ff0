"""The batching tuner's decisions: measured batch sizes in, TF Serving BatchingParameters and the
reason for each value out. Pure functions, no model, no server (the measuring is tune_batching.py).

The rules are TF Serving's batching guide (tensorflow_serving/batching/README.md, "Performance
Tuning"), applied to what was measured:

- max_batch_size: the guide says to tune it for "the desired balance between throughput and
  average latency" (GPU) or start "really high" (CPU). Here: the smallest measured size whose
  throughput is within ``min_gain`` of the best size that meets the latency goal (a bigger batch
  makes its first caller wait for more images, so it must buy at least that much throughput);
- num_batch_threads: "equal to the number of CPU cores", for CPU and GPU alike. On CPU that
  assumes one batch keeps one core busy. Where the served path was measured with each candidate
  thread count (``ThreadsPoint``), the fewest threads within ``min_gain`` of the best served
  throughput that meet the goal: one Session run whose intra-op pool spans every core still
  leaves part of them idle (ops that do not split, the batch thread's own work between runs),
  which a second batch in flight may fill. Unmeasured: cores / (threads per batch);
- max_enqueued_batches: "for online serving ... equal to num_batch_threads", raised to hold the
  stated peak of concurrent callers (a full queue answers UNAVAILABLE at once);
- batch_timeout_micros: CPU "starting with ... 0", then 1-10 ms; GPU "typically a few
  milliseconds";
- allowed_batch_sizes: only where each batch shape costs a compile or autotune (GPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

GUIDE = "batching guide"  # how a reason cites it: [batching guide]
GUIDE_SOURCE = "TF Serving's tensorflow_serving/batching/README.md, section Performance Tuning"
MIN_GAIN = 0.03  # a bigger batch must add at least 3% throughput to be worth its wait
# CPU: the guide's 1-10 ms timeouts only matter when a batch runs for about that long.
CPU_TIMEOUT_WORTH_TRYING_BELOW_MS = 100.0
CPU_TIMEOUT_US = 1000  # the guide's "slightly above zero, e.g. 1 millisecond"
# GPU: a tenth of one batch's run time bounds what a lone caller waits for company, kept within
# the guide's "few milliseconds".
GPU_TIMEOUT_SHARE = 0.1
GPU_TIMEOUT_RANGE_US = (1000, 10000)

Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class Point:
    """One measured batch size: images per second and request latency (ms)."""

    batch_size: int
    throughput: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ThreadsPoint:
    """The served path measured with ``threads`` batch threads (the other values as decided), at
    the peak concurrency: images per second, request latency (ms) and, where known, the CPU cores
    the server kept busy."""

    threads: int
    throughput: float
    p50_ms: float
    p99_ms: float
    cores_busy: float | None = None


@dataclass(frozen=True)
class Goal:
    """The latency goal a batch size must meet (None: no bound on that percentile)."""

    p50_ms: float | None = None
    p99_ms: float | None = None

    def __post_init__(self) -> None:
        if self.p50_ms is None and self.p99_ms is None:
            raise ValueError("a latency goal needs a p50 or a p99 bound (ms)")
        for name, value in (("p50", self.p50_ms), ("p99", self.p99_ms)):
            if value is not None and not value > 0:
                raise ValueError(f"the {name} goal must be a positive number of ms, got {value}")

    def met_by(self, point: Point | ThreadsPoint) -> bool:
        return (self.p50_ms is None or point.p50_ms <= self.p50_ms) and (
            self.p99_ms is None or point.p99_ms <= self.p99_ms
        )

    def latency(self, point: Point | ThreadsPoint) -> float:
        """The percentile the goal bounds most tightly (p99 when both are set)."""
        return point.p99_ms if self.p99_ms is not None else point.p50_ms

    def __str__(self) -> str:
        bounds = [
            f"{name} <= {value:g} ms"
            for name, value in (("p50", self.p50_ms), ("p99", self.p99_ms))
            if value is not None
        ]
        return " and ".join(bounds)


@dataclass(frozen=True)
class Hardware:
    """Where the server runs: the device the model computes on, the CPU cores the server has, and
    the TensorFlow intra-op threads one batch's run uses (0: TensorFlow's default, every core)."""

    device: Device
    cores: int
    intra_op_threads: int = 0

    def __post_init__(self) -> None:
        if self.cores < 1 or self.intra_op_threads < 0:
            raise ValueError(f"cores must be >= 1 and intra-op threads >= 0, got {self}")


@dataclass(frozen=True)
class Setting:
    """One BatchingParameters field: its value (None: not written, TF Serving's default) and why."""

    name: str
    value: int | tuple[int, ...] | None
    reason: str


@dataclass(frozen=True)
class Decision:
    settings: tuple[Setting, ...]  # in the order the config file lists them
    goal: Goal
    goal_met: bool
    chosen: Point

    def value(self, name: str) -> int | tuple[int, ...] | None:
        for setting in self.settings:
            if setting.name == name:
                return setting.value
        raise KeyError(name)


def decide(
    points: Sequence[Point],
    goal: Goal,
    hardware: Hardware,
    *,
    peak_concurrency: int = 16,
    min_gain: float = MIN_GAIN,
    largest_request: int = 1,
    threads_points: Sequence[ThreadsPoint] = (),
) -> Decision:
    """Every BatchingParameters value from ``points`` (one per measured batch size).
    ``largest_request``: the most images one request carries (max_batch_size must hold it).
    ``threads_points``: the served path at each candidate num_batch_threads (CPU), if measured."""
    table = _checked(points)
    if peak_concurrency < 1 or min_gain < 0 or largest_request < 1:
        raise ValueError(
            f"peak concurrency and largest request must be >= 1 and min gain >= 0, "
            f"got {peak_concurrency}, {largest_request} and {min_gain}"
        )
    chosen, goal_met, why_size = choose_max_batch_size(table, goal, min_gain, largest_request)
    if threads_points and hardware.device == "cpu":
        threads, why_threads = choose_measured_batch_threads(threads_points, goal, min_gain)
    else:
        threads, why_threads = choose_num_batch_threads(table, chosen, hardware)
    queue, why_queue = choose_max_enqueued_batches(threads, chosen.batch_size, peak_concurrency)
    timeout, why_timeout = choose_batch_timeout_micros(chosen, hardware.device)
    allowed, why_allowed = choose_allowed_batch_sizes(table, chosen.batch_size, hardware.device)
    return Decision(
        settings=(
            Setting("max_batch_size", chosen.batch_size, why_size),
            Setting("batch_timeout_micros", timeout, why_timeout),
            Setting("num_batch_threads", threads, why_threads),
            Setting("max_enqueued_batches", queue, why_queue),
            Setting("allowed_batch_sizes", allowed, why_allowed),
        ),
        goal=goal,
        goal_met=goal_met,
        chosen=chosen,
    )


def _checked(points: Sequence[Point]) -> list[Point]:
    if not points:
        raise ValueError("no measured batch sizes to choose from")
    sizes = [p.batch_size for p in points]
    if len(set(sizes)) != len(sizes) or min(sizes) < 1:
        raise ValueError(f"batch sizes must be distinct positive integers, got {sizes}")
    for p in points:
        if not all(math.isfinite(v) and v > 0 for v in (p.throughput, p.p50_ms, p.p99_ms)):
            raise ValueError(
                f"batch {p.batch_size}: throughput and latencies must be positive, got {p}"
            )
    return sorted(points, key=lambda p: p.batch_size)


def _describe(p: Point) -> str:
    return (
        f"batch {p.batch_size}: {p.throughput:.1f} img/s, p50 {p.p50_ms:.0f} ms, "
        f"p99 {p.p99_ms:.0f} ms"
    )


def _gain(a: Point, b: Point) -> float:
    """How much more throughput ``a`` has than ``b`` (0.05: 5% more)."""
    return a.throughput / b.throughput - 1


def choose_max_batch_size(
    table: Sequence[Point], goal: Goal, min_gain: float, largest_request: int = 1
) -> tuple[Point, bool, str]:
    """The chosen point, whether it meets the goal, and why. Sizes under ``largest_request``
    are no candidates: TF Serving refuses a request of more images than max_batch_size."""
    usable = [p for p in table if p.batch_size >= largest_request]
    if not usable:
        raise ValueError(
            f"no measured batch size holds the largest request ({largest_request} "
            f"images): measure sizes up to at least {largest_request}"
        )
    floor = (
        ""
        if len(usable) == len(table)
        else (
            f" Sizes under {largest_request} are no candidates: requests carry up to "
            f"{largest_request} images, and TF Serving refuses a larger one than max_batch_size "
            f'(INVALID_ARGUMENT "Task size N is larger than maximum input batch size"), warmup '
            f"records included."
        )
    )
    meeting = [p for p in usable if goal.met_by(p)]
    if not meeting:
        lowest = min(usable, key=goal.latency)
        return (
            lowest,
            False,
            (
                f"GOAL NOT MET: no usable batch size meets {goal}; {_describe(lowest)} has the "
                f"lowest latency and is used. Batching cannot bring the latency under one run of "
                f"the smallest usable batch: relax the goal or give the model faster hardware."
                + floor
            ),
        )
    best = max(meeting, key=lambda p: p.throughput)
    chosen = min((p for p in meeting if _gain(best, p) < min_gain), key=lambda p: p.batch_size)
    parts = [
        f"{_describe(chosen)} (measured: "
        + "; ".join(f"{p.batch_size}: {p.throughput:.1f}" for p in table)
        + " img/s)."
    ]
    if best is not chosen:
        parts.append(
            f"Batch {best.batch_size} is {_gain(best, chosen):+.1%}, under the "
            f"{min_gain:.0%} a bigger batch must add for its callers' longer wait."
        )
    bigger = [p for p in table if p.batch_size > chosen.batch_size]
    missing = [p for p in bigger if not goal.met_by(p)]
    if missing:
        parts.append(
            f"Batch {missing[0].batch_size} misses the goal ({goal}): "
            f"p50 {missing[0].p50_ms:.0f} ms, p99 {missing[0].p99_ms:.0f} ms."
        )
    elif not bigger and len(table) > 1 and _gain(chosen, table[-2]) >= min_gain:
        parts.append(
            f"Still {_gain(chosen, table[-2]):+.1%} over batch {table[-2].batch_size} "
            f"at the largest size measured: measure larger sizes."
        )
    parts.append(
        f"Rule: the smallest batch within {min_gain:.0%} of the best throughput that "
        f"meets {goal}; the guide: tune it for the balance between throughput and "
        f"latency [{GUIDE}]." + floor
    )
    return chosen, True, " ".join(parts)


def choose_num_batch_threads(
    table: Sequence[Point], chosen: Point, hardware: Hardware
) -> tuple[int, str]:
    rule = (
        f'The guide: num_batch_threads "equal to the number of CPU cores" '
        f"({hardware.cores} here) [{GUIDE}]."
    )
    if hardware.device == "gpu":
        return hardware.cores, (
            f"{rule} On a GPU, batches in flight overlap one batch's CPU "
            f"work (JPEG decode, resize) with another's GPU work."
        )
    per_batch = hardware.intra_op_threads or hardware.cores
    threads = max(1, hardware.cores // min(per_batch, hardware.cores))
    pool = (
        "TensorFlow's default, one thread per core"
        if not hardware.intra_op_threads
        else f"{hardware.intra_op_threads} threads"
    )
    single = table[0]
    measured = (
        ""
        if single is chosen
        else f" (batch {single.batch_size}: {single.throughput:.1f} img/s against "
        f"{chosen.throughput:.1f} at batch {chosen.batch_size})"
    )
    return threads, (
        f"{rule} That rule counts one core per batch; here one batch's Session run spreads its "
        f"ops over {min(per_batch, hardware.cores)} core(s) (intra-op pool: {pool}), so "
        f"{hardware.cores} / {min(per_batch, hardware.cores)} = {threads} batch(es) at a time. "
        f"More would split the same cores and, with callers merging only while every thread is "
        f"busy, form smaller batches{measured}."
    )


def choose_measured_batch_threads(
    measured: Sequence[ThreadsPoint], goal: Goal, min_gain: float
) -> tuple[int, str]:
    """The fewest batch threads within ``min_gain`` of the best served throughput that meets
    ``goal`` (by throughput alone when no count meets it: that is capacity), and why."""
    counts = [p.threads for p in measured]
    if len(set(counts)) != len(counts) or min(counts) < 1:
        raise ValueError(f"batch thread counts must be distinct positive integers, got {counts}")
    for p in measured:
        if not all(math.isfinite(v) and v > 0 for v in (p.throughput, p.p50_ms, p.p99_ms)):
            raise ValueError(f"{p.threads} threads: throughput and latencies must be positive")
    table = sorted(measured, key=lambda p: p.threads)
    shown = "; ".join(
        f"{p.threads}: {p.throughput:.2f} img/s, p99 {p.p99_ms:.0f} ms"
        + (f", server busy {p.cores_busy:.2f} cores" if p.cores_busy is not None else "")
        for p in table
    )
    head = (
        f'The guide: num_batch_threads "equal to the number of CPU cores" [{GUIDE}]. Measured '
        f"here, the served path with this file's other values at the peak concurrency ({shown})."
    )
    meeting = [p for p in table if goal.met_by(p)]
    capacity = ""
    if not meeting:
        # At the peak, callers queue for the server's capacity: every count missing the goal is
        # a matter of replicas, and the faster count also queues its callers for less time.
        meeting = table
        capacity = (
            f" No count meets {goal} at the peak: the callers queue for the server's capacity, "
            f"which more replicas or fewer callers per replica fix, not the thread count; so the "
            f"count is chosen by throughput alone, which also shortens that queue."
        )
    best = max(meeting, key=lambda p: p.throughput)
    chosen = next(p for p in meeting if best.throughput / p.throughput - 1 < min_gain)
    why = (
        f"Rule: the fewest threads within {min_gain:.0%} of the best throughput that meet "
        f"{goal}." + capacity
    )
    if chosen.threads > 1:
        why += (
            " One batch's Session run leaves part of the cores idle (ops that do not split over "
            "the intra-op pool, the batch thread's own work between runs); another batch in "
            "flight fills them, at the cost of each batch running longer."
        )
    return chosen.threads, f"{head} {why}"


def choose_max_enqueued_batches(
    threads: int, max_batch_size: int, peak_concurrency: int
) -> tuple[int, str]:
    holds_peak = math.ceil(peak_concurrency / max_batch_size)
    queue = max(threads, holds_peak)
    reason = (
        f'The guide, online serving: max_enqueued_batches "equal to num_batch_threads" '
        f"({threads}), so a busy server answers UNAVAILABLE at once and the caller can go "
        f"to another replica instead of queueing [{GUIDE}]."
    )
    if queue > threads:
        reason += (
            f" Raised to ceil({peak_concurrency} callers / {max_batch_size}) = {queue} "
            f"so the stated peak of {peak_concurrency} concurrent single-image callers "
            f"never finds the queue full."
        )
    return queue, reason


def choose_batch_timeout_micros(chosen: Point, device: Device) -> tuple[int, str]:
    run_ms = chosen.p50_ms
    if device == "gpu":
        low, high = GPU_TIMEOUT_RANGE_US
        micros = int(min(high, max(low, round(GPU_TIMEOUT_SHARE * run_ms * 1000, -2))))
        return micros, (
            f'The guide, GPU: "typically a few milliseconds" to rein in tail latency '
            f"[{GUIDE}]. {GPU_TIMEOUT_SHARE:.0%} of batch {chosen.batch_size}'s "
            f"{run_ms:.1f} ms run, within {low}-{high} us: an under-full batch waits at most "
            f"that long for company. Try 0 too."
        )
    if run_ms >= CPU_TIMEOUT_WORTH_TRYING_BELOW_MS:
        return 0, (
            f'The guide, CPU-only: start at 0, then try 1-10 ms, "keeping in mind that 0 may be '
            f'the optimal value" [{GUIDE}]. Batch {chosen.batch_size} runs {run_ms:.0f} ms '
            f"here: while one batch runs, the next callers queue and form the next batch by "
            f"themselves, so a timeout would only delay a lone caller."
        )
    return CPU_TIMEOUT_US, (
        f'The guide, CPU-only: 0 to start, then 1-10 ms; "slightly above zero, e.g. 1 '
        f'millisecond" smooths batch sizes at low request rates [{GUIDE}]. Batch '
        f"{chosen.batch_size} runs only {run_ms:.0f} ms here (under "
        f"{CPU_TIMEOUT_WORTH_TRYING_BELOW_MS:.0f} ms), so 1 ms of waiting can fill a batch."
    )


def choose_allowed_batch_sizes(
    table: Sequence[Point], max_batch_size: int, device: Device
) -> tuple[tuple[int, ...] | None, str]:
    if device == "cpu":
        return None, (
            "Not set: padding to fixed sizes only pays where each batch shape costs a "
            "compile or autotune (GPU, XLA); on CPU it would compute padding rows for "
            "nothing."
        )
    sizes = tuple(p.batch_size for p in table if p.batch_size <= max_batch_size)
    return sizes, (
        f"The measured sizes up to max_batch_size: the guide's allowed_batch_sizes constrains "
        f"the batch shapes [{GUIDE}], so a GPU pays one cuDNN autotune (and compile, with XLA) "
        f"per size; put one warmup record per size in assets.extra so no user pays it."
    )
