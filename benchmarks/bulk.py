"""The bulk job (``xception-bulk``) against the bundle's other measurements, on one machine.

- in-process bulk (the local Beam runner, one process; the SavedModel's bytes signature, so JPEG
  decode and resize are in its time) against the in-process limit (``benchmarks.limit``: the
  pixels signature on already-decoded pixels, at the same batch size), also with the limit's
  measured decode time added back;
- remote bulk (``--direct_num_workers=C`` threads, ``--batch-size B``) against the served
  throughput at the same concurrency and request size (``Client.predict_many`` with
  ``concurrency=C, images_per_request=B``) on the same local server (no batching).

Each bulk figure is one run of the real command as a subprocess, read from its summary line:
start-up is the time to its first result (process start, pipeline construction, model load or
server check, the first batch), the steady rate is taken over the later half of the results
(the first batches in flight land together), the overall rate counts the whole wall time. Peak
memory is the largest resident set of the command's processes (``wait4``'s ``ru_maxrss``). The
phases run one after another: a limit pass, in-process bulk, the server with the served and the
remote bulk measurements, another limit pass. The machine is shared and load only slows a pass
down, so the limit is the better of its two passes; the other figures are single runs.

``measure_bulk(...)`` is the function a benchmark runner calls; ``python -m benchmarks.bulk``
runs it alone on the benchmark's model and images and prints a summary (JSON under --build-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import SOURCE_ROOT, image_cache, local_server
from benchmarks.exports import ensure_model
from benchmarks.limit_process import LimitProcess
from benchmarks.progress import Log, log

LOAD_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 1800.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_CONCURRENCY = 4
DEFAULT_REPEAT = 4  # the bulk folder holds the benchmark JPEGs this many times


@dataclass(frozen=True)
class BulkFigures:
    """One ``xception-bulk`` run as a subprocess."""

    images: int
    wall_s: float  # the command's wall time, process start to exit
    images_per_s: float  # images / wall_s
    startup_s: float  # to the first result, from the command's summary
    steady_images_per_s: float  # first to last result, from the command's summary
    peak_rss_mb: float
    summary: str  # the command's own summary line


def bulk_folder(bench: image_cache.ImageSet, build_dir: Path, repeat: int) -> Path:
    """The benchmark JPEGs ``repeat`` times, under distinct names."""
    folder = build_dir / "bulk-images" / f"{bench.folder.name}-x{repeat}"
    if len(list(folder.glob("*.jpg"))) != repeat * len(bench.images):
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(repeat):
            for image in bench.images:
                (folder / f"c{copy}-{image.name}").write_bytes(image.data)
    return folder


_SUMMARY = re.compile(
    r"^xception-bulk: classified (\d+), errors (\d+), .*first result after ([\d.]+) s, "
    r"then ([\d.]+) images/s"
)


def measure_command(
    args: Sequence[str], folder: Path, build_dir: Path, name: str, log: Log
) -> BulkFigures:
    """``xception-bulk --input FOLDER/*.jpg --output NEW_FOLDER ARGS``, timed, with its peak
    memory and its own start-up and steady rate."""
    out = build_dir / "bulk-out" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    log_path = build_dir / f"bulk-{name}.log"
    script = Path(sys.executable).with_name("xception-bulk")
    command = [str(script), "--input", str(folder / "*.jpg"), "--output", str(out), *args]
    started = time.perf_counter()
    with log_path.open("wb") as err:
        child = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=SOURCE_ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    text = log_path.read_text(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    found = [m for m in map(_SUMMARY.match, text.splitlines()) if m]
    if code != 0 or not found:
        raise RuntimeError(f"xception-bulk exited {code}: {text[-2000:]}")
    classified, errors, first, steady = found[-1].groups()
    if int(errors):
        raise RuntimeError(f"xception-bulk: {errors} benchmark images failed (see {log_path})")
    figures = BulkFigures(
        int(classified),
        wall,
        int(classified) / wall,
        float(first),
        float(steady),
        usage.ru_maxrss / 1024,
        found[-1].group(0),
    )
    log(
        f"bulk {name}: {figures.images} images in {wall:.1f} s, first result after "
        f"{figures.startup_s:.1f} s, then {figures.steady_images_per_s:.2f} img/s, peak RSS "
        f"{figures.peak_rss_mb:.0f} MB"
    )
    return figures


def start_limit(
    model_dir: Path, pixels: Path, jpegs: Path, batch_size: int, seconds: float, build_dir: Path
) -> LimitProcess:
    """The in-process limit's child, loaded: it measures at ``batch_size`` when asked."""
    limit = LimitProcess(
        model_dir, pixels, [batch_size], seconds, jpegs, build_dir / "bulk-limit.log"
    )
    try:
        limit.wait_loaded(LOAD_TIMEOUT_S)
    except BaseException:
        limit.kill()
        raise
    return limit


def limit_figures(passes: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """The best pass at ``batch_size`` (the machine is shared: load only slows a pass down)
    and the per-image JPEG decode time the limit measured."""
    throughputs = [
        p["throughput"]
        for result in passes
        for p in result["per_batch_size"]
        if p["batch_size"] == batch_size
    ]
    decode = next((r["decode"] for r in passes if r.get("decode")), None) or {}
    return {
        "batch_size": batch_size,
        "images_per_s": max(throughputs),
        "passes_images_per_s": throughputs,
        "decode_ms_per_image": decode.get("ms_per_image"),
    }


def measure_served(
    target: str, data: Sequence[bytes], concurrency: int, batch_size: int, seconds: float
) -> dict[str, Any]:
    """``Client.predict_many`` throughput at ``concurrency`` requests of ``batch_size`` images."""
    from xception_client import Client

    with Client(target, timeout=120) as client:
        for _ in client.predict_many(
            data[: concurrency * batch_size], concurrency=concurrency, images_per_request=batch_size
        ):
            pass  # warm-up: the server's first calls at each batch size
        images, started = 0, time.perf_counter()
        while images == 0 or time.perf_counter() - started < seconds:
            for _ in client.predict_many(
                data, concurrency=concurrency, images_per_request=batch_size
            ):
                images += 1
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "images_per_request": batch_size,
        "images": images,
        "images_per_s": images / elapsed,
    }


def _measure_against_server(
    model_dir: Path,
    bench: image_cache.ImageSet,
    folder: Path,
    build_dir: Path,
    *,
    batch_size: int,
    concurrency: int,
    seconds: float,
    batching_config: Path | None,
    log: Log,
) -> tuple[dict[str, Any], BulkFigures]:
    """The local server's served throughput, then remote bulk against it; the server stopped."""
    server = local_server.launch(
        "bulk",
        model_name="xception",
        model_base_path=model_dir.parent,
        log_dir=build_dir,
        batching_config=batching_config,
    )
    try:
        local_server.wait_ready(server, LOAD_TIMEOUT_S)
        served = measure_served(server.grpc_target, bench.data, concurrency, batch_size, seconds)
        log(f"bulk: served {served['images_per_s']:.2f} img/s at concurrency {concurrency}")
        remote = measure_command(
            [
                "--server",
                server.grpc_target,
                "--batch-size",
                str(batch_size),
                f"--direct_num_workers={concurrency}",
                "--direct_running_mode=multi_threading",
            ],
            folder,
            build_dir,
            "remote",
            log,
        )
    finally:
        server.stop()
    return served, remote


def _bulk_document(
    batch_size: int,
    concurrency: int,
    limit: dict[str, Any],
    local: BulkFigures,
    served: dict[str, Any],
    remote: BulkFigures,
) -> dict[str, Any]:
    """The figures and their ratios, the limit also with its measured JPEG decode added back."""
    decode_s = (limit["decode_ms_per_image"] or 0.0) / 1000
    with_decode = 1 / (1 / limit["images_per_s"] + decode_s)
    return {
        "batch_size": batch_size,
        "concurrency": concurrency,
        "limit": {**limit, "images_per_s_with_decode": with_decode},
        "in_process": asdict(local),
        "served": served,
        "remote": asdict(remote),
        "ratios": {
            "in_process_steady_vs_limit": local.steady_images_per_s / limit["images_per_s"],
            "in_process_steady_vs_limit_with_decode": local.steady_images_per_s / with_decode,
            "in_process_overall_vs_limit": local.images_per_s / limit["images_per_s"],
            "remote_steady_vs_served": remote.steady_images_per_s / served["images_per_s"],
            "remote_overall_vs_served": remote.images_per_s / served["images_per_s"],
        },
    }


def measure_bulk(
    model_dir: Path,
    bench: image_cache.ImageSet,
    pixels: Path,
    build_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    repeat: int = DEFAULT_REPEAT,
    seconds: float = 6.0,
    batching_config: Path | None = None,
    log: Log = log,
) -> dict[str, Any]:
    """Every bulk figure and its ratios (see the module docstring); JSON-ready.

    The server runs without batching by default: the CPU config's one-batch queue refuses four
    8-image requests in flight ("UNAVAILABLE: The batch scheduling queue ... is full", seen
    here), which the bulk job retries but the served measurement's client does not.
    """
    folder = bulk_folder(bench, build_dir, repeat)
    log(f"bulk: in-process limit at batch {batch_size}, before and after the bulk runs")
    limit_process = start_limit(model_dir, pixels, bench.folder, batch_size, seconds, build_dir)
    try:
        passes = [limit_process.measure(LOAD_TIMEOUT_S)]
        local = measure_command(
            ["--model", str(model_dir), "--batch-size", str(batch_size)],
            folder,
            build_dir,
            "in-process",
            log,
        )
        served, remote = _measure_against_server(
            model_dir,
            bench,
            folder,
            build_dir,
            batch_size=batch_size,
            concurrency=concurrency,
            seconds=seconds,
            batching_config=batching_config,
            log=log,
        )
        passes.append(limit_process.measure(LOAD_TIMEOUT_S))
    finally:
        limit_process.kill()
    limit = limit_figures(passes, batch_size)
    log(f"bulk: limit {limit['images_per_s']:.2f} img/s (best of {limit['passes_images_per_s']})")
    return _bulk_document(batch_size, concurrency, limit, local, served, remote)


def format_report(result: dict[str, Any]) -> str:
    ratios = result["ratios"]
    lines = [f"bulk (batch {result['batch_size']}, concurrency {result['concurrency']})"]
    for mode in ("in_process", "remote"):
        f = result[mode]
        lines.append(
            f"  {mode:<10} {f['images']} images: {f['images_per_s']:.2f} img/s overall, "
            f"{f['steady_images_per_s']:.2f} steady, first result after {f['startup_s']:.1f} s, "
            f"peak RSS {f['peak_rss_mb']:.0f} MB"
        )
    lines.append(
        f"  limit      {result['limit']['images_per_s']:.2f} img/s "
        f"({result['limit']['images_per_s_with_decode']:.2f} with JPEG decode)"
    )
    lines.append(f"  served     {result['served']['images_per_s']:.2f} img/s")
    lines += [f"  {name}: {value:.2f}" for name, value in ratios.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bulk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--images", type=int, default=48, help="benchmark JPEGs (default 48)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--build-dir", type=Path, default=SOURCE_ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    build_dir: Path = args.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    # The same random-weight export `make bench` measures (made once, then reused).
    base = SOURCE_ROOT / "models" / "bench" / f"xception-{args.image_size}"
    model_dir = ensure_model(base, args.image_size, log)
    bench = image_cache.bench_images(build_dir, args.images, args.seed)
    pixels = image_cache.write_pixels(
        bench.data, args.image_size, build_dir / f"pixels-{args.image_size}.npy"
    )
    result = measure_bulk(
        model_dir,
        bench,
        pixels,
        build_dir,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        repeat=args.repeat,
        seconds=args.seconds,
    )
    (build_dir / "bulk.json").write_text(json.dumps(result, indent=2))
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
