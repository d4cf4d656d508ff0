"""`make tune-batching`: measure a target across batch sizes, then write the batching.config that
meets a latency goal, saying why each value was picked.

    python -m benchmarks.tune_batching [--p99-goal-ms MS | --p50-goal-ms MS] [--output PATH]
    python -m benchmarks.tune_batching --target HOST:PORT --device gpu ...   (or TFS_TARGET=...)

Targets:

- the in-process limit (default): the benchmark's limit process (limit.py, the served
  SavedModel in a TF1 Session on decoded pixels) times one call per batch size; a caller whose
  request joins a full batch waits at least that call, so its latency is the call's mean time
  (the limit reports calls and seconds per size). The best of ``--passes`` passes per size, as
  ``make bench`` takes the limit, since the machine may be shared; each pass starts at another
  size. On a CPU with more than one core, num_batch_threads is then measured on the served path
  (tune_threads.py: xception-serve at the chosen size with 1, 2 and every core's worth of batch
  threads, driven at the peak concurrency), since how far one Session run fills the cores is the
  server's property, not the limit's;
- a live TF Serving (``--target``): our gRPC client sends single-image requests at a concurrency
  equal to the batch size, so a server running the probe config (``--probe-config``: one batch
  thread, a cap above every size measured) forms batches of that size; p50 and p99 are the
  requests' own. The server cannot be restarted from here, so num_batch_threads follows the
  guide's rule (probe a second count by hand: start TF Serving with it and compare).

The decisions are batching_rules.py's (pure, unit-tested); the file is batching_file.py's.
Exit status: 0, 1 when no measured size meets the goal (the file is still written, with the
lowest-latency size, and says so), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xception_client.client import DEFAULT_IMAGES_PER_REQUEST
from xception_contract import DEFAULT_MODEL_NAME

from benchmarks import batching_file, image_cache, machine
from benchmarks.batching_rules import (
    MIN_GAIN,
    Decision,
    Device,
    Goal,
    Hardware,
    Point,
    decide,
)
from benchmarks.exports import ensure_model
from benchmarks.measure import rotated
from benchmarks.progress import log
from benchmarks.tune_report import PROG, Measured, header, report
from benchmarks.tune_threads import ThreadsProbe, candidate_counts, measure_threads

BATCH_SIZES = (1, 2, 4, 8, 16)
P99_GOAL_MS = 1000.0  # online serving on a CPU: a second, batch included
PEAK_CONCURRENCY = 16  # the benchmark's highest concurrency level
# The most images one request carries: xception_client packs DEFAULT_IMAGES_PER_REQUEST (4) per
# request in predict_many, and the export's warmup replays a batch of its four image formats.
LARGEST_REQUEST = max(DEFAULT_IMAGES_PER_REQUEST, 4)
LOAD_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 60.0
GOAL_NOT_MET = 1


# -- measuring -------------------------------------------------------------------------------------


def best_per_size(passes: Sequence[Mapping[str, Any]]) -> list[Point]:
    """Points from limit passes (limit_process RESULT events): per batch size the pass with the
    best throughput, latency its mean call time (the limit times calls, not requests)."""
    best: dict[int, Point] = {}
    for one in passes:
        for entry in one["per_batch_size"]:
            size, calls = int(entry["batch_size"]), int(entry["calls"])
            call_ms = 1000.0 * float(entry["seconds"]) / calls
            point = Point(size, float(entry["throughput"]), call_ms, call_ms)
            if size not in best or point.throughput > best[size].throughput:
                best[size] = point
    return [best[size] for size in sorted(best)]


def pass_spread(passes: Sequence[Mapping[str, Any]]) -> float:
    """The largest best/worst - 1 of one batch size's throughput over the passes."""
    seen: dict[int, list[float]] = {}
    for one in passes:
        for entry in one["per_batch_size"]:
            seen.setdefault(int(entry["batch_size"]), []).append(float(entry["throughput"]))
    return max((max(v) / min(v) - 1 for v in seen.values() if min(v) > 0), default=0.0)


def measure_limit(
    model_dir: Path,
    pixels: Path,
    jpegs: Path,
    batch_sizes: Sequence[int],
    seconds: float,
    passes: int,
    log_path: Path,
) -> Measured:
    from benchmarks.limit_process import LimitProcess

    limit = LimitProcess(
        model_dir, pixels, batch_sizes, seconds=seconds, jpegs=jpegs, log_path=log_path
    )
    try:
        limit.wait_loaded(timeout=LOAD_TIMEOUT_S)
        load_before = machine.load_average()
        results = []
        for index in range(passes):
            order = rotated(batch_sizes, index)
            log(
                f"limit pass {index + 1}/{passes}: batch {','.join(map(str, order))}, "
                f"{seconds:g} s each"
            )
            results.append(limit.measure(timeout=LOAD_TIMEOUT_S, batch_sizes=order))
    finally:
        limit.kill()
    threads = int(results[0].get("intra_op_threads") or 0)
    return Measured(
        best_per_size(results),
        f"in-process limit of {_shown(model_dir)}, best of "
        f"{passes} passes of {seconds:g} s per size",
        threads,
        load_before,
        pass_spread(results),
    )


def measure_live(
    target: str, model_name: str, data: Sequence[bytes], batch_sizes: Sequence[int], seconds: float
) -> Measured:
    """Each batch size B as B closed-loop callers of one image each, after a short warm-up."""
    from benchmarks import load
    from benchmarks.measure import measure_point, warm_up

    driver = load.OursGrpc(target, model_name, data, REQUEST_TIMEOUT_S)
    load_before = machine.load_average()
    points = []
    try:
        for size in batch_sizes:
            warm_up(driver, size, 1.0)
            row = measure_point(
                driver, batching=None, concurrency=size, seconds=seconds, bytes_per_image=0.0
            )
            if row["errors"]:
                raise RuntimeError(
                    f"batch {size}: {row['errors']} requests failed "
                    f"({row['first_error']}); is the server on the probe config?"
                )
            points.append(Point(size, row["throughput"], row["p50_ms"], row["p99_ms"]))
    finally:
        driver.close()
    return Measured(
        points,
        f"TF Serving at {target} (model {model_name}), concurrency = batch, {seconds:g} s per size",
        0,
        load_before,
        remote=True,
    )


# -- deciding and writing --------------------------------------------------------------------------


def probe_config(batch_sizes: Sequence[int], peak: int) -> str:
    """The BatchingParameters a live server runs while measured: one batch thread (callers queue
    and merge while it runs), a cap at the largest size, a 2 ms timeout so B callers form one
    batch, and room for every caller (the guide: a really high max_enqueued_batches while
    experimenting)."""
    return (
        f"# Probe config for {PROG} --target: not for production.\n"
        f"max_batch_size {{ value: {max(batch_sizes)} }}\n"
        f"batch_timeout_micros {{ value: 2000 }}\n"
        f"num_batch_threads {{ value: 1 }}\n"
        f"max_enqueued_batches {{ value: {max(1000, peak, max(batch_sizes))} }}\n"
    )


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when under it (the repository, for make)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def detect_device() -> Device:
    """GPU where this host's NVIDIA driver lists one (what the in-process limit would use)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return "gpu" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """What to measure and the goal to meet: the command line's, or ``make bench --tune``'s."""

    goal: Goal
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    seconds: float = 3.0
    passes: int = 3
    peak_concurrency: int = PEAK_CONCURRENCY
    min_gain: float = MIN_GAIN
    largest_request: int = LARGEST_REQUEST
    device: Device | None = None  # None: this host's (detect_device)
    cores: int | None = None  # None: this host's
    # The batch-thread probe of the served path (tune_threads.py): rounds (0: decide the count
    # by the guide's rule instead) of this many seconds per count.
    thread_rounds: int = 3
    thread_seconds: float = 6.0


def default_settings(seconds: float, passes: int) -> Settings:
    """The command line's defaults (goal p99 <= P99_GOAL_MS) at ``seconds`` per size, and
    ``passes`` limit passes and batch-thread rounds."""
    return Settings(Goal(p99_ms=P99_GOAL_MS), seconds=seconds, passes=passes, thread_rounds=passes)


def wants_tuning(
    mode: str, local: bool, tuned_on: tuple[str, int] | None, here: tuple[str, int]
) -> tuple[bool, str]:
    """Whether ``make bench`` tunes before serving (``--tune``), and why: ``auto`` tunes when the
    config was not written by the tuner on this CPU model and core count. Never for a TF Serving
    target, which runs its own config."""
    if not local:
        return False, "a TF Serving target batches with its own config"
    if mode != "auto":
        return mode == "always", f"--tune {mode}"
    if tuned_on == here:
        return False, f"the config was tuned on this host ({here[0]}, {here[1]} cores)"
    if tuned_on is None:
        return True, "the config was not written by the tuner"
    return True, (
        f"the config was tuned on {tuned_on[0]} with {tuned_on[1]} cores, this host is "
        f"{here[0]} with {here[1]}"
    )


def hardware_of(settings: Settings, measured: Measured) -> Hardware:
    return Hardware(
        settings.device or detect_device(),
        settings.cores or host_cores(),
        measured.intra_op_threads,
    )


def decide_from(measured: Measured, settings: Settings) -> Decision:
    return decide(
        measured.points,
        settings.goal,
        hardware_of(settings, measured),
        peak_concurrency=settings.peak_concurrency,
        min_gain=settings.min_gain,
        largest_request=settings.largest_request,
        threads_points=measured.threads,
    )


def conclude(
    measured: Measured,
    settings: Settings,
    output: Path,
    command: str,
    show: Callable[[str], None] = print,
) -> Decision:
    """Decide, show why (stdout by default), and write ``output``."""
    decision = decide_from(measured, settings)
    show(report(decision, measured))
    hardware = hardware_of(settings, measured)
    text = batching_file.render(
        decision, header(decision, measured, hardware, command, machine.cpu_model())
    )
    batching_file.write(output, text)
    log(f"wrote {output}")
    return decision


def probe_threads(
    measured: Measured, settings: Settings, model_dir: Path, jpegs: Path, log_dir: Path
) -> Measured:
    """``measured`` with the served path probed at each candidate batch-thread count, for the
    batch size and timeout the limit decides (unchanged where there is nothing to probe: a GPU,
    one core, or no rounds asked for)."""
    hardware = hardware_of(settings, measured)
    counts = candidate_counts(hardware.cores)
    if hardware.device != "cpu" or len(counts) < 2 or settings.thread_rounds < 1:
        return measured
    first = decide_from(measured, settings)
    timeout = first.value("batch_timeout_micros")
    probe = ThreadsProbe(
        max_batch_size=first.chosen.batch_size,
        batch_timeout_micros=timeout if isinstance(timeout, int) else 0,
        thread_counts=counts,
        peak_concurrency=settings.peak_concurrency,
        seconds=settings.thread_seconds,
        rounds=settings.thread_rounds,
    )
    log(f"probing num_batch_threads {','.join(map(str, counts))} on the served path")
    data = [f.read_bytes() for f in sorted(jpegs.glob("*.jpg"))]
    points = measure_threads(model_dir.parent, DEFAULT_MODEL_NAME, data, probe, log_dir)
    what = (
        f"xception-serve at batch {probe.max_batch_size}, {settings.peak_concurrency} "
        f"single-image callers, median of {probe.rounds} rounds of {probe.seconds:g} s per "
        f"thread count"
    )
    return dataclasses.replace(measured, threads=tuple(points), threads_what=what)


def tune_at_limit(
    model_dir: Path,
    pixels: Path,
    jpegs: Path,
    build_dir: Path,
    output: Path,
    settings: Settings,
    command: str,
    show: Callable[[str], None] = print,
) -> Decision:
    """Measure the in-process limit and probe the batch threads on the served path, then
    conclude (``make bench``'s tune phase calls this)."""
    measured = measure_limit(
        model_dir,
        pixels,
        jpegs,
        settings.batch_sizes,
        settings.seconds,
        settings.passes,
        build_dir / "logs" / "tune-limit.log",
    )
    measured = probe_threads(measured, settings, model_dir, jpegs, build_dir / "logs")
    return conclude(measured, settings, output, command, show)


# -- command line ----------------------------------------------------------------------------------


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,2,4,8, got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _whole_number(text: str) -> int:
    """0 or more."""
    return 0 if text.strip() == "0" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _add_target_flags(p: argparse.ArgumentParser) -> None:
    """What is measured: a live TF Serving, or the in-process limit on this host."""
    p.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=os.environ.get("TFS_TARGET") or None,
        help="a live TF Serving (gRPC; default $TFS_TARGET); without: the in-process "
        "limit on this host",
    )
    p.add_argument("--model-name", default="xception", help="served model name (with --target)")


def _add_goal_flags(p: argparse.ArgumentParser) -> None:
    """The latency goal the chosen batch size must meet."""
    p.add_argument("--p50-goal-ms", type=_positive_float, help="p50 latency bound")
    p.add_argument(
        "--p99-goal-ms",
        type=_positive_float,
        help=f"p99 latency bound (default {P99_GOAL_MS:g} when no goal is given)",
    )


def _add_measurement_flags(p: argparse.ArgumentParser) -> None:
    """Which batch sizes are measured, for how long and on how many images."""
    p.add_argument("--batch-sizes", type=_sizes, default=BATCH_SIZES, help="default 1,2,4,8,16")
    p.add_argument(
        "--seconds",
        type=_positive_float,
        default=3.0,
        help="measured seconds per batch size and pass (default 3)",
    )
    p.add_argument(
        "--passes",
        type=_positive_int,
        default=3,
        help="limit passes, each in another order; best per size (default 3)",
    )
    p.add_argument(
        "--thread-rounds",
        type=_whole_number,
        default=3,
        help="rounds of the served path at each batch-thread count (CPU, in-process target; "
        "0: the guide's rule decides the count; default 3)",
    )
    p.add_argument(
        "--thread-seconds",
        type=_positive_float,
        default=6.0,
        help="measured seconds per batch-thread count and round (default 6)",
    )
    p.add_argument(
        "--images",
        type=_positive_int,
        default=16,
        help="generated JPEGs to cycle through (default 16)",
    )


def _add_decision_flags(p: argparse.ArgumentParser) -> None:
    """What the written config must hold: the gain a bigger batch must bring, the callers its
    queue takes, the largest request, and the hardware it is for."""
    p.add_argument(
        "--min-gain",
        type=float,
        default=MIN_GAIN,
        help=f"throughput a bigger batch must add (default {MIN_GAIN})",
    )
    p.add_argument(
        "--peak-concurrency",
        type=_positive_int,
        default=PEAK_CONCURRENCY,
        help=f"concurrent callers the queue must hold (default {PEAK_CONCURRENCY})",
    )
    p.add_argument(
        "--largest-request",
        type=_positive_int,
        default=LARGEST_REQUEST,
        help=f"most images one request carries; max_batch_size holds it (default "
        f"{LARGEST_REQUEST}: the client's packing and the export's warmup)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        help="where the server computes (default: this host's; required with --target)",
    )
    p.add_argument(
        "--cores", type=_positive_int, help="the server's CPU cores (default: this host's)"
    )


def _add_file_flags(p: argparse.ArgumentParser) -> None:
    """Where the model, the images and the written config live."""
    p.add_argument("--image-size", type=_positive_int, default=299)
    p.add_argument("--repo", type=Path, default=Path(), help="repository root (default: .)")
    p.add_argument(
        "--model-base-path",
        type=Path,
        help="SavedModel base path (default REPO/models/bench/xception-<size>)",
    )
    p.add_argument("--build-dir", type=Path, help="default REPO/build/bench")
    p.add_argument(
        "--output", type=Path, help="the config to write (default BUILD_DIR/batching-tuned.config)"
    )
    p.add_argument(
        "--probe-config",
        type=Path,
        metavar="PATH",
        help="only write the config a live TF Serving should run while measured",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Measure batch sizes, write the "
        "batching.config that meets a latency goal, and say why.",
    )
    # Added in this order, ungrouped: --help lists them as one list, in this order.
    _add_target_flags(p)
    _add_goal_flags(p)
    _add_measurement_flags(p)
    _add_decision_flags(p)
    _add_file_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(given)
    if args.probe_config:
        batching_file.write(
            args.probe_config, probe_config(args.batch_sizes, args.peak_concurrency)
        )
        log(f"wrote {args.probe_config}: start TF Serving with it, then run with --target")
        return 0
    if args.target and not args.device:
        parser.error(
            "--target needs --device cpu or gpu: the tuner cannot see the server's hardware"
        )
    goal = Goal(
        args.p50_goal_ms, args.p99_goal_ms if args.p99_goal_ms or args.p50_goal_ms else P99_GOAL_MS
    )
    settings = Settings(
        goal,
        args.batch_sizes,
        args.seconds,
        args.passes,
        args.peak_concurrency,
        args.min_gain,
        args.largest_request,
        args.device,
        args.cores,
        args.thread_rounds,
        args.thread_seconds,
    )
    repo = args.repo.resolve()
    build_dir = (args.build_dir or repo / "build" / "bench").resolve()
    output = (args.output or build_dir / "batching-tuned.config").resolve()
    command = " ".join([PROG, *map(shlex.quote, given)])
    bench = image_cache.bench_images(build_dir, args.images, seed=5)
    if args.target:
        measured = measure_live(
            args.target, args.model_name, bench.data, args.batch_sizes, args.seconds
        )
        decision = conclude(measured, settings, output, command)
    else:
        from xception_contract import tf_startup

        tf_startup.install()
        base = args.model_base_path or repo / "models" / "bench" / f"xception-{args.image_size}"
        model_dir = ensure_model(base.resolve(), args.image_size, log)
        pixels = image_cache.write_pixels(
            bench.data, args.image_size, build_dir / f"pixels-{args.image_size}-n{args.images}.npy"
        )
        decision = tune_at_limit(
            model_dir, pixels, bench.folder, build_dir, output, settings, command
        )
    return 0 if decision.goal_met else GOAL_NOT_MET


if __name__ == "__main__":
    sys.exit(main())
