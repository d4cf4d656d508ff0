"""Bad images fail alone: a batch the model refuses is split until the refusing image is found.

The model (in-process graph or served) refuses a whole batch when one image in it cannot be
decoded or is too large, and Beam's dead-letter output would then drop the whole batch. Instead
a refused batch is bisected: each half is tried again, down to single images, so the good ones
are classified and only the bad ones fail, at the cost of about ``2 * log2(batch)`` extra calls
per bad image. Transient failures (server unavailable, overloaded) are not caught here: they
propagate so the remote handler's retry with backoff repeats the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .records import Classified, Failure, ImageRef

__all__ = ["Outcome", "Prepared", "isolate"]

Prepared = tuple[ImageRef, bytes]  # an image that passed the local checks, bytes ready to send
Outcome = Classified | Failure


def isolate(
    batch: Sequence[Prepared],
    run: Callable[[Sequence[Prepared]], list[Classified]],
    refused: Callable[[Exception], tuple[str, str] | None],
) -> list[Outcome]:
    """``run(batch)``; where it raises an error ``refused`` maps to (status code name,
    message), the same for each half until single images fail alone (stage "inference").
    Errors ``refused`` maps to None propagate. The outcomes are in the batch's order."""
    if not batch:
        return []
    try:
        results: list[Outcome] = list(run(batch))
    except Exception as error:
        failure = refused(error)
        if failure is None:
            raise
        if len(batch) == 1:
            code, message = failure
            return [Failure(batch[0][0], "inference", code, message)]
        middle = len(batch) // 2
        return isolate(batch[:middle], run, refused) + isolate(batch[middle:], run, refused)
    if len(results) != len(batch):
        raise RuntimeError(f"the model answered {len(results)} images for a batch of {len(batch)}")
    return results
