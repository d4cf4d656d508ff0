"""What the batching tuner measured, and how it says so: the table and each value's reason as
printed, and the header of the config it writes (who wrote it, where, how, and the figures)."""

from __future__ import annotations

import datetime
import textwrap
from dataclasses import dataclass

from benchmarks import batching_file, machine
from benchmarks.batching_rules import GUIDE, GUIDE_SOURCE, Decision, Hardware, Point, ThreadsPoint

PROG = "python -m benchmarks.tune_batching"
NOISY = 0.2  # passes of one size further apart than this: say the figures are noisy


@dataclass(frozen=True)
class Measured:
    points: list[Point]
    what: str  # the target, for the header and the printout
    intra_op_threads: int  # of the measured Session (0: TensorFlow's default)
    load_before: list[float]  # this host's load averages when measuring started
    spread: float = 0.0  # the largest (best / worst - 1) of a size's throughput over passes
    remote: bool = False  # measured a server elsewhere (--target), not this host's limit
    # The served path at each candidate num_batch_threads (tune_threads.py), if probed.
    threads: tuple[ThreadsPoint, ...] = ()
    threads_what: str = ""

    def noise_note(self) -> str | None:
        """A warning when passes disagree by more than NOISY (a shared or throttled machine)."""
        if self.spread <= NOISY:
            return None
        return (
            f"NOISY: a batch size's throughput varied by up to {self.spread:.0%} between "
            f"passes (each size is its best pass); re-run on a quiet machine to trust "
            f"differences of a few %"
        )


def header(
    decision: Decision, measured: Measured, hardware: Hardware, command: str, cpu_model: str
) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# TF Serving BatchingParameters (text proto) for --enable_batching and "
        "--batching_parameters_file.",
        f"# Written by the batching tuner ({PROG}): re-run it, do not edit.",
        # A server elsewhere: no "# host:" line, so make bench never takes it for this host's.
        (
            f"# server's CPU cores: {hardware.cores} (as given); measured from {cpu_model}"
            if measured.remote
            else batching_file.host_line(cpu_model, hardware.cores)
        ),
        f"# device: {hardware.device}; date: {now}",
        f"# command: {command}",
        f"# measured: {measured.what}",
        f"# load average (1, 5, 15 min) of this host: {measured.load_before} before, "
        f"{machine.load_average()} after",
        f"# goal: {decision.goal}" + ("" if decision.goal_met else " -- NOT MET, see below"),
        f"# [{GUIDE}]: {GUIDE_SOURCE}",
        "# throughput (img/s) and latency (ms) per batch size:",
    ]
    lines += [
        f"#   batch {p.batch_size:>3}: {p.throughput:7.2f} img/s  p50 {p.p50_ms:8.1f}  "
        f"p99 {p.p99_ms:8.1f}"
        for p in measured.points
    ]
    note = measured.noise_note()
    if note:
        lines += [f"# {line}" for line in textwrap.wrap(note, 98)]
    if measured.threads:
        lines += [f"# {line}" for line in textwrap.wrap(f"then {measured.threads_what}:", 98)]
        lines += [f"#   {line}" for line in threads_table(measured.threads)]
    return lines


def threads_table(points: tuple[ThreadsPoint, ...]) -> list[str]:
    """One line per probed batch-thread count."""
    return [
        f"threads {p.threads:>2}: {p.throughput:7.2f} img/s  p50 {p.p50_ms:8.1f}  "
        f"p99 {p.p99_ms:8.1f}"
        + ("" if p.cores_busy is None else f"  server busy {p.cores_busy:.2f} cores")
        for p in points
    ]


def report(decision: Decision, measured: Measured) -> str:
    """What the tuner prints: the table, then each value and why."""
    lines = [
        f"measured: {measured.what}",
        *(
            f"  batch {p.batch_size:>3}: {p.throughput:7.2f} img/s  p50 {p.p50_ms:8.1f} ms  "
            f"p99 {p.p99_ms:8.1f} ms"
            for p in measured.points
        ),
        *([note] if (note := measured.noise_note()) else []),
        *([f"then {measured.threads_what}:"] if measured.threads else []),
        *(f"  {line}" for line in threads_table(measured.threads)),
        f"goal: {decision.goal}" + ("" if decision.goal_met else "  ** NOT MET **"),
        f"[{GUIDE}]: {GUIDE_SOURCE}",
    ]
    for setting in decision.settings:
        value = (
            "unset"
            if setting.value is None
            else ",".join(map(str, setting.value))
            if isinstance(setting.value, tuple)
            else str(setting.value)
        )
        lines.append(f"{setting.name} = {value}\n    {setting.reason}")
    return "\n".join(lines)
