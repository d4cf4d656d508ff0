"""The batching tuner: what it decides from measured (batch size -> throughput, latency) tables,
the config file it writes, and its command line. No model, no server: the tables are given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from xception_serving.config import files as config_files

from benchmarks import batching_file, measure, tune_batching, tune_report
from benchmarks.batching_rules import Decision, Goal, Hardware, Point, decide

CPU = Hardware("cpu", cores=2)  # intra-op 0: TensorFlow's default, every core per run


def limit_table(*rates: tuple[int, float]) -> list[Point]:
    """Points as the in-process limit gives them: latency = one call of B images."""
    return [Point(b, r, 1000 * b / r, 1000 * b / r) for b, r in rates]


# This machine's shape: batch 8 clearly ahead of 4, 16 barely ahead of 8.
CPU_TABLE = limit_table((1, 11.0), (2, 11.7), (4, 13.5), (8, 14.8), (16, 15.0))


def test_max_batch_size_is_the_smallest_within_the_min_gain_of_the_best_that_meets_the_goal() -> (
    None
):
    decision = decide(CPU_TABLE, Goal(p99_ms=2000), CPU)
    assert decision.value("max_batch_size") == 8
    assert decision.goal_met
    reason = _reason(decision, "max_batch_size")
    assert "Batch 16 is +1.4%, under the 3%" in reason
    assert "batch 8: 14.8 img/s, p50 541 ms, p99 541 ms" in reason


def test_a_bigger_batch_that_misses_the_goal_is_not_chosen_and_the_reason_names_it() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=400), CPU)
    assert decision.value("max_batch_size") == 4
    assert "Batch 8 misses the goal (p99 <= 400 ms): p50 541 ms, p99 541 ms" in _reason(
        decision, "max_batch_size"
    )


def test_a_p50_goal_alone_bounds_the_p50_and_not_the_p99() -> None:
    table = [Point(1, 10.0, 100, 900), Point(4, 14.0, 290, 2500)]
    assert decide(table, Goal(p50_ms=300), CPU).value("max_batch_size") == 4
    assert decide(table, Goal(p50_ms=300, p99_ms=1000), CPU).value("max_batch_size") == 1


def test_a_noisy_dip_does_not_stop_the_search_before_a_clearly_faster_size() -> None:
    table = limit_table((1, 11.0), (2, 10.2), (4, 13.8), (8, 13.9))
    assert decide(table, Goal(p99_ms=5000), CPU).value("max_batch_size") == 4


def test_throughput_still_growing_at_the_largest_size_asks_for_larger_sizes() -> None:
    decision = decide(limit_table((1, 10.0), (2, 13.0), (4, 17.0)), Goal(p99_ms=5000), CPU)
    assert decision.value("max_batch_size") == 4
    assert "Still +30.8% over batch 2 at the largest size measured: measure larger sizes" in (
        _reason(decision, "max_batch_size")
    )


def test_when_no_size_meets_the_goal_the_lowest_latency_size_is_used_and_flagged() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=50), CPU)
    assert not decision.goal_met
    assert decision.value("max_batch_size") == 1
    assert _reason(decision, "max_batch_size").startswith(
        "GOAL NOT MET: no usable batch size meets p99 <= 50 ms; batch 1: 11.0 img/s"
    )


def test_max_batch_size_never_falls_below_the_largest_request_clients_send() -> None:
    table = limit_table((1, 16.0), (2, 11.0), (4, 12.0), (8, 12.1))
    assert decide(table, Goal(p99_ms=2000), CPU).value("max_batch_size") == 1
    decision = decide(table, Goal(p99_ms=2000), CPU, largest_request=4)
    assert decision.value("max_batch_size") == 4
    assert "Sizes under 4 are no candidates: requests carry up to 4 images" in _reason(
        decision, "max_batch_size"
    )


def test_the_largest_request_also_bounds_the_goal_not_met_fallback() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=50), CPU, largest_request=4)
    assert (decision.value("max_batch_size"), decision.goal_met) == (4, False)


def test_a_table_without_a_size_for_the_largest_request_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "no measured batch size holds the largest request (32 images): measure sizes up to "
            "at least 32"
        ),
    ):
        decide(CPU_TABLE, Goal(p99_ms=2000), CPU, largest_request=32)


def test_on_cpu_one_batch_runs_at_a_time_when_each_run_already_uses_every_core() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=2000), CPU)
    assert decision.value("num_batch_threads") == 1
    reason = _reason(decision, "num_batch_threads")
    assert '"equal to the number of CPU cores" (2 here)' in reason
    assert "2 / 2 = 1 batch(es) at a time" in reason


def test_on_cpu_single_threaded_runs_get_one_batch_thread_per_core_as_the_guide_says() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=2000), Hardware("cpu", cores=8, intra_op_threads=2))
    assert decision.value("num_batch_threads") == 4


def test_on_gpu_batch_threads_follow_the_cores_and_the_queue_follows_the_threads() -> None:
    table = [Point(b, 100.0 * b, 20.0, 25.0) for b in (8, 16, 32, 64)]
    decision = decide(table, Goal(p99_ms=100), Hardware("gpu", cores=8))
    assert decision.value("num_batch_threads") == 8
    assert decision.value("max_enqueued_batches") == 8
    assert "Raised" not in _reason(decision, "max_enqueued_batches")
    assert decision.value("allowed_batch_sizes") == (8, 16, 32, 64)


def test_the_queue_is_raised_above_the_threads_to_hold_the_peak_of_callers() -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=2000), CPU, peak_concurrency=20)
    assert decision.value("max_enqueued_batches") == 3  # ceil(20 / 8)
    assert "Raised to ceil(20 callers / 8) = 3" in _reason(decision, "max_enqueued_batches")


@pytest.mark.parametrize(
    ("device", "batch_ms", "micros"),
    [
        ("cpu", 540.0, 0),  # the next callers queue during a long run: no waiting
        ("cpu", 40.0, 1000),  # a short CPU run: the guide's 1 ms smooths batch sizes
        ("gpu", 31.0, 3100),  # a tenth of the run
        ("gpu", 4.0, 1000),  # ... at least 1 ms
        ("gpu", 400.0, 10000),  # ... at most 10 ms
    ],
)
def test_batch_timeout_follows_the_guide_for_the_device_and_the_batch_run_time(
    device: str,
    batch_ms: float,
    micros: int,
) -> None:
    table = [Point(4, 50.0, batch_ms, batch_ms)]
    hardware = Hardware("gpu" if device == "gpu" else "cpu", cores=4)
    assert decide(table, Goal(p99_ms=1000), hardware).value("batch_timeout_micros") == micros


def test_cpu_configs_never_pad_and_gpu_configs_pad_only_up_to_max_batch_size() -> None:
    assert decide(CPU_TABLE, Goal(p99_ms=2000), CPU).value("allowed_batch_sizes") is None
    gpu = decide(CPU_TABLE, Goal(p99_ms=600), Hardware("gpu", cores=4))
    assert gpu.value("allowed_batch_sizes") == (1, 2, 4, 8)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "no measured batch sizes"),
        ([Point(2, 1.0, 1, 1), Point(2, 2.0, 1, 1)], "distinct positive integers, got [2, 2]"),
        ([Point(0, 1.0, 1, 1)], "distinct positive integers, got [0]"),
        ([Point(4, float("nan"), 1, 1)], "batch 4: throughput and latencies must be positive"),
    ],
)
def test_tables_that_cannot_be_decided_from_are_refused_naming_the_problem(
    points: list[Point],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        decide(points, Goal(p99_ms=100), CPU)


def test_a_goal_needs_a_positive_bound() -> None:
    with pytest.raises(ValueError, match="a p50 or a p99 bound"):
        Goal()
    with pytest.raises(ValueError, match="the p99 goal must be a positive number of ms, got -1"):
        Goal(p99_ms=-1)


# -- the written file ------------------------------------------------------------------------------


def _written(tmp_path: Path, decision: Decision) -> Path:
    text = batching_file.render(decision, [batching_file.host_line("Test CPU @ 2GHz", 2)])
    path = tmp_path / "batching.config"
    batching_file.write(path, text)
    return path


def test_the_written_config_reads_back_as_the_decided_values(tmp_path: Path) -> None:
    path = _written(tmp_path, decide(CPU_TABLE, Goal(p99_ms=2000), CPU))
    params = config_files.read_batching_parameters(path)
    assert params.max_batch_size.value == 8
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 0
    assert (params.num_batch_threads.value, params.max_enqueued_batches.value) == (1, 2)
    assert not params.allowed_batch_sizes
    assert "batch_timeout_micros { value: 0 }" in path.read_text()


def test_a_gpu_configs_padding_sizes_read_back_in_order(tmp_path: Path) -> None:
    path = _written(tmp_path, decide(CPU_TABLE, Goal(p99_ms=600), Hardware("gpu", cores=4)))
    assert list(config_files.read_batching_parameters(path).allowed_batch_sizes) == [1, 2, 4, 8]


def test_every_written_setting_sits_under_its_reason(tmp_path: Path) -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=600), Hardware("gpu", cores=4))
    lines = _written(tmp_path, decision).read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = lines[index - 1]
            assert above.startswith("#") or above.startswith(line.split(":")[0]), line
    for setting in decision.settings:
        assert f"# {setting.name}: " in "\n".join(lines)


def test_the_host_a_config_was_tuned_on_is_read_from_its_header(tmp_path: Path) -> None:
    path = _written(tmp_path, decide(CPU_TABLE, Goal(p99_ms=2000), CPU))
    assert batching_file.tuned_host(path) == ("Test CPU @ 2GHz", 2)
    (tmp_path / "by-hand.config").write_text("max_batch_size { value: 4 }\n")
    assert batching_file.tuned_host(tmp_path / "by-hand.config") is None
    assert batching_file.tuned_host(tmp_path / "missing.config") is None


# -- measuring and the command line ----------------------------------------------------------------


def test_limit_passes_give_each_size_its_best_pass_and_its_mean_call_time() -> None:
    first = {
        "per_batch_size": [
            {"batch_size": 1, "calls": 10, "seconds": 1.0, "throughput": 10.0},
            {"batch_size": 4, "calls": 3, "seconds": 1.2, "throughput": 10.0},
        ]
    }
    second = {"per_batch_size": [{"batch_size": 4, "calls": 4, "seconds": 1.0, "throughput": 16.0}]}
    assert tune_batching.best_per_size([first, second]) == [
        Point(1, 10.0, 100.0, 100.0),
        Point(4, 16.0, 250.0, 250.0),
    ]


def test_passes_that_disagree_by_more_than_a_fifth_are_reported_as_noisy() -> None:
    passes = [
        {
            "per_batch_size": [
                {"batch_size": 1, "throughput": 10.0},
                {"batch_size": 8, "throughput": 15.0},
            ]
        },
        {
            "per_batch_size": [
                {"batch_size": 1, "throughput": 10.5},
                {"batch_size": 8, "throughput": 10.0},
            ]
        },
    ]
    spread = tune_batching.pass_spread(passes)
    assert spread == pytest.approx(0.5)
    noisy = tune_report.Measured([], "limit", 0, [], spread)
    assert (noisy.noise_note() or "").startswith(
        "NOISY: a batch size's throughput varied by up to 50% between passes"
    )
    assert tune_report.Measured([], "limit", 0, [], 0.1).noise_note() is None


def test_a_config_tuned_against_a_remote_server_is_never_taken_for_this_hosts(
    tmp_path: Path,
) -> None:
    decision = decide(CPU_TABLE, Goal(p99_ms=2000), CPU)
    for remote in (False, True):
        measured = tune_report.Measured(CPU_TABLE, "somewhere", 0, [], remote=remote)
        lines = tune_report.header(decision, measured, CPU, "cmd", "Test CPU @ 2GHz")
        path = tmp_path / f"remote-{remote}.config"
        batching_file.write(path, batching_file.render(decision, lines))
        expected = None if remote else ("Test CPU @ 2GHz", 2)
        assert batching_file.tuned_host(path) == expected


def test_each_limit_pass_starts_at_another_size() -> None:
    assert [measure.rotated([1, 2, 4], turn) for turn in range(4)] == [
        [1, 2, 4],
        [2, 4, 1],
        [4, 1, 2],
        [1, 2, 4],
    ]


def test_the_probe_config_runs_one_batch_thread_capped_at_the_largest_size() -> None:
    params = config_files.parse_text_proto(
        tune_batching.probe_config((8, 64, 16), peak=256), config_files.BatchingParameters
    )
    config_files.validate_batching_parameters(params)
    assert (params.max_batch_size.value, params.num_batch_threads.value) == (64, 1)
    assert params.max_enqueued_batches.value >= 256


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "h:1"], "--target needs --device cpu or gpu"),
        (["--batch-sizes", "1,x"], "expected sizes like 1,2,4,8, got '1,x'"),
        (["--batch-sizes", "0,4"], "batch sizes must be positive, got '0,4'"),
        (["--p99-goal-ms", "-5"], "expected a positive number, got '-5'"),
        (["--passes", "0"], "expected a positive whole number, got '0'"),
        (["--thread-rounds", "-1"], "expected a positive whole number, got '-1'"),
        (["--thread-seconds", "0"], "expected a positive number, got '0'"),
    ],
)
def test_bad_arguments_exit_2_naming_what_was_wrong(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TFS_TARGET", raising=False)
    with pytest.raises(SystemExit) as exit_:
        tune_batching.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_target_defaults_to_tfs_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFS_TARGET", "gpu-host:8500")
    assert tune_batching.build_parser().parse_args([]).target == "gpu-host:8500"


HERE = ("Test CPU @ 2GHz", 2)


@pytest.mark.parametrize(
    ("mode", "local", "tuned_on", "tunes", "why"),
    [
        ("auto", True, HERE, False, "the config was tuned on this host (Test CPU @ 2GHz, 2 cores)"),
        (
            "auto",
            True,
            ("Test CPU @ 2GHz", 8),
            True,
            "the config was tuned on Test CPU @ 2GHz with 8 cores, this host is Test CPU @ 2GHz "
            "with 2",
        ),
        ("auto", True, None, True, "the config was not written by the tuner"),
        ("always", True, HERE, True, "--tune always"),
        ("never", True, None, False, "--tune never"),
        ("always", False, None, False, "a TF Serving target batches with its own config"),
    ],
)
def test_the_benchmark_tunes_unless_its_config_was_tuned_on_this_host(
    mode: str,
    local: bool,
    tuned_on: tuple[str, int] | None,
    tunes: bool,
    why: str,
) -> None:
    assert tune_batching.wants_tuning(mode, local, tuned_on, HERE) == (tunes, why)


def _reason(decision: Decision, name: str) -> str:
    return next(s.reason for s in decision.settings if s.name == name)
