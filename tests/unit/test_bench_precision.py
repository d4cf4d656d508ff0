"""The benchmark's precision phase, the parts that need no model: parity, targets, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks import precision, report, stats


def _served(throughputs: dict[int, float]) -> list[dict[str, Any]]:
    return [
        {
            "variant": "grpc-bytes",
            "concurrency": c,
            "batching": True,
            "throughput": t,
            "p50_ms": 200.0,
            "p95_ms": 260.0,
        }
        for c, t in throughputs.items()
    ]


def _doc(*, bf16_speedup: float, agreement: float, supported: bool) -> dict[str, Any]:
    variants = []
    for name, speed, top1 in (
        ("fp32", 1.0, 1.0),
        ("bf16", bf16_speedup, agreement),
        ("xla-cpu", 0.2, 1.0),
    ):
        variants.append(
            {
                "name": name,
                "limit": {"throughput": 8.0 * speed, "best_batch_size": 4},
                "served": _served({1: 5.0 * speed, 4: 7.5 * speed}),
                "served_speedup_vs_fp32": speed,
                "parity_vs_fp32": {"images": 48, "top1_agreement": top1, "max_abs_dp": 0.01},
            }
        )
    return {
        "model": {"image_size": 299, "classes": 10, "mean_top1_probability": 0.95},
        "cpu_bf16_flags": ["amx_bf16"] if supported else [],
        "bf16_supported": supported,
        "served_levels": [1, 4],
        "variants": variants,
    }


def test_parity_counts_top1_agreement_and_the_largest_probability_difference() -> None:
    reference = [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]
    other = [[0.6, 0.3, 0.1], [0.1, 0.4, 0.5], [0.3, 0.3, 0.4]]
    result = precision.compare(reference, other)
    assert result["images"] == 3
    assert result["top1_agreement"] == pytest.approx(2 / 3)
    assert result["max_abs_dp"] == pytest.approx(0.1)


def test_parity_refuses_image_sets_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="same non-empty image set: 1 vs 2 images"):
        precision.compare([[1.0]], [[1.0], [1.0]])


def test_bf16_targets_hold_fail_and_skip_by_what_was_measured_and_the_cpu() -> None:
    good = stats.precision_targets(_doc(bf16_speedup=1.55, agreement=1.0, supported=True))
    assert good["bf16_served_speedup"]["holds"] is True
    assert good["bf16_top1_agreement"]["holds"] is True
    bad = stats.precision_targets(_doc(bf16_speedup=1.2, agreement=0.98, supported=True))
    assert bad["bf16_served_speedup"]["holds"] is False
    assert bad["bf16_top1_agreement"]["holds"] is False
    skipped = stats.precision_targets(_doc(bf16_speedup=1.0, agreement=1.0, supported=False))
    assert {t["skipped"] for t in skipped.values()} == {"no bf16"}
    assert {t["holds"] for t in skipped.values()} == {None}
    assert stats.precision_targets(None) == {}


def test_the_table_prints_a_precision_row_per_variant_and_skipped_targets_say_why() -> None:
    doc = {
        "machine": {},
        "setup": {},
        "limit": {},
        "served": [],
        "ratios": {},
        "precision": _doc(bf16_speedup=1.0, agreement=1.0, supported=False),
    }
    doc["targets"] = stats.precision_targets(doc["precision"])
    table = report.format_table(doc)
    rows = [
        line for line in table.splitlines() if line.split()[:1] in (["fp32"], ["bf16"], ["xla-cpu"])
    ]
    assert [row.split()[0] for row in rows] == ["fp32", "bf16", "xla-cpu"]
    assert "CPU bf16 flags: none" in table
    assert "skipped: no bf16" in table


def test_the_plot_gets_a_precision_panel(tmp_path: Path) -> None:
    doc = {
        "served": _served({1: 5.0, 4: 7.0}),
        "limit": {"throughput": 8.0},
        "precision": _doc(bf16_speedup=1.5, agreement=1.0, supported=True),
    }
    path = report.plot(doc, tmp_path / "p.png")
    with Image.open(path) as image:
        assert image.width > 1500  # three panels instead of two


def test_the_xla_variant_sets_the_auto_clustering_session_config_and_environment(
    tmp_path: Path,
) -> None:
    by_name = {v.name: v for v in precision.variants(tmp_path)}
    assert set(by_name) == {"fp32", "bf16", "xla-cpu"}
    assert by_name["bf16"].server_flags == ("--mixed_precision=bfloat16",)
    xla = by_name["xla-cpu"]
    assert "--xla_cpu_compilation_enabled" in xla.server_flags
    assert xla.env == {"TF_XLA_FLAGS": "--tf_xla_cpu_global_jit"}
    config = tmp_path / "xla-cpu-session.config"
    assert f"--tensorflow_session_config_file={config}" in xla.server_flags
    assert "global_jit_level: ON_1" in config.read_text()


def test_the_xla_session_config_file_is_a_valid_configproto_the_server_accepts(
    tmp_path: Path,
) -> None:
    from tensorflow.core.protobuf import config_pb2
    from xception_serving.runtime.session_config import session_options

    precision.variants(tmp_path)
    options = session_options(
        session_config_file=tmp_path / "xla-cpu-session.config", xla_cpu_compilation_enabled=True
    )
    jit = options.config.graph_options.optimizer_options.global_jit_level
    assert jit == config_pb2.OptimizerOptions.ON_1
    assert options.xla_compilation_enabled
