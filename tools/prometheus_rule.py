"""Write the PrometheusRule of the Kubernetes monitoring component from the rules file.

serving/monitoring/rules.yml is the source (promtool checks and unit-tests it; a plain Prometheus
loads it). kustomize cannot wrap a file into a custom resource's spec, so the PrometheusRule is
generated from it here and committed; tests/unit/test_k8s_monitoring.py fails when they differ.

    python -m tools.prometheus_rule            # rewrite the PrometheusRule
    python -m tools.prometheus_rule --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "serving" / "monitoring" / "rules.yml"
TARGET = ROOT / "serving" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from serving/monitoring/rules.yml by `python -m tools.prometheus_rule`: edit that file
# and re-run. kube-prometheus-stack's Prometheus selects PrometheusRules by the label
# `release: <its Helm release>` (unless ruleSelectorNilUsesHelmValues=false); set yours with a
# kustomize patch if your release is not called kube-prometheus-stack.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: xception-tfserving
  labels:
    app.kubernetes.io/name: xception-tfserving
    app.kubernetes.io/instance: xception
    app.kubernetes.io/component: monitoring
    release: kube-prometheus-stack
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule: the header, then the rules file's lines (comments included) as spec."""
    body = [line for line in rules_text.splitlines() if not line.startswith("#")]
    while body and not body[0].strip():
        body.pop(0)
    indented = [("  " + line) if line.strip() else "" for line in body]
    return HEADER + "\n".join(indented).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text())
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python -m tools.prometheus_rule")
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
