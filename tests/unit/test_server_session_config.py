"""The Session config the local server builds from TF Serving's flags (server.cc's rules)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_serving.config_files import ConfigError
from xception_serving.session_config import PARALLELISM_CONFLICT, session_options


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
