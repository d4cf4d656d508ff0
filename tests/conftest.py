"""Suite-wide wiring: tiers come from the folder a test lives in, fixtures from tests/fixtures/.

- tests/unit/         fast, no server, no export (marker `unit`)
- tests/integration/  in-process or loopback servers, small exported models (marker `integration`)
- tests/e2e/          the real console scripts and make targets as subprocesses (marker `e2e`)
- tests/compat/       our exports under the pinned TF Serving release's TensorFlow (marker `compat`)
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.images",
    "tests.fixtures.models",
    "tests.fixtures.servers",
]

_TIERS = ("unit", "integration", "e2e", "compat")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break
