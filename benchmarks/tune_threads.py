"""The batching tuner's num_batch_threads probe: the served path itself, at each candidate count.

The batch size comes from the in-process limit (tune_batching.py), but how many batches should be
in flight at once is a property of the server, not of one Session run: the local server
(``xception-serve``, the TF1 Session TF Serving runs) is started once per candidate count with
the decided max_batch_size and batch_timeout_micros, and driven at the peak concurrency by our
client with single-image requests, as ``make bench`` drives it. The counts are measured in turns,
round after round, each round in another order, so a shared machine's drifting load falls on
every count alike; each count keeps its median round. The server's CPU time (``/proc``) says how
many cores it kept busy, which is why a count wins or not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xception_serving.testing.process import ServerProcess

from benchmarks import load, local_server, machine, stats
from benchmarks.batching_rules import ThreadsPoint, choose_max_enqueued_batches
from benchmarks.measure import measure_point, rotated, warm_up
from benchmarks.progress import log

LOAD_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 60.0
WARM_S = 1.0


@dataclass(frozen=True)
class ThreadsProbe:
    """What the probe measures: the decided batch values, the counts to try, and for how long."""

    max_batch_size: int
    batch_timeout_micros: int
    thread_counts: tuple[int, ...]
    peak_concurrency: int
    seconds: float
    rounds: int


def candidate_counts(cores: int) -> tuple[int, ...]:
    """1, 2 and every core: one batch at a time, a second to fill the first's idle cores, and
    the guide's one per core (at most three servers, whatever the core count)."""
    return tuple(sorted({1, min(2, cores), cores}))


def probe_config(probe: ThreadsProbe, threads: int) -> str:
    """The BatchingParameters one probe server runs: the decided values, ``threads`` batch
    threads, and a queue that holds every caller (a full queue would answer UNAVAILABLE)."""
    queue, _why = choose_max_enqueued_batches(threads, probe.max_batch_size, probe.peak_concurrency)
    return (
        "# Batch-thread probe of python -m benchmarks.tune_batching: not for production.\n"
        f"max_batch_size {{ value: {probe.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {probe.batch_timeout_micros} }}\n"
        f"num_batch_threads {{ value: {threads} }}\n"
        f"max_enqueued_batches {{ value: {queue} }}\n"
    )


def median_point(threads: int, rounds: Sequence[dict[str, float]]) -> ThreadsPoint:
    """A count's point from its rounds: the median of each figure over the rounds."""

    def median(key: str) -> float:
        return stats.percentile([r[key] for r in rounds], 50)

    busy = [r["cores_busy"] for r in rounds if "cores_busy" in r]
    return ThreadsPoint(
        threads,
        median("throughput"),
        median("p50_ms"),
        median("p99_ms"),
        stats.percentile(busy, 50) if len(busy) == len(rounds) else None,
    )


def measure_threads(
    model_base_path: Path,
    model_name: str,
    data: Sequence[bytes],
    probe: ThreadsProbe,
    log_dir: Path,
) -> list[ThreadsPoint]:
    """Each candidate count's served throughput and latency (see the module's docstring)."""
    servers: dict[int, ServerProcess] = {}
    with tempfile.TemporaryDirectory(prefix="threads-probe-") as configs:
        try:
            for threads in probe.thread_counts:  # launched together, so the loads overlap
                config = Path(configs) / f"threads-{threads}.config"
                config.write_text(probe_config(probe, threads))
                servers[threads] = local_server.launch(
                    f"threads-{threads}",
                    model_name=model_name,
                    model_base_path=model_base_path.resolve(),  # TF Serving wants it absolute
                    log_dir=log_dir,
                    batching_config=config,
                )
            for server in servers.values():
                local_server.wait_ready(server, LOAD_TIMEOUT_S)
            measured = _rounds(servers, model_name, data, probe)
        finally:
            for server in servers.values():
                server.stop()
    return [median_point(threads, measured[threads]) for threads in probe.thread_counts]


def _rounds(
    servers: dict[int, ServerProcess],
    model_name: str,
    data: Sequence[bytes],
    probe: ThreadsProbe,
) -> dict[int, list[dict[str, float]]]:
    drivers = {
        threads: load.OursGrpc(server.grpc_target, model_name, data, REQUEST_TIMEOUT_S)
        for threads, server in servers.items()
    }
    measured: dict[int, list[dict[str, float]]] = {threads: [] for threads in servers}
    counts = list(servers)
    try:
        for number in range(probe.rounds):
            log(f"batch-thread probe, round {number + 1}/{probe.rounds}")
            for threads in rotated(counts, number):
                warm_up(drivers[threads], probe.peak_concurrency, WARM_S)
                pid = servers[threads].process.pid
                cpu_before = machine.process_cpu_seconds(pid)
                row = measure_point(
                    drivers[threads],
                    batching=True,
                    concurrency=probe.peak_concurrency,
                    seconds=probe.seconds,
                    bytes_per_image=0.0,
                )
                if row["errors"]:
                    raise RuntimeError(
                        f"{threads} batch threads: {row['errors']} requests failed "
                        f"({row['first_error']})"
                    )
                one = {key: float(row[key]) for key in ("throughput", "p50_ms", "p99_ms")}
                cpu_after = machine.process_cpu_seconds(pid)
                if cpu_before is not None and cpu_after is not None:
                    one["cores_busy"] = (cpu_after - cpu_before) / float(row["seconds"])
                measured[threads].append(one)
    finally:
        for driver in drivers.values():
            driver.close()
    return measured
