"""The tuner's batching.config: TF Serving's text-proto BatchingParameters with a header saying who
wrote it, where and how, and each setting under the comment that says why.

Each setting line is TF Serving's text format of that field (``text_format`` on the message
``xception_serving.config.files`` reads), and the written text is read back with the same
reader the local server uses, so a file that TF Serving's startup checks would refuse is never
written. The header's ``# host:`` line says which machine the values were measured on
(``tuned_host``): ``make bench`` re-tunes when it is not this one.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from xception_serving.config import files as config_files

from benchmarks.batching_rules import Decision

WIDTH = 100
HOST_LINE = re.compile(r"^# host: (?P<cpu>.*); cores: (?P<cores>\d+)$", re.MULTILINE)


def host_line(cpu_model: str, cores: int) -> str:
    return f"# host: {cpu_model}; cores: {cores}"


def tuned_host(path: Path) -> tuple[str, int] | None:
    """The (CPU model, cores) a tuner-written config was measured on; None for a file the tuner
    did not write (or that cannot be read)."""
    try:
        match = HOST_LINE.search(path.read_text())
    except OSError:
        return None
    return (match["cpu"], int(match["cores"])) if match else None


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )


def parameters(decision: Decision) -> config_files.BatchingParameters:
    params = config_files.BatchingParameters()
    for setting in decision.settings:
        if isinstance(setting.value, tuple):
            getattr(params, setting.name).extend(setting.value)
        elif setting.value is not None:
            getattr(params, setting.name).value = setting.value
    return params


def _field_text(name: str, value: int | tuple[int, ...]) -> list[str]:
    one = config_files.BatchingParameters()
    if isinstance(value, tuple):
        getattr(one, name).extend(value)
        text: str = text_format.MessageToString(one)
        return text.splitlines()
    # Written out by hand: text_format leaves out a wrapper's 0 ("batch_timeout_micros { }").
    return [f"{name} {{ value: {value} }}"]


def render(decision: Decision, header: Sequence[str]) -> str:
    """The config file's text: ``header`` lines as comments, then every setting under its
    reason (a setting whose value is None is a comment only: TF Serving's default applies)."""
    lines = [line if line.startswith("#") else f"# {line}" for line in header]
    for setting in decision.settings:
        lines.append("")
        lines += _comment(f"{setting.name}: {setting.reason}")
        if setting.value is not None:
            lines += _field_text(setting.name, setting.value)
    text = "\n".join(lines) + "\n"
    parsed = config_files.parse_text_proto(text, config_files.BatchingParameters)
    config_files.validate_batching_parameters(parsed)
    if parsed != parameters(decision):
        raise AssertionError(f"rendered config reads back as {parsed}")
    return text


def write(path: Path, text: str) -> None:
    """Write atomically, so a server reading ``path`` never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    staging.replace(path)
