"""serving/k8s/components/monitoring, as the gpu and cpu overlays render it: the Grafana dashboard
ConfigMap (sidecar label, the JSON file byte for byte), the PrometheusRule (its spec is
serving/monitoring/rules.yml) and the ServiceMonitor (the REST Service's named port, TF Serving's
metrics path). kubernetes-validate has no schemas for the Prometheus Operator's custom resources,
so their fields are checked here by hand."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from xception_serving.config import files as config_files

from tests.fixtures.kustomize import render
from tools import prometheus_rule

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "serving" / "k8s"
COMPONENT = K8S / "components" / "monitoring"
DASHBOARD = COMPONENT / "xception-tfserving.json"
RULES = ROOT / "serving" / "monitoring" / "rules.yml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# The threshold patch serving/README.md shows (Monitoring, "Changing a threshold").
THRESHOLD_PATCH = """\
patches:
  - target:
      group: monitoring.coreos.com
      kind: PrometheusRule
      name: xception-tfserving
    patch: |-
      - op: test
        path: /spec/groups/0/rules/0/record
        value: tfserving:alert_threshold:error_ratio
      - op: replace
        path: /spec/groups/0/rules/0/expr
        value: "0.02"
"""

Manifest = dict[str, Any]


def _one(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.fixture(params=["cpu", "gpu"])
def docs(request: pytest.FixtureRequest) -> tuple[Manifest, ...]:
    return render(K8S / "overlays" / request.param)


def test_dashboard_config_map_carries_the_sidecar_label_and_the_json_file(
    docs: tuple[Manifest, ...],
) -> None:
    config_map = _one(docs, "ConfigMap", "xception-tfserving-dashboard")  # no hash suffix
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


def test_dashboard_is_provisionable_with_datasource_and_model_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    assert dashboard["uid"] and "id" not in dashboard  # provisioned dashboards get their id
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model_name"]["type"] == "query"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_prometheus_rule_spec_is_the_rules_file(docs: tuple[Manifest, ...]) -> None:
    rule = _one(docs, "PrometheusRule", "xception-tfserving")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # The committed file is what the generator writes (comments included).
    assert prometheus_rule.TARGET.read_text() == prometheus_rule.render(RULES.read_text())


def test_prometheus_rule_fields_are_what_the_operator_accepts(docs: tuple[Manifest, ...]) -> None:
    spec = _one(docs, "PrometheusRule", "xception-tfserving")["spec"]
    assert set(spec) == {"groups"}
    names = [group["name"] for group in spec["groups"]]
    assert len(set(names)) == len(names)
    for group in spec["groups"]:
        assert set(group) <= {"name", "interval", "rules", "partial_response_strategy", "limit"}
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            allowed = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert set(rule) <= allowed, rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            for field in ("labels", "annotations"):
                values = rule.get(field, {})
                assert all(isinstance(v, str) for v in values.values()), (rule, field)
            if "alert" in rule:
                assert {"summary", "description", "runbook"} <= set(rule["annotations"])
                assert rule["labels"]["severity"] in ("critical", "warning")


def test_service_monitor_scrapes_the_rest_services_named_port_at_tf_servings_path(
    docs: tuple[Manifest, ...],
) -> None:
    monitor = _one(docs, "ServiceMonitor", "xception-tfserving")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    [endpoint] = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])
    selected = [
        d
        for d in docs
        if d["kind"] == "Service"
        and spec["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    with_port = [s for s in selected if endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]]
    # Exactly one selected Service has the port: no pod is scraped twice.
    assert [s["metadata"]["name"] for s in with_port] == ["xception-rest"]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [server] = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tfserving"
    ]
    target = next(
        p["targetPort"] for p in with_port[0]["spec"]["ports"] if p["name"] == endpoint["port"]
    )
    assert target in [p["name"] for p in server["ports"]]
    monitoring = config_files.parse_text_proto(
        (ROOT / "serving" / "monitoring.config").read_text(), config_files.MonitoringConfig
    )
    assert endpoint["path"] == config_files.prometheus_path(monitoring)


def test_readme_threshold_patch_changes_the_named_threshold(tmp_path: Path) -> None:
    assert THRESHOLD_PATCH in (ROOT / "serving" / "README.md").read_text()
    base = os.path.relpath(K8S / "overlays" / "gpu", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\n" + THRESHOLD_PATCH
    )
    spec = _one(render(tmp_path), "PrometheusRule", "xception-tfserving")["spec"]
    rules = {r.get("record"): r["expr"] for g in spec["groups"] for r in g["rules"]}
    assert rules["tfserving:alert_threshold:error_ratio"] == "0.02"
    original = yaml.safe_load(RULES.read_text())["groups"]
    unchanged = {r.get("record"): r["expr"] for g in original for r in g["rules"]}
    changed = {k for k in rules if rules[k] != unchanged[k]}
    assert changed == {"tfserving:alert_threshold:error_ratio"}
