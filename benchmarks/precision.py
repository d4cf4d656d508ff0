"""The precision phase of `make bench`: fp32 against TF Serving's `--mixed_precision=bfloat16` and
XLA:CPU, each served and at its limit, with what each costs in answers.

Every variant runs the same non-degenerate classifier (classifier.py: a calibrated Xception base
and a trained 10-class head), one variant at a time so nothing overlaps:

- limit: the limit process (limit.py) in-process through the server's Session path with the
  variant's Session flags, best of batch 1 and 4;
- served: the local server started with the variant's flags and batching on, our gRPC client with
  image bytes at concurrency 1 and 4;
- parity: the benchmark JPEGs' probabilities through the bytes signature, compared with fp32's:
  top-1 agreement and max |dp|.

The variants, as a TF Serving operator would set them:
- fp32: no flag.
- bf16: `--mixed_precision=bfloat16` (the oneDNN auto mixed precision rewrite; needs a CPU with
  avx512_bf16 / amx_bf16, elsewhere TensorFlow runs float32 and the targets are skipped).
- xla-cpu: `--xla_cpu_compilation_enabled` only allows XLA; a model without `jit_compile` is
  compiled only with auto-clustering, i.e. `--tensorflow_session_config_file` with
  `global_jit_level: ON_1` plus `TF_XLA_FLAGS=--tf_xla_cpu_global_jit` in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xception_contract import layout
from xception_serving.runtime.cpu_features import cpu_bfloat16_flags

from benchmarks import SOURCE_ROOT, local_server, stats
from benchmarks.exports import ensure_export
from benchmarks.limit_process import LimitProcess
from benchmarks.progress import Log

LEVELS: tuple[int, ...] = (1, 4)
LIMIT_BATCH_SIZES: tuple[int, ...] = (1, 4)
LOAD_TIMEOUT_S = 900.0  # XLA compiles every new batch shape at load
XLA_SESSION_CONFIG = "graph_options { optimizer_options { global_jit_level: ON_1 } }\n"

MeasureServed = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class Variant:
    name: str
    server_flags: tuple[str, ...]
    limit_args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def variants(build_dir: Path) -> list[Variant]:
    xla_config = build_dir / "xla-cpu-session.config"
    xla_config.parent.mkdir(parents=True, exist_ok=True)
    xla_config.write_text(XLA_SESSION_CONFIG)
    return [
        Variant("fp32", (), ()),
        Variant("bf16", ("--mixed_precision=bfloat16",), ("--mixed-precision=bfloat16",)),
        Variant(
            "xla-cpu",
            ("--xla_cpu_compilation_enabled", f"--tensorflow_session_config_file={xla_config}"),
            ("--xla-cpu-compilation-enabled", f"--session-config-file={xla_config}"),
            {"TF_XLA_FLAGS": "--tf_xla_cpu_global_jit"},
        ),
    ]


def ensure_classifier(
    base: Path, build_dir: Path, image_size: int, log: Log
) -> tuple[Path, dict[str, Any]]:
    """The exported classifier version and how it was built (made once, then reused)."""
    folder = build_dir / "classifier"
    info_path = folder / "build.json"
    if layout.resolve_version_dir(base) is None or not info_path.exists():
        log(f"building the precision classifier ({image_size}x{image_size}, one-off)")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.classifier",
                str(folder),
                "--image-size",
                str(image_size),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=SOURCE_ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        info_path.write_text(done.stdout.strip().splitlines()[-1] + "\n")
    version = ensure_export(
        base,
        ["--model", str(folder / "classifier.keras"), "--labels", str(folder / "labels.txt")],
        log,
        "the precision classifier",
    )
    info: dict[str, Any] = json.loads(info_path.read_text())
    return version, info


def compare(
    reference: Sequence[Sequence[float]], other: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """Top-1 agreement and probability differences of ``other`` against ``reference``."""
    if len(reference) != len(other) or not reference:
        raise ValueError(
            f"parity needs the same non-empty image set: {len(reference)} vs {len(other)} images"
        )
    agree = 0
    worst = total = 0.0
    count = 0
    for ref_row, row in zip(reference, other, strict=True):
        agree += max(range(len(ref_row)), key=ref_row.__getitem__) == max(
            range(len(row)), key=row.__getitem__
        )
        for a, b in zip(ref_row, row, strict=True):
            worst = max(worst, abs(a - b))
            total += abs(a - b)
            count += 1
    return {
        "images": len(reference),
        "top1_agreement": agree / len(reference),
        "max_abs_dp": worst,
        "mean_abs_dp": total / count,
    }


def _confidence(probabilities: Sequence[Sequence[float]]) -> dict[str, float]:
    """How decided the reference answers are (uniform outputs would make parity meaningless)."""
    tops = [sorted(row, reverse=True) for row in probabilities]
    return {
        "mean_top1_probability": sum(t[0] for t in tops) / len(tops),
        "min_top1_margin": min(t[0] - t[1] for t in tops),
    }


@dataclass(frozen=True)
class _Limit:
    """One variant's limit pass: its summary, load time and parity probabilities."""

    summary: dict[str, Any]
    load_s: float
    probabilities: list[list[float]]


def _measure_limit(
    variant: Variant,
    *,
    model_dir: Path,
    pixels: Path,
    jpegs: Path,
    seconds: float,
    build_dir: Path,
    log: Log,
) -> _Limit:
    """The variant's limit process: load, measure, answer parity, then killed."""
    log(f"precision {variant.name}: limit ({' '.join(variant.limit_args) or 'no flags'})")
    limit_proc = LimitProcess(
        model_dir,
        pixels,
        LIMIT_BATCH_SIZES,
        seconds=max(1.0, seconds * 0.5),
        jpegs=jpegs,
        log_path=build_dir / f"limit-{variant.name}.log",
        session_args=variant.limit_args,
        env=variant.env,
    )
    started = time.monotonic()
    try:
        limit_proc.wait_loaded(timeout=LOAD_TIMEOUT_S)
        load_s = time.monotonic() - started
        limit = stats.summarize_limit(limit_proc.measure(timeout=LOAD_TIMEOUT_S))
        probabilities = limit_proc.parity(timeout=LOAD_TIMEOUT_S)
    finally:
        limit_proc.kill()
    log(
        f"  limit {limit['throughput']:.2f} img/s at batch {limit['best_batch_size']} "
        f"(loaded and warmed up in {load_s:.0f} s)"
    )
    return _Limit(limit, load_s, probabilities)


def _measure_served_variant(
    variant: Variant,
    *,
    model_dir: Path,
    model_name: str,
    batching_config: Path,
    build_dir: Path,
    measure_served: MeasureServed,
    log: Log,
) -> list[dict[str, Any]]:
    """The local server started with the variant's flags, measured, then stopped."""
    srv = local_server.launch(
        f"precision-{variant.name}",
        model_name=model_name,
        model_base_path=model_dir.parent,
        log_dir=build_dir / "logs",
        batching_config=batching_config,
        extra_args=variant.server_flags,
        env=variant.env,
    )
    try:
        local_server.wait_ready(srv, LOAD_TIMEOUT_S)
        flags = " ".join(variant.server_flags) or "no flags"
        log(f"precision {variant.name}: served ({flags})")
        return measure_served(srv.grpc_target)
    finally:
        srv.stop()


def _variant_entry(
    variant: Variant,
    limit: _Limit,
    served: list[dict[str, Any]],
    reference: Sequence[Sequence[float]],
) -> dict[str, Any]:
    """The variant's part of the `precision` document, before the ratios to fp32."""
    return {
        "name": variant.name,
        "server_flags": list(variant.server_flags),
        "env": dict(variant.env),
        "limit": {
            k: limit.summary[k]
            for k in ("throughput", "best_batch_size", "per_batch_size", "latency_p50_ms")
        },
        "limit_load_seconds": limit.load_s,
        "served": served,
        "served_best": max((r["throughput"] for r in served), default=None),
        "parity_vs_fp32": compare(reference, limit.probabilities),
    }


def _add_ratios(results: Sequence[dict[str, Any]]) -> None:
    """Each variant's speed-ups against fp32 (the first) and its served share of its limit."""
    fp32 = results[0]
    for entry in results:
        entry["served_speedup_vs_fp32"] = _ratio(entry["served_best"], fp32["served_best"])
        entry["limit_speedup_vs_fp32"] = _ratio(
            entry["limit"]["throughput"], fp32["limit"]["throughput"]
        )
        entry["served_over_limit"] = _ratio(entry["served_best"], entry["limit"]["throughput"])


def run_phase(
    *,
    model_dir: Path,
    model_info: Mapping[str, Any],
    pixels: Path,
    jpegs: Path,
    model_name: str,
    batching_config: Path,
    seconds: float,
    build_dir: Path,
    measure_served: MeasureServed,
    log: Log,
) -> dict[str, Any]:
    """Measure every variant (see the module docstring); returns the `precision` document."""
    results: list[dict[str, Any]] = []
    reference: list[list[float]] | None = None
    for variant in variants(build_dir):
        limit = _measure_limit(
            variant,
            model_dir=model_dir,
            pixels=pixels,
            jpegs=jpegs,
            seconds=seconds,
            build_dir=build_dir,
            log=log,
        )
        served = _measure_served_variant(
            variant,
            model_dir=model_dir,
            model_name=model_name,
            batching_config=batching_config,
            build_dir=build_dir,
            measure_served=measure_served,
            log=log,
        )
        if reference is None:
            reference = limit.probabilities
        entry = _variant_entry(variant, limit, served, reference)
        log(
            f"  parity vs fp32: top-1 {entry['parity_vs_fp32']['top1_agreement']:.0%}, max |dp| "
            f"{entry['parity_vs_fp32']['max_abs_dp']:.3g}"
        )
        results.append(entry)
    _add_ratios(results)
    bf16_flags = cpu_bfloat16_flags()
    assert reference is not None
    return {
        "what": "one classifier served and at its limit per variant; parity on the benchmark "
        "JPEGs through the bytes signature against fp32",
        "model": {**model_info, "version_dir": str(model_dir), **_confidence(reference)},
        "cpu_bf16_flags": bf16_flags,
        "bf16_supported": bool(bf16_flags),
        "served_levels": list(LEVELS),
        "variants": results,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b
