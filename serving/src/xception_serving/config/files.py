"""Read TF Serving's text-proto config files, the same files tensorflow_model_server reads.

`models.config` parses with TF Serving's own ModelServerConfig (tensorflow-serving-api); the
batching, monitoring and SSL files parse with messages re-declared in `_proto/tfs_config.proto`
from TF
Serving's field definitions. Errors name the file and use TF Serving's wording where it has one.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import TypeVar

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from xception_serving.config._proto import tfs_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
BatchingParameters = tfs_config_pb2.BatchingParameters
MonitoringConfig = tfs_config_pb2.MonitoringConfig
SSLConfig = tfs_config_pb2.SSLConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

_M = TypeVar("_M", bound=message.Message)


class ConfigError(ValueError):
    """A config file is missing or does not parse."""


def parse_text_proto(text: str, message_type: type[_M], *, source: str = "<string>") -> _M:
    parsed: _M = message_type()
    try:
        text_format.Parse(text, parsed)
    except text_format.ParseError as err:
        name = parsed.DESCRIPTOR.full_name
        # TF Serving prints "Error parsing text-format tensorflow.serving.ModelServerConfig".
        if message_type is ModelServerConfig:
            name = "tensorflow.serving.ModelServerConfig"
        raise ConfigError(f"Error parsing text-format {name}: {source}: {err}") from err
    return parsed


def read_text_proto(path: str | Path, message_type: type[_M]) -> _M:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    return parse_text_proto(text, message_type, source=str(path))


def read_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return read_text_proto(path, ModelServerConfig)


def read_batching_parameters(path: str | Path) -> tfs_config_pb2.BatchingParameters:
    params = read_text_proto(path, BatchingParameters)
    validate_batching_parameters(params)
    return params


def read_monitoring_config(path: str | Path) -> tfs_config_pb2.MonitoringConfig:
    return read_text_proto(path, MonitoringConfig)


def read_ssl_config(path: str | Path) -> tfs_config_pb2.SSLConfig:
    return read_text_proto(path, SSLConfig)


def prometheus_path(config: tfs_config_pb2.MonitoringConfig) -> str | None:
    """The metrics path when Prometheus export is enabled, else None."""
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_PROMETHEUS_PATH


def validate_batching_parameters(params: tfs_config_pb2.BatchingParameters) -> None:
    """Reject what TF Serving's batch scheduler rejects at startup."""
    max_batch_size = params.max_batch_size.value if params.HasField("max_batch_size") else 1000
    sizes = list(params.allowed_batch_sizes)
    if sizes:
        if any(b <= a for a, b in pairwise(sizes)):
            raise ConfigError(f"allowed_batch_sizes must be strictly increasing: {sizes}")
        if sizes[-1] != max_batch_size:
            raise ConfigError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {max_batch_size}"
            )
    for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if params.HasField(field) and getattr(params, field).value <= 0:
            raise ConfigError(f"{field} must be positive; got {getattr(params, field).value}")
    if params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value < 0:
        raise ConfigError(
            f"batch_timeout_micros must be non-negative; got {params.batch_timeout_micros.value}"
        )
