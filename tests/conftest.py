"""Suite-wide wiring: tiers come from the folder a test lives in, fixtures from tests/fixtures/.

- tests/unit/         fast, no server, no export (marker `unit`)
- tests/integration/  in-process or loopback servers, small exported models (marker `integration`)
- tests/e2e/          the real console scripts and make targets as subprocesses (marker `e2e`)
- tests/compat/       our exports under the pinned TF Serving release's TensorFlow (marker `compat`)
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.images",
    "tests.fixtures.models",
    "tests.fixtures.servers",
]

_TIERS = ("unit", "integration", "e2e", "compat")
TESTS_DIR = Path(__file__).resolve().parent


def tier_of(path: Path, tests_dir: Path = TESTS_DIR) -> str | None:
    """The tier of a test file: the first folder under tests/ (not any folder of the absolute
    path, so a checkout inside a folder named `unit` does not make every test a unit test)."""
    try:
        relative = path.resolve().relative_to(tests_dir.resolve())
    except ValueError:
        return None
    top = relative.parts[0] if len(relative.parts) > 1 else None
    return top if top in _TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
