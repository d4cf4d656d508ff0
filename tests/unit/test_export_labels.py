"""Label files: text and the JSON shapes accepted, and the errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_export.labels import Labels, LabelsError, imagenet_labels, load_labels


def test_imagenet_labels_have_1000_names_and_wordnet_keys() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels.keys is not None
    assert (labels.keys[0], labels.names[0]) == ("n01440764", "tench")
    # Names repeat ("crane"): keys keep them apart.
    assert labels.names.count("crane") == 2 and len(set(labels.keys)) == 1000


def test_text_labels_one_per_line_with_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("dress\n hat \nlongsleeve\n\n\n")
    labels = load_labels(path)
    assert labels.names == ("dress", "hat", "longsleeve") and labels.keys is None


@pytest.mark.parametrize(
    "text",
    ['["a", "b"]', '{"1": "b", "0": "a"}', '{"0": ["k0", "a"], "1": ["k1", "b"]}'],
    ids=["list", "index to name", "index to key and name"],
)
def test_json_labels_in_each_accepted_shape_give_names_in_class_order(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "labels.json"
    path.write_text(text)
    assert load_labels(path).names == ("a", "b")


def test_json_pairs_keep_keys(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('[["n1", "cat"], ["n2", "dog"]]')
    assert load_labels(path).keys == ("n1", "n2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\n\nb\n", "empty label on line 2"),
        ('{"0": "a", "2": "c"}', "without gaps"),
        ('{"x": "a"}', "class indices"),
        ("[1, 2]", r"string or a \[key, name\] pair"),
        ("[not json", "not valid JSON"),
        ("", "no labels"),
    ],
)
def test_malformed_label_files_are_rejected_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(LabelsError, match=message):
        load_labels(path)


def test_missing_label_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match=r"nope\.txt"):
        load_labels(tmp_path / "nope.txt")


def test_label_count_check_names_both_counts() -> None:
    labels = Labels(("a", "b"), source="labels.txt")
    labels.check_count(2)
    with pytest.raises(LabelsError, match="2 labels but the model outputs 3 classes"):
        labels.check_count(3)


def test_labels_with_line_breaks_are_rejected() -> None:
    with pytest.raises(LabelsError, match="line break"):
        Labels(("a\nb",))
