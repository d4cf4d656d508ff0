"""`xception_serving.testing.process`: how a child server is judged ready, failed or late, and
when a start is retried. Children here are tiny Python scripts standing in for xception-serve, so
the rules are checked without loading TensorFlow; every real server in the suite goes through it
too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from xception_serving.testing import process
from xception_serving.testing.process import READY_LINE, ServerProcess, ServerSpec, ServerStartError


def child(tmp_path: Path, script: str, name: str = "server.log") -> ServerProcess:
    log_path = tmp_path / name
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT
        )
    return ServerProcess(
        command=[sys.executable, "-c", script],
        process=popen,
        log_path=log_path,
        grpc_target="127.0.0.1:1",
        rest_url=None,
    )


def test_the_ready_line_makes_a_server_ready(tmp_path: Path) -> None:
    server = child(tmp_path, f"import time; print({READY_LINE!r}, flush=True); time.sleep(60)")
    server.wait_ready(30)
    assert server.stop() == -signal.SIGTERM


def test_a_server_that_exits_reports_its_code_and_last_error_line(tmp_path: Path) -> None:
    server = child(
        tmp_path,
        "import sys; print('loading'); "
        "print('Failed to start server. Error: INVALID_ARGUMENT: bad flag');"
        " sys.exit(255)",
    )
    with pytest.raises(ServerStartError) as raised:
        server.wait_ready(30)
    assert raised.value.reason == "exited"
    assert str(raised.value) == (
        "xception-serve exited with 255: Failed to start server. Error: INVALID_ARGUMENT: bad flag"
    )
    assert raised.value.log_tail.splitlines()[0] == "loading"


def test_a_taken_port_is_told_apart_from_other_failures(tmp_path: Path) -> None:
    server = child(
        tmp_path, "import sys; print('could not bind gRPC port 127.0.0.1:9'); sys.exit(1)"
    )
    with pytest.raises(ServerStartError) as raised:
        server.wait_ready(30)
    assert raised.value.reason == "bind"


def test_a_server_not_ready_in_time_is_late_and_is_then_stopped(tmp_path: Path) -> None:
    server = child(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(ServerStartError) as raised:
        server.wait_ready(0.5)
    assert (raised.value.reason, str(raised.value)) == (
        "timeout",
        "xception-serve not ready after 0.5 s",
    )
    assert server.stop(timeout=10) == -signal.SIGTERM


def test_a_bind_failure_on_a_probed_port_is_retried_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = iter(
        [
            "import sys; print('could not bind gRPC port'); sys.exit(1)",
            f"import time; print({READY_LINE!r}, flush=True); time.sleep(60)",
        ]
    )
    launched: list[Path] = []

    def fake_launch(
        log_path: Path, spec: ServerSpec, *, grpc_port: int | None = None
    ) -> ServerProcess:
        launched.append(log_path)
        return child(tmp_path, next(scripts), log_path.name)

    monkeypatch.setattr(process, "launch", fake_launch)
    with process.running_server(ServerSpec(), log_dir=tmp_path, ready_timeout=30) as server:
        assert READY_LINE in server.log_text()
    assert [p.name for p in launched] == ["server-0.log", "server-1.log"]
    assert server.process.returncode == -signal.SIGTERM  # stopped when the block ended


def test_a_bind_failure_on_a_fixed_port_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[int | None] = []

    def fake_launch(
        log_path: Path, spec: ServerSpec, *, grpc_port: int | None = None
    ) -> ServerProcess:
        launched.append(grpc_port)
        return child(tmp_path, "import sys; print('could not bind gRPC port'); sys.exit(1)")

    monkeypatch.setattr(process, "launch", fake_launch)
    with (
        pytest.raises(ServerStartError) as raised,
        process.running_server(ServerSpec(), grpc_port=8500, log_dir=tmp_path, ready_timeout=30),
    ):
        pass
    assert raised.value.reason == "bind"
    assert launched == [8500]


def test_the_command_carries_tf_serving_flags_under_this_interpreter() -> None:
    spec = ServerSpec(model_name="m", model_base_path="/models/m", extra_args=("--x=1",))
    assert process.server_command(spec, grpc_port=8500, rest_port=8501) == [
        sys.executable,
        "-m",
        "xception_serving",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_base_path=/models/m",
        "--model_name=m",
        "--x=1",
    ]
