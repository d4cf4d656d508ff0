"""The local server as the benchmark runs it: ``xception_serving.testing.process`` with the
benchmark's flags. Servers are launched without waiting, so two can load their models at once,
then awaited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from xception_serving.testing import process


def launch(
    name: str,
    *,
    model_name: str,
    model_base_path: Path,
    log_dir: Path,
    batching_config: Path | None,
    rest: bool = False,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> process.ServerProcess:
    """Start ``xception-serve`` on loopback, logging to ``log_dir/server-<name>.log``; batching
    on with ``batching_config``, off without it."""
    # The benchmark's model never changes while it runs: no point polling the directory.
    flags = ["--file_system_poll_wait_seconds=0"]
    if batching_config is not None:
        flags += ["--enable_batching=true", f"--batching_parameters_file={batching_config}"]
    spec = process.ServerSpec(
        model_name=model_name,
        model_base_path=model_base_path,
        rest=rest,
        extra_args=[*flags, *extra_args],
        env=env,
    )
    return process.launch(log_dir / f"server-{name}.log", spec)


def wait_ready(server: process.ServerProcess, timeout: float) -> None:
    """``server.wait_ready``; a server that died or is late raises with the end of its log."""
    try:
        server.wait_ready(timeout)
    except process.ServerStartError as error:
        raise RuntimeError(f"{error} (log: {server.log_path})\n{error.log_tail}") from error
