"""`make bench`: the bundle against the machine's limit and against the usual way, in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--images N] [--tfserving-target HOST:PORT]

Steps (issue 5): export a random-weight Xception (299x299) once into models/bench/; generate a
seeded set of photo-like JPEGs; start the local server twice (batching on with
serving/batching-cpu.config, and off) while the limit subprocess loads the same SavedModel; then,
one at a time so nothing overlaps: (1) the limit in-process, (2) our client over gRPC with image
bytes at concurrency 1/4/16, batching on and off, (3) the usual way (client-side Pillow decode,
resize, float32 preprocess_input, float tensor to serving_preprocessed), (4) REST b64, and
(5) client footprint. Writes a table to stdout, benchmarks/results/latest.json and latest.png.
Progress goes to stderr. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(REPO))

from benchmarks import footprint, images, load, precision, report, server, stats  # noqa: E402
from benchmarks.exports import ensure_model  # noqa: E402
from benchmarks.limit_process import LimitProcess  # noqa: E402

BENCH_DIR = REPO / "benchmarks"
BUILD_DIR = REPO / "build" / "bench"
DEFAULT_BATCHING_CONFIG = REPO / "serving" / "batching-cpu.config"
DEFAULT_OUTPUT_DIR = BENCH_DIR / "results"
BYTES_VARIANT = load.OursGrpc.name
CLIENT_SIDE_CONCURRENCY = 4  # the side-by-side client CPU / bytes comparison
STREAM_IMAGES = 24  # images per client-CPU stream against the real server
IMAGES_PER_REQUEST_SWEEP = (1, 2, 4, 8)  # against the stub: client-only cost of each packing


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _levels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Measure the limit, the served paths and the usual way side by side.",
    )
    parser.add_argument("--tfserving-target", metavar="HOST:PORT",
                        help="measure a running TF Serving (gRPC) instead of the local server")
    parser.add_argument("--tfserving-rest-url", metavar="URL",
                        help="its REST address, e.g. http://host:8501 (REST rows skipped without)")
    parser.add_argument("--model-name", default="xception", help="served model name")
    parser.add_argument("--image-size", type=int, default=299, help="export size (default 299)")
    parser.add_argument("--model-base-path", type=Path,
                        help="SavedModel base path (default models/bench/xception-<size>)")
    parser.add_argument("--images", type=int, help="number of generated JPEGs (default 48)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--seconds", type=float, help="measured seconds per point (default 6)")
    parser.add_argument("--concurrency", type=_levels, default=stats.CONCURRENCY_LEVELS)
    parser.add_argument("--limit-batch-sizes", type=_levels, help="default 1,2,4,8")
    parser.add_argument("--batching-config", type=Path, default=DEFAULT_BATCHING_CONFIG)
    parser.add_argument("--import-repeats", type=int, help="fresh interpreters per module (3)")
    parser.add_argument("--footprint", choices=("venv", "records"), default="venv",
                        help="client size: a real client-only venv (cached) or RECORD sums")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--precision", action=argparse.BooleanOptionalAction, default=True,
                        help="measure fp32 / bfloat16 / XLA:CPU on the local server (default on)")
    parser.add_argument("--quick", action="store_true",
                        help="development run: 12 images, 2 s points, fewer batch sizes")
    return parser


def apply_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.images = args.images or (12 if quick else 48)
    args.seconds = args.seconds or (2.0 if quick else 6.0)
    args.limit_batch_sizes = args.limit_batch_sizes or ((1, 4) if quick else (1, 2, 4, 8))
    args.import_repeats = args.import_repeats or (1 if quick else 3)
    if quick and args.footprint == "venv" and not (BUILD_DIR / "footprint-venv.json").exists():
        args.footprint = "records"
    if args.model_base_path is None:
        args.model_base_path = REPO / "models" / "bench" / f"xception-{args.image_size}"
    # TF Serving (and the local server) require an absolute base path.
    args.model_base_path = args.model_base_path.resolve()
    args.batching_config = args.batching_config.resolve()


# -- setup -----------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gib": _memory_gib(),
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def images_dir(count: int, seed: int) -> Path:
    return BUILD_DIR / "images" / f"seed{seed}-n{count}"


def bench_images(count: int, seed: int) -> list[images.BenchImage]:
    """Generated once per (count, seed), kept under build/bench/images/."""
    folder = images_dir(count, seed)
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(files) == count:
        out = []
        for f in files:
            w, h, q = _parse_name(f.name)
            out.append(images.BenchImage(f.name, w, h, q, f.read_bytes()))
        return out
    generated = images.generate(count, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for image in generated:
        (folder / image.name).write_bytes(image.data)
    return generated


def _parse_name(name: str) -> tuple[int, int, int]:
    stem = name.rsplit(".", 1)[0]
    _, size, quality = stem.split("_")
    w, h = size.split("x")
    return int(w), int(h), int(quality.lstrip("q"))


def write_pixels(data: Sequence[bytes], size: int, path: Path) -> Path:
    """Decoded, resized uint8 pixels for the limit (the same nearest resize the graph does)."""
    import io

    import numpy as np
    from PIL import Image

    arrays = []
    for item in data:
        with Image.open(io.BytesIO(item)) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.NEAREST)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack(arrays))
    return path


def summarize_limit(*passes: dict[str, Any]) -> dict[str, Any]:
    """The limit from several passes: per batch size the best throughput, and the lowest
    single-image p50 (a shared machine only ever slows a pass down)."""
    raw = passes[0]
    best_by_size: dict[int, dict[str, Any]] = {}
    for one in passes:
        for entry in one["per_batch_size"]:
            size = entry["batch_size"]
            if size not in best_by_size or entry["throughput"] > best_by_size[size]["throughput"]:
                best_by_size[size] = entry
    per = [best_by_size[s] for s in sorted(best_by_size)]
    best = max(per, key=lambda p: p["throughput"])
    p50s = [
        (stats.percentile([1000 * v for v in one["single_image_latencies_s"]], 50),
         len(one["single_image_latencies_s"]))
        for one in passes if one.get("single_image_latencies_s")
    ]
    p50, samples = min(p50s) if p50s else (None, 0)
    return {
        "throughput": best["throughput"],
        "best_batch_size": best["batch_size"],
        "latency_p50_ms": p50,
        "latency_samples": samples,
        "passes": len(passes),
        "per_batch_size": per,
        "signature": raw["signature"],
        "what": "SavedModel loaded in-process, called on uint8 pixels already decoded and resized "
                "with Pillow (nearest) to the model size; same weights/top-k as served",
        "tensorflow": raw.get("tensorflow"),
        "server_side_jpeg_decode": raw.get("decode"),
        "threads": {"intra_op": raw.get("intra_op_threads"),
                    "inter_op": raw.get("inter_op_threads")},
    }


# -- measurements ----------------------------------------------------------------------------------


def measure_point(
    driver: Any, *, variant: str, batching: bool | None, concurrency: int, seconds: float,
    bytes_per_image: float,
) -> dict[str, Any]:
    result = load.closed_loop(driver, concurrency=concurrency, duration_s=seconds,
                              max_requests=100_000, min_requests=concurrency)
    if result.completed == 0:
        raise RuntimeError(f"{variant} c={concurrency}: every request failed: {result.first_error}")
    row: dict[str, Any] = {
        "variant": variant,
        "concurrency": concurrency,
        "batching": batching,
        "throughput": stats.throughput(result.completed, result.elapsed_s),
        **stats.summarize_latencies(result.latencies_s),
        "requests": result.completed,
        "errors": result.errors,
        "seconds": result.elapsed_s,
        "request_bytes_per_image": bytes_per_image,
        "client_cpu_ms_per_image": 1000.0 * result.cpu_s / result.completed,
    }
    if result.first_error:
        row["first_error"] = result.first_error
    log(f"  {variant:<14} batching={batching!s:<5} c={concurrency:<3} "
        f"{row['throughput']:6.2f} img/s  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms"
        f"  cpu {row['client_cpu_ms_per_image']:.2f} ms/img  n={result.completed}"
        + (f" errors={result.errors} ({result.first_error})" if result.errors else ""))
    return row


def warm_up(driver: Any, concurrency: int, seconds: float) -> None:
    result = load.closed_loop(driver, concurrency=concurrency, duration_s=seconds,
                              max_requests=4 * concurrency, min_requests=concurrency)
    if result.completed == 0:
        raise RuntimeError(f"warm-up failed: {result.first_error}")


def mean_bytes(driver: Any, data: Sequence[bytes]) -> float:
    return sum(driver.request_bytes(d) for d in data) / len(data)


def run_series(
    driver: Any, *, batching: bool | None, levels: Sequence[int], seconds: float,
    data: Sequence[bytes], warm_seconds: float,
) -> list[dict[str, Any]]:
    per_image = mean_bytes(driver, data)
    warm_up(driver, max(levels), warm_seconds)
    return [
        measure_point(driver, variant=driver.name, batching=batching, concurrency=c,
                      seconds=seconds, bytes_per_image=per_image)
        for c in levels
    ]


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


def measure_stream(driver: Any, data: Sequence[bytes], concurrency: int,
                   count: int | None = None, **options: Any) -> dict[str, Any]:
    count = count or min(len(data), STREAM_IMAGES)
    result = load.stream_cpu(lambda: driver.stream(count, concurrency, **options))
    figures = {
        "variant": driver.name,
        **options,
        "images": result.images,
        "throughput": stats.throughput(result.images, result.wall_s),
        "client_cpu_ms_per_image": 1000.0 * result.cpu_s / max(1, result.images),
        "request_bytes_per_image": mean_bytes(driver, data),
    }
    packing = f" ({options})" if options else ""
    log(f"  {driver.name:<14} stream of {result.images} at {concurrency} in flight{packing}: "
        f"{figures['throughput']:.2f} img/s, client CPU {figures['client_cpu_ms_per_image']:.2f} "
        f"ms/img, {figures['request_bytes_per_image'] / 1024:.1f} KB/img")
    return figures


def capture_response(target: str, model_name: str, image: bytes) -> bytes:
    """One real serialized PredictResponse of the bytes signature, for the stub server."""
    import grpc
    from xception_client import _wire

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(_wire.PREDICT.path,
                                   request_serializer=_wire.PREDICT.serializer,
                                   response_deserializer=lambda raw: raw)
        request = _wire.predict_bytes_request(_wire.ModelRef(model_name), [image])
        return bytes(call(request, timeout=120))


def measure_against_stub(response: bytes, data: Sequence[bytes], size: int, model_name: str,
                         concurrency: int) -> dict[str, Any]:
    """Client-only cost: both paths against a stub that answers at once (see stub_server.py)."""
    canned = BUILD_DIR / "canned-response.pb"
    canned.write_bytes(response)
    stub = subprocess.Popen([sys.executable, str(BENCH_DIR / "stub_server.py"), str(canned)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert stub.stdout is not None
        port = int(stub.stdout.readline())
        target = f"127.0.0.1:{port}"
        repeated = (list(data) * 3)[:STREAM_IMAGES * 3]  # more images: each costs little
        out: dict[str, Any] = {}
        ours = load.OursGrpc(target, model_name, repeated, 30.0)
        usual = load.UsualGrpc(target, model_name, repeated, size, 30.0)
        try:
            for key, driver in (("ours", ours), ("usual", usual)):
                driver.stream(concurrency, concurrency)  # connect and warm up
                out[key] = measure_stream(driver, repeated, concurrency, count=len(repeated))
            # What packing buys (Client.predict_many's images_per_request, default chosen so).
            out["ours_by_images_per_request"] = {
                str(n): measure_stream(ours, repeated, concurrency, count=len(repeated),
                                       images_per_request=n)
                for n in IMAGES_PER_REQUEST_SWEEP
            }
        finally:
            ours.close()
            usual.close()
        out["client_cpu_usual_over_ours"] = stats.ratio(
            out["usual"]["client_cpu_ms_per_image"], out["ours"]["client_cpu_ms_per_image"])
        return out
    finally:
        stub.kill()
        stub.wait(10)


def client_side(served: Sequence[dict[str, Any]], streams: dict[str, dict[str, Any]],
                concurrency: int) -> dict[str, Any]:
    """Side by side at one concurrency: request bytes and client CPU per image from one stream of
    the whole image set per path (futures window, one thread: see load.py), REST from its row."""
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "method": "one thread keeps `concurrency` requests in flight (Client.predict_many for "
                  "ours, the same futures window for the usual way); process CPU time of the "
                  "benchmark process / images",
    }
    out.update(streams)
    rest = stats.served_row(served, load.RestB64.name, concurrency, None)
    if rest:
        out["rest"] = {k: rest[k] for k in ("variant", "throughput", "request_bytes_per_image",
                                            "client_cpu_ms_per_image")}
        out["rest"]["note"] = "threaded closed loop (blocking http.client), not a stream"
    return out


def measure_footprint(args: argparse.Namespace, venv_result: dict[str, Any]) -> dict[str, Any]:
    log(f"import times (fresh interpreters, best of {args.import_repeats})")
    ours = footprint.import_time("xception_client", repeats=args.import_repeats)
    tfs = footprint.import_time("tensorflow_serving.apis.predict_pb2", repeats=args.import_repeats)
    client_records = footprint.records_size("xception-client")
    tfs_records = footprint.records_size("tensorflow-serving-api")
    installed: dict[str, Any] = {
        "client_records_bytes": client_records["bytes"],
        "client_distributions": client_records["distributions"],
        "tfs_api_bytes": tfs_records["bytes"],
        "tfs_api_distributions": len(tfs_records["distributions"]),
    }
    if "client_install_bytes" in venv_result:
        installed.update(
            client_bytes=venv_result["client_install_bytes"],
            client_method="client-only venv: du after `pip install ./client` minus the bare venv"
            + (" (cached " + venv_result.get("measured", "") + ")" if venv_result.get("cached")
               else ""),
            client_venv_total_bytes=venv_result["venv_bytes"],
        )
    else:
        installed.update(client_bytes=client_records["bytes"],
                         client_method="RECORD sizes of its dependency closure in .venv"
                         + (f" (venv build failed: {venv_result['error']})"
                            if "error" in venv_result else ""))
    return {
        "import": {
            "repeats": args.import_repeats,
            "xception_client_s": ours["best_wall_s"],
            "tfs_api_s": tfs["best_wall_s"],
            "xception_client_cpu_s": ours["best_cpu_s"],
            "tfs_api_cpu_s": tfs["best_cpu_s"],
            "samples": {"xception_client": ours["samples_wall_s"],
                        "tfs_api": tfs["samples_wall_s"]},
        },
        "installed": installed,
    }


def measure_precision(args: argparse.Namespace, pixels: Path, data: Sequence[bytes], *,
                      timeout: float, warm: float) -> dict[str, Any]:
    """fp32 vs bfloat16 vs XLA:CPU on a non-degenerate classifier (see precision.py)."""
    base = REPO / "models" / "bench" / f"classifier-{args.image_size}"
    model_dir, info = precision.ensure_classifier(base, BUILD_DIR, args.image_size, log)

    def served(target: str) -> list[dict[str, Any]]:
        driver = load.OursGrpc(target, args.model_name, data, timeout)
        try:
            return run_series(driver, batching=True, levels=precision.LEVELS,
                              seconds=args.seconds, data=data, warm_seconds=warm)
        finally:
            driver.close()

    return precision.run_phase(
        model_dir=model_dir, model_info=info, pixels=pixels,
        jpegs=images_dir(args.images, args.seed), model_name=args.model_name,
        batching_config=args.batching_config, seconds=args.seconds, build_dir=BUILD_DIR,
        measure_served=served, summarize_limit=summarize_limit, log=log,
    )


# -- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_defaults(args)
    started = time.monotonic()
    load_before = load_average()
    machine = machine_info()
    log(f"{machine['cpu_model']} x {machine['cores']}, load average {load_before}")

    model_dir = ensure_model(args.model_base_path, args.image_size, log)
    log(f"model {model_dir}")
    bench = bench_images(args.images, args.seed)
    data = [b.data for b in bench]
    log(f"{len(bench)} JPEGs, {sum(len(d) for d in data) / len(data) / 1024:.1f} KB mean")
    pixels = write_pixels(data, args.image_size, BUILD_DIR / f"pixels-{args.image_size}.npy")

    venv_result: dict[str, Any] = {}

    def build_venv() -> None:
        try:
            venv_result.update(footprint.client_venv_size(REPO, BUILD_DIR / "footprint-venv.json"))
        except Exception as error:  # offline or no index: fall back to RECORD sizes
            venv_result["error"] = f"{type(error).__name__}: {error}"[:300]

    venv_thread = None
    if args.footprint == "venv":
        venv_thread = threading.Thread(target=build_venv, daemon=True)
        venv_thread.start()  # overlaps the model loads below; joined before any measurement

    limit_proc = LimitProcess(model_dir, pixels, args.limit_batch_sizes,
                              seconds=max(1.0, args.seconds * 0.5),
                              jpegs=images_dir(args.images, args.seed),
                              log_path=BUILD_DIR / "limit.log")
    servers: dict[bool, server.LocalServer] = {}
    local = args.tfserving_target is None
    try:
        if local:
            log_dir = BUILD_DIR / "logs"
            servers[True] = server.start("batching", model_name=args.model_name,
                                         model_base_path=args.model_base_path, log_dir=log_dir,
                                         batching_config=args.batching_config)
            servers[False] = server.start("no-batching", model_name=args.model_name,
                                          model_base_path=args.model_base_path, log_dir=log_dir,
                                          batching_config=None)
        ready_by = time.monotonic() + 300
        limit_proc.wait_loaded(timeout=300)
        for srv in servers.values():
            srv.wait_ready(ready_by)
        if venv_thread is not None:
            venv_thread.join(240)
        log(f"setup done in {time.monotonic() - started:.0f} s; measuring the limit")

        first_limit = limit_proc.measure(timeout=300)
        limit = summarize_limit(first_limit)
        log(f"limit {limit['throughput']:.2f} img/s at batch {limit['best_batch_size']}, "
            f"single-image p50 {limit['latency_p50_ms']:.1f} ms")

        served: list[dict[str, Any]] = []
        streams: dict[str, dict[str, Any]] = {}
        canned: bytes | None = None
        side_concurrency = (CLIENT_SIDE_CONCURRENCY if CLIENT_SIDE_CONCURRENCY in args.concurrency
                            else args.concurrency[0])
        timeout = 60.0
        warm = 1.0 if args.quick else 2.0
        if local:
            targets = [(True, servers[True].grpc_target, servers[True].rest_url),
                       (False, servers[False].grpc_target, None)]
        else:
            targets = [(None, args.tfserving_target, args.tfserving_rest_url)]
        size = served_image_size(targets[0][1], args.model_name, args.image_size)
        limit_passes = [first_limit]
        recheck = sorted({1, limit["best_batch_size"]})
        for index, (batching, target, rest_url) in enumerate(targets):
            if index:  # the limit again between servers: the machine's load drifts
                log("limit, another pass (batch 1 and the best batch size)")
                limit_passes.append(limit_proc.measure(timeout=300, batch_sizes=recheck))
            log(f"served: batching={batching} at {target}")
            side_runs = batching is not False  # once, on the recommended (batching) server
            ours = load.OursGrpc(target, args.model_name, data, timeout)
            try:
                served += run_series(ours, batching=batching, levels=args.concurrency,
                                     seconds=args.seconds, data=data, warm_seconds=warm)
                if side_runs:
                    streams["ours"] = measure_stream(ours, data, side_concurrency)
                    streams["ours_one_per_request"] = measure_stream(
                        ours, data, side_concurrency, images_per_request=1)
                    canned = capture_response(target, args.model_name, data[0])
            finally:
                ours.close()
            if not side_runs:
                continue
            usual = load.UsualGrpc(target, args.model_name, data, size, timeout)
            try:
                served += run_series(usual, batching=batching, levels=args.concurrency,
                                     seconds=args.seconds, data=data, warm_seconds=warm)
                streams["usual"] = measure_stream(usual, data, side_concurrency)
            finally:
                usual.close()
            if rest_url:
                rest = load.RestB64(rest_url, args.model_name, data, timeout)
                served += run_series(rest, batching=batching, levels=args.concurrency,
                                     seconds=args.seconds, data=data, warm_seconds=warm)
        for srv in servers.values():
            srv.stop()  # the idle servers would not cost CPU, but free their memory first
        log("limit, last pass (batch 1 and the best batch size)")
        limit_passes.append(limit_proc.measure(timeout=300, batch_sizes=recheck))
        limit = summarize_limit(*limit_passes)
        limit["pass_throughputs"] = [
            {str(e["batch_size"]): round(e["throughput"], 3) for e in one["per_batch_size"]}
            for one in limit_passes
        ]
        log(f"limit {limit['throughput']:.2f} img/s at batch {limit['best_batch_size']}, "
            f"single-image p50 {limit['latency_p50_ms']:.1f} ms (best of "
            f"{len(limit_passes)} passes: {limit['pass_throughputs']})")
    finally:
        limit_proc.kill()
        for srv in servers.values():
            srv.stop()

    precision_doc = None
    if local and args.precision:
        precision_doc = measure_precision(args, pixels, data, timeout=timeout, warm=warm)
    if canned is not None:
        log("client-only cost against a stub server that answers at once")
        streams["against_stub"] = measure_against_stub(canned, data, size, args.model_name,
                                                       side_concurrency)
    foot = measure_footprint(args, venv_result)
    side = client_side(served, streams, side_concurrency)
    ratios = stats.compute_ratios(
        limit=limit, served=served, usual=side.get("usual"), ours=side.get("ours"),
        imports=foot["import"], bytes_variant=BYTES_VARIANT,
    )
    doc: dict[str, Any] = {
        "note": "compare figures within this run only; the load averages before and after "
                "say whether anything else was running on the machine",
        "schema_version": stats.SCHEMA_VERSION,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": {**machine, "load_before": load_before, "load_after": load_average()},
        "setup": {
            "image_size": args.image_size,
            "served_image_size": size,
            "model_dir": str(model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO)
                             else model_dir),
            "weights": "random (compute identical to ImageNet weights)",
            "images": len(bench),
            "image_sizes": sorted({f"{b.width}x{b.height}" for b in bench}),
            "mean_jpeg_bytes": sum(len(d) for d in data) / len(data),
            "seconds_per_point": args.seconds,
            "served_target": args.tfserving_target or "local server (python -m xception_serving)",
            "limit_where": "in-process on this machine"
            + (" (NOT the TF Serving host unless run there)" if not local else ""),
            "batching_config": (args.batching_config.read_text() if local else None),
            "client_side_concurrency": side_concurrency,
        },
        "limit": limit,
        "served": served,
        "client_side": side,
        "footprint": foot,
        "ratios": ratios,
        "precision": precision_doc,
        "targets": {
            **stats.evaluate_targets(limit=limit, served=served, ratios=ratios,
                                     bytes_variant=BYTES_VARIANT),
            **stats.precision_targets(precision_doc),
        },
        "duration_s": time.monotonic() - started,
    }
    doc = stats.json_safe(doc)
    problems = stats.schema_problems(doc)
    if problems:
        raise RuntimeError(f"results do not match the schema: {problems}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"  # quick runs never overwrite the committed result
    out = args.output_dir / f"{stem}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, out)
    png = report.plot(doc, args.output_dir / f"{stem}.png")
    print(report.format_table(doc))
    log(f"wrote {out} and {png} in {doc['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
