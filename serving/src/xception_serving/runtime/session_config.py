"""The Session configuration TF Serving builds from its flags for every loaded version.

tensorflow_model_server parses `--tensorflow_session_config_file` (a text `tensorflow.ConfigProto`)
first and then writes its thread flags over it: `--tensorflow_intra_op_parallelism` and
`--tensorflow_inter_op_parallelism` when either is set, else `--tensorflow_session_parallelism`
for both (0 lets TensorFlow choose, one thread per core). Setting all three is an error.

`--mixed_precision=bfloat16` (TF Serving 2.16+, saved_model_bundle_factory.cc) turns on the
grappler rewrite `auto_mixed_precision_onednn_bfloat16` in that Session's config; any other
non-empty value is logged as unsupported and ignored. Unless `--xla_cpu_compilation_enabled` or
`--xla_gpu_compilation_enabled` is set, TF Serving disables XLA compilation process-wide, so a
model that asks for it (`jit_compile=True`) fails on its first run.
"""

from __future__ import annotations

import platform
from pathlib import Path

from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

from xception_serving.config.files import ConfigError, read_text_proto

# The thread-flag rule lives in the TensorFlow-free cli module, which checks it before TF loads.
from xception_serving.options import PARALLELISM_CONFLICT, parallelism_conflict  # re-exported
from xception_serving.runtime.cpu_features import BF16_CPU_FLAGS, cpu_bfloat16_flags
from xception_serving.runtime.servable import SessionOptions

BFLOAT16 = "bfloat16"


def mixed_precision_warning(mixed_precision: str, cpuinfo: str | None = None) -> str | None:
    """The one warning line `--mixed_precision` deserves at start-up, if any."""
    if not mixed_precision:
        return None
    if mixed_precision != BFLOAT16:
        # TF Serving's own wording (saved_model_bundle_factory.cc); the flag is then ignored.
        return f"{mixed_precision} auto mixed precision is not supported. Valid option: bfloat16"
    if not cpu_bfloat16_flags(cpuinfo):
        return (
            f"--mixed_precision=bfloat16: this CPU ({platform.machine()}) reports none of "
            f"{', '.join(BF16_CPU_FLAGS)}, so TensorFlow's oneDNN bfloat16 rewrite does not "
            "apply and the model runs in float32 (no speed-up, no precision change)"
        )
    return None


def parse_tags(text: str) -> tuple[str, ...]:
    """`--saved_model_tags`: comma-separated, as TF Serving splits it."""
    return tuple(tag for tag in (part.strip() for part in text.split(",")) if tag)


def session_options(
    *,
    saved_model_tags: str = "serve",
    session_config_file: str | Path = "",
    session_parallelism: int = 0,
    intra_op_parallelism: int = 0,
    inter_op_parallelism: int = 0,
    mixed_precision: str = "",
    xla_cpu_compilation_enabled: bool = False,
    xla_gpu_compilation_enabled: bool = False,
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
    if mixed_precision == BFLOAT16:
        rewrites = config.graph_options.rewrite_options
        rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    tags = parse_tags(saved_model_tags)
    if not tags:
        raise ConfigError(f"--saved_model_tags names no tag. Received: {saved_model_tags!r}")
    return SessionOptions(
        tags=tags,
        config=config,
        xla_compilation_enabled=xla_cpu_compilation_enabled or xla_gpu_compilation_enabled,
    )
