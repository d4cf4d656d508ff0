"""``xception-export``: export Keras Xception for TF Serving; ``inspect PATH`` shows an export and
``check PATH`` loads it as TF Serving does (see preflight.py).

Exit codes: 0 success, 1 runtime failure (one line; traceback with --verbose), 2 bad arguments.
Progress goes to stderr; ``inspect`` prints to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence

import xception_contract as contract
from xception_contract import tf_startup

from xception_export import normalization, preprocess, sources
from xception_export.errors import ExportError, UsageError

PROG = "xception-export"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _image_size(text: str) -> int | tuple[int, int]:
    """``S`` (square) or ``H,W`` (height, width, as load_img's target_size)."""
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected S or H,W (positive integers), got {text!r}")
    try:
        sides = [_positive_int(part.strip()) for part in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected S or H,W (positive integers), got {text!r}"
        ) from None
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export Keras Xception (or a fine-tuned Xception classifier) as a versioned "
        "TF Serving SavedModel that takes encoded image bytes, with Keras-exact preprocessing, "
        "labels and warmup inside. `xception-export inspect PATH` shows an export.",
    )
    _add_source_flags(parser.add_argument_group("model source"))
    _add_graph_flags(parser.add_argument_group("serving graph"))
    _add_output_flags(parser.add_argument_group("output"))
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="show TensorFlow logs and tracebacks"
    )
    return parser


def _add_source_flags(src: argparse._ArgumentGroup) -> None:
    """Which model: Xception's weights, or a fine-tuned model with its labels and conventions."""
    src.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|random|PATH",
        help="Keras Xception weights: 'imagenet' (Keras cache/download), a local .h5 weights file, "
        "or 'random' (untrained, plumbing tests only). Default: imagenet",
    )
    src.add_argument(
        "--model",
        metavar="PATH",
        help="a fine-tuned classifier (.keras, .h5 or SavedModel dir) instead of "
        "--weights; takes preprocess_input output",
    )
    src.add_argument(
        "--labels",
        metavar="FILE",
        help="labels for --model: one per line, or JSON (list, index->name, "
        "or Keras class-index shape)",
    )
    src.add_argument(
        "--outputs",
        choices=sources.OUTPUT_KINDS,
        default="auto",
        help="what --model returns; auto reads its last activation. Default: auto",
    )
    src.add_argument(
        "--image-size",
        type=_image_size,
        metavar="S|H,W",
        help=f"input size: S for SxS, or H,W (Xception default {contract.DEFAULT_IMAGE_SIZE}; "
        "a --model's own size unless it is dynamic)",
    )
    src.add_argument(
        "--preprocess",
        choices=normalization.PREPROCESS_CHOICES,
        default="auto",
        help="the preprocess_input --model takes: tf (x/127.5-1: Xception, Inception, "
        "MobileNet), caffe (BGR minus ImageNet mean: ResNet, VGG), torch (ImageNet mean/std: "
        "DenseNet), none (scales inside: EfficientNet, ConvNeXt); auto reads the base's layer "
        "names. Default: auto",
    )


def _add_graph_flags(graph: argparse._ArgumentGroup) -> None:
    """What the serving graph does around the network: resize, top-k and the decode limits."""
    graph.add_argument(
        "--interpolation",
        choices=preprocess.INTERPOLATIONS,
        default=preprocess.DEFAULT_INTERPOLATION,
        help="resize filter, as keras.utils.load_img's (default nearest, exact)",
    )
    graph.add_argument(
        "--top-k",
        type=_positive_int,
        metavar="K",
        help=f"top-k outputs (default {contract.DEFAULT_TOP_K}, or C if there are fewer classes)",
    )
    graph.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=contract.DEFAULT_MAX_PIXELS,
        metavar="N",
        help="reject images with more pixels, checked from the header "
        f"(default {contract.DEFAULT_MAX_PIXELS})",
    )
    limits = preprocess.DEFAULT_LIMITS
    graph.add_argument(
        "--max-jpeg-scans",
        type=_positive_int,
        default=limits.max_jpeg_scans,
        metavar="N",
        help="reject JPEGs of more scans: each progressive scan is one more pass over the whole "
        f"image, and encoders write 1-18 (default {limits.max_jpeg_scans})",
    )
    graph.add_argument(
        "--max-gif-blocks",
        type=_positive_int,
        default=limits.max_gif_blocks,
        metavar="N",
        help="reject GIFs with more extension blocks and sub-blocks before the first image "
        f"(default {limits.max_gif_blocks})",
    )
    graph.add_argument(
        "--max-png-text-chunks",
        type=_positive_int,
        default=limits.max_png_text_chunks,
        metavar="N",
        help="reject PNGs with more zTXt/iTXt chunks, which the decoder inflates (up to 8 MB "
        f"each) though no pixel needs them (default {limits.max_png_text_chunks})",
    )


def _add_output_flags(out: argparse._ArgumentGroup) -> None:
    """Where the version goes: the base path, the version number and whether to replace it."""
    out.add_argument(
        "--model-base-path",
        default=f"models/{contract.DEFAULT_MODEL_NAME}",
        metavar="DIR",
        help="TF Serving model base path; the version goes in "
        "DIR/<version>/ (default models/xception)",
    )
    out.add_argument(
        "--model-version",
        type=_positive_int,
        metavar="N",
        help="version number (default: next free integer)",
    )
    out.add_argument("--force", action="store_true", help="replace an existing version")


def _version_command_parser(name: str, description: str, json_help: str) -> argparse.ArgumentParser:
    """A subcommand that reads one version: PATH, --json and --verbose, as every such one takes."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=description)
    parser.add_argument("path", metavar="PATH", help="a version directory or a model base path")
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks on failure")
    return parser


def inspect_parser() -> argparse.ArgumentParser:
    return _version_command_parser(
        "inspect",
        "Print a SavedModel's signatures (like saved_model_cli show --all) and the export "
        "metadata.",
        "print JSON instead of text",
    )


def check_parser() -> argparse.ArgumentParser:
    parser = _version_command_parser(
        "check",
        "Load a version exactly as TF Serving does (the `serve` MetaGraphDef in a TensorFlow "
        "Session, variables restored by the saver, the init op run), replay every warmup record "
        "through Session::Run, and report each signature: OK or TF Serving's own error. Exit 1 "
        "on any failure.",
        "print the report as JSON",
    )
    parser.add_argument(
        "--tfserving-version",
        metavar="X.Y.Z",
        help="check under that TF Serving release's TensorFlow, in a venv built once into "
        "~/.cache/xception-bundle (default: this environment's TensorFlow)",
    )
    parser.add_argument("--tags", default="serve", help="--saved_model_tags (default serve)")
    return parser


def _check(args: argparse.Namespace) -> int:
    from xception_export import inspection, preflight, tfserving_env

    if args.tfserving_version:
        tfserving_env.tensorflow_version_for(args.tfserving_version)  # usage errors first
    version_dir = inspection.resolve_version_dir(args.path)
    if args.tfserving_version:
        python = tfserving_env.ensure_env(
            args.tfserving_version, lambda line: print(line, file=sys.stderr, flush=True)
        )
        report = tfserving_env.run_preflight(python, version_dir, args.tags)
        runtime = preflight.runtime_label(report.tensorflow_version, args.tfserving_version)
    else:
        report = preflight.check_version(version_dir, args.tags)
        runtime = preflight.runtime_label(report.tensorflow_version)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(preflight.format_report(report, runtime))
    return 0 if report.ok else 1


def package_parser() -> argparse.ArgumentParser:
    from xception_export import packaging

    parser = argparse.ArgumentParser(
        prog=f"{PROG} package",
        description="Package one version for a managed TF Serving host: sagemaker writes a "
        "model.tar.gz of <model-name>/<version>/ (AWS's TF Serving container); vertex writes a "
        "folder with saved_model.pb at its root (Vertex AI's prebuilt TensorFlow container).",
    )
    parser.add_argument("path", metavar="VERSION_DIR", help="a version directory, e.g. models/x/1")
    parser.add_argument("--target", required=True, choices=packaging.TARGETS)
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="PATH",
        help="sagemaker: the .tar.gz to write; vertex: the folder to write",
    )
    parser.add_argument(
        "--model-name",
        default=contract.DEFAULT_MODEL_NAME,
        help="sagemaker: the folder above the version (default %(default)s)",
    )
    parser.add_argument(
        "--flat",
        action="store_true",
        help="sagemaker: the version folder at the tarball's root, no model folder",
    )
    parser.add_argument(
        "--check-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="vertex: warn when IMAGE's REST request exceeds the 1.5 MB online limit (repeatable)",
    )
    parser.add_argument(
        "--batching-config",
        metavar="FILE",
        help="sagemaker: print the SAGEMAKER_TFS_* variables for this TF Serving batching file "
        "(e.g. serving/batching.config)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks on failure")
    return parser


def _package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xception_export import packaging

    version_dir, output = Path(args.path), Path(args.output)
    if args.target == "sagemaker":
        model_name = None if args.flat else args.model_name
        packaging.package_sagemaker(version_dir, output, model_name=model_name, force=args.force)
        print(output)
        if args.batching_config:
            try:
                from xception_serving.config import files as config_files
            except ImportError:
                raise ExportError(
                    "--batching-config reads the file with xception-serving's TF Serving "
                    "messages; install it (pip install ./serving)"
                ) from None
            params = config_files.read_batching_parameters(args.batching_config)
            env, unmapped = packaging.sagemaker_batching_env(params)
            for name, value in env.items():
                print(f"{name}={value}")
            for setting in unmapped:
                print(f"warning: no SAGEMAKER_TFS_* variable for {setting}", file=sys.stderr)
        return 0
    packaging.package_vertex(version_dir, output, force=args.force)
    print(output)
    limit = packaging.VERTEX_ONLINE_LIMIT_BYTES
    for found in packaging.oversized_requests(Path(p) for p in args.check_image):
        print(
            f"warning: {found.path}: a one-image REST request is {found.request_bytes} bytes, "
            f"over Vertex AI's online limit of {limit}; send a smaller encoding of it",
            file=sys.stderr,
        )
    return 0


SUBCOMMANDS = {"inspect": inspect_parser, "check": check_parser, "package": package_parser}


def _quiet_tensorflow(verbose: bool) -> None:
    """TensorFlow loads, when a command needs it, without its C++ start-up lines (tf_startup).

    --verbose leaves TensorFlow's logging alone (every line back), as does TF_CPP_MIN_LOG_LEVEL=0.
    """
    if not verbose:
        tf_startup.install()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in SUBCOMMANDS else None
    parser = SUBCOMMANDS[command]() if command else export_parser()
    args = parser.parse_args(args_list[1:] if command else args_list)  # exits 2 on bad usage
    _quiet_tensorflow(args.verbose)
    is_inspect = command == "inspect"
    try:
        if command == "check":
            return _check(args)
        if command == "package":
            return _package(args)
        if is_inspect:
            from xception_export import inspection

            info = inspection.describe(inspection.resolve_version_dir(args.path))
            print(json.dumps(info, indent=2) if args.json else inspection.format_text(info))
            return 0
        from xception_export.api import export

        result = export(
            args.model_base_path,
            weights=args.weights,
            model=args.model,
            labels=args.labels,
            outputs=args.outputs,
            image_size=args.image_size,
            preprocess_mode=args.preprocess,
            interpolation=args.interpolation,
            top_k=args.top_k,
            max_pixels=args.max_pixels,
            limits=preprocess.DecodeLimits(
                max_jpeg_scans=args.max_jpeg_scans,
                max_gif_blocks=args.max_gif_blocks,
                max_png_text_chunks=args.max_png_text_chunks,
            ),
            model_version=args.model_version,
            force=args.force,
        )
        print(result.version_dir)
        return 0
    except UsageError as err:
        if args.verbose:
            traceback.print_exc()
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if not isinstance(err, ExportError):
            message = f"{type(err).__name__}: {message}" if message else type(err).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
