"""One loaded model version: the SavedModel's signatures, callable with numpy inputs.

Signatures are read twice on purpose: the SignatureDef protos from saved_model.pb (exactly what
TF Serving reports in GetModelMetadata and uses for alias/dtype checks) and the concrete functions
from tf.saved_model.load (what actually runs).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

SERVE_TAG = "serve"
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class SignatureInfo:
    key: str
    signature_def: meta_graph_pb2.SignatureDef
    input_aliases: tuple[str, ...]  # sorted: the flat argument order of the signature function
    output_aliases: tuple[str, ...]
    input_dtypes: Mapping[str, int]
    output_dtypes: Mapping[str, int]


def read_meta_graph(version_dir: Path, tags: str = SERVE_TAG) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged `serve` from saved_model.pb (or .pbtxt)."""
    saved_model = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    pbtxt = version_dir / "saved_model.pbtxt"
    if pb.exists():
        data = pb.read_bytes()
        try:
            saved_model.ParseFromString(data)
        except Exception as err:
            raise OSError(f"Can't parse {pb} as binary proto") from err
    elif pbtxt.exists():
        from google.protobuf import text_format

        text_format.Parse(pbtxt.read_text(), saved_model)
    else:
        raise FileNotFoundError(
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{version_dir}"
        )
    wanted = set(tags.split(","))
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    raise LookupError(
        f"Could not find meta graph def matching supplied tags: {{ {tags} }}. To inspect available "
        "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`"
    )


class Servable:
    """A loaded version. Thread-safe: signature functions are called concurrently."""

    def __init__(self, name: str, version: int, version_dir: Path) -> None:
        import tensorflow as tf

        self.name = name
        self.version = version
        self.path = version_dir
        self.meta_graph = read_meta_graph(version_dir)
        self._loaded = tf.saved_model.load(str(version_dir), tags=[SERVE_TAG])
        self.signatures: dict[str, SignatureInfo] = {}
        for key, sig in self.meta_graph.signature_def.items():
            if key == INIT_OP_SIGNATURE:
                continue
            self.signatures[key] = SignatureInfo(
                key=key,
                signature_def=sig,
                input_aliases=tuple(sorted(sig.inputs)),
                output_aliases=tuple(sorted(sig.outputs)),
                input_dtypes={k: v.dtype for k, v in sig.inputs.items()},
                output_dtypes={k: v.dtype for k, v in sig.outputs.items()},
            )
        self._functions = dict(self._loaded.signatures.items())
        # In-flight accounting so an unload can wait for requests still using this version.
        self._lock = threading.Condition()
        self._in_flight = 0

    # -- in-flight accounting ------------------------------------------------------------------
    def acquire(self) -> None:
        with self._lock:
            self._in_flight += 1

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._lock.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    # -- running ---------------------------------------------------------------------------------
    def run(self, key: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run signature `key` on numpy inputs (already checked against the SignatureDef)."""
        import tensorflow as tf

        function = self._functions[key]
        info = self.signatures[key]
        # _call_flat feeds tensors like a Session feed: no Python-side shape binding, which TF
        # Serving does not do either (a [1] tensor may feed a [-1, 1] input).
        args = [tf.convert_to_tensor(inputs[alias]) for alias in info.input_aliases]
        outputs: Any = function._call_flat(args, function.captured_inputs)
        return {alias: _to_numpy(value) for alias, value in outputs.items()}

    def close(self) -> None:
        self._functions.clear()
        self._loaded = None


def _to_numpy(value: Any) -> np.ndarray:
    array = value.numpy()
    return array if isinstance(array, np.ndarray) else np.asarray(array)
