"""The results document (stats.schema_problems says what it must hold), and writing it: JSON and
PNG in the output directory, the table on stdout. A quick run writes quick.*, never latest.*."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import load, report, stats
from benchmarks.image_cache import ImageSet
from benchmarks.measure import Row
from benchmarks.options import Options

BYTES_VARIANT = load.OursGrpc.name  # the served rows the speed targets judge


def client_side(served: Sequence[Row], streams: Mapping[str, Row], concurrency: int) -> Row:
    """Side by side at one concurrency: request bytes and client CPU per image from one stream of
    the whole image set per path (futures window, one thread: see load.py), REST from its row."""
    out: Row = {
        "concurrency": concurrency,
        "method": "one thread keeps `concurrency` requests in flight (Client.predict_many for "
        "ours, the same futures window for the usual way); process CPU time of the "
        "benchmark process / images",
    }
    out.update(streams)
    rest = stats.served_row(served, load.RestB64.name, concurrency, None)
    if rest:
        out["rest"] = {
            k: rest[k]
            for k in ("variant", "throughput", "request_bytes_per_image", "client_cpu_ms_per_image")
        }
        out["rest"]["note"] = "threaded closed loop (blocking http.client), not a stream"
    return out


def results_document(
    options: Options,
    *,
    machine: Mapping[str, Any],
    model_dir: Path,
    bench: ImageSet,
    served_image_size: int,
    limit: Mapping[str, Any],
    served: Sequence[Row],
    side: Row,
    paired: Sequence[Row] = (),
    footprint: Mapping[str, Any],
    precision: Mapping[str, Any] | None,
    duration_s: float,
) -> dict[str, Any]:
    """The whole document, strict JSON (NaN as null); RuntimeError if it misses the schema."""
    ratios = stats.compute_ratios(
        limit=limit,
        served=served,
        usual=side.get("usual"),
        ours=side.get("ours"),
        imports=footprint["import"],
        bytes_variant=BYTES_VARIANT,
        paired=paired,
    )
    doc: dict[str, Any] = {
        "note": "compare figures within this run only; the load averages before and after "
        "say whether anything else was running on the machine",
        "schema_version": stats.SCHEMA_VERSION,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": options.command,
        "quick": options.quick,
        "machine": dict(machine),
        "setup": {
            "image_size": options.image_size,
            "served_image_size": served_image_size,
            "model_dir": str(
                model_dir.relative_to(options.repo)
                if model_dir.is_relative_to(options.repo)
                else model_dir
            ),
            "weights": "random (compute identical to ImageNet weights)",
            "images": len(bench.images),
            "image_sizes": sorted({f"{b.width}x{b.height}" for b in bench.images}),
            "mean_jpeg_bytes": bench.mean_bytes,
            "seconds_per_point": options.seconds,
            "served_target": options.tfserving_target
            or "local server (python -m xception_serving)",
            "limit_where": "in-process on this machine"
            + ("" if options.local else " (NOT the TF Serving host unless run there)"),
            "batching_config": options.batching_config.read_text() if options.local else None,
            "client_side_concurrency": side["concurrency"],
        },
        "limit": limit,
        "served": served,
        "paired": list(paired),
        "client_side": side,
        "footprint": footprint,
        "ratios": ratios,
        "precision": precision,
        "targets": {
            **stats.evaluate_targets(
                limit=limit, served=served, ratios=ratios, bytes_variant=BYTES_VARIANT
            ),
            **stats.precision_targets(precision),
        },
        "duration_s": duration_s,
    }
    safe: dict[str, Any] = stats.json_safe(doc)
    problems = stats.schema_problems(safe)
    if problems:
        raise RuntimeError(f"results do not match the schema: {problems}")
    return safe


def write_results(doc: Mapping[str, Any], output_dir: Path, *, quick: bool) -> tuple[Path, Path]:
    """``<stem>.json`` (atomically) and ``<stem>.png``, stem ``quick`` or ``latest``; the table on
    stdout. Returns both paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = "quick" if quick else "latest"  # quick runs never overwrite the committed result
    out = output_dir / f"{stem}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, out)
    png = report.plot(doc, output_dir / f"{stem}.png")
    print(report.format_table(doc))
    return out, png
