"""The stdout table and the PNG plot of a results document (see stats.schema_problems)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _num(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _batching(value: Any) -> str:
    return {True: "on", False: "off"}.get(value, "server's")


def _kb(value: Any) -> str:
    return "-" if value is None else f"{value / 1024:.1f} KB"


def format_table(doc: Mapping[str, Any]) -> str:
    """A plain-text report: limit, served rows, client-side comparison, footprint, targets."""
    lines = [*_setup_lines(doc), "", *_limit_lines(doc.get("limit", {})), ""]
    lines += _served_lines(doc.get("served", []))
    lines += _client_side_lines(doc.get("client_side", {}))
    lines += _footprint_lines(doc.get("footprint", {}))
    lines += precision_lines(doc.get("precision"))
    lines += _bulk_lines(doc.get("bulk"))
    lines += ["", *_target_lines(doc)]
    return "\n".join(lines)


def _setup_lines(doc: Mapping[str, Any]) -> list[str]:
    machine = doc.get("machine", {})
    setup = doc.get("setup", {})
    return [
        f"benchmark {doc.get('date', '?')}  {machine.get('cpu_model', '?')} x "
        f"{machine.get('cores', '?')} cores  load before/after: {machine.get('load_before', '?')}"
        f" / {machine.get('load_after', '?')}",
        f"model {setup.get('image_size', '?')}x{setup.get('image_size', '?')} (random weights), "
        f"{setup.get('images', '?')} photo-like JPEGs (mean {_kb(setup.get('mean_jpeg_bytes'))}), "
        f"served at {setup.get('served_target', '?')}",
    ]


def _limit_lines(limit: Mapping[str, Any]) -> list[str]:
    lines = [
        f"LIMIT in-process {limit.get('signature', '?')}: {_num(limit.get('throughput'))} img/s "
        f"at batch {limit.get('best_batch_size', '?')}; single-image p50 "
        f"{_num(limit.get('latency_p50_ms'))} ms"
    ]
    per = limit.get("per_batch_size") or []
    if per:
        lines.append(
            "  by batch size: "
            + ", ".join(f"{p['batch_size']}: {_num(p['throughput'])}" for p in per)
            + " img/s"
        )
    decode = limit.get("server_side_jpeg_decode")
    if decode:
        lines.append(
            f"  server-side JPEG decode (bytes path extra, one core): "
            f"{_num(decode.get('ms_per_image'), '.2f')} ms/image, "
            f"{_num(decode.get('megapixels_per_s'))} MP/s"
        )
    return lines


def _served_lines(served: Sequence[Mapping[str, Any]]) -> list[str]:
    header = (
        f"{'variant':<15}{'batching':>9}{'conc':>6}{'img/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'n':>5}{'err':>5}{'req/img':>11}{'cpu ms/img':>11}"
    )
    lines = [
        "served (closed loop, one blocking thread per in-flight request; cpu ms/img "
        "includes grpcio's cost of blocked threads):",
        header,
        "-" * len(header),
    ]
    for row in served:
        lines.append(
            f"{row['variant']:<15}{_batching(row.get('batching')):>9}{row['concurrency']:>6}"
            f"{_num(row.get('throughput')):>8}{_num(row.get('p50_ms')):>9}"
            f"{_num(row.get('p95_ms')):>9}{_num(row.get('p99_ms')):>9}"
            f"{row.get('requests', 0):>5}{row.get('errors', 0):>5}"
            f"{_kb(row.get('request_bytes_per_image')):>11}"
            f"{_num(row.get('client_cpu_ms_per_image'), '.2f'):>11}"
        )
    return lines


def _client_side_lines(side: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if side:
        lines.append("")
        lines.append(
            f"client side: the image set streamed with {side.get('concurrency', '?')} in flight "
            "(one thread, futures), batching server:"
        )
        for key in ("ours", "usual", "rest"):
            entry = side.get(key)
            if entry:
                lines.append(
                    f"  {entry['variant']:<15} {_num(entry.get('throughput'))} img/s, "
                    f"{_kb(entry.get('request_bytes_per_image'))} per image, "
                    f"{_num(entry.get('client_cpu_ms_per_image'), '.2f')} client CPU ms per image"
                )
    one = side.get("ours_one_per_request")
    if one:
        lines.append(
            f"  {one['variant']:<15} one image per request: {_num(one.get('throughput'))} img/s, "
            f"{_num(one.get('client_cpu_ms_per_image'), '.2f')} client CPU ms per image"
        )
    stub = side.get("against_stub")
    sweep = (stub or {}).get("ours_by_images_per_request") or {}
    if sweep:
        lines.append(
            "  client-only CPU ms per image by images_per_request (against the stub): "
            + ", ".join(
                f"{n}: {_num(v.get('client_cpu_ms_per_image'), '.2f')}" for n, v in sweep.items()
            )
        )
    if stub:
        lines.append(
            f"  client-only cost (same streams against a stub that answers at once): ours "
            f"{_num(stub['ours'].get('client_cpu_ms_per_image'), '.2f')} ms, usual "
            f"{_num(stub['usual'].get('client_cpu_ms_per_image'), '.2f')} ms per image, ratio "
            f"{_num(stub.get('client_cpu_usual_over_ours'), '.1f')}x"
        )
    return lines


def _footprint_lines(foot: Mapping[str, Any]) -> list[str]:
    if not foot:
        return []
    imports = foot.get("import", {})
    size = foot.get("installed", {})
    return [
        "",
        f"import (best of {imports.get('repeats', '?')}): xception_client "
        f"{_num(imports.get('xception_client_s'), '.3f')} s, "
        f"tensorflow_serving.apis.predict_pb2 {_num(imports.get('tfs_api_s'), '.3f')} s",
        f"installed: client-only {_num((size.get('client_bytes') or 0) / 1e6)} MB "
        f"({size.get('client_method', '?')}); tensorflow-serving-api closure "
        f"{_num((size.get('tfs_api_bytes') or 0) / 1e6)} MB (RECORD sizes)",
    ]


def _bulk_lines(bulk_doc: Mapping[str, Any] | None) -> list[str]:
    if not bulk_doc:
        return []
    from benchmarks import bulk  # its report, written beside its measurement

    return ["", *bulk.format_report(dict(bulk_doc)).splitlines()]


def _paired_lines(doc: Mapping[str, Any]) -> list[str]:
    rounds = doc.get("paired") or []
    if not rounds:
        return []
    pairs = ", ".join(
        f"{_num(r.get('served'), '.1f')}/{_num(r.get('limit'), '.1f')}" for r in rounds
    )
    median = doc.get("ratios", {}).get("served_over_limit_paired")
    return [
        f"served/limit img/s, back to back at the limit's best batch and the top concurrency: "
        f"{pairs}; median ratio {_num(median, '.3f')}"
    ]


def _target_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        *_paired_lines(doc),
        "ratios: " + ", ".join(f"{k} {_num(v, '.2f')}" for k, v in doc.get("ratios", {}).items()),
        "targets:",
    ]
    for name, target in doc.get("targets", {}).items():
        holds = {True: "HOLDS", False: "FAILS", None: "not measured"}[target.get("holds")]
        if target.get("skipped"):
            holds = f"skipped: {target['skipped']}"
        lines.append(
            f"  {name:<28} {_num(target.get('value'), '.2f'):>8}  "
            f"{target.get('threshold', '')}: {holds}"
        )
    return lines


def precision_lines(precision: Mapping[str, Any] | None) -> list[str]:
    """The precision rows: per variant the limit, served img/s and p50/p95 at each concurrency,
    speed-ups against fp32 and the parity cost."""
    if not precision:
        return []
    model = precision.get("model", {})
    lines = [
        "",
        f"precision (classifier {model.get('image_size', '?')}px, {model.get('classes', '?')} "
        f"classes, mean top-1 p {_num(model.get('mean_top1_probability'), '.2f')}; CPU bf16 "
        f"flags: {', '.join(precision.get('cpu_bf16_flags') or []) or 'none'}):",
    ]
    header = (
        f"{'variant':<9}{'limit':>7}{'served c=1':>12}{'c=4':>7}{'p50/p95 c=1 ms':>17}"
        f"{'p50/p95 c=4 ms':>17}{'x fp32':>8}{'top-1':>7}{'max |dp|':>10}"
    )
    lines += [header, "-" * len(header)]
    for entry in precision.get("variants", []):
        rows = {r["concurrency"]: r for r in entry.get("served", [])}
        one, four = rows.get(1, {}), rows.get(4, {})
        parity = entry.get("parity_vs_fp32", {})
        lines.append(
            f"{entry['name']:<9}{_num(entry.get('limit', {}).get('throughput')):>7}"
            f"{_num(one.get('throughput')):>12}{_num(four.get('throughput')):>7}"
            f"{_num(one.get('p50_ms'), '.0f') + '/' + _num(one.get('p95_ms'), '.0f'):>17}"
            f"{_num(four.get('p50_ms'), '.0f') + '/' + _num(four.get('p95_ms'), '.0f'):>17}"
            f"{_num(entry.get('served_speedup_vs_fp32'), '.2f'):>8}"
            f"{_num(100 * parity['top1_agreement'] if parity else None, '.0f') + '%':>7}"
            f"{_num(parity.get('max_abs_dp'), '.2g'):>10}"
        )
    return lines


def _plot_precision(ax: Any, precision: Mapping[str, Any]) -> None:
    """Served img/s per precision variant at each concurrency, the limit as a tick per variant,
    top-1 agreement and max |dp| against fp32 under each bar group."""
    entries = precision["variants"]
    levels = precision.get("served_levels") or [1, 4]
    width = 0.8 / len(levels)
    for i, level in enumerate(levels):
        values = [
            next(
                (
                    r.get("throughput") or 0.0
                    for r in e.get("served", [])
                    if r["concurrency"] == level
                ),
                0.0,
            )
            for e in entries
        ]
        ax.bar(
            [x + (i - (len(levels) - 1) / 2) * width for x in range(len(entries))],
            values,
            width,
            label=f"served, concurrency {level}",
        )
    limits = [e.get("limit", {}).get("throughput") or math.nan for e in entries]
    tallest = max(
        [v for v in limits if math.isfinite(v)]
        + [r.get("throughput") or 0.0 for e in entries for r in e.get("served", [])]
        + [1.0]
    )
    ax.set_ylim(0, tallest * 1.4)  # room for the legend above the bars
    ax.scatter(
        range(len(entries)),
        limits,
        marker="_",
        s=900,
        color="black",
        zorder=3,
        label="limit (in-process)",
    )
    names = []
    for e in entries:
        parity = e.get("parity_vs_fp32") or {}
        agreement = _num(100 * parity.get("top1_agreement", math.nan), ".0f")
        names.append(
            f"{e['name']}\ntop-1 {agreement}%\nmax|dp| {_num(parity.get('max_abs_dp'), '.1g')}"
        )
    ax.set_xticks(range(len(entries)), names, fontsize=8)
    ax.set_ylabel("images/s")
    flags = ", ".join(precision.get("cpu_bf16_flags") or []) or "no bf16"
    ax.set_title(f"precision (CPU: {flags})")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)


def plot(doc: Mapping[str, Any], path: Path) -> Path:
    """Throughput and p95 latency against concurrency, one line per variant (+ batching)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in doc.get("served", []):
        label = f"{row['variant']} (batching {_batching(row.get('batching'))})"
        series.setdefault(label, []).append(row)
    precision = doc.get("precision") or {}
    if precision.get("variants"):
        fig, (ax_tp, ax_lat, ax_prec) = plt.subplots(
            1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.8]}
        )
        _plot_precision(ax_prec, precision)
    else:
        fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in rows]
        ax_tp.plot(xs, [r.get("throughput") or math.nan for r in rows], marker="o", label=label)
        ax_lat.plot(xs, [r.get("p95_ms") or math.nan for r in rows], marker="o", label=label)
    limit = doc.get("limit", {})
    if limit.get("throughput"):
        ax_tp.axhline(
            limit["throughput"],
            color="grey",
            linestyle="--",
            label=f"limit (in-process, batch {limit.get('best_batch_size')})",
        )
    if limit.get("latency_p50_ms"):
        ax_lat.axhline(
            limit["latency_p50_ms"], color="grey", linestyle="--", label="limit single-image p50"
        )
    levels = sorted({int(r["concurrency"]) for r in doc.get("served", [])})
    for ax, title, unit in ((ax_tp, "throughput", "images/s"), (ax_lat, "p95 latency", "ms")):
        ax.set_xscale("log", base=2)
        if levels:
            ax.set_xticks(levels, [str(level) for level in levels])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_lat.set_yscale("log")
    ax_tp.set_ylim(bottom=0)
    handles, labels = ax_tp.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    machine = doc.get("machine", {})
    fig.suptitle(
        f"Xception {doc.get('setup', {}).get('image_size', '?')}px, "
        f"{machine.get('cpu_model', '?')} x {machine.get('cores', '?')}, {doc.get('date', '')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
