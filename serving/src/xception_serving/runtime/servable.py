"""One loaded model version, run the way TF Serving runs it: in a TensorFlow Session.

tensorflow_model_server never uses TF2's object-graph loader (`tf.saved_model.load`). It imports
the MetaGraphDef selected by `--saved_model_tags` into a Session, restores the variables through
the SavedModel's saver, runs the init op with the asset file paths, and then calls Session::Run
with the SignatureDef's tensor names. `tf.compat.v1.saved_model.loader.load` is that same path
in TensorFlow's C++ graph runtime, so an artifact that only works under the TF2 loader fails here
exactly as it fails in TF Serving (typically "Could not find variable ..." on the first run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

SERVE_TAG = "serve"
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class SignatureInfo:
    key: str
    signature_def: meta_graph_pb2.SignatureDef
    input_aliases: tuple[str, ...]  # sorted
    output_aliases: tuple[str, ...]
    input_dtypes: Mapping[str, int]
    output_dtypes: Mapping[str, int]


@dataclass(frozen=True)
class SessionOptions:
    """What TF Serving's SessionBundleConfig carries for each loaded version."""

    tags: tuple[str, ...] = (SERVE_TAG,)
    config: config_pb2.ConfigProto = field(default_factory=config_pb2.ConfigProto)
    # TF Serving disables XLA compilation unless --xla_{cpu,gpu}_compilation_enabled is set.
    xla_compilation_enabled: bool = False


XLA_MUST_COMPILE = "_XlaMustCompile"
XLA_DISABLED = "XLA compilation disabled"  # TF's status text (FailOnXlaCompilation)
# What a Session says for a feed or fetch name its graph lacks (TF's own status text).
MISSING_TENSOR = (
    "Tensor {}, specified in either feed_devices or fetch_devices was not found in the Graph"
)


def run_timeout_ms(deadline: float | None) -> int:
    """RunOptions.timeout_in_ms for a run that must end by `deadline` (time.monotonic()).

    TF Serving sets it from the request's deadline (prediction_service_impl.cc: the gRPC deadline;
    http_rest_api_handler.cc: --rest_api_timeout_in_ms); 0 means no timeout. A deadline already
    reached gets 1 ms, so the run ends at once with TF's own DEADLINE_EXCEEDED.
    """
    if deadline is None:
        return 0
    return max(1, int((deadline - time.monotonic()) * 1000))


def requests_xla(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    """Whether any node or function of the graph is marked jit_compile=True."""
    graph = meta_graph.graph_def

    def marked(attrs: Any) -> bool:  # a protobuf map of AttrValue (TensorFlow has no stubs)
        value = attrs.get(XLA_MUST_COMPILE)
        return value is not None and bool(value.b)

    if any(marked(node.attr) for node in graph.node):
        return True
    for function in graph.library.function:
        if marked(function.attr) or any(marked(node.attr) for node in function.node_def):
            return True
    return False


def read_meta_graph(
    version_dir: Path, tags: tuple[str, ...] = (SERVE_TAG,)
) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set equals `tags`, from saved_model.pb (or .pbtxt).

    Read before the Session loader runs so that a missing or unreadable file or tag set fails
    with TF Serving's C++ code and wording (reader.cc, env.cc ReadBinaryProto), not the Python
    loader's.
    """
    import tensorflow as tf

    saved_model = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    pbtxt = version_dir / "saved_model.pbtxt"
    if pb.exists():
        data = pb.read_bytes()
        try:
            saved_model.ParseFromString(data)
        except Exception:
            raise tf.errors.DataLossError(None, None, f"Can't parse {pb} as binary proto") from None
    elif pbtxt.exists():
        from google.protobuf import text_format

        try:
            text_format.Parse(pbtxt.read_text(), saved_model)
        except Exception:
            message = f"Can't parse {pbtxt} as text proto"
            raise tf.errors.DataLossError(None, None, message) from None
    else:
        raise tf.errors.NotFoundError(
            None,
            None,
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            f"{version_dir}",
        )
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    raise tf.errors.NotFoundError(
        None,
        None,
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. To "
        "inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


@dataclass(frozen=True)
class _Endpoints:
    """One signature's graph tensors for one set of fed aliases, as the C API takes them."""

    feeds: tuple[Any, ...]  # TF_Output of each fed input, in the fed aliases' order
    fetches: list[Any]  # TF_Output of each output, in output_aliases order


class Servable:
    """A loaded version. Thread-safe: Session::Run is called concurrently."""

    def __init__(
        self,
        name: str,
        version: int,
        version_dir: Path,
        options: SessionOptions | None = None,
    ) -> None:
        import tensorflow as tf

        options = options or SessionOptions()
        self.name = name
        self.version = version
        self.path = version_dir
        read_meta_graph(version_dir, options.tags)
        graph = tf.Graph()
        # TensorFlow ships no type hints: the Session and the C API's TF_Output are Any to mypy.
        self._session: Any = tf.compat.v1.Session(graph=graph, config=options.config)
        try:
            with graph.as_default():
                # Imports the graph, runs the saver's restore op on variables/variables and the
                # init op (__saved_model_init_op) fed with the asset paths: LoadSavedModel.
                self.meta_graph: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
                    self._session, list(options.tags), str(version_dir)
                )
            graph.finalize()  # serving never adds ops; catches accidental graph growth
            self._session._extend_graph()  # the C session sees the whole graph before any run
        except BaseException:
            self._session.close()
            raise
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
        # Our Python TensorFlow cannot switch XLA off process-wide as tensorflow_model_server
        # does, so a jit_compile model fails each run with TF's own status instead.
        self._xla_refused = not options.xla_compilation_enabled and requests_xla(self.meta_graph)
        # The feed and fetch tensors per (signature, fed aliases), looked up on first use.
        self._endpoints: dict[tuple[str, tuple[str, ...]], _Endpoints] = {}
        self._endpoints_lock = threading.Lock()
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
    def run(
        self, key: str, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Session::Run of signature `key`: feeds and fetches by the SignatureDef's tensor names,
        cancelled by TensorFlow if it has not finished by `deadline` (time.monotonic()).

        This is the call TF Serving makes (predict_util.cc: session->Run(run_options, ...)), through
        TensorFlow's C API, so there is no Python-side shape check of the feeds: a [1] tensor may
        feed a [-1, 1] input if the graph accepts it. Inputs are already checked against the
        SignatureDef. Past the deadline TensorFlow stops the run and raises DEADLINE_EXCEEDED,
        "Timed out waiting for notification", and the Session is free for the next request.
        """
        import tensorflow as tf
        from tensorflow.python.client import pywrap_tf_session as tf_session

        if self._xla_refused:
            raise tf.errors.InternalError(None, None, XLA_DISABLED)
        info = self.signatures[key]
        fed = tuple(sorted(inputs))
        endpoints = self._endpoints_for(info, fed)
        feeds = dict(zip(endpoints.feeds, (inputs[alias] for alias in fed), strict=True))
        options = config_pb2.RunOptions(timeout_in_ms=run_timeout_ms(deadline))
        buffer = tf_session.TF_NewBufferFromString(options.SerializeToString())
        try:
            values = self._session._call_tf_sessionrun(buffer, feeds, endpoints.fetches, [], None)
        except UnicodeDecodeError as err:
            # TensorFlow's message quotes request bytes that are not UTF-8 (an Example its parser
            # refuses), which its Python binding cannot decode. TF Serving sends those bytes as
            # they are, and a Python gRPC client reads such details as Latin-1: send that text.
            message = bytes(err.object).decode("latin-1")
            raise tf.errors.InvalidArgumentError(None, None, message) from None
        finally:
            tf_session.TF_DeleteBuffer(buffer)
        return {
            alias: np.asarray(value)
            for alias, value in zip(info.output_aliases, values, strict=True)
        }

    def _endpoints_for(self, info: SignatureInfo, fed: tuple[str, ...]) -> _Endpoints:
        cache_key = (info.key, fed)
        endpoints = self._endpoints.get(cache_key)
        if endpoints is None:
            sig = info.signature_def
            endpoints = _Endpoints(
                feeds=tuple(self._tensor(sig.inputs[alias].name) for alias in fed),
                fetches=[self._tensor(sig.outputs[alias].name) for alias in info.output_aliases],
            )
            with self._endpoints_lock:
                self._endpoints.setdefault(cache_key, endpoints)
        return endpoints

    def _tensor(self, name: str) -> Any:
        """The graph tensor `name` as the C API's TF_Output."""
        import tensorflow as tf

        try:
            tensor = self._session.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            raise tf.errors.InvalidArgumentError(None, None, MISSING_TENSOR.format(name)) from None
        return tensor._as_tf_output()

    def close(self) -> None:
        with self._endpoints_lock:
            self._endpoints.clear()
        self._session.close()
