"""The dashboard and the rules against a real Prometheus scraping a real `xception-serve`.

The server runs with batching and TF Serving's monitoring config, loads a good version, fails to
load a corrupt one and answers good and bad REST and gRPC requests while a `prometheus` scrapes
its REST metrics path every second and evaluates serving/monitoring/rules.yml (with thresholds set
so that every alert trips). Then every PromQL expression of the dashboard and of the rules runs
through Prometheus's HTTP API and must return data, and every metric name they use must be one
the server exports or the rules record; the only exceptions are the names below, which come from
the kubelet, kube-state-metrics, the DCGM exporter or TF Serving itself, each with its reason.
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import xception_contract as contract
import yaml
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from tests.fixtures.prometheus import api, binary, query, running_prometheus
from tests.fixtures.rpc import wait_for
from tests.fixtures.servers import start_local_server, write_corrupt_version, write_half_plus_two
from tools import render_dashboard

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "serving" / "monitoring" / "rules.yml"
MONITORING_CONFIG = ROOT / "serving" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
GOOD_BODY = '{"instances": [[2.0], [3.0]]}'
BAD_BODY = '{"instances": [["not a float"]]}'  # INVALID_ARGUMENT, HTTP 400
MODEL = contract.DEFAULT_MODEL_NAME

# Names no local process can export here, with why; a query may use them only as listed.
EXTERNAL_NAMES = {
    "container_cpu_usage_seconds_total": "cAdvisor, scraped from the kubelet",
    "container_memory_working_set_bytes": "cAdvisor, scraped from the kubelet",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "DCGM_FI_DEV_GPU_UTIL": "NVIDIA DCGM exporter, on GPU nodes",
    "DCGM_FI_DEV_FB_USED": "NVIDIA DCGM exporter, on GPU nodes",
}
# TF Serving's session batching (--enable_batching) exports the batch size under this family;
# xception-serve exports it as :tensorflow:serving:batching:processed_batch_size{model_name}, so
# the panels query both with `or`, and here only the xception-serve branch can return data.
TF_SERVING_ONLY_NAMES = {
    ":tensorflow:serving:batching_session:processed_batch_size_bucket",
    ":tensorflow:serving:batching_session:processed_batch_size_sum",
    ":tensorflow:serving:batching_session:processed_batch_size_count",
}
# Panels that cannot return data without Kubernetes or a GPU: each must query EXTERNAL_NAMES only.
KUBELET_OR_GPU_PANELS = {"Pod CPU", "Pod memory", "GPU utilisation", "GPU memory used"}
# Thresholds at which every alert trips on the traffic below (see _rules_that_fire).
FIRING_THRESHOLDS = {
    "tfserving:alert_threshold:error_ratio": "0",
    "tfserving:alert_threshold:request_latency_p99_seconds": "0",
    "tfserving:alert_threshold:queuing_latency_p99_seconds": "0",
    "tfserving:alert_threshold:min_request_rate": "1e9",
}


@dataclass(frozen=True)
class Live:
    url: str
    rules: list[dict[str, Any]]


def _warmup_record() -> bytes:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(_predict_request(1.0))
    return bytes(log.SerializeToString())


def _predict_request(x: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(x)
    return request


def _rules_that_fire(tmp_path: Path) -> Path:
    """rules.yml with only the threshold records changed, so that every alert trips here."""
    rules = yaml.safe_load(RULES.read_text())
    changed = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") in FIRING_THRESHOLDS:
                rule["expr"] = FIRING_THRESHOLDS[rule["record"]]
                changed += 1
    assert changed == len(FIRING_THRESHOLDS)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def _rest(url: str, body: str) -> int:
    request = urllib.request.Request(
        f"{url}/v1/models/{MODEL}:predict", data=body.encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _drive_traffic(rest_url: str, grpc_target: str, seconds: float) -> dict[str, int]:
    """Concurrent good gRPC and REST calls (they share batches) and bad REST calls."""
    codes: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def count(key: str) -> None:
        with lock:
            codes[key] = codes.get(key, 0) + 1

    def grpc_caller() -> None:
        with grpc.insecure_channel(grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while time.monotonic() < deadline:
                stub.Predict(_predict_request(2.0), timeout=30)
                count("grpc OK")

    def rest_caller() -> None:
        while time.monotonic() < deadline:
            count(f"rest {_rest(rest_url, GOOD_BODY)}")
            count(f"rest {_rest(rest_url, BAD_BODY)}")

    threads = [threading.Thread(target=grpc_caller) for _ in range(3)]
    threads += [threading.Thread(target=rest_caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return codes


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus_live")
    base = tmp / "models" / MODEL
    write_half_plus_two(base, 1, warmup_records=[_warmup_record()])
    batching = tmp / "batching.config"
    batching.write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 5000 } "
        "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 }"
    )
    args = [
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        f"--monitoring_config_file={MONITORING_CONFIG}",
        "--file_system_poll_wait_seconds=1",
    ]
    with start_local_server(
        model_name=MODEL, model_base_path=base, rest=True, extra_args=args
    ) as server:
        assert server.rest_url is not None
        metrics_url = server.rest_url + METRICS_PATH

        def metrics() -> str:
            with urllib.request.urlopen(metrics_url, timeout=10) as response:
                return str(response.read().decode())

        write_corrupt_version(base, 2)
        wait_for(lambda: 'status="fail"' in metrics(), what="version 2's failed load", timeout=60)
        rules = _rules_that_fire(tmp)
        with running_prometheus(
            tmp / "prometheus",
            metrics_target=server.rest_url.removeprefix("http://"),
            metrics_path=METRICS_PATH,
            rule_files=(rules,),
        ) as url:
            codes = _drive_traffic(server.rest_url, server.grpc_target, seconds=8)
            assert codes.get("rest 200") and codes.get("rest 400") and codes.get("grpc OK"), codes
            groups = yaml.safe_load(rules.read_text())["groups"]
            every = [r for g in groups for r in g["rules"]]
            alerts = {r["alert"] for r in every if "alert" in r}
            wait_for(
                lambda: alerts <= {s["metric"]["alertname"] for s in query(url, "ALERTS")},
                what=f"every alert pending or firing ({sorted(alerts)})",
                timeout=90,
                interval=1,
            )
            yield Live(url, every)


def _metric_names(expr: str) -> set[str]:
    """Metric names in `expr`: selectors before `{`, and recorded names (they hold `:`)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", bare))
    names |= {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if ":" in t}
    return names


def _known_names(url: str) -> set[str]:
    return set(api(url, "label/__name__/values"))


def _dashboard_exprs() -> list[tuple[str, str]]:
    # Windows far longer than the run, so every window holds all of its traffic.
    values = render_dashboard.variables(MODEL, rate_interval="2m", range_="5m")
    return [
        (f"{q.panel} {q.ref}", render_dashboard.substitute(q.expr, values))
        for q in render_dashboard.queries(render_dashboard.load())
    ]


def _finite(result: list[Any]) -> list[float]:
    """The finite values of a query's result (NaN, e.g. a quantile of no requests, is no data)."""
    values = [float(s["value"][1]) if isinstance(s, dict) else float(s[1]) for s in result]
    return [v for v in values if math.isfinite(v)]


def _check_names(expr: str, known: set[str]) -> None:
    unknown = _metric_names(expr) - known - set(EXTERNAL_NAMES) - TF_SERVING_ONLY_NAMES
    assert not unknown, f"names neither exported nor recorded: {sorted(unknown)} in {expr}"


def test_every_dashboard_query_returns_data_from_the_live_server(live: Live) -> None:
    known = _known_names(live.url)
    answered = []
    for where, expr in _dashboard_exprs():
        _check_names(expr, known)
        if where.rsplit(" ", 1)[0] in KUBELET_OR_GPU_PANELS:
            names = _metric_names(expr)
            assert names and names <= set(EXTERNAL_NAMES), (where, names)
            continue
        assert _finite(query(live.url, expr)), f"{where}: no data for {expr}"
        answered.append(where)
    expected = [
        w for w, _ in _dashboard_exprs() if w.rsplit(" ", 1)[0] not in KUBELET_OR_GPU_PANELS
    ]
    assert answered == expected and len(answered) >= 15
    print(
        f"\n{len(answered)} dashboard queries returned data; "
        f"{len(_dashboard_exprs()) - len(answered)} need the kubelet or DCGM"
    )


def test_dashboard_variable_queries_list_the_served_model(live: Live) -> None:
    dashboard = render_dashboard.load()
    [model_var] = [v for v in dashboard["templating"]["list"] if v["name"] == "model_name"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", model_var["definition"])
    assert match, model_var["definition"]
    selector = render_dashboard.substitute(match.group(1), {"namespace": ".*"})
    values = api(live.url, f"label/{match.group(2)}/values", **{"match[]": selector})
    assert MODEL in values


def test_every_rule_expression_returns_data_and_every_alert_trips(live: Live) -> None:
    known = _known_names(live.url)
    for rule in live.rules:
        name = rule.get("record") or rule["alert"]
        _check_names(rule["expr"], known)
        assert _finite(query(live.url, rule["expr"])), f"{name}: no data for {rule['expr']}"
        if "record" in rule:
            assert _finite(query(live.url, rule["record"])), f"{rule['record']} was not recorded"
    firing = {s["metric"]["alertname"] for s in query(live.url, "ALERTS")}
    assert {r["alert"] for r in live.rules if "alert" in r} <= firing
    print(f"\n{len(live.rules)} rule expressions returned data; alerts tripped: {sorted(firing)}")


def test_a_query_on_a_name_the_server_does_not_export_fails_the_check(live: Live) -> None:
    known = _known_names(live.url)
    wrong = ":tensorflow:serving:request_count_total"  # prometheus_client's spelling, not TF's
    assert not query(live.url, f"sum(rate({wrong}[1m]))")
    with pytest.raises(AssertionError, match="request_count_total"):
        _check_names(f"sum(rate({wrong}[1m]))", known)
