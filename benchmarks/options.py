"""The benchmark's command line, as one typed ``Options`` with every default applied.

Paths default to places in the repository, given by ``--repo`` (the current directory unless
told: ``python -m benchmarks.run`` runs from the repository root); paths given on the command line
are taken relative to the current directory. Every path is absolute afterwards, as TF Serving (and
the local server) require of a model base path.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks import stats

PROG = "python -m benchmarks.run"
FOOTPRINT_CACHE = "footprint-venv.json"  # in the build directory (see footprint.client_venv_size)


@dataclass(frozen=True)
class Options:
    tfserving_target: str | None  # None: start the local server twice (batching on and off)
    tfserving_rest_url: str | None
    model_name: str
    image_size: int
    model_base_path: Path
    images: int
    seed: int
    seconds: float  # measured seconds per point
    concurrency: tuple[int, ...]
    limit_batch_sizes: tuple[int, ...]
    batching_config: Path
    tune: Literal["auto", "always", "never"]  # tune the batching config first (tune_batching.py)
    import_repeats: int
    footprint: Literal["venv", "records"]
    precision: bool
    bulk: bool  # the bulk phase (benchmarks/bulk.py): xception-bulk in process and remote
    quick: bool
    repo: Path
    build_dir: Path
    output_dir: Path
    command: str  # how the run was started, for the results

    @property
    def local(self) -> bool:
        """Whether the benchmark starts its own servers (no ``--tfserving-target``)."""
        return self.tfserving_target is None

    @property
    def warm_seconds(self) -> float:
        return 1.0 if self.quick else 2.0

    @property
    def paired_rounds(self) -> int:
        """Back-to-back limit/served rounds for the served/limit ratio (an odd count: a median)."""
        return 1 if self.quick else 3

    @property
    def limit_seconds(self) -> float:
        """Seconds per batch size of one limit pass."""
        return max(1.0, self.seconds * 0.5)


def _levels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure the limit, the served paths and the usual way side by side.",
    )
    parser.add_argument(
        "--tfserving-target",
        metavar="HOST:PORT",
        help="measure a running TF Serving (gRPC) instead of the local server",
    )
    parser.add_argument(
        "--tfserving-rest-url",
        metavar="URL",
        help="its REST address, e.g. http://host:8501 (REST rows skipped without)",
    )
    parser.add_argument("--model-name", default="xception", help="served model name")
    parser.add_argument("--image-size", type=int, default=299, help="export size (default 299)")
    parser.add_argument(
        "--model-base-path",
        type=Path,
        help="SavedModel base path (default REPO/models/bench/xception-<size>)",
    )
    parser.add_argument("--images", type=int, help="number of generated JPEGs (default 48)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--seconds", type=float, help="measured seconds per point (default 6)")
    parser.add_argument("--concurrency", type=_levels, default=stats.CONCURRENCY_LEVELS)
    parser.add_argument("--limit-batch-sizes", type=_levels, help="default 1,2,4,8")
    parser.add_argument(
        "--batching-config",
        type=Path,
        help="batching server config (default REPO/serving/batching-cpu.config)",
    )
    parser.add_argument(
        "--tune",
        choices=("auto", "always", "never"),
        default="auto",
        help="first tune the batching config on this machine and serve with it: "
        "auto (default) when the config was not tuned on this CPU and core count",
    )
    parser.add_argument("--import-repeats", type=int, help="fresh interpreters per module (3)")
    parser.add_argument(
        "--footprint",
        choices=("venv", "records"),
        default="venv",
        help="client size: a real client-only venv (cached) or RECORD sums",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(),
        help="the repository root (default: the current directory)",
    )
    parser.add_argument(
        "--build-dir", type=Path, help="cached images, pixels and logs (default REPO/build/bench)"
    )
    parser.add_argument(
        "--output-dir", type=Path, help="where the results go (default REPO/benchmarks/results)"
    )
    parser.add_argument(
        "--precision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure fp32 / bfloat16 / XLA:CPU on the local server (default on)",
    )
    parser.add_argument(
        "--bulk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure xception-bulk in process and against a server, last (default on)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development run: 12 images, 2 s points, fewer batch sizes",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """The options of ``argv`` (default: this process's arguments) with every default applied."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(given)
    quick: bool = args.quick
    repo = args.repo.resolve()
    build_dir = (args.build_dir or repo / "build" / "bench").resolve()
    footprint = args.footprint
    if quick and footprint == "venv" and not (build_dir / FOOTPRINT_CACHE).exists():
        footprint = "records"  # building the venv takes minutes; a quick run uses it if cached
    base = args.model_base_path or repo / "models" / "bench" / f"xception-{args.image_size}"
    return Options(
        tfserving_target=args.tfserving_target,
        tfserving_rest_url=args.tfserving_rest_url,
        model_name=args.model_name,
        image_size=args.image_size,
        model_base_path=base.resolve(),
        images=args.images or (12 if quick else 48),
        seed=args.seed,
        seconds=args.seconds or (2.0 if quick else 6.0),
        concurrency=tuple(args.concurrency),
        limit_batch_sizes=args.limit_batch_sizes or ((1, 4) if quick else (1, 2, 4, 8)),
        batching_config=(
            args.batching_config or repo / "serving" / "batching-cpu.config"
        ).resolve(),
        tune=args.tune,
        import_repeats=args.import_repeats or (1 if quick else 3),
        footprint=footprint,
        precision=args.precision,
        bulk=args.bulk,
        quick=quick,
        repo=repo,
        build_dir=build_dir,
        output_dir=(args.output_dir or repo / "benchmarks" / "results").resolve(),
        command=" ".join([PROG, *map(shlex.quote, given)]),
    )
