"""Render the Grafana dashboard's panels from a live Prometheus into one PNG, laid out on the
dashboard's own 24-column grid. Grafana is not needed: each panel's PromQL runs through
Prometheus's query_range API and is drawn with matplotlib.

    python -m tools.render_dashboard --prometheus http://127.0.0.1:9090 --model xception \\
        --minutes 10 --out serving/docs/dashboard.png

The dashboard's variables are substituted as Grafana would: $model_name, $namespace (All: .*),
$__rate_interval and $__range. tests/e2e/test_prometheus_live.py uses the same substitution.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "serving" / "k8s" / "components" / "monitoring" / "xception-tfserving.json"
_VARIABLE = re.compile(r"\$(\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    legend: str
    instant: bool


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows excluded), collapsed rows' panels included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(
            panel["title"], t["refId"], t["expr"], t.get("legendFormat", ""), bool(t.get("instant"))
        )
        for panel in panels(dashboard)
        for t in panel["targets"]
    ]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with Grafana's $name / ${name} replaced from `values`; any other variable left in
    it is an error ($1 and the like, label_replace's group references, are not variables)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2) or match.group(3)
        if name.isdigit():
            return match.group(0)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in: {expr}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variables(model: str, rate_interval: str, range_: str) -> dict[str, str]:
    return {
        "model_name": model,
        "namespace": ".*",  # the variable's All value
        "__rate_interval": rate_interval,
        "__range": range_,
    }


def _get(url: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=60) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body.get('error')}")
    return body["data"]


def _legend(template: str, labels: Mapping[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or json.dumps(labels)


def _right_axis_names(panel: Mapping[str, Any]) -> re.Pattern[str] | None:
    """Series names the panel puts on a right-hand axis (an override with axisPlacement right)."""
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        moves = any(
            p["id"] == "custom.axisPlacement" and p["value"] == "right"
            for p in override["properties"]
        )
        if moves and override["matcher"]["id"] == "byRegexp":
            return re.compile(override["matcher"]["options"])
    return None


def _draw_range(
    ax: Any, panel: Mapping[str, Any], url: str, values: Mapping[str, str], start: float, end: float
) -> int:
    step = max(1.0, (end - start) / 200)
    right = _right_axis_names(panel)
    twin = ax.twinx() if right else None
    drawn = 0
    for target in panel["targets"]:
        expr = substitute(target["expr"], values)
        legend = target.get("legendFormat", "")
        data = _get(url, "query_range", query=expr, start=str(start), end=str(end), step=str(step))
        for series in data["result"]:
            xs = [(float(t) - end) / 60 for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            if all(math.isnan(y) for y in ys):
                continue
            name = _legend(legend, series["metric"])
            dashed = "threshold" in name or "goal" in name or name == "limit"
            axis = twin if twin is not None and right and right.fullmatch(name) else ax
            color = f"C{drawn}"
            axis.plot(xs, ys, "--" if dashed else "-", label=name, linewidth=1.2, color=color)
            drawn += 1
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
        twin.tick_params(labelsize=6)
        twin.set_ylabel("ratio (right)", fontsize=6)
    if handles:
        ax.legend(handles, labels, fontsize=6, loc="upper left")
        ax.set_xlabel("minutes before the end", fontsize=6)
    return drawn


def _draw_instant(
    ax: Any, panel: Mapping[str, Any], url: str, values: Mapping[str, str], end: float
) -> int:
    results = [
        (t, _get(url, "query", query=substitute(t["expr"], values), time=str(end))["result"])
        for t in panel["targets"]
    ]
    if panel["type"] == "table":
        columns: dict[str, dict[str, float]] = {}
        keys: set[str] = set()
        for target, result in results:
            for row in result:
                key = row["metric"].get("version", "")
                keys.add(key)
                columns.setdefault(target["refId"], {})[key] = float(row["value"][1])
        names = {"A": "load (s)", "B": "warmup (s)"}
        order = sorted(keys, key=lambda k: -float(k) if k.isdigit() else 0.0)
        cells = [
            [k, *(f"{columns.get(ref, {}).get(k, math.nan):.3f}" for ref in sorted(columns))]
            for k in order
        ]
        if cells:
            header = ["version", *(names.get(ref, ref) for ref in sorted(columns))]
            table = ax.table(cellText=cells, colLabels=header, loc="upper center")
            table.set_fontsize(8)
            ax.axis("off")
        return len(cells)
    drawn = 0
    for _target, result in results:
        # A heatmap-format query holds cumulative `le` buckets: draw each bucket's own count.
        rows = sorted(result, key=lambda r: _sort_key(r["metric"]))
        cumulative = [float(r["value"][1]) for r in rows]
        counts = [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]
        shown = [(r["metric"].get("le", ""), c) for r, c in zip(rows, counts, strict=True) if c]
        if shown:
            ax.barh([f"<= {le}" for le, _ in shown], [c for _, c in shown])
            ax.set_xlabel("batches", fontsize=6)
            drawn += 1
    return drawn


def _draw_panel(
    ax: Any, panel: Mapping[str, Any], url: str, values: Mapping[str, str], start: float, end: float
) -> None:
    if any(t.get("instant") for t in panel["targets"]):
        drawn = _draw_instant(ax, panel, url, values, end)
    else:
        drawn = _draw_range(ax, panel, url, values, start, end)
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "no data from this Prometheus\n(needs the kubelet / DCGM exporter)",
            ha="center",
            va="center",
            fontsize=8,
            color="grey",
            transform=ax.transAxes,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    ax.set_title(f"{panel['title']}" + (f"  [{unit}]" if unit else ""), fontsize=8)
    ax.tick_params(labelsize=6)


def _sort_key(labels: Mapping[str, str]) -> tuple[float, str]:
    for key in ("le", "version"):
        if key in labels:
            try:
                return (float(labels[key]), "")
            except ValueError:
                return (math.inf, labels[key])
    return (0.0, json.dumps(labels, sort_keys=True))


def render(url: str, out: Path, *, model: str, minutes: float, end: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = load()
    end = time.time() if end is None else end
    start = end - minutes * 60
    values = variables(model, "1m", f"{max(1, int(minutes))}m")
    drawable = list(panels(dashboard))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in drawable)
    figure = plt.figure(figsize=(20, rows * 0.4))
    # The dashboard grid: 24 columns, one figure band per grid row, a margin inside each cell.
    for panel in drawable:
        pos = panel["gridPos"]
        left = pos["x"] / 24 + 0.03
        width = pos["w"] / 24 - 0.045
        top = 1 - pos["y"] / rows - 0.9 / rows
        height = pos["h"] / rows - 2.0 / rows
        ax = figure.add_axes((left, top - height, width, height))
        _draw_panel(ax, panel, url, values, start, end)
    for row in (p for p in dashboard["panels"] if p["type"] == "row"):
        y = 1 - (row["gridPos"]["y"] + 0.5) / rows
        figure.text(0.005, y, row["title"], fontsize=11, weight="bold", va="center")
    figure.suptitle(
        f"{dashboard['title']}  (model {model}, last {minutes:g} min)", y=1.02, fontsize=13
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the TF Serving dashboard to a PNG.")
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--model", required=True, help="value of the $model_name variable")
    parser.add_argument("--minutes", type=float, default=10.0, help="time range to draw")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--end", type=float, help="end of the range, Unix time (default: now)")
    args = parser.parse_args(argv)
    render(args.prometheus, args.out, model=args.model, minutes=args.minutes, end=args.end)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
