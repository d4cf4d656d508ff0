"""Benchmark statistics, ratios, targets and the results schema (benchmarks/stats.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from benchmarks import stats


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(q: float) -> None:
    values = list(np.random.default_rng(3).exponential(50.0, size=37))
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_even_count_median_is_mean_of_middle_pair() -> None:
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5


def test_percentile_is_nan_for_no_values_and_rejects_q_out_of_range() -> None:
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError, match="q must be within"):
        stats.percentile([1.0], 101)


def test_summarize_latencies_reports_milliseconds() -> None:
    summary = stats.summarize_latencies([0.1, 0.2, 0.3])
    assert summary["p50_ms"] == pytest.approx(200.0)
    assert summary["mean_ms"] == pytest.approx(200.0)
    assert summary["p99_ms"] == pytest.approx(298.0)


def test_throughput_is_images_per_second_and_nan_without_time() -> None:
    assert stats.throughput(30, 3.0) == 10.0
    assert math.isnan(stats.throughput(30, 0.0))


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [(10.0, 4.0, 2.5), (None, 1.0, None), (1.0, 0.0, None), (math.nan, 1.0, None)],
)
def test_ratio_is_none_when_undefined(num: Any, den: Any, expected: Any) -> None:
    assert stats.ratio(num, den) == expected


def _row(
    variant: str, concurrency: int, batching: bool | None, throughput: float, p50: float = 100.0
) -> dict[str, Any]:
    return {
        "variant": variant,
        "concurrency": concurrency,
        "batching": batching,
        "throughput": throughput,
        "p50_ms": p50,
        "p95_ms": p50 * 1.5,
        "p99_ms": p50 * 2,
    }


SERVED = [
    _row("grpc-bytes", 1, True, 6.0, p50=130.0),
    _row("grpc-bytes", 16, True, 9.0),
    _row("grpc-bytes", 1, False, 6.5, p50=120.0),
    _row("grpc-bytes", 16, False, 7.0),
    _row("usual-float32", 16, True, 12.0),  # another variant never counts as "served"
]


def test_compute_ratios_uses_best_bytes_row_and_side_by_side_client_figures() -> None:
    ratios = stats.compute_ratios(
        limit={"throughput": 10.0, "latency_p50_ms": 110.0},
        served=SERVED,
        usual={"request_bytes_per_image": 1_072_900.0, "client_cpu_ms_per_image": 12.0},
        ours={"request_bytes_per_image": 53_645.0, "client_cpu_ms_per_image": 0.8},
        imports={"tfs_api_s": 6.0, "xception_client_s": 0.3},
        bytes_variant="grpc-bytes",
    )
    assert ratios["served_over_limit"] == pytest.approx(0.9)
    assert ratios["request_bytes_usual_over_ours"] == pytest.approx(20.0)
    assert ratios["client_cpu_usual_over_ours"] == pytest.approx(15.0)
    assert ratios["import_time_tfs_api_over_ours"] == pytest.approx(20.0)


def test_compute_ratios_leaves_unmeasured_ratios_none() -> None:
    ratios = stats.compute_ratios(
        limit={"throughput": 10.0},
        served=[],
        usual=None,
        ours=None,
        imports=None,
        bytes_variant="grpc-bytes",
    )
    assert set(ratios) == set(stats.RATIO_KEYS)
    assert all(v is None for v in ratios.values())


def test_evaluate_targets_holds_at_thresholds_and_fails_below() -> None:
    limit = {"throughput": 10.0, "latency_p50_ms": 105.0}
    ratios = {
        "served_over_limit": 0.95,
        "request_bytes_usual_over_ours": 19.9,
        "client_cpu_usual_over_ours": 10.0,
        "import_time_tfs_api_over_ours": None,
    }
    targets = stats.evaluate_targets(
        limit=limit, served=SERVED, ratios=ratios, bytes_variant="grpc-bytes"
    )
    assert targets["served_throughput_vs_limit"]["holds"] is True
    assert targets["request_bytes"]["holds"] is False
    assert targets["client_cpu"]["holds"] is True
    assert targets["client_import_time"]["holds"] is None
    # best p50 at concurrency 1 over both batching settings: 120 ms = 105 + 15 -> holds
    assert targets["p50_at_concurrency_1"]["value"] == 120.0
    assert targets["p50_at_concurrency_1"]["holds"] is True


def test_paired_ratio_is_the_median_of_rounds_measured_back_to_back() -> None:
    rounds = [
        {"limit": 20.0, "served": 19.6},  # 0.98
        {"limit": 12.0, "served": 11.4},  # 0.95: the machine slowed down for both
        {"limit": 22.0, "served": 15.4},  # 0.70: the limit's pass caught a burst
    ]
    assert stats.paired_ratio(rounds) == pytest.approx(0.95)
    assert stats.paired_ratio(rounds[:2]) == pytest.approx((0.98 + 0.95) / 2)
    assert stats.paired_ratio([{"limit": 0.0, "served": 3.0}]) is None
    assert stats.paired_ratio([]) is None


def test_served_target_judges_the_paired_ratio_when_rounds_were_measured() -> None:
    paired = [{"limit": 20.0, "served": 19.2}, {"limit": 14.0, "served": 13.5}]
    ratios = stats.compute_ratios(
        limit={"throughput": 22.0, "latency_p50_ms": 90.0},  # best of passes: a burst
        served=SERVED,
        usual=None,
        ours=None,
        imports=None,
        bytes_variant="grpc-bytes",
        paired=paired,
    )
    assert ratios["served_over_limit"] == pytest.approx(9.0 / 22.0)
    assert ratios["served_over_limit_paired"] == pytest.approx((0.96 + 13.5 / 14.0) / 2)
    targets = stats.evaluate_targets(
        limit={"throughput": 22.0, "latency_p50_ms": 90.0},
        served=SERVED,
        ratios=ratios,
        bytes_variant="grpc-bytes",
    )
    served = targets["served_throughput_vs_limit"]
    assert served["value"] == ratios["served_over_limit_paired"]
    assert served["holds"] is True and "back-to-back" in served["threshold"]
    unpaired = stats.evaluate_targets(
        limit={"throughput": 22.0},
        served=SERVED,
        ratios={**ratios, "served_over_limit_paired": None},
        bytes_variant="grpc-bytes",
    )["served_throughput_vs_limit"]
    assert unpaired["value"] == ratios["served_over_limit"] and unpaired["holds"] is False


def test_evaluate_targets_p50_fails_when_over_limit_plus_15_ms() -> None:
    targets = stats.evaluate_targets(
        limit={"throughput": 10.0, "latency_p50_ms": 100.0},
        served=SERVED,
        ratios=dict.fromkeys(stats.RATIO_KEYS),
        bytes_variant="grpc-bytes",
    )
    assert targets["p50_at_concurrency_1"]["holds"] is False


def _valid_doc() -> dict[str, Any]:
    return {
        "limit": {"throughput": 10.0, "latency_p50_ms": 100.0},
        "served": SERVED,
        "ratios": dict.fromkeys(stats.RATIO_KEYS, 1.0),
        "machine": {"cpu_model": "x", "cores": 2},
        "targets": {},
    }


def test_schema_problems_accepts_the_minimum_schema() -> None:
    assert stats.schema_problems(_valid_doc()) == []


def test_schema_problems_names_each_missing_field() -> None:
    doc = _valid_doc()
    del doc["limit"]["latency_p50_ms"]
    doc["served"] = [{k: v for k, v in SERVED[0].items() if k != "p99_ms"}]
    del doc["ratios"]["client_cpu_usual_over_ours"]
    doc["machine"] = {"cores": 2}
    assert stats.schema_problems(doc) == [
        "limit.latency_p50_ms: missing",
        "served[0].p99_ms: missing",
        "ratios.client_cpu_usual_over_ours: missing",
        "machine: needs cpu_model and cores",
    ]


def test_json_safe_turns_non_finite_floats_into_null_for_strict_json() -> None:
    doc = stats.json_safe({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
    }


def test_summarize_limit_picks_the_best_batch_size_and_batch_1_latency_p50() -> None:
    raw = {
        "per_batch_size": [
            {"batch_size": 1, "throughput": 8.0},
            {"batch_size": 4, "throughput": 9.5},
            {"batch_size": 8, "throughput": 9.1},
        ],
        "single_image_latencies_s": [0.120, 0.100, 0.110],
        "signature": "serving_pixels",
    }
    limit = stats.summarize_limit(raw)
    assert (limit["throughput"], limit["best_batch_size"]) == (9.5, 4)
    assert limit["latency_p50_ms"] == pytest.approx(110.0)


def test_summarize_limit_takes_the_better_of_two_passes_per_batch_size() -> None:
    first = {
        "per_batch_size": [
            {"batch_size": 1, "throughput": 8.0},
            {"batch_size": 4, "throughput": 9.0},
        ],
        "single_image_latencies_s": [0.130, 0.120, 0.140],
        "signature": "serving_pixels",
    }
    second = {
        "per_batch_size": [
            {"batch_size": 1, "throughput": 9.8},
            {"batch_size": 4, "throughput": 8.5},
        ],
        "single_image_latencies_s": [0.100, 0.105],
        "signature": "serving_pixels",
    }
    limit = stats.summarize_limit(first, second)  # as many passes as were measured
    assert (limit["throughput"], limit["best_batch_size"]) == (9.8, 1)
    assert [p["throughput"] for p in limit["per_batch_size"]] == [9.8, 9.0]
    assert limit["latency_p50_ms"] == pytest.approx(102.5)
    assert (limit["passes"], limit["latency_samples"]) == (2, 2)


def test_quick_defaults_shrink_the_run_and_keep_paths_absolute() -> None:
    from benchmarks.options import parse_options

    quick = parse_options(["--quick", "--model-base-path", "rel/model"])
    assert (quick.images, quick.seconds, quick.import_repeats) == (12, 2.0, 1)
    assert quick.limit_batch_sizes == (1, 4)
    assert quick.model_base_path.is_absolute() and quick.batching_config.is_absolute()
    full = parse_options(["--concurrency", "1,8"])
    assert full.concurrency == (1, 8) and full.images == 48
    assert full.limit_batch_sizes == (1, 2, 4, 8)
