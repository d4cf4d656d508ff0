"""`make bench`: the bundle against the machine's limit and against the usual way, in one run.

    .venv/bin/python -m benchmarks.run [--quick] [--images N] [--tfserving-target HOST:PORT]

Phases, each a function below, run one at a time so that no measurement overlaps another:

1. prepare_inputs: export a random-weight Xception (299x299) once into models/bench/, generate a
   seeded set of photo-like JPEGs and the limit's pixels (both cached under build/bench/);
   tune_phase (--tune): unless the batching config was tuned on this CPU, tune one on this
   machine (tune_batching.py) and serve with it;
2. start_limit, start_servers, wait_until_ready: the limit process loads the same SavedModel while
   the local server starts twice (batching on with serving/batching-cpu.config, and off) and the
   client-only venv of the footprint builds;
3. measure_limit: the limit in-process, again between the two servers and after them
   (measure_limit_again, summarize_limit_passes);
4. measure_served, per server: our client over gRPC with image bytes at concurrency 1/4/16
   (measure_ours), then on the batching server only the usual way (client-side Pillow decode,
   resize, float32 preprocess_input, float tensor to serving_preprocessed, with TF Serving's own
   Python API: measure_usual_way) and REST b64 (measure_rest);
5. measure_precision: fp32, bfloat16 and XLA:CPU, each served and at its limit (precision.py);
6. measure_client_only: both clients' CPU per image against a stub server that answers at once;
7. measure_footprint: the client's import time and installed size;
8. write_results: a table to stdout, benchmarks/results/latest.json and latest.png (quick.* for a
   --quick run).

Progress goes to stderr. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xception_contract import tf_startup
from xception_serving.testing.process import ServerProcess

from benchmarks import (
    batching_file,
    bulk,
    footprint,
    image_cache,
    load,
    local_server,
    machine,
    precision,
    results,
    tune_batching,
)
from benchmarks.exports import ensure_model
from benchmarks.image_cache import ImageSet
from benchmarks.limit_process import LimitProcess
from benchmarks.measure import Row, measure_point, measure_stream, run_series, warm_up
from benchmarks.options import FOOTPRINT_CACHE, Options, parse_options
from benchmarks.progress import log
from benchmarks.stats import summarize_limit

LOAD_TIMEOUT_S = 300.0  # a model load, or one limit pass
REQUEST_TIMEOUT_S = 60.0  # one request of a measurement
VENV_WAIT_S = 240.0  # the footprint's venv build, waited for before measuring
CLIENT_SIDE_CONCURRENCY = 4  # the side-by-side client CPU / bytes comparison


@dataclass(frozen=True)
class Inputs:
    model_dir: Path  # the SavedModel version the servers and the limit load
    bench: ImageSet
    pixels: Path  # the limit's uint8 [N, S, S, 3] .npy


@dataclass(frozen=True)
class Target:
    """One server to measure."""

    batching: bool | None  # None: a TF Serving started with its own batching setting
    grpc_target: str
    rest_url: str | None

    @property
    def side_runs(self) -> bool:
        """Whether the usual way, REST and the client-side streams run here: once, on the
        recommended (batching) server."""
        return self.batching is not False


@dataclass
class Served:
    """What measure_served gathers: the ``served`` rows, the client-side streams, and one real
    response of the bytes signature for the stub server."""

    rows: list[Row] = field(default_factory=list)
    streams: dict[str, Row] = field(default_factory=dict)
    canned_response: bytes | None = None


# -- 1. inputs -------------------------------------------------------------------------------------


def prepare_inputs(options: Options) -> Inputs:
    model_dir = ensure_model(options.model_base_path, options.image_size, log)
    log(f"model {model_dir}")
    bench = image_cache.bench_images(options.build_dir, options.images, options.seed)
    log(f"{len(bench.images)} JPEGs, {bench.mean_bytes / 1024:.1f} KB mean")
    pixels = image_cache.write_pixels(
        bench.data, options.image_size, options.build_dir / f"pixels-{options.image_size}.npy"
    )
    return Inputs(model_dir, bench, pixels)


# -- 1b. the batching config, tuned on this machine ----------------------------------------------


def tune_phase(options: Options, inputs: Inputs) -> Options:
    """The options with the batching config to serve with: ``options.batching_config``, or one
    the tuner writes to the build directory after measuring this machine's limit (before any
    other process starts, so nothing else runs while it measures)."""
    here = (machine.cpu_model(), tune_batching.host_cores())
    tune, why = tune_batching.wants_tuning(
        options.tune, options.local, batching_file.tuned_host(options.batching_config), here
    )
    if not tune:
        log(f"batching config {options.batching_config} ({why})")
        return options
    output = options.build_dir / "batching-tuned.config"
    log(f"tuning batching first ({why}) into {output}")
    settings = tune_batching.default_settings(
        seconds=options.limit_seconds, passes=2 if options.quick else 3
    )
    tune_batching.tune_at_limit(
        inputs.model_dir,
        inputs.pixels,
        inputs.bench.folder,
        options.build_dir,
        output,
        settings,
        f"{options.command} (tune phase)",
        show=log,
    )
    return dataclasses.replace(options, batching_config=output)


# -- 2. processes ----------------------------------------------------------------------------------


def start_limit(options: Options, inputs: Inputs) -> LimitProcess:
    """The limit process, loading the model now (it measures when asked)."""
    return LimitProcess(
        inputs.model_dir,
        inputs.pixels,
        options.limit_batch_sizes,
        seconds=options.limit_seconds,
        jpegs=inputs.bench.folder,
        log_path=options.build_dir / "limit.log",
    )


def start_servers(options: Options, servers: dict[bool, ServerProcess]) -> None:
    """The local server twice, batching on (with REST) and off, into ``servers`` by batching;
    launched without waiting, so the two loads overlap. Nothing for a TF Serving target."""
    if not options.local:
        return
    for batching, name in ((True, "batching"), (False, "no-batching")):
        servers[batching] = local_server.launch(
            name,
            model_name=options.model_name,
            model_base_path=options.model_base_path,
            log_dir=options.build_dir / "logs",
            batching_config=options.batching_config if batching else None,
            rest=batching,
        )


def wait_until_ready(
    limit: LimitProcess, servers: dict[bool, ServerProcess], venv: footprint.VenvBuild | None
) -> None:
    """Until the limit has loaded, every server is ready and the venv build is done: nothing may
    still be loading or building when the measurements start."""
    ready_by = time.monotonic() + LOAD_TIMEOUT_S
    limit.wait_loaded(timeout=LOAD_TIMEOUT_S)
    for server in servers.values():
        local_server.wait_ready(server, max(0.0, ready_by - time.monotonic()))
    if venv is not None:
        venv.wait(VENV_WAIT_S)


def stop_servers(servers: dict[bool, ServerProcess]) -> None:
    for server in servers.values():
        server.stop()


def serving_targets(options: Options, servers: dict[bool, ServerProcess]) -> list[Target]:
    if options.tfserving_target is not None:
        return [Target(None, options.tfserving_target, options.tfserving_rest_url)]
    return [
        Target(True, servers[True].grpc_target, servers[True].rest_url),
        Target(False, servers[False].grpc_target, None),
    ]


# -- 3. the limit ----------------------------------------------------------------------------------


def measure_limit(limit: LimitProcess) -> dict[str, Any]:
    """The first limit pass, every configured batch size."""
    first = limit.measure(timeout=LOAD_TIMEOUT_S)
    summary = summarize_limit(first)
    log(
        f"limit {summary['throughput']:.2f} img/s at batch {summary['best_batch_size']}, "
        f"single-image p50 {summary['latency_p50_ms']:.1f} ms"
    )
    return first


def recheck_batch_sizes(first_pass: dict[str, Any]) -> list[int]:
    """What the later, shorter passes measure: batch 1 and the first pass's best batch size."""
    return sorted({1, summarize_limit(first_pass)["best_batch_size"]})


def measure_limit_again(
    limit: LimitProcess, batch_sizes: Sequence[int], when: str
) -> dict[str, Any]:
    log(f"limit, {when} (batch {' and '.join(map(str, batch_sizes))})")
    return limit.measure(timeout=LOAD_TIMEOUT_S, batch_sizes=batch_sizes)


def summarize_limit_passes(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The results' ``limit``: the best of every pass (the machine's load drifts)."""
    summary = summarize_limit(*passes)
    summary["pass_throughputs"] = [
        {str(e["batch_size"]): round(e["throughput"], 3) for e in one["per_batch_size"]}
        for one in passes
    ]
    log(
        f"limit {summary['throughput']:.2f} img/s at batch {summary['best_batch_size']}, "
        f"single-image p50 {summary['latency_p50_ms']:.1f} ms (best of "
        f"{len(passes)} passes: {summary['pass_throughputs']})"
    )
    return summary


# -- 4. served -------------------------------------------------------------------------------------


def served_image_size(target: str, model_name: str, default: int) -> int:
    """S from the served serving_preprocessed signature (so TF Serving targets work too)."""
    import xception_contract as contract
    from xception_client import Client

    with Client(target, model_name=model_name, timeout=30) as client:
        signature = client.metadata().signatures.get(contract.PREPROCESSED_SIGNATURE)
    if signature is None:
        return default
    shape = signature.inputs[contract.PREPROCESSED_INPUT].shape
    return int(shape[1]) if shape and shape[1] else default


def side_concurrency(options: Options) -> int:
    """The one concurrency of the side-by-side streams (4 when measured, else the first level)."""
    if CLIENT_SIDE_CONCURRENCY in options.concurrency:
        return CLIENT_SIDE_CONCURRENCY
    return options.concurrency[0]


def target_series(
    driver: load.Driver, options: Options, target: Target, data: Sequence[bytes]
) -> list[Row]:
    """One driver's rows against a served target, at every concurrency level of the options."""
    return run_series(
        driver,
        batching=target.batching,
        levels=options.concurrency,
        seconds=options.seconds,
        data=data,
        warm_seconds=options.warm_seconds,
    )


def measure_ours(options: Options, target: Target, data: Sequence[bytes]) -> Served:
    """Our client's rows; on the batching server also its streams and one captured response."""
    out = Served()
    ours = load.OursGrpc(target.grpc_target, options.model_name, data, REQUEST_TIMEOUT_S)
    try:
        out.rows = target_series(ours, options, target, data)
        if target.side_runs:
            concurrency = side_concurrency(options)
            out.streams["ours"] = measure_stream(ours, data, concurrency)
            out.streams["ours_one_per_request"] = measure_stream(
                ours, data, concurrency, images_per_request=1
            )
            # TF Serving's own Python API: TensorFlow loads into this process here.
            from benchmarks.client_only import capture_response

            out.canned_response = capture_response(target.grpc_target, options.model_name, data[0])
    finally:
        ours.close()
    return out


def measure_usual_way(
    options: Options, target: Target, data: Sequence[bytes], size: int
) -> tuple[list[Row], Row]:
    """The usual way's rows and its side-by-side stream."""
    from benchmarks.usual_way import UsualGrpc  # TF Serving's own Python API, with TensorFlow

    usual = UsualGrpc(target.grpc_target, options.model_name, data, size, REQUEST_TIMEOUT_S)
    try:
        rows = target_series(usual, options, target, data)
        return rows, measure_stream(usual, data, side_concurrency(options))
    finally:
        usual.close()


def measure_rest(options: Options, target: Target, data: Sequence[bytes]) -> list[Row]:
    """REST b64 rows, where the server has a REST address."""
    if not target.rest_url:
        return []
    rest = load.RestB64(target.rest_url, options.model_name, data, REQUEST_TIMEOUT_S)
    try:
        return target_series(rest, options, target, data)
    finally:
        rest.close()


def measure_served(
    options: Options,
    targets: Sequence[Target],
    data: Sequence[bytes],
    size: int,
    limit: LimitProcess,
    limit_passes: list[dict[str, Any]],
) -> Served:
    """Every server in turn, with a limit pass (appended to ``limit_passes``) between two."""
    served = Served()
    recheck = recheck_batch_sizes(limit_passes[0])
    for index, target in enumerate(targets):
        if index:  # the machine's load drifts
            limit_passes.append(measure_limit_again(limit, recheck, "another pass"))
        log(f"served: batching={target.batching} at {target.grpc_target}")
        ours = measure_ours(options, target, data)
        served.rows += ours.rows
        served.streams.update(ours.streams)
        served.canned_response = ours.canned_response or served.canned_response
        if target.side_runs:
            rows, served.streams["usual"] = measure_usual_way(options, target, data, size)
            served.rows += rows
            served.rows += measure_rest(options, target, data)
    return served


def measure_paired(
    options: Options,
    target: Target,
    data: Sequence[bytes],
    limit: LimitProcess,
    batch_size: int,
) -> list[Row]:
    """Rounds of the limit at its best batch size, then our client at the highest concurrency,
    back to back, for the served/limit ratio (stats.paired_ratio): each pair seconds apart."""
    rounds: list[Row] = []
    ours = load.OursGrpc(target.grpc_target, options.model_name, data, REQUEST_TIMEOUT_S)
    concurrency = max(options.concurrency)
    try:
        warm_up(ours, concurrency, options.warm_seconds)
        for number in range(1, options.paired_rounds + 1):
            log(f"paired round {number}: limit at batch {batch_size}, served at c={concurrency}")
            one = limit.measure(timeout=LOAD_TIMEOUT_S, batch_sizes=[batch_size])
            row = measure_point(
                ours,
                batching=target.batching,
                concurrency=concurrency,
                seconds=options.seconds,
                bytes_per_image=0.0,
            )
            rounds.append(
                {
                    "limit": one["per_batch_size"][0]["throughput"],
                    "served": row["throughput"],
                    "served_p50_ms": row["p50_ms"],
                }
            )
    finally:
        ours.close()
    return rounds


# -- 5.-7. precision, client only, footprint -------------------------------------------------------


def measure_precision(options: Options, inputs: Inputs) -> dict[str, Any]:
    """fp32 vs bfloat16 vs XLA:CPU on a non-degenerate classifier (see precision.py)."""
    base = options.repo / "models" / "bench" / f"classifier-{options.image_size}"
    model_dir, info = precision.ensure_classifier(base, options.build_dir, options.image_size, log)
    data = inputs.bench.data

    def served(target: str) -> list[Row]:
        driver = load.OursGrpc(target, options.model_name, data, REQUEST_TIMEOUT_S)
        try:
            return run_series(
                driver,
                batching=True,
                levels=precision.LEVELS,
                seconds=options.seconds,
                data=data,
                warm_seconds=options.warm_seconds,
            )
        finally:
            driver.close()

    return precision.run_phase(
        model_dir=model_dir,
        model_info=info,
        pixels=inputs.pixels,
        jpegs=inputs.bench.folder,
        model_name=options.model_name,
        batching_config=options.batching_config,
        seconds=options.seconds,
        build_dir=options.build_dir,
        measure_served=served,
        log=log,
    )


def measure_client_only(options: Options, response: bytes, data: Sequence[bytes], size: int) -> Row:
    from benchmarks.client_only import measure_against_stub  # imports TF Serving's Python API

    log("client-only cost against a stub server that answers at once")
    return measure_against_stub(
        response, data, size, options.model_name, side_concurrency(options), options.build_dir
    )


def measure_footprint(options: Options, venv: footprint.VenvBuild | None) -> dict[str, Any]:
    log(f"import times (fresh interpreters, best of {options.import_repeats})")
    return footprint.measure(options.import_repeats, venv.result() if venv else {})


# -- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    tf_startup.install()  # TensorFlow, where this process loads it, without its start-up lines
    started = time.monotonic()
    load_before = machine.load_average()
    host = machine.machine_info()
    log(f"{host['cpu_model']} x {host['cores']}, load average {load_before}")

    inputs = prepare_inputs(options)
    options = tune_phase(options, inputs)
    venv = None
    if options.footprint == "venv":  # builds while the models load; waited for before measuring
        venv = footprint.VenvBuild(options.repo, options.build_dir / FOOTPRINT_CACHE)
    limit = start_limit(options, inputs)
    servers: dict[bool, ServerProcess] = {}
    try:
        start_servers(options, servers)
        wait_until_ready(limit, servers, venv)
        log(f"setup done in {time.monotonic() - started:.0f} s; measuring the limit")
        limit_passes = [measure_limit(limit)]
        targets = serving_targets(options, servers)
        size = served_image_size(targets[0].grpc_target, options.model_name, options.image_size)
        served = measure_served(options, targets, inputs.bench.data, size, limit, limit_passes)
        paired = (
            measure_paired(
                options,
                targets[0],
                inputs.bench.data,
                limit,
                summarize_limit(*limit_passes)["best_batch_size"],
            )
            if options.local
            else []
        )
        stop_servers(servers)  # the idle servers would not cost CPU, but free their memory first
        limit_passes.append(
            measure_limit_again(limit, recheck_batch_sizes(limit_passes[0]), "last pass")
        )
        limit_summary = summarize_limit_passes(limit_passes)
    finally:
        limit.kill()
        stop_servers(servers)

    precision_doc = None
    if options.local and options.precision:
        precision_doc = measure_precision(options, inputs)
    if served.canned_response is not None:
        served.streams["against_stub"] = measure_client_only(
            options, served.canned_response, inputs.bench.data, size
        )
    foot = measure_footprint(options, venv)
    bulk_doc = None
    if options.bulk:  # last, so no other phase competes with its pipeline for the CPU
        bulk_doc = bulk.measure_bulk(
            inputs.model_dir, inputs.bench, inputs.pixels, options.build_dir, log=log
        )
        log(bulk.format_report(bulk_doc))
    doc = results.results_document(
        options,
        machine={**host, "load_before": load_before, "load_after": machine.load_average()},
        model_dir=inputs.model_dir,
        bench=inputs.bench,
        served_image_size=size,
        limit=limit_summary,
        served=served.rows,
        paired=paired,
        side=results.client_side(served.rows, served.streams, side_concurrency(options)),
        footprint=foot,
        precision=precision_doc,
        duration_s=time.monotonic() - started,
    )
    if bulk_doc is not None:
        doc["bulk"] = bulk_doc
    out, png = results.write_results(doc, options.output_dir, quick=options.quick)
    log(f"wrote {out} and {png} in {doc['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
