"""The bundle's extras: a console script whose extra is not installed says which install fixes it.

The bundle is one distribution. Its base install is the client; each other part comes with an extra
(``export``, ``serve``, ``bulk``, ``gateway``, ``tracing``). A command started without its extra
would otherwise die on a bare ``ModuleNotFoundError`` deep in an import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Final

DISTRIBUTION: Final = "xception-serving-bundle"


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The top-level modules of `modules` that this environment cannot import."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def install_hint(extra: str) -> str:
    """The pip command that adds `extra` to an installed bundle."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(command: str, extra: str, modules: Sequence[str]) -> None:
    """Exit with one line naming the missing modules and the install, if any is missing."""
    missing = missing_modules(modules)
    if missing:
        raise SystemExit(
            f"{command} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"{install_hint(extra)}"
        )
