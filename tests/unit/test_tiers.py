"""Tiers come from the first folder under tests/, never from folders above the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tier_of


def test_the_tier_is_the_folder_under_tests() -> None:
    tests = Path("/src/repo/tests")
    assert tier_of(tests / "unit" / "test_a.py", tests) == "unit"
    assert tier_of(tests / "e2e" / "test_a.py", tests) == "e2e"


def test_a_checkout_under_a_folder_named_unit_keeps_each_tests_own_tier() -> None:
    tests = Path("/home/me/unit/repo/tests")
    assert tier_of(tests / "integration" / "test_a.py", tests) == "integration"
    assert tier_of(tests / "compat" / "sub" / "test_a.py", tests) == "compat"


def test_files_outside_a_tier_folder_get_no_tier() -> None:
    tests = Path("/home/me/unit/repo/tests")
    assert tier_of(tests / "fixtures" / "unit.py", tests) is None
    assert tier_of(tests / "test_top_level.py", tests) is None
    assert tier_of(Path("/home/me/unit/elsewhere/test_a.py"), tests) is None


def test_this_test_is_marked_unit_and_nothing_else(request: pytest.FixtureRequest) -> None:
    tiers = {m.name for m in request.node.iter_markers()} & {"unit", "integration", "e2e", "compat"}
    assert tiers == {"unit"}
