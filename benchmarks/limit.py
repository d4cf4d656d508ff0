"""The limit: the served SavedModel called in-process on already-decoded, already-resized pixels.

Run as a child process, ``python -m benchmarks.limit``, by ``limit_process.LimitProcess`` (so the
model's compute stays out of the benchmark client's process, where client CPU time is measured).
It calls the export's ``serving_pixels`` signature (uint8 [N, S, S, 3] -> x / 127.5 - 1 ->
Xception -> top-k) through the local server's own Servable, i.e. the same TF1 Session path,
network, weights, top-k and thread settings the server (and TF Serving) runs, minus JPEG decode,
resize, RPC and batching. The normalisation it keeps is one elementwise op, well under 1% of
Xception's compute.

The protocol is limit_process.py's: load and warm up, send "loaded"; then answer each request on
stdin, a measuring pass with a "result" or the benchmark JPEGs' probabilities through the bytes
signature with a "parity"; exit at the end of the input. The Session flags
(--mixed-precision, --xla-cpu-compilation-enabled, --session-config-file) mirror the server's, so
each precision variant's limit runs the Session the served variant runs. The benchmark sends the
first request once the servers are up and idle (so the load phases overlap but the measurements do
not), then shorter ones between and after the served phases: the machine is shared, and the limit
is the best of the passes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xception_contract import tf_startup

from benchmarks.limit_process import LOADED, PARITY, RESULT, read_requests, send_event


def time_decode(folder: Path) -> dict[str, float]:
    """What the bytes signature adds per image on the server's CPU: the JPEG decode it runs
    (libjpeg, accurate integer DCT, as the export calls it), one image at a time."""
    import tensorflow as tf

    files = sorted(folder.glob("*.jpg"))
    blobs = [tf.constant(f.read_bytes()) for f in files]

    def decode(blob: tf.Tensor) -> tf.Tensor:
        return tf.io.decode_jpeg(blob, channels=3, dct_method="INTEGER_ACCURATE")

    shapes = [decode(b).shape for b in blobs]  # also warms the op up
    pixels = sum(int(s[0]) * int(s[1]) for s in shapes)
    rounds = 3
    started = time.perf_counter()
    for _ in range(rounds):
        for blob in blobs:
            decode(blob)
    elapsed = (time.perf_counter() - started) / rounds
    return {
        "images": len(blobs),
        "ms_per_image": 1000 * elapsed / len(blobs),
        "megapixels_per_s": pixels / elapsed / 1e6,
        "mean_megapixels": pixels / len(blobs) / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True, type=Path, help="SavedModel version dir")
    parser.add_argument("--pixels", required=True, type=Path, help=".npy uint8 [N, S, S, 3]")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=5.0, help="per batch size")
    parser.add_argument("--min-calls", type=int, default=3)
    parser.add_argument("--jpegs", type=Path, help="folder of the benchmark JPEGs: time decoding")
    parser.add_argument("--mixed-precision", default="", help="as xception-serve's flag")
    parser.add_argument("--xla-cpu-compilation-enabled", action="store_true")
    parser.add_argument("--session-config-file", default="", help="text tensorflow.ConfigProto")
    args = parser.parse_args()

    tf_startup.install()  # TensorFlow without its C++ start-up lines in the log
    import numpy as np
    import tensorflow as tf
    import xception_contract as contract
    from xception_serving.runtime.servable import Servable
    from xception_serving.runtime.session_config import session_options

    pixels = np.load(args.pixels)
    options = session_options(  # what xception-serve builds from the same flags
        mixed_precision=args.mixed_precision,
        xla_cpu_compilation_enabled=args.xla_cpu_compilation_enabled,
        session_config_file=args.session_config_file,
    )
    servable = Servable("limit", 1, args.model_dir, options)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    def call(batch: np.ndarray) -> None:
        servable.run(contract.PIXELS_SIGNATURE, {contract.PIXELS_INPUT: batch})

    def batch_at(start: int, size: int) -> np.ndarray:
        index = [(start + i) % len(pixels) for i in range(size)]
        batch: np.ndarray = pixels[index]
        return batch

    for size in batch_sizes:  # first call of each shape pays one-off graph/allocator costs
        call(batch_at(0, size))
    send_event(LOADED)
    decode = None
    for request in read_requests(sys.stdin):  # ends when the parent closes stdin (or goes away)
        if request.parity:
            send_event(
                PARITY,
                signature=contract.BYTES_SIGNATURE,
                probabilities=parity(servable, args.jpegs),
            )
            continue
        sizes = request.batch_sizes or batch_sizes
        if decode is None and args.jpegs:  # timed with the first pass, on a quiet machine
            decode = time_decode(args.jpegs)
        per_size, single_latencies = measure(call, batch_at, sizes, args.seconds, args.min_calls)
        send_event(
            RESULT,
            decode=decode,
            per_batch_size=per_size,
            single_image_latencies_s=single_latencies,
            signature=contract.PIXELS_SIGNATURE,
            tensorflow=tf.__version__,
            runtime="TF1 Session (xception_serving.runtime.servable.Servable)",
            # 0: TensorFlow picks (one thread per core).
            intra_op_threads=options.config.intra_op_parallelism_threads,
            inter_op_threads=options.config.inter_op_parallelism_threads,
        )
    return 0


def parity(servable: Any, folder: Path | None, batch: int = 4) -> list[list[float]]:
    """Probabilities of every JPEG in ``folder`` (sorted by name) through the bytes signature."""
    import numpy as np
    import xception_contract as contract

    blobs = [f.read_bytes() for f in sorted(folder.glob("*.jpg"))] if folder else []
    rows: list[list[float]] = []
    for start in range(0, len(blobs), batch):
        chunk = np.array(blobs[start : start + batch], dtype=object)
        outputs = servable.run(contract.BYTES_SIGNATURE, {contract.IMAGE_BYTES_INPUT: chunk})
        rows += outputs[contract.PROBABILITIES_OUTPUT].astype(float).tolist()
    return rows


def measure(
    call: Any, batch_at: Any, batch_sizes: Sequence[int], seconds: float, min_calls: int
) -> tuple[list[dict[str, Any]], list[float]]:
    per_size = []
    single_latencies: list[float] = []
    for size in batch_sizes:
        calls, images, start_index = 0, 0, 0
        latencies = []
        started = time.perf_counter()
        while calls < min_calls or time.perf_counter() - started < seconds:
            batch = batch_at(start_index, size)
            t0 = time.perf_counter()
            call(batch)
            latencies.append(time.perf_counter() - t0)
            calls += 1
            images += size
            start_index += size
        elapsed = time.perf_counter() - started
        per_size.append(
            {
                "batch_size": size,
                "calls": calls,
                "images": images,
                "seconds": elapsed,
                "throughput": images / elapsed,
            }
        )
        if size == 1:
            single_latencies = latencies
    return per_size, single_latencies


if __name__ == "__main__":
    sys.exit(main())
