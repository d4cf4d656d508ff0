"""The Session configuration TF Serving builds from its flags for every loaded version.

tensorflow_model_server parses `--tensorflow_session_config_file` (a text `tensorflow.ConfigProto`)
first and then writes its thread flags over it: `--tensorflow_intra_op_parallelism` and
`--tensorflow_inter_op_parallelism` when either is set, else `--tensorflow_session_parallelism`
for both (0 lets TensorFlow choose, one thread per core). Setting all three is an error.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow.core.protobuf import config_pb2

from xception_serving.config_files import ConfigError, read_text_proto
from xception_serving.models import SessionOptions, parse_tags

PARALLELISM_CONFLICT = (
    "Either configure server_options.tensorflow_session_parallelism or "
    "(server_options.tensorflow_intra_op_parallelism, "
    "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
)


def parallelism_conflict(session: int, intra: int, inter: int) -> bool:
    """TF Serving refuses only the case where all three flags are positive."""
    return session > 0 and intra > 0 and inter > 0


def session_options(
    *,
    saved_model_tags: str = "serve",
    session_config_file: str | Path = "",
    session_parallelism: int = 0,
    intra_op_parallelism: int = 0,
    inter_op_parallelism: int = 0,
) -> SessionOptions:
    """SessionOptions as TF Serving derives them; raises ConfigError for a bad config file."""
    if parallelism_conflict(session_parallelism, intra_op_parallelism, inter_op_parallelism):
        raise ConfigError(PARALLELISM_CONFLICT)
    config = config_pb2.ConfigProto()
    if session_config_file:
        config = read_text_proto(session_config_file, config_pb2.ConfigProto)
    if intra_op_parallelism > 0 or inter_op_parallelism > 0:
        config.intra_op_parallelism_threads = intra_op_parallelism
        config.inter_op_parallelism_threads = inter_op_parallelism
    else:
        config.intra_op_parallelism_threads = session_parallelism
        config.inter_op_parallelism_threads = session_parallelism
    tags = parse_tags(saved_model_tags)
    if not tags:
        raise ConfigError(f"--saved_model_tags names no tag. Received: {saved_model_tags!r}")
    return SessionOptions(tags=tags, config=config)
