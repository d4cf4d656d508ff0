# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""In-process mode: each worker loads the exported SavedModel once and calls ``serving_default``.

The signature takes encoded image bytes and runs the same decode -> resize -> preprocess ->
network -> top-k graph TF Serving runs, so answers equal the served ones. Beam's stock
``TFModelHandlerTensor`` loads with ``tf.keras.models.load_model``, which Keras 3 refuses for a
SavedModel; this handler loads with ``tf.saved_model.load`` instead. TensorFlow is imported only
here, when a worker loads the model: the rest of the package runs without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from typing import Any, Final

import xception_contract as contract
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .isolate import Outcome, Prepared, isolate
from .records import Classified, code_name, predictions_from_rows

__all__ = ["TF_EXTRA_HINT", "LocalClassifier", "SavedModelHandler", "tensorflow_available"]

TF_EXTRA_HINT: Final = (
    "in-process mode (--model) needs TensorFlow: install the bundle with its 'export' extra "
    "(pip install 'xception-serving-bundle[bulk,export]', or '.[bulk,export]' in a clone), or "
    "classify through a server with --server HOST:PORT"
)
_INVALID_ARGUMENT: Final = 3
_MAX_MESSAGE: Final = 1000


class MissingTensorFlow(ImportError):
    """TensorFlow is not installed where the in-process model has to run."""


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _import_tensorflow() -> Any:
    try:
        from xception_contract import tf_startup

        tf_startup.install()  # TensorFlow's C++ start-up lines stay out of the job's log
        import tensorflow as tf
    except ImportError as error:
        raise MissingTensorFlow(f"{TF_EXTRA_HINT} ({error})") from error
    return tf


class LocalClassifier:
    """One loaded SavedModel's bytes signature. ``classify`` returns plain Python values, so the
    object also works behind Beam's cross-process model sharing (its results are pickled)."""

    def __init__(
        self, version_dir: str, top_k: int, with_probabilities: bool, pad_to: int = 1
    ) -> None:
        tf = _import_tensorflow()
        self._tf = tf
        self._loaded = tf.saved_model.load(version_dir)
        self._signature = self._loaded.signatures[contract.BYTES_SIGNATURE]
        exported_k = self._signature.structured_outputs[contract.TOP_K_SCORES_OUTPUT].shape[-1]
        if exported_k is not None and top_k > exported_k:
            raise ValueError(
                f"--top-k {top_k} but {version_dir} exports its {exported_k} best classes"
            )
        self._top_k = top_k
        self._with_probabilities = with_probabilities
        self._pad_to = pad_to

    def classify(self, batch: Sequence[Prepared]) -> list[Classified]:
        """Top-k (and probabilities) of every image; TensorFlow's error if the graph refuses.

        The batch is padded to ``pad_to`` rows with copies of its first image: oneDNN picks its
        kernels by batch shape, so an image's scores depend on how many rows it was run with
        (3.4e-6 apart between 1 and 8 rows, measured) but not on the other rows' content. With
        every call the same shape, a run's answers do not depend on how Beam batched them.
        """
        blobs = [data for _ref, data in batch]
        blobs += blobs[:1] * (self._pad_to - len(blobs))
        images = self._tf.constant(blobs, dtype=self._tf.string)
        outputs = self._signature(**{contract.IMAGE_BYTES_INPUT: images})
        scores = outputs[contract.TOP_K_SCORES_OUTPUT].numpy()
        ids = outputs[contract.TOP_K_CLASS_IDS_OUTPUT].numpy()
        labels = outputs[contract.TOP_K_LABELS_OUTPUT].numpy()
        keys = outputs.get(contract.TOP_K_KEYS_OUTPUT)
        keys = keys.numpy() if keys is not None else None
        probabilities = (
            outputs[contract.PROBABILITIES_OUTPUT].numpy() if self._with_probabilities else None
        )
        results = []
        for row, (ref, _data) in enumerate(batch):
            top = predictions_from_rows(
                scores[row].tolist(),
                ids[row].tolist(),
                [_text(v) for v in labels[row]],
                [_text(v) for v in keys[row]] if keys is not None else None,
                self._top_k,
            )
            probs = (
                tuple(float(p) for p in probabilities[row]) if probabilities is not None else None
            )
            results.append(Classified(ref, top, probs))
        return results


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def tf_refusal(error: Exception) -> tuple[str, str] | None:
    """TensorFlow's INVALID_ARGUMENT (an image the graph cannot decode or is too large) as a
    per-image failure; any other error propagates to the dead-letter output."""
    if getattr(error, "error_code", None) != _INVALID_ARGUMENT:
        return None
    return code_name(_INVALID_ARGUMENT), tf_message(error)


def tf_message(error: Exception) -> str:
    """TensorFlow's own message without the graph-execution preamble and node traceback."""
    text = str(getattr(error, "message", None) or error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not line.startswith(("Graph execution error", "Detected at node", "File ", "[["))
    ]
    message = " ".join(useful or lines).replace("<stack traces unavailable>", "").strip()
    return message[:_MAX_MESSAGE]


class SavedModelHandler(ModelHandler[Prepared, PredictionResult, LocalClassifier]):
    """RunInference handler for the exported SavedModel, loaded once per worker process (or,
    with ``model_copies``, that many copies per machine shared across its processes)."""

    def __init__(
        self,
        version_dir: str,
        *,
        top_k: int,
        with_probabilities: bool,
        batch_size: int,
        model_copies: int | None = None,
    ) -> None:
        # Full batches (BatchElements would start at 1 and grow): a short batch is padded to
        # batch_size rows, so it would cost a full batch's compute for fewer images.
        super().__init__(
            min_batch_size=batch_size, max_batch_size=batch_size, model_copies=model_copies
        )
        self._version_dir = version_dir
        self._batch_size = batch_size
        self._top_k = top_k
        self._with_probabilities = with_probabilities

    def load_model(self) -> LocalClassifier:
        return LocalClassifier(
            self._version_dir, self._top_k, self._with_probabilities, self._batch_size
        )

    def run_inference(
        self,
        batch: Sequence[Prepared],
        model: LocalClassifier,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        outcomes: list[Outcome] = isolate(batch, model.classify, tf_refusal)
        return [PredictionResult(outcome.ref, outcome, self._version_dir) for outcome in outcomes]

    def get_num_bytes(self, batch: Sequence[Prepared]) -> int:
        return sum(len(data) for _ref, data in batch)

    def get_metrics_namespace(self) -> str:
        return "xception_bulk"
