"""Statistics, ratios, targets and the results schema: pure functions, no model, no server.

Percentiles use linear interpolation between closest ranks (numpy's default), so p50 of an even
count is the mean of the two middle values. With n samples, a percentile above 1 - 1/n is close
to the maximum: the JSON keeps the sample count so a reader can judge p99 of 60 requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SCHEMA_VERSION = 1
CONCURRENCY_LEVELS: tuple[int, ...] = (1, 4, 16)

# The bundle's speed targets: served throughput at least 0.95 of the limit, p50 at concurrency 1
# within 15 ms of the limit's, requests 20x smaller, client CPU 10x lower and the client's import
# 10x faster than the usual way's (evaluate_targets).
SERVED_OVER_LIMIT_MIN = 0.95
P50_OVER_LIMIT_MAX_MS = 15.0
REQUEST_BYTES_RATIO_MIN = 20.0
CLIENT_CPU_RATIO_MIN = 10.0
IMPORT_TIME_RATIO_MIN = 10.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100]; received: q={q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_latencies(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds from per-request latencies in seconds."""
    ms = [1000.0 * v for v in latencies_s]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": (sum(ms) / len(ms)) if ms else math.nan,
    }


def throughput(images: int, elapsed_s: float) -> float:
    """Images per second; NaN when nothing was timed."""
    if elapsed_s <= 0 or images <= 0:
        return math.nan
    return images / elapsed_s


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing, zero-denominator or not finite."""
    if numerator is None or denominator is None:
        return None
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return None
    return numerator / denominator


def summarize_limit(*passes: Mapping[str, Any]) -> dict[str, Any]:
    """The limit from several passes of the limit process: per batch size the best throughput, and
    the lowest single-image p50 (a shared machine only ever slows a pass down)."""
    raw = passes[0]
    best_by_size: dict[int, Mapping[str, Any]] = {}
    for one in passes:
        for entry in one["per_batch_size"]:
            size = entry["batch_size"]
            if size not in best_by_size or entry["throughput"] > best_by_size[size]["throughput"]:
                best_by_size[size] = entry
    per = [best_by_size[s] for s in sorted(best_by_size)]
    best = max(per, key=lambda p: float(p["throughput"]))
    p50s = [
        (
            percentile([1000 * v for v in one["single_image_latencies_s"]], 50),
            len(one["single_image_latencies_s"]),
        )
        for one in passes
        if one.get("single_image_latencies_s")
    ]
    p50, samples = min(p50s) if p50s else (None, 0)
    return {
        "throughput": best["throughput"],
        "best_batch_size": best["batch_size"],
        "latency_p50_ms": p50,
        "latency_samples": samples,
        "passes": len(passes),
        "per_batch_size": per,
        "signature": raw["signature"],
        "what": "SavedModel loaded in-process, called on uint8 pixels already decoded and resized "
        "with Pillow (nearest) to the model size; same weights/top-k as served",
        "tensorflow": raw.get("tensorflow"),
        "server_side_jpeg_decode": raw.get("decode"),
        "threads": {
            "intra_op": raw.get("intra_op_threads"),
            "inter_op": raw.get("inter_op_threads"),
        },
    }


def best_served(served: Sequence[Mapping[str, Any]], variant: str) -> Mapping[str, Any] | None:
    """The row of ``variant`` with the highest throughput (any batching setting)."""
    rows = [r for r in served if r.get("variant") == variant and _finite(r.get("throughput"))]
    return max(rows, key=lambda r: float(r["throughput"])) if rows else None


def served_row(
    served: Sequence[Mapping[str, Any]], variant: str, concurrency: int, batching: bool | None
) -> Mapping[str, Any] | None:
    for row in served:
        if (
            row.get("variant") == variant
            and row.get("concurrency") == concurrency
            and (batching is None or row.get("batching") == batching)
        ):
            return row
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def paired_ratio(rounds: Sequence[Mapping[str, Any]]) -> float | None:
    """The median over ``rounds`` of served over limit throughput, each round measured back to
    back (``{"limit": img/s, "served": img/s}``). A shared machine's speed drifts by tens of
    percent between minutes, so two figures taken minutes apart compare the drift as much as
    the two paths; pairs taken seconds apart, and their median, do not."""
    ratios = [r for one in rounds if (r := ratio(one.get("served"), one.get("limit"))) is not None]
    return percentile(ratios, 50) if ratios else None


def compute_ratios(
    *,
    limit: Mapping[str, Any],
    served: Sequence[Mapping[str, Any]],
    usual: Mapping[str, Any] | None,
    ours: Mapping[str, Any] | None,
    imports: Mapping[str, Any] | None,
    bytes_variant: str,
    paired: Sequence[Mapping[str, Any]] = (),
) -> dict[str, float | None]:
    """The ratios the speed targets compare. ``usual``/``ours`` hold request_bytes_per_image and
    client_cpu_ms_per_image measured side by side; ``imports`` both import times in seconds;
    ``paired`` the back-to-back limit and served rounds (:func:`paired_ratio`)."""
    best = best_served(served, bytes_variant)
    usual, ours = usual or {}, ours or {}
    return {
        "served_over_limit": ratio(best["throughput"] if best else None, limit.get("throughput")),
        "served_over_limit_paired": paired_ratio(paired),
        "request_bytes_usual_over_ours": ratio(
            usual.get("request_bytes_per_image"), ours.get("request_bytes_per_image")
        ),
        "client_cpu_usual_over_ours": ratio(
            usual.get("client_cpu_ms_per_image"), ours.get("client_cpu_ms_per_image")
        ),
        "import_time_tfs_api_over_ours": ratio(
            (imports or {}).get("tfs_api_s"), (imports or {}).get("xception_client_s")
        ),
    }


def evaluate_targets(
    *,
    limit: Mapping[str, Any],
    served: Sequence[Mapping[str, Any]],
    ratios: Mapping[str, float | None],
    bytes_variant: str,
) -> dict[str, dict[str, Any]]:
    """Each target: measured value, threshold, and whether it holds (None = not measured)."""

    def at_least(value: float | None, minimum: float) -> bool | None:
        return None if value is None else value >= minimum

    c1 = [
        r
        for r in served
        if r.get("variant") == bytes_variant
        and r.get("concurrency") == 1
        and _finite(r.get("p50_ms"))
    ]
    best_c1 = min((float(r["p50_ms"]) for r in c1), default=None)
    limit_p50 = limit.get("latency_p50_ms")
    p50_bound = (
        float(limit_p50) + P50_OVER_LIMIT_MAX_MS
        if limit_p50 is not None and _finite(limit_p50)
        else None
    )
    # The paired rounds when measured: the best-of-passes limit against one served pass favours
    # the limit by however much the machine drifted between them.
    paired = ratios.get("served_over_limit_paired")
    served_ratio = paired if paired is not None else ratios.get("served_over_limit")
    return {
        "served_throughput_vs_limit": {
            "value": served_ratio,
            "threshold": f">= {SERVED_OVER_LIMIT_MIN} x limit"
            + (" (median of back-to-back rounds)" if paired is not None else ""),
            "holds": at_least(served_ratio, SERVED_OVER_LIMIT_MIN),
        },
        "p50_at_concurrency_1": {
            "value": best_c1,
            "threshold": f"<= limit p50 + {P50_OVER_LIMIT_MAX_MS:g} ms"
            + (f" = {p50_bound:.1f} ms" if p50_bound is not None else ""),
            "holds": None if best_c1 is None or p50_bound is None else best_c1 <= p50_bound,
        },
        "request_bytes": {
            "value": ratios.get("request_bytes_usual_over_ours"),
            "threshold": f">= {REQUEST_BYTES_RATIO_MIN:g}x smaller than the usual way",
            "holds": at_least(ratios.get("request_bytes_usual_over_ours"), REQUEST_BYTES_RATIO_MIN),
        },
        "client_cpu": {
            "value": ratios.get("client_cpu_usual_over_ours"),
            "threshold": f">= {CLIENT_CPU_RATIO_MIN:g}x lower than the usual way",
            "holds": at_least(ratios.get("client_cpu_usual_over_ours"), CLIENT_CPU_RATIO_MIN),
        },
        "client_import_time": {
            "value": ratios.get("import_time_tfs_api_over_ours"),
            "threshold": f">= {IMPORT_TIME_RATIO_MIN:g}x faster than tensorflow_serving.apis",
            "holds": at_least(ratios.get("import_time_tfs_api_over_ours"), IMPORT_TIME_RATIO_MIN),
        },
    }


BF16_SERVED_SPEEDUP_MIN = 1.4
BF16_TOP1_AGREEMENT_MIN = 1.0


def precision_targets(precision: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The bfloat16 targets (served throughput 1.4x fp32's, top-1 agreement with fp32 on every
    bench image); skipped (holds None, with why) on CPUs without bfloat16."""
    if not precision:
        return {}
    bf16 = next((v for v in precision.get("variants", []) if v.get("name") == "bf16"), None)
    speedup = bf16.get("served_speedup_vs_fp32") if bf16 else None
    agreement = (bf16.get("parity_vs_fp32") or {}).get("top1_agreement") if bf16 else None
    skipped = None if precision.get("bf16_supported") else "no bf16"
    return {
        "bf16_served_speedup": {
            "value": speedup,
            "threshold": f">= {BF16_SERVED_SPEEDUP_MIN:g}x fp32 served throughput",
            "holds": None if skipped or speedup is None else speedup >= BF16_SERVED_SPEEDUP_MIN,
            "skipped": skipped,
        },
        "bf16_top1_agreement": {
            "value": agreement,
            "threshold": "100% top-1 agreement with fp32 on the bench set",
            "holds": None if skipped or agreement is None else agreement >= BF16_TOP1_AGREEMENT_MIN,
            "skipped": skipped,
        },
    }


SERVED_KEYS = ("variant", "concurrency", "batching", "throughput", "p50_ms", "p95_ms", "p99_ms")
RATIO_KEYS = (
    "served_over_limit",
    "served_over_limit_paired",
    "request_bytes_usual_over_ours",
    "client_cpu_usual_over_ours",
    "import_time_tfs_api_over_ours",
)


def schema_problems(doc: Mapping[str, Any]) -> list[str]:
    """What ``doc`` lacks of the minimum results schema (empty list = conforms): the limit's
    throughput and p50, every served row's SERVED_KEYS, every ratio, the machine, the targets."""
    problems: list[str] = []
    limit = doc.get("limit")
    if not isinstance(limit, Mapping):
        problems.append("limit: missing or not an object")
    else:
        problems += [
            f"limit.{k}: missing" for k in ("throughput", "latency_p50_ms") if k not in limit
        ]
    served = doc.get("served")
    if not isinstance(served, list) or not served:
        problems.append("served: missing, empty or not a list")
    else:
        for index, row in enumerate(served):
            if not isinstance(row, Mapping):
                problems.append(f"served[{index}]: not an object")
                continue
            problems += [f"served[{index}].{k}: missing" for k in SERVED_KEYS if k not in row]
    ratios = doc.get("ratios")
    if not isinstance(ratios, Mapping):
        problems.append("ratios: missing or not an object")
    else:
        problems += [f"ratios.{k}: missing" for k in RATIO_KEYS if k not in ratios]
    machine = doc.get("machine")
    if not isinstance(machine, Mapping) or not {"cpu_model", "cores"} <= set(machine):
        problems.append("machine: needs cpu_model and cores")
    if not isinstance(doc.get("targets"), Mapping):
        problems.append("targets: missing or not an object")
    return problems


def json_safe(value: Any) -> Any:
    """NaN/inf -> None recursively, so the file is strict JSON (json.dumps allow_nan=False)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
