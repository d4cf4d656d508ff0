"""Start real TensorFlow Serving on a GPU: build the command, print it, run it.

Two modes, one set of TF Serving flags:

- ``docker``: the pinned ``tensorflow/serving:<version>-gpu`` image with ``--gpus all``; the
  exported model and every config file are bind-mounted read-only; the image's entrypoint is
  replaced by ``tensorflow_model_server`` itself so every flag is explicit (the stock entrypoint
  adds its own ``--port``/``--model_name`` flags).
- ``binary``: ``tensorflow_model_server`` from PATH, reading the same files on the host
  (models.config is copied with its base path rewritten to the host directory).

``auto`` prefers a reachable Docker engine (the image pins TF Serving, CUDA and cuDNN together) and
falls back to the binary. With neither it fails with one line that names ``make serve``.

Only the standard library and the zero-dependency ``xception_contract`` are needed, so
``serving/run-tfserving.sh`` works on a GPU host that has python3 and Docker but no project
virtualenv. Nothing here knows where the repository is: the config directory, model base path,
work directory and SSL template come from the command line, whose defaults are the repository's
layout under the current directory; the script passes them absolute.

    python -m xception_serving.launch_tfserving run [--mode auto|docker|binary] [--dry-run] \
        [-- FLAGS]
    python -m xception_serving.launch_tfserving command --mode docker      # print only
    python -m xception_serving.launch_tfserving render-ssl --server-key k.pem \
        --server-cert c.pem -o out
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import xception_contract as contract
from xception_contract import layout

DEFAULT_MODEL_NAME = contract.DEFAULT_MODEL_NAME
DEFAULT_GRPC_PORT = contract.DEFAULT_GRPC_PORT
DEFAULT_REST_PORT = contract.DEFAULT_REST_PORT

# 2.20 rather than 2.19: its GPU image moves to CUDA 12.5 / cuDNN 9.3 and ships SASS for sm_89 (Ada:
# L4, L40S) next to sm_60-sm_80; 2.19 has CUDA 12.2 / cuDNN 8.9 and no sm_89. Neither ships sm_90
# SASS, so Hopper (H100/H200) JIT-compiles PTX at first use either way (see serving/README.md).
TFS_VERSION = "2.20.0"
GPU_IMAGE = f"tensorflow/serving:{TFS_VERSION}-gpu"
CPU_IMAGE = f"tensorflow/serving:{TFS_VERSION}"
BINARY = "tensorflow_model_server"
CONTAINER_BINARY = "/usr/bin/tensorflow_model_server"

# TF Serving listens on its defaults inside the container; host ports are mapped with -p.
CONTAINER_GRPC_PORT = DEFAULT_GRPC_PORT
CONTAINER_REST_PORT = DEFAULT_REST_PORT
CONTAINER_CONFIG_DIR = "/config"
CONTAINER_MODEL_ROOT = "/models"
# CUDA's JIT cache (PTX -> SASS on GPUs without prebuilt kernels) kept in a named volume so the
# compilation is paid once per host, not per container start.
CONTAINER_CUDA_CACHE = "/cuda-cache"
CUDA_CACHE_VOLUME = "xception-tfserving-cuda-cache"
CUDA_CACHE_MAXSIZE = 4 * 1024**3  # CUDA's documented maximum (4 GiB); default is far smaller
CONTAINER_NAME = "xception-tfserving"

# Fraction of GPU memory TF's allocator may take. TF's default grabs nearly all free memory up
# front; 0.8 leaves room for the CUDA context, the few hundred MiB the allocator is reported to take
# beyond the fraction, and a monitoring agent. An estimate, not measured here.
DEFAULT_GPU_MEMORY_FRACTION = 0.8
# Re-read models.config every minute (label moves, added models); look for new version
# directories every 30 s instead of every second (TF Serving's default, costly on remote storage).
DEFAULT_MODEL_CONFIG_POLL_SECONDS = 60
DEFAULT_FILE_SYSTEM_POLL_SECONDS = 30
MAX_CONNECTION_AGE_MS = 300_000

MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching.config"
MONITORING_CONFIG = "monitoring.config"
SSL_CONFIG = "ssl.config"
SSL_TEMPLATE = "ssl.config.template"

# The command line's path defaults, relative to the current directory: they name the repository's
# files when run from its root, as `make` does. serving/run-tfserving.sh passes the same paths made
# absolute from where it lives, so the script works from any directory.
DEFAULT_CONFIG_DIR = "serving"
DEFAULT_MODEL_BASE_PATH = f"models/{DEFAULT_MODEL_NAME}"
DEFAULT_WORK_DIR = "build/tfserving"
DEFAULT_SSL_TEMPLATE = f"{DEFAULT_CONFIG_DIR}/{SSL_TEMPLATE}"

Mode = Literal["docker", "binary"]

LOCAL_ALTERNATIVE = "serve locally instead with `make serve` (same API, config files and flags)"


class LaunchError(Exception):
    """TF Serving cannot be started as asked; the message is one line for the operator."""


@dataclass(frozen=True)
class ServeSettings:
    """What an operator chooses; everything else is fixed by the config files.

    The three host paths have no defaults here: the command line supplies them (see _parser).
    """

    model_base_path: Path  # host directory holding the numeric version directories
    config_dir: Path  # holds models.config, batching.config, monitoring.config
    work_dir: Path  # where binary mode writes its host copy of models.config
    model_name: str = DEFAULT_MODEL_NAME
    grpc_port: int = DEFAULT_GRPC_PORT
    rest_port: int = DEFAULT_REST_PORT
    gpu_memory_fraction: float = DEFAULT_GPU_MEMORY_FRACTION
    ssl_config_file: Path | None = None
    image: str = GPU_IMAGE
    extra_flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def container_model_path(self) -> str:
        return f"{CONTAINER_MODEL_ROOT}/{self.model_name}"


def server_flags(
    *,
    config_dir: str,
    grpc_port: int = DEFAULT_GRPC_PORT,
    rest_port: int = DEFAULT_REST_PORT,
    models_config: str | None = None,
    gpu_memory_fraction: float | None = DEFAULT_GPU_MEMORY_FRACTION,
    ssl_config_file: str | None = None,
) -> list[str]:
    """tensorflow_model_server's flags, in TF Serving's own names and `--flag=value` syntax.

    The Docker command, docker-compose.yml and the Kubernetes Deployment all carry exactly these
    (the tests compare them); `gpu_memory_fraction=None` leaves the flag out (CPU overlay).
    """
    flags = [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={models_config or f'{config_dir}/{MODELS_CONFIG}'}",
        f"--model_config_file_poll_wait_seconds={DEFAULT_MODEL_CONFIG_POLL_SECONDS}",
        f"--file_system_poll_wait_seconds={DEFAULT_FILE_SYSTEM_POLL_SECONDS}",
        "--enable_batching=true",
        f"--batching_parameters_file={config_dir}/{BATCHING_CONFIG}",
        f"--monitoring_config_file={config_dir}/{MONITORING_CONFIG}",
        "--enable_model_warmup=true",
        # grpc.health.v1 for gRPC-aware load balancers and probes (TF Serving 2.16+).
        "--enable_grpc_healthcheck_service=true",
        # Close each client connection after 5 min (in-flight calls finish: no grace limit set).
        # Clients balancing over a headless Service then reconnect and re-resolve DNS, so replicas
        # added by the autoscaler start taking traffic instead of only new clients seeing them.
        f"--grpc_channel_arguments=grpc.max_connection_age_ms={MAX_CONNECTION_AGE_MS}",
    ]
    # No --mixed_precision=bfloat16 on the GPU: it only rewrites CPU-placed ops (oneDNN); the
    # GPU already runs TF32, and fp16 tensor-core math is a Session config rewrite instead
    # (benchmarks/GPU.md). On a CPU with avx512_bf16/AMX it does pay: add it via extra flags.
    if gpu_memory_fraction is not None:
        flags.append(f"--per_process_gpu_memory_fraction={gpu_memory_fraction:g}")
    if ssl_config_file is not None:
        flags.append(f"--ssl_config_file={ssl_config_file}")
    return flags


def docker_command(settings: ServeSettings, *, docker: str = "docker") -> list[str]:
    """`docker run` for the pinned GPU image; every host path is mounted read-only."""
    model_dir = _host_path(settings.model_base_path)
    mounts = [(model_dir, settings.container_model_path)]
    for name in (MODELS_CONFIG, BATCHING_CONFIG, MONITORING_CONFIG):
        mounts.append((settings.config_dir.resolve() / name, f"{CONTAINER_CONFIG_DIR}/{name}"))
    ssl_in_container = None
    if settings.ssl_config_file is not None:
        ssl_in_container = f"{CONTAINER_CONFIG_DIR}/{SSL_CONFIG}"
        mounts.append((settings.ssl_config_file.resolve(), ssl_in_container))
    command = [
        docker, "run", "--rm", "--name", CONTAINER_NAME,
        "--gpus", "all",
        "-p", f"{settings.grpc_port}:{CONTAINER_GRPC_PORT}",
        "-p", f"{settings.rest_port}:{CONTAINER_REST_PORT}",
    ]  # fmt: skip
    for source, target in mounts:
        command += ["-v", f"{source}:{target}:ro"]
    command += [
        "-v", f"{CUDA_CACHE_VOLUME}:{CONTAINER_CUDA_CACHE}",
        "-e", f"CUDA_CACHE_PATH={CONTAINER_CUDA_CACHE}",
        "-e", f"CUDA_CACHE_MAXSIZE={CUDA_CACHE_MAXSIZE}",
        "--entrypoint", CONTAINER_BINARY,
        settings.image,
    ]  # fmt: skip
    command += server_flags(
        config_dir=CONTAINER_CONFIG_DIR,
        gpu_memory_fraction=settings.gpu_memory_fraction,
        ssl_config_file=ssl_in_container,
    )
    return command + list(settings.extra_flags)


def binary_command(settings: ServeSettings, *, binary: str = BINARY) -> list[str]:
    """tensorflow_model_server on the host; writes the host copy of models.config first."""
    model_dir = _host_path(settings.model_base_path)
    config_dir = settings.config_dir.resolve()
    text = (config_dir / MODELS_CONFIG).read_text()
    host_config = settings.work_dir.resolve() / MODELS_CONFIG
    host_config.parent.mkdir(parents=True, exist_ok=True)
    host_config.write_text(
        rebase_model_config(text, {settings.container_model_path: str(model_dir)})
    )
    ssl = settings.ssl_config_file
    command = [binary]
    command += server_flags(
        config_dir=str(config_dir),
        grpc_port=settings.grpc_port,
        rest_port=settings.rest_port,
        models_config=str(host_config),
        gpu_memory_fraction=settings.gpu_memory_fraction,
        ssl_config_file=None if ssl is None else str(ssl.resolve()),
    )
    return command + list(settings.extra_flags)


_BASE_PATH = re.compile(r'(?<![\w.])(base_path\s*:\s*)"([^"]*)"')


def _active_base_paths(text: str) -> list[re.Match[str]]:
    """base_path fields outside comments (a '#' earlier on the line starts a comment)."""
    matches = []
    for match in _BASE_PATH.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if "#" not in text[line_start : match.start()]:
            matches.append(match)
    return matches


def model_base_paths(models_config_text: str) -> list[str]:
    """The base_path of every model in a models.config."""
    return [m.group(2) for m in _active_base_paths(models_config_text)]


def rebase_model_config(models_config_text: str, mapping: dict[str, str]) -> str:
    """Rewrite base paths (container path -> host path); every base path must be mapped."""
    matches = _active_base_paths(models_config_text)
    unmapped = [m.group(2) for m in matches if m.group(2) not in mapping]
    if unmapped:
        raise LaunchError(
            f"models.config base_path {unmapped[0]} is not mounted; "
            f"only {', '.join(sorted(mapping))} is"
        )
    pieces, last = [], 0
    for m in matches:
        replacement = m.group(1) + _quote_text_proto(mapping[m.group(2)])
        pieces += [models_config_text[last : m.start()], replacement]
        last = m.end()
    return "".join([*pieces, models_config_text[last:]])


def check_mounts(settings: ServeSettings) -> None:
    """Fail before launching when models.config names a base path the container will not see."""
    text = (settings.config_dir / MODELS_CONFIG).read_text()
    rebase_model_config(text, {settings.container_model_path: str(settings.model_base_path)})


def check_model_dir(model_base_path: Path) -> None:
    """TF Serving waits forever for a base path without numeric version directories: say so now."""
    if not model_base_path.is_dir():
        raise LaunchError(
            f"model base path {model_base_path} does not exist; export a model first "
            "(`make export`)"
        )
    if not layout.version_dirs(model_base_path):
        raise LaunchError(
            f"no numeric version directory under {model_base_path} (TF Serving would wait "
            "forever); point MODEL_BASE_PATH at the parent of <version>/, e.g. models/xception"
        )


def validate_configs(settings: ServeSettings) -> None:
    """Parse the configs with the project's reader when it is installed (skipped on a bare host)."""
    try:
        from xception_serving.config import files as config_files
    except ImportError:  # protobuf / tensorflow-serving-api absent: TF Serving will parse them
        return
    config_dir = settings.config_dir
    try:
        config_files.read_model_server_config(config_dir / MODELS_CONFIG)
        config_files.read_batching_parameters(config_dir / BATCHING_CONFIG)
        config_files.read_monitoring_config(config_dir / MONITORING_CONFIG)
        if settings.ssl_config_file is not None:
            config_files.read_ssl_config(settings.ssl_config_file)
    except config_files.ConfigError as err:
        raise LaunchError(str(err).splitlines()[0]) from err


def docker_engine_reachable(docker: str = "docker", *, timeout: float = 20.0) -> bool:
    """A docker CLI without a running engine is common (CI, this project's machines)."""
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def choose_mode(requested: str) -> tuple[Mode, str]:
    """The mode to run in and the program that runs it, or LaunchError with the one-line reason."""
    docker = shutil.which("docker")
    binary = shutil.which(BINARY)
    if requested in ("auto", "docker") and docker and docker_engine_reachable(docker):
        return "docker", docker
    if requested in ("auto", "binary") and binary:
        return "binary", binary
    no_docker = "no Docker engine is reachable" + (
        " (`docker info` failed)" if docker else " (no docker command)"
    )
    no_binary = f"no {BINARY} on PATH"
    both = f"{no_docker} and {no_binary}"
    reason = {"docker": no_docker, "binary": no_binary}.get(requested, both)
    raise LaunchError(f"cannot start TF Serving: {reason}; {LOCAL_ALTERNATIVE}")


def build_command(settings: ServeSettings, mode: Mode, program: str) -> list[str]:
    if mode == "docker":
        return docker_command(settings, docker=program)
    return binary_command(settings, binary=program)


# --- SSL config rendering ------------------------------------------------------------------------


def _quote_text_proto(value: str) -> str:
    """A protobuf text-format string literal (C escapes), as text_format.Parse reads it back."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def render_ssl_config(
    template: str,
    *,
    server_key: str,
    server_cert: str,
    custom_ca: str = "",
    client_verify: bool = False,
) -> str:
    """Fill ssl.config.template with PEM contents (TF Serving wants them inline, not as paths)."""
    if client_verify and not custom_ca:
        raise LaunchError("client_verify needs a custom CA (--custom-ca) to verify clients against")
    values = {
        "SERVER_KEY": _quote_text_proto(server_key),
        "SERVER_CERT": _quote_text_proto(server_cert),
        "CUSTOM_CA": _quote_text_proto(custom_ca),
        "CLIENT_VERIFY": "true" if client_verify else "false",
    }
    rendered = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template)
    return rendered


# --- command line --------------------------------------------------------------------------------


def _host_path(path: Path) -> Path:
    return path.expanduser().resolve()


def _settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        model_base_path=Path(args.model_base_path).expanduser().resolve(),
        config_dir=Path(args.config_dir).resolve(),
        work_dir=Path(args.work_dir),
        model_name=args.model_name,
        grpc_port=args.port,
        rest_port=args.rest_api_port,
        gpu_memory_fraction=args.gpu_memory_fraction,
        ssl_config_file=Path(args.ssl_config_file) if args.ssl_config_file else None,
        image=args.image,
        extra_flags=tuple(args.extra),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run-tfserving", description="Start real TF Serving on the GPU (Docker or binary)."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("run", "pick a mode, print the command, run it"),
        ("command", "print the command for --mode without running it"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--mode", choices=("auto", "docker", "binary"), default="auto")
        p.add_argument(
            "--model-base-path",
            default=os.environ.get("MODEL_BASE_PATH") or DEFAULT_MODEL_BASE_PATH,
            help="parent of the version directories (default: $MODEL_BASE_PATH or %(default)s)",
        )
        p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
        p.add_argument(
            "--config-dir",
            default=DEFAULT_CONFIG_DIR,
            help="holds the *.config files TF Serving reads (default: %(default)s)",
        )
        p.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="host gRPC port")
        p.add_argument("--rest-api-port", type=int, default=DEFAULT_REST_PORT, help="host port")
        p.add_argument("--gpu-memory-fraction", type=float, default=DEFAULT_GPU_MEMORY_FRACTION)
        p.add_argument("--ssl-config-file", default=os.environ.get("SSL_CONFIG") or None)
        p.add_argument("--image", default=GPU_IMAGE)
        p.add_argument(
            "--work-dir",
            default=DEFAULT_WORK_DIR,
            help="binary mode's host copy of models.config (default: %(default)s)",
        )
        p.add_argument("extra", nargs="*", help="extra TF Serving flags, after --")
        if name == "run":
            p.add_argument("--dry-run", action="store_true", help="print, do not run")
    ssl = sub.add_parser("render-ssl", help="fill ssl.config.template with PEM files")
    ssl.add_argument("--server-key", required=True, type=Path)
    ssl.add_argument("--server-cert", required=True, type=Path)
    ssl.add_argument("--custom-ca", type=Path)
    ssl.add_argument("--client-verify", action="store_true")
    ssl.add_argument(
        "--template", type=Path, default=Path(DEFAULT_SSL_TEMPLATE), help="default: %(default)s"
    )
    ssl.add_argument("--output", "-o", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "render-ssl":
            text = render_ssl_config(
                args.template.read_text(),
                server_key=args.server_key.read_text(),
                server_cert=args.server_cert.read_text(),
                custom_ca=args.custom_ca.read_text() if args.custom_ca else "",
                client_verify=args.client_verify,
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:  # holds a private key: owner-only from the start
                out.write(text)
            print(f"wrote {args.output}", file=sys.stderr)
            return 0
        settings = _settings(args)
        check_model_dir(settings.model_base_path)
        check_mounts(settings)
        validate_configs(settings)
        if args.action == "command":
            mode: Mode = "binary" if args.mode == "binary" else "docker"
            program = "docker" if mode == "docker" else BINARY
        else:
            mode, program = choose_mode(args.mode)
        command = build_command(settings, mode, program)
    except (LaunchError, OSError) as err:
        print(f"run-tfserving: {err}", file=sys.stderr)
        return 1
    print(shlex.join(command), flush=True)
    if args.action == "command" or args.dry_run:
        return 0
    os.execvp(command[0], command)  # replaces this process: signals go straight to TF Serving


if __name__ == "__main__":
    sys.exit(main())
