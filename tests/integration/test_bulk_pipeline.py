"""The bulk job on Beam's local runner, in process (--model) and through the local server
(--server): both give Client.predict's answers, in-process mode reproduces the artifact's
warmup reference answers, bad inputs fail alone at the right stage at batch sizes 1 and 8 and
under the multi-process runner, and a remote run survives a server restart.

Each job run loads the small 71x71 test model (in process) or calls the session's server;
the parity and isolation folders hold the 12 formats plus one file per bad kind.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xception_contract as contract
from xception_client import Client
from xception_serving.testing.process import ServerProcess

from tests.fixtures.bulk import (
    BAD_MAX_IMAGE_BYTES,
    BulkOutput,
    missing_path,
    read_output,
    run_bulk,
    write_bad_inputs,
    write_good_images,
)
from tests.fixtures.models import ExportedModel
from tests.fixtures.servers import start_local_server

PROBABILITY_TOLERANCE = 1e-6
REFERENCE_TOLERANCE = 1e-5  # Keras's answers vs the graph (test_export_warmup_reference.py)
MODES = ("in-process", "remote")


def mode_args(mode: str, model: ExportedModel, server: ServerProcess) -> list[str]:
    if mode == "in-process":
        return ["--model", str(model.base_path)]
    return ["--server", server.grpc_target]


@pytest.fixture(scope="module")
def good_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return write_good_images(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def parity_runs(
    good_images: dict[str, bytes],
    small_xception_model: ExportedModel,
    xception_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, BulkOutput]:
    folder = Path(next(iter(good_images))).parent
    outputs = {}
    for mode in MODES:
        out = tmp_path_factory.mktemp(f"parity-{mode}") / "out"
        status = run_bulk(
            [
                # One image a call, as Client.predict sends: TensorFlow's CPU kernels depend on the
                # batch's shape (scores 3.4e-6 apart between 1 and 8 rows, measured).
                "--input",
                str(folder / "*"),
                "--output",
                str(out),
                "--probabilities",
                "--batch-size",
                "1",
                *mode_args(mode, small_xception_model, xception_server),
            ]
        )
        assert status == 0
        outputs[mode] = read_output(out)
    return outputs


@pytest.fixture(scope="module")
def served_answers(
    good_images: dict[str, bytes], xception_server: ServerProcess
) -> dict[str, tuple[list[Any], np.ndarray]]:
    with Client(xception_server.grpc_target) as client:
        return {
            path: (client.predict(path), client.probabilities([path])[0]) for path in good_images
        }


@pytest.mark.parametrize("mode", MODES)
def test_top_k_equals_client_predict_for_every_format(
    mode: str,
    parity_runs: dict[str, BulkOutput],
    served_answers: dict[str, tuple[list[Any], np.ndarray]],
    small_xception_model: ExportedModel,
) -> None:
    output = parity_runs[mode]
    assert output.errors == []
    records = output.by_path()
    assert sorted(records) == sorted(served_answers)
    for path, (served, _probabilities) in served_answers.items():
        record = records[path]
        assert (record["model"], record["version"], record["id"]) == (
            contract.DEFAULT_MODEL_NAME,
            small_xception_model.version,
            None,
        )
        got = [(p["label"], p["class_id"], p["key"]) for p in record["top_k"]]
        assert got == [(p.label, p.class_id, p.key) for p in served], path
        np.testing.assert_allclose(
            [p["score"] for p in record["top_k"]],
            [p.score for p in served],
            atol=PROBABILITY_TOLERANCE,
            rtol=0,
        )


@pytest.mark.parametrize("mode", MODES)
def test_probabilities_agree_with_the_server_within_1e_6(
    mode: str,
    parity_runs: dict[str, BulkOutput],
    served_answers: dict[str, tuple[list[Any], np.ndarray]],
) -> None:
    records = parity_runs[mode].by_path()
    worst = 0.0
    for path, (_served, probabilities) in served_answers.items():
        got = np.asarray(records[path]["probabilities"], dtype=np.float64)
        assert got.shape == probabilities.shape == (1000,)
        worst = max(worst, float(np.abs(got - probabilities).max()))
    assert worst <= PROBABILITY_TOLERANCE, worst


def _warmup_bytes_records(model: ExportedModel) -> list[tuple[list[bytes], dict[str, Any]]]:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = model.version_dir / "assets.extra" / "tf_serving_warmup_requests"
    found = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if not log.HasField("predict_log"):
            continue
        request, response = log.predict_log.request, log.predict_log.response
        if contract.IMAGE_BYTES_INPUT not in request.inputs:
            continue
        images = list(tf.make_ndarray(request.inputs[contract.IMAGE_BYTES_INPUT]))
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        found.append((images, outputs))
    return found


def test_in_process_answers_equal_the_artifact_warmup_references(
    small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    records = _warmup_bytes_records(small_xception_model)
    assert records, "the artifact has no bytes-signature warmup records"
    expected: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r, (images, outputs) in enumerate(records):
        for i, data in enumerate(images):
            path = tmp_path / "images" / f"record{r}-image{i}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            expected[str(path)] = (
                outputs[contract.TOP_K_CLASS_IDS_OUTPUT][i],
                outputs[contract.PROBABILITIES_OUTPUT][i],
            )
    status = run_bulk(
        [
            "--input",
            str(tmp_path / "images" / "*"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(small_xception_model.version_dir),
            "--probabilities",
            "--batch-size",
            "1",
            "--top-k",
            str(small_xception_model.top_k),
        ]
    )
    assert status == 0
    output = read_output(tmp_path / "out")
    assert output.errors == []
    records_by_path = output.by_path()
    assert sorted(records_by_path) == sorted(expected)
    for path, (ids, probabilities) in expected.items():
        record = records_by_path[path]
        assert [p["class_id"] for p in record["top_k"]] == ids.tolist(), path
        np.testing.assert_allclose(
            record["probabilities"], probabilities, atol=REFERENCE_TOLERANCE, rtol=0
        )


# -- bad inputs never cost good images -----------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A folder of good and bad files, and a manifest listing one more good image (with an id)
    and a missing path; returns (folder, manifest, what each input must become)."""
    root = tmp_path_factory.mktemp("mixed")
    good = write_good_images(root / "images")
    bad = write_bad_inputs(root / "images")
    listed = write_good_images(root / "listed")
    listed_path = sorted(listed)[0]
    missing = missing_path(root / "listed")
    manifest = root / "manifest.csv"
    manifest.write_text(f"path,id\n{listed_path},m1\nlisted/{Path(missing.path).name},m2\n")
    expect = {
        "good": {(path, None) for path in good} | {(listed_path, "m1")},
        "bad": {b.path: (b.stage, b.code) for b in bad}
        | {missing.path: (missing.stage, missing.code)},
    }
    return root / "images", manifest, expect


def assert_isolated(output: BulkOutput, expect: dict[str, Any]) -> None:
    """Every good image once in predictions, every bad one once in errors with its stage."""
    predicted = [(r["path"], r["id"]) for r in output.predictions]
    assert sorted(predicted, key=str) == sorted(expect["good"], key=str)
    failed = [(r["path"], (r["stage"], r["code"])) for r in output.errors]
    assert sorted(failed) == sorted(expect["bad"].items()), output.errors
    for record in output.errors:
        assert record["message"], record
    assert all(len(r["top_k"]) == contract.DEFAULT_TOP_K for r in output.predictions)


def assert_mixed_folder_isolated(
    mixed_folder: tuple[Path, Path, dict[str, Any]], out: Path, batch_size: int, *flags: str
) -> None:
    """The command over the mixed folder and its manifest, with the mode's ``flags``, exits 0
    and isolates every bad input."""
    folder, manifest, expect = mixed_folder
    status = run_bulk(
        [
            "--input",
            str(folder / "*"),
            "--input-manifest",
            str(manifest),
            "--output",
            str(out),
            "--batch-size",
            str(batch_size),
            "--max-image-bytes",
            str(BAD_MAX_IMAGE_BYTES),
            *flags,
        ]
    )
    assert status == 0
    assert_isolated(read_output(out), expect)


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("mode", MODES)
def test_bad_inputs_fail_alone_at_their_stage(
    mode: str,
    batch_size: int,
    mixed_folder: tuple[Path, Path, dict[str, Any]],
    small_xception_model: ExportedModel,
    xception_server: ServerProcess,
    tmp_path: Path,
) -> None:
    flags = mode_args(mode, small_xception_model, xception_server)
    assert_mixed_folder_isolated(mixed_folder, tmp_path / "out", batch_size, *flags)


def test_multi_process_runner_isolates_bad_inputs(
    mixed_folder: tuple[Path, Path, dict[str, Any]],
    xception_server: ServerProcess,
    tmp_path: Path,
) -> None:
    assert_mixed_folder_isolated(
        mixed_folder,
        tmp_path / "out",
        8,
        "--server",
        xception_server.grpc_target,
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )


def test_one_model_copy_shared_by_the_worker_processes_isolates_bad_inputs(
    mixed_folder: tuple[Path, Path, dict[str, Any]],
    small_xception_model: ExportedModel,
    tmp_path: Path,
) -> None:
    """--model-copies: the worker processes call one model through Beam's cross-process proxy;
    the graph's refusal still reaches the bisection with its status code."""
    assert_mixed_folder_isolated(
        mixed_folder,
        tmp_path / "out",
        8,
        "--model",
        str(small_xception_model.base_path),
        "--model-copies",
        "1",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )


# -- retries -------------------------------------------------------------------------------------


@pytest.fixture()
def own_server(small_xception_model: ExportedModel) -> Iterator[ServerProcess]:
    with start_local_server(model_base_path=small_xception_model.base_path) as server:
        yield server


def test_remote_run_survives_a_server_restart(
    own_server: ServerProcess, small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    from xception_bulk.progress import Progress

    images = tmp_path / "images"
    for n in range(4):  # 48 images, one a call: long enough to stop the server mid-run
        write_good_images(images / f"set{n}")
    paths = sorted(str(p) for p in images.glob("*/*"))
    port = int(own_server.grpc_target.rsplit(":", 1)[1])
    progress = Progress.shared()
    before = progress.classified
    status: list[int] = []
    job = threading.Thread(
        target=lambda: status.append(
            run_bulk(
                [
                    "--input",
                    str(images / "*" / "*"),
                    "--output",
                    str(tmp_path / "out"),
                    "--server",
                    own_server.grpc_target,
                    "--batch-size",
                    "1",
                ]
            )
        )
    )
    job.start()
    deadline = time.monotonic() + 120
    while progress.classified < before + 3 and job.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Freeze the server at once (a graceful stop still answered calls while it drained, so on a
    # busy machine the run could end first), then kill it: it goes away mid-run, with calls in
    # flight.
    own_server.process.send_signal(signal.SIGSTOP)
    time.sleep(0.2)  # answers already received are counted
    stopped_at = progress.classified - before
    own_server.stop(signal.SIGKILL)
    assert stopped_at < len(paths), "the run ended before the server was stopped"
    with start_local_server(model_base_path=small_xception_model.base_path, grpc_port=port):
        job.join(timeout=300)
    assert not job.is_alive()
    assert status == [0]
    output = read_output(tmp_path / "out")
    assert output.errors == []
    assert sorted(r["path"] for r in output.predictions) == paths


# -- TLS -----------------------------------------------------------------------------------------


def test_remote_mode_speaks_mutual_tls_with_the_client_clis_flags(
    small_xception_model: ExportedModel,
    good_images: dict[str, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from xception_serving.config.files import SSLConfig

    from tests.fixtures.pki import make_pki
    from tests.fixtures.servers import in_process_server

    pem = make_pki().write(tmp_path)
    ssl = SSLConfig(
        server_key=pem["server_key"].read_text(),
        server_cert=pem["server_cert"].read_text(),
        custom_ca=pem["ca"].read_text(),
        client_verify=True,
    )
    folder = Path(next(iter(good_images))).parent
    images = ["--input", str(folder / "0[0-2]_*")]
    with in_process_server({"xception": small_xception_model.base_path}, ssl=ssl) as (_, target):
        status = run_bulk(
            [
                *images,
                "--output",
                str(tmp_path / "out"),
                "--server",
                target,
                "--ca-cert",
                str(pem["ca"]),
                "--client-cert",
                str(pem["client_cert"]),
                "--client-key",
                str(pem["client_key"]),
            ]
        )
        assert status == 0
        assert len(read_output(tmp_path / "out").predictions) == 3
        capsys.readouterr()
        refused = run_bulk([*images, "--output", str(tmp_path / "plain"), "--server", target])
        assert refused == 1
        assert f"xception-bulk: error: cannot use xception at {target}: " in capsys.readouterr().err
