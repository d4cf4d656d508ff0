"""Predictions as domain objects, plus Keras ``decode_predictions``-shaped output for migrations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Prediction", "decode_predictions"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One class of one image's ranking; lists of these are ordered best first.

    ``label`` is the human-readable name ("tabby"), ``key`` the label's stable key when the model's
    labels have one (an ImageNet WordNet id such as "n02123045", else None), ``score`` the
    probability and ``class_id`` the index in the model's output.
    """

    label: str
    key: str | None
    score: float
    class_id: int


def decode_predictions(
    predictions: Sequence[Sequence[Prediction]],
) -> list[list[tuple[str, str, float]]]:
    """Return ``keras.applications.xception.decode_predictions``-shaped output.

    One list per image of ``(wnid, class_name, score)`` tuples, best first, so code written
    against Keras keeps working::

        decode_predictions([client.predict("cat.jpg")])[0][0]  # ('n02123045', 'tabby', 0.71)

    Labels without a key use an empty string in the first slot.
    """
    return [[(p.key or "", p.label, p.score) for p in image] for image in predictions]
