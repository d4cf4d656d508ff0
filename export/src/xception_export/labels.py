"""Class labels: ImageNet's (shipped Keras class index) or a user's file, one per class.

A label file is either plain text, one label per line (trailing blank lines ignored), or JSON:
a list of names, a list of ``[key, name]`` pairs, an object mapping class index to name, or Keras's
``imagenet_class_index.json`` shape (index -> ``[wnid, name]``). Keys (e.g. WordNet ids) are kept
when present because names are not unique ("crane" is both a bird and a machine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

IMAGENET_CLASS_INDEX = "imagenet_class_index.json"


class LabelsError(ValueError):
    """A labels file is unreadable, malformed, or does not fit the model."""


@dataclass(frozen=True)
class Labels:
    """Per-class display names and optional keys, indexed by class id."""

    names: tuple[str, ...]
    keys: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.names:
            raise LabelsError(f"no labels in {self.source or 'labels'}")
        if self.keys is not None and len(self.keys) != len(self.names):
            raise LabelsError(
                f"{len(self.keys)} keys for {len(self.names)} labels in {self.source or 'labels'}"
            )
        for i, text in enumerate(self.names + (self.keys or ())):
            # Labels are stored one per line in the SavedModel's assets.
            if "\n" in text or "\r" in text:
                raise LabelsError(f"label {i % len(self.names)} contains a line break: {text!r}")

    def __len__(self) -> int:
        return len(self.names)

    def check_count(self, num_classes: int) -> None:
        """Fail unless there is exactly one label per model output."""
        if len(self.names) != num_classes:
            raise LabelsError(
                f"{self.source or 'labels'} has {len(self.names)} labels but the model outputs "
                f"{num_classes} classes; give exactly one label per class"
            )


def imagenet_labels() -> Labels:
    """The 1000 ImageNet classes from the shipped copy of Keras's class index (wnid keys)."""
    text = resources.files("xception_export").joinpath("data", IMAGENET_CLASS_INDEX).read_text()
    labels = _from_json(json.loads(text), "ImageNet class index")
    return Labels(labels.names, labels.keys, source="imagenet")


def load_labels(path: str | Path) -> Labels:
    """Read labels from a text or JSON file (see the module docstring for accepted shapes)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelsError(f"cannot read labels file {str(path)!r}: {err}") from err
    stripped = text.strip()
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise LabelsError(f"labels file {str(path)!r} is not valid JSON: {err}") from err
        parsed = _from_json(data, str(path))
        return Labels(parsed.names, parsed.keys, source=str(path))
    lines = stripped.splitlines()
    names = tuple(line.strip() for line in lines)
    for i, name in enumerate(names):
        if not name:
            raise LabelsError(f"labels file {str(path)!r} has an empty label on line {i + 1}")
    return Labels(names, None, source=str(path))


def _from_json(data: object, source: str) -> Labels:
    if isinstance(data, dict):
        try:
            order = sorted(data, key=int)
        except ValueError as err:
            raise LabelsError(
                f"{source}: a JSON object must map class indices (0, 1, ...) to labels"
            ) from err
        if [int(k) for k in order] != list(range(len(order))):
            raise LabelsError(f"{source}: class indices must be 0..{len(order) - 1} without gaps")
        items = [data[k] for k in order]
    elif isinstance(data, list):
        items = data
    else:
        raise LabelsError(f"{source}: expected a JSON list or object, got {type(data).__name__}")
    if all(isinstance(item, str) for item in items):
        return Labels(tuple(items), None, source=source)
    if all(
        isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        for item in items
    ):
        return Labels(
            tuple(item[1] for item in items), tuple(item[0] for item in items), source=source
        )
    raise LabelsError(f"{source}: each label must be a string or a [key, name] pair")
