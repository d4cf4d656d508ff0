"""xception-serve flag handling: TF Serving's flag names, syntax and startup error wording."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_serving import cli, options


def test_parser_accepts_tf_serving_flag_syntaxes() -> None:
    args = cli.build_parser().parse_args(
        ["--port=9000", "--rest_api_port", "9001", "--enable_batching", "--model_name=m",
         "--enable_model_warmup=false", "--file_system_poll_wait_seconds", "5"]
    )  # fmt: skip
    assert (args.port, args.rest_api_port, args.model_name) == (9000, 9001, "m")
    assert args.enable_batching is True
    assert args.enable_model_warmup is False
    assert args.file_system_poll_wait_seconds == 5
    assert args.host == "127.0.0.1"  # loopback unless told otherwise


def test_parser_defaults_match_tf_serving() -> None:
    args = cli.build_parser().parse_args([])
    assert (args.port, args.rest_api_port, args.model_name) == (8500, 0, "default")
    assert args.enable_model_warmup is True
    assert args.enable_batching is False
    assert args.file_system_poll_wait_seconds == 1
    assert args.model_config_file_poll_wait_seconds == 0
    assert (args.max_num_load_retries, args.load_retry_interval_micros) == (5, 60_000_000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [],
            "Failed to start server. Error: INVALID_ARGUMENT: Both server_options.model_base_path "
            "and server_options.model_config_file are empty!",
        ),
        (
            ["--model_base_path=/m", "--batching_parameters_file=/b.config"],
            "Failed to start server. Error: INVALID_ARGUMENT: server_options.batching_parameters_"
            "file is set without setting server_options.enable_batching to true.",
        ),
        (
            ["--model_base_path=/m", "--port=0"],
            "Failed to start server. Error: INVALID_ARGUMENT: At least one of server_options."
            "grpc_port or server_options.grpc_socket_path must be set.",
        ),
        (
            [
                "--model_base_path=/m",
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=1",
                "--tensorflow_inter_op_parallelism=1",
            ],
            "Failed to start server. Error: INVALID_ARGUMENT: Either configure "
            "server_options.tensorflow_session_parallelism or (server_options.tensorflow_intra_op_"
            "parallelism, server_options.tensorflow_inter_op_parallelism) separately. You cannot "
            "configure all.",
        ),
    ],
)
def test_flag_errors_are_worded_as_tf_serving_and_exit_255(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 255
    assert capsys.readouterr().err.strip().splitlines()[-1] == message


def test_unknown_flags_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--model_base_path=/m", "--no_such_flag=1"])
    assert info.value.code == 2
    assert "unknown argument: --no_such_flag=1" in capsys.readouterr().err


def test_grpc_channel_arguments_parse_like_tf_serving() -> None:
    parsed = options.channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb")
    assert parsed == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.lb_policy_name", "grpclb"),
    ]
    assert options.channel_arguments("") == []
    with pytest.raises(options.StartupError):
        options.channel_arguments("novalue")


def test_an_unsupported_otel_exporter_fails_startup_before_any_model_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    assert cli.main([f"--model_base_path={tmp_path / 'no-such-model'}"]) == 255
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        "Failed to start server. Error: INVALID_ARGUMENT: OTEL_TRACES_EXPORTER='jaeger' is not "
        "supported by xception-serve"
    )
