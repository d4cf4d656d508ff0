"""The batching tuner's num_batch_threads: what it decides from the served path measured at each
thread count, the probe servers' config, and how the figures are reported. No model, no server:
the measured points are given (tests/integration/test_tune_threads.py runs the real probe)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from xception_serving.config import files as config_files

from benchmarks import machine, tune_report, tune_threads
from benchmarks.batching_rules import MIN_GAIN, Goal, Hardware, Point, ThreadsPoint, decide

CPU = Hardware("cpu", cores=2)
TABLE = [Point(b, r, 1000 * b / r, 1000 * b / r) for b, r in ((1, 18.0), (4, 20.7), (8, 19.9))]
GOAL = Goal(p99_ms=1000)


def served(*points: tuple[int, float, float]) -> list[ThreadsPoint]:
    """(threads, img/s, p99 ms) -> points, p50 at 90% of the p99, 1.8 + 0.05 * threads cores."""
    return [ThreadsPoint(t, r, 0.9 * p99, p99, 1.8 + 0.05 * t) for t, r, p99 in points]


def threads_reason(points: list[ThreadsPoint], min_gain: float = MIN_GAIN) -> tuple[int, str]:
    decision = decide(TABLE, GOAL, CPU, largest_request=4, threads_points=points, min_gain=min_gain)
    reason = next(s.reason for s in decision.settings if s.name == "num_batch_threads")
    value = decision.value("num_batch_threads")
    assert isinstance(value, int)
    return value, reason


def test_a_second_batch_thread_that_adds_the_min_gain_is_chosen_and_the_reason_shows_why() -> None:
    threads, reason = threads_reason(served((1, 18.2, 969), (2, 18.93, 954)))  # measured here
    assert threads == 2
    assert "1: 18.20 img/s, p99 969 ms, server busy 1.85 cores" in reason
    assert "2: 18.93 img/s, p99 954 ms, server busy 1.90 cores" in reason
    assert "the fewest threads within 3% of the best throughput that meet p99 <= 1000 ms" in reason
    assert "another batch in flight fills them" in reason


def test_a_second_thread_that_adds_less_than_the_min_gain_is_not_worth_its_longer_batches() -> None:
    threads, reason = threads_reason(served((1, 18.2, 969), (2, 18.6, 954)))  # +2.2%
    assert threads == 1
    assert "another batch in flight" not in reason


def test_the_min_gain_is_the_one_given_to_the_tuner() -> None:
    points = served((1, 18.2, 969), (2, 18.6, 954))
    assert threads_reason(points, min_gain=0.01)[0] == 2


def test_a_count_that_misses_the_latency_goal_is_not_chosen() -> None:
    assert threads_reason(served((1, 18.0, 900), (2, 20.0, 1100)))[0] == 1


def test_when_no_count_meets_the_goal_at_the_peak_throughput_decides_and_says_why() -> None:
    # Measured here on a slow minute (make bench --quick --tune always): both over 1 s at 16
    # callers, the second thread 7.6% faster with the noisier p99.
    threads, reason = threads_reason(served((1, 15.35, 1144), (2, 16.52, 1256)))
    assert threads == 2
    assert "No count meets p99 <= 1000 ms at the peak" in reason
    assert "chosen by throughput alone" in reason
    assert threads_reason(served((1, 15.35, 1144), (2, 15.6, 1100)))[0] == 1  # +1.6%


def test_unmeasured_cpus_and_every_gpu_keep_the_guides_rule() -> None:
    gpu = decide(TABLE, GOAL, Hardware("gpu", cores=8), threads_points=served((1, 9.0, 100)))
    assert gpu.value("num_batch_threads") == 8
    assert decide(TABLE, GOAL, CPU).value("num_batch_threads") == 1


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (served((1, 9.0, 100), (1, 9.5, 100)), "distinct positive integers, got [1, 1]"),
        (served((0, 9.0, 100)), "distinct positive integers, got [0]"),
        ([ThreadsPoint(2, float("nan"), 1.0, 1.0)], "2 threads: throughput and latencies"),
    ],
)
def test_thread_tables_that_cannot_be_decided_from_are_refused(
    points: list[ThreadsPoint], message: str
) -> None:
    with pytest.raises(ValueError) as error:
        decide(TABLE, GOAL, CPU, threads_points=points)
    assert message in str(error.value)


def test_the_probe_tries_one_two_and_every_core_at_most() -> None:
    counts = [tune_threads.candidate_counts(c) for c in (1, 2, 3, 16)]
    assert counts == [(1,), (1, 2), (1, 2, 3), (1, 2, 16)]


def test_each_probe_server_runs_the_decided_values_with_its_thread_count() -> None:
    probe = tune_threads.ThreadsProbe(4, 0, (1, 2), peak_concurrency=16, seconds=1, rounds=1)
    params = config_files.parse_text_proto(
        tune_threads.probe_config(probe, 2), config_files.BatchingParameters
    )
    config_files.validate_batching_parameters(params)
    assert params.max_batch_size.value == 4
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 0
    assert params.num_batch_threads.value == 2
    assert params.max_enqueued_batches.value == 4  # 16 single-image callers never find it full


def test_a_counts_point_is_the_median_of_its_rounds() -> None:
    rounds = [
        {"throughput": t, "p50_ms": 800.0 + t, "p99_ms": 900.0 + t, "cores_busy": c}
        for t, c in ((17.5, 1.80), (19.4, 1.83), (18.2, 1.82))
    ]
    assert tune_threads.median_point(2, rounds) == ThreadsPoint(2, 18.2, 818.2, 918.2, 1.82)
    del rounds[0]["cores_busy"]  # one round without /proc: no busy figure at all
    assert tune_threads.median_point(2, rounds).cores_busy is None


def test_a_process_cpu_time_is_read_from_proc_even_with_parentheses_in_its_name(
    tmp_path: Path,
) -> None:
    (tmp_path / "42").mkdir()
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", *["0"] * 10, str(3 * ticks), str(ticks), *["0"] * 30]
    (tmp_path / "42" / "stat").write_text(f"42 (python (x) y) {' '.join(fields)}\n")
    assert machine.process_cpu_seconds(42, proc=tmp_path) == 4.0
    assert machine.process_cpu_seconds(43, proc=tmp_path) is None


def test_this_process_cpu_time_grows_as_it_computes() -> None:
    before = machine.process_cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc on this OS: the probe reports no busy cores here")
    sum(i * i for i in range(2_000_000))
    after = machine.process_cpu_seconds(os.getpid())
    assert after is not None and after > before


def test_the_printout_and_the_config_header_show_the_thread_table() -> None:
    points = tuple(served((1, 18.2, 969), (2, 18.93, 954)))
    measured = tune_report.Measured(TABLE, "limit", 0, [], threads=points, threads_what="served")
    decision = decide(TABLE, GOAL, CPU, largest_request=4, threads_points=points)
    expected = "threads  2:   18.93 img/s  p50    858.6  p99    954.0  server busy 1.90 cores"
    assert f"  {expected}" in tune_report.report(decision, measured).splitlines()
    header = tune_report.header(decision, measured, CPU, "cmd", "Test CPU")
    assert "# then served:" in header and f"#   {expected}" in header
