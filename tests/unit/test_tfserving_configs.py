"""serving/*.config: the files real TF Serving reads parse with TF Serving's messages and say what
the deployment needs (model name and base path, GPU batching, Prometheus, TLS)."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from xception_contract import DEFAULT_MODEL_NAME
from xception_serving import launch_tfserving
from xception_serving.config import files as config_files

from benchmarks import batching_file
from tests.fixtures.pki import make_pki

SERVING = Path(__file__).resolve().parents[2] / "serving"


def test_models_config_parses_with_tf_servings_own_message() -> None:
    parsed = text_format.Parse(
        (SERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert parsed.WhichOneof("config") == "model_config_list"


def test_models_config_serves_the_exported_model_from_the_mounted_base_path() -> None:
    config = config_files.read_model_server_config(SERVING / "models.config")
    [model] = config.model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME
    # The path the Docker launcher, compose file and Deployment mount the export at.
    assert model.base_path == f"{launch_tfserving.CONTAINER_MODEL_ROOT}/{DEFAULT_MODEL_NAME}"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2
    # Active labels would make startup fail unless those versions exist; the example is disabled.
    assert dict(model.version_labels) == {}


def test_models_config_label_example_parses_when_uncommented() -> None:
    text = (SERVING / "models.config").read_text()
    enabled = re.sub(r"^(\s*)# (version_labels .*)$", r"\1\2", text, flags=re.MULTILINE)
    assert enabled != text
    [model] = config_files.parse_text_proto(
        enabled, config_files.ModelServerConfig
    ).model_config_list.config
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_batching_config_parses_and_passes_tf_servings_startup_checks() -> None:
    params = config_files.read_batching_parameters(SERVING / "batching.config")
    assert params.max_batch_size.value == 64
    assert list(params.allowed_batch_sizes)[-1] == params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0
    # Online serving guidance: queue about as long as the number of batch threads.
    assert params.max_enqueued_batches.value == params.num_batch_threads.value
    assert not params.pad_variable_length_inputs


def test_cpu_batching_config_never_pads_and_its_batch_threads_were_measured_on_its_host() -> None:
    path = SERVING / "batching-cpu.config"
    params = config_files.read_batching_parameters(path)
    assert not params.allowed_batch_sizes  # padding would compute empty rows on the CPU
    assert params.batch_timeout_micros.value == 0
    tuned_on = batching_file.tuned_host(path)
    assert tuned_on is not None, "the CPU config is the tuner's: its header names the host"
    threads = params.num_batch_threads.value
    assert 1 <= threads <= tuned_on[1]
    # The count is the served path's measured best, not an assumption: its row is in the header.
    assert re.search(rf"^#   threads +{threads}: ", path.read_text(), re.MULTILINE)


@pytest.mark.parametrize("name", ["batching.config", "batching-cpu.config"])
def test_batching_config_comments_every_setting(name: str) -> None:
    lines = (SERVING / name).read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#") and not lines[index - 1].startswith(("#", "allowed")):
            pytest.fail(f"setting without a comment above it: {line!r}")


def test_monitoring_config_enables_prometheus_on_tf_servings_default_path() -> None:
    config = config_files.read_monitoring_config(SERVING / "monitoring.config")
    assert config_files.prometheus_path(config) == config_files.DEFAULT_PROMETHEUS_PATH


def test_ssl_template_renders_pem_contents_inline_that_parse_back_unchanged(
    tmp_path: Path,
) -> None:
    pki = make_pki()
    key_pem, cert_pem, ca_pem = (pem.decode() for pem in (pki.server_key, pki.server_cert, pki.ca))
    for name, pem in (("key.pem", key_pem), ("cert.pem", cert_pem), ("ca.pem", ca_pem)):
        (tmp_path / name).write_text(pem)
    output = tmp_path / "out" / "ssl.config"
    status = launch_tfserving.main(
        [
            "render-ssl",
            "--server-key", str(tmp_path / "key.pem"),
            "--server-cert", str(tmp_path / "cert.pem"),
            "--custom-ca", str(tmp_path / "ca.pem"),
            "--client-verify",
            "--output", str(output),
        ]
    )  # fmt: skip
    assert status == 0
    assert output.stat().st_mode & 0o777 == 0o600  # holds a private key
    ssl = config_files.read_ssl_config(output)
    assert (ssl.server_key, ssl.server_cert, ssl.custom_ca) == (key_pem, cert_pem, ca_pem)
    assert ssl.client_verify is True
    # What TF Serving does with the fields: build gRPC server credentials from the PEM strings.
    grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode(),
        require_client_auth=ssl.client_verify,
    )


def test_ssl_template_without_client_ca_renders_server_only_tls() -> None:
    rendered = launch_tfserving.render_ssl_config(
        (SERVING / "ssl.config.template").read_text(),
        server_key='k "quoted" \\ line\n',
        server_cert="c\r\n",
    )
    ssl = config_files.parse_text_proto(rendered, config_files.SSLConfig)
    assert (ssl.server_key, ssl.server_cert) == ('k "quoted" \\ line\n', "c\r\n")
    assert (ssl.custom_ca, ssl.client_verify) == ("", False)


def test_ssl_render_refuses_client_verification_without_a_ca() -> None:
    with pytest.raises(launch_tfserving.LaunchError, match="custom CA"):
        launch_tfserving.render_ssl_config("", server_key="k", server_cert="c", client_verify=True)
