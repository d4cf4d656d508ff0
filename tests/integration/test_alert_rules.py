"""serving/monitoring/rules.yml: promtool accepts it, and rules_test.yml's unit tests (every
alert firing on the series that should trip it and quiet on those that should not) pass."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.fixtures.prometheus import binary

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "serving" / "monitoring"


def _alerts() -> list[str]:
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules_file() -> None:
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(MONITORING / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(
        [
            r
            for g in yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
            for r in g["rules"]
        ]
    )
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    result = subprocess.run(
        [binary("promtool"), "test", "rules", "rules_test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load((MONITORING / "rules_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(_alerts()) <= firing, set(_alerts()) - firing
    assert set(_alerts()) <= quiet, set(_alerts()) - quiet


def test_every_alert_links_its_runbook_section_in_the_operators_guide() -> None:
    guide = (ROOT / "serving" / "README.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("#")
    }
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert anchor in headings, f"serving/README.md has no section for {rule['alert']}"
