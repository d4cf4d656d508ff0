"""CLI argument handling and exit codes, without a server (the e2e tests run it for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_client import cli


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "x.jpg", "--top-k", "0"], "--top-k must be >= 1; received: 0"),
        (["predict", "x.jpg", "--timeout", "-1"], "--timeout must be > 0 seconds; received: -1"),
        (["predict", "x.jpg", "--client-cert", "c.pem"], "go together"),
        (["status", "--model-version", "one"], "invalid int value: 'one'"),
    ],
)
def test_bad_arguments_exit_2_echoing_the_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_target_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--server", "127.0.0.1:1,nohostport"]) == 2
    assert "nohostport" in capsys.readouterr().err


def test_missing_image_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["predict", str(tmp_path / "nope.jpg"), "--server", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.jpg: no such file, directory or URL" in err


def test_environment_variables_give_defaults_that_flags_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XCEPTION_SERVER", "example:9000")
    monkeypatch.setenv("XCEPTION_MODEL", "other")
    monkeypatch.setenv("XCEPTION_TIMEOUT", "2.5")
    args = cli.build_parser().parse_args(["status"])
    assert (args.server, args.model, args.timeout) == ("example:9000", "other", 2.5)
    args = cli.build_parser().parse_args(["status", "--server", "h:1"])
    assert args.server == "h:1"


def test_directory_expands_to_its_images_sorted(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.gif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    images, missing = cli._expand([str(tmp_path), "https://example.com/x.jpg"])
    assert [Path(p).name for p in images[:3]] == ["a.png", "b.JPG", "c.gif"]
    assert images[3] == "https://example.com/x.jpg" and missing == []


def test_unreachable_server_exits_1_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["status", "--server", f"127.0.0.1:{port}", "--timeout", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xception-client: error: UNAVAILABLE") and err.count("\n") == 1
