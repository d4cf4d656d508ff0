"""The Session config the local server builds from TF Serving's flags (server.cc's rules)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_serving.config.files import ConfigError
from xception_serving.runtime.cpu_features import cpu_bfloat16_flags
from xception_serving.runtime.session_config import (
    PARALLELISM_CONFLICT,
    mixed_precision_warning,
    session_options,
)


def test_defaults_are_the_serve_tag_and_tensorflow_chosen_thread_pools() -> None:
    options = session_options()
    assert options.tags == ("serve",)
    assert options.config.intra_op_parallelism_threads == 0
    assert options.config.inter_op_parallelism_threads == 0


def test_session_parallelism_sets_both_pools() -> None:
    config = session_options(session_parallelism=3).config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)


def test_intra_or_inter_flags_win_over_session_parallelism_when_not_all_three_are_set() -> None:
    config = session_options(session_parallelism=3, intra_op_parallelism=2).config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 0)


def test_all_three_thread_flags_are_refused_with_tf_servings_message() -> None:
    with pytest.raises(ConfigError, match="You cannot configure all") as info:
        session_options(session_parallelism=1, intra_op_parallelism=1, inter_op_parallelism=1)
    assert str(info.value) == PARALLELISM_CONFLICT


def test_the_session_config_file_is_read_and_the_thread_flags_are_written_over_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "session.config"
    path.write_text(
        "intra_op_parallelism_threads: 7\n"
        "allow_soft_placement: true\n"
        "gpu_options { allow_growth: true }\n"
    )
    config = session_options(session_config_file=path).config
    assert config.allow_soft_placement and config.gpu_options.allow_growth
    # As in server.cc: the (unset, 0) flags overwrite the file's thread counts.
    assert config.intra_op_parallelism_threads == 0
    assert (
        session_options(
            session_config_file=path, intra_op_parallelism=5
        ).config.intra_op_parallelism_threads
        == 5
    )


def test_a_malformed_session_config_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.config"
    path.write_text("no_such_field: 1\n")
    with pytest.raises(
        ConfigError, match=r"Error parsing text-format tensorflow\.ConfigProto"
    ) as info:
        session_options(session_config_file=path)
    assert str(path) in str(info.value)


def test_saved_model_tags_split_on_commas_and_an_empty_list_is_refused() -> None:
    assert session_options(saved_model_tags="serve, gpu").tags == ("serve", "gpu")
    with pytest.raises(ConfigError, match="--saved_model_tags names no tag"):
        session_options(saved_model_tags=" , ")


AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
ARM_CPU = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bfloat16_cpu_features_are_read_from_x86_flags_and_arm_features() -> None:
    assert cpu_bfloat16_flags(AMX_CPU) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bfloat16_flags(ARM_CPU) == ["bf16"]
    assert cpu_bfloat16_flags(OLD_CPU) == []


def test_mixed_precision_bfloat16_turns_on_the_onednn_rewrite_in_the_session_config() -> None:
    from tensorflow.core.protobuf import rewriter_config_pb2

    rewrites = session_options(mixed_precision="bfloat16").config.graph_options.rewrite_options
    assert rewrites.auto_mixed_precision_onednn_bfloat16 == rewriter_config_pb2.RewriterConfig.ON
    plain = session_options().config.graph_options.rewrite_options
    assert plain.auto_mixed_precision_onednn_bfloat16 == rewriter_config_pb2.RewriterConfig.DEFAULT


def test_mixed_precision_warns_once_on_a_cpu_without_bfloat16_and_for_unknown_modes() -> None:
    assert mixed_precision_warning("", OLD_CPU) is None
    assert mixed_precision_warning("bfloat16", AMX_CPU) is None
    warning = mixed_precision_warning("bfloat16", OLD_CPU)
    assert warning is not None and "runs in float32" in warning and "\n" not in warning
    assert mixed_precision_warning("float16", AMX_CPU) == (
        "float16 auto mixed precision is not supported. Valid option: bfloat16"
    )
    rewrites = session_options(mixed_precision="float16").config.graph_options.rewrite_options
    assert rewrites.auto_mixed_precision_onednn_bfloat16 == 0  # ignored, as TF Serving does


def test_xla_compilation_is_disabled_unless_one_of_the_xla_flags_is_set() -> None:
    assert not session_options().xla_compilation_enabled
    assert session_options(xla_cpu_compilation_enabled=True).xla_compilation_enabled
    assert session_options(xla_gpu_compilation_enabled=True).xla_compilation_enabled
