"""Models and versions as TF Serving manages them: the registry, loads, unloads and routing.

- The aspired versions of each model come from polling its base path (``model_source``) through
  its version policy; transitions follow AvailabilityPreservingPolicy (``version_policy``).
- Loads are serial (TF Serving's default `--num_load_threads=0`), retried
  `--max_num_load_retries` times; unloads wait for in-flight requests on that version.
- GetModelStatus remembers every version ever tracked, as TF Serving's state monitor does
  (``model_status``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.errors import ServingError, from_exception
from xception_serving.runtime.model_source import Poller, versions_on_disk
from xception_serving.runtime.model_status import model_status
from xception_serving.runtime.servable import Servable, SessionOptions
from xception_serving.runtime.version_policy import (
    ModelConfig,
    State,
    TrackedVersion,
    aspired_versions,
    mark_aspired,
    next_transition,
)

log = logging.getLogger("xception_serving")

WarmupFn = Callable[[Servable], None]


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, TrackedVersion] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    base_path_problem: str | None = None  # last logged base-path warning (logged once per change)


def servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


class ModelManager:
    """Thread-safe registry of models, versions and labels, with the file-system poller."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        warmup: WarmupFn | None = None,
        session_options: SessionOptions | None = None,
    ) -> None:
        self._metrics = metrics
        self._session_options = session_options or SessionOptions()
        self._poll_wait = file_system_poll_wait_seconds
        self._max_retries = max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        self._warmup = warmup
        self._lock = threading.RLock()  # guards the maps below (short critical sections)
        self._transition_lock = threading.Lock()  # serializes polling/loading/unloading
        self._models: dict[str, _Model] = {}
        # Removed models, kept for status.
        self._forgotten: dict[str, dict[int, TrackedVersion]] = {}
        self._stop = threading.Event()
        self._poller: Poller | None = None
        self._unloaders: list[threading.Thread] = []
        self.availability_changed: Callable[[bool], None] | None = None

    # -- configuration ---------------------------------------------------------------------------
    def validate_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported",
            )
        seen: set[str] = set()
        for model in config.model_config_list.config:
            if model.name in seen:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Illegal to list model {model.name} multiple times in config list",
                )
            seen.add(model.name)
            if not model.base_path.startswith("/") and "://" not in model.base_path:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expected model {model.name} to have an absolute path or URI; got "
                    f"base_path()={model.base_path}",
                )
            if "://" in model.base_path:
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"File system scheme of {model.base_path} is not supported by the local server",
                )
            platform = model.model_platform or "tensorflow"
            if platform != "tensorflow":
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Model {model.name} has unsupported platform {platform}",
                )
            with self._lock:
                old = self._models.get(model.name)
            if old is not None:
                old_platform = old.config.model_platform or "tensorflow"
                if old_platform != platform:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Illegal to change a model's platform. For model {model.name} platform "
                        f"was {old_platform} and new platform requested is {platform}",
                    )

    def apply_config(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        *,
        deadline: float | None = None,
        startup: bool = False,
    ) -> None:
        """Replace the model list, load what it needs, then apply version labels.

        Blocks until every model of the new list has an available version or failed (TF Serving's
        ReloadConfig blocks the same way). Raises ServingError as TF Serving words it.
        """
        self.validate_config(config)
        models = list(config.model_config_list.config)
        with self._transition_lock:
            with self._lock:
                new_names = {m.name for m in models}
                for name in list(self._models):
                    if name not in new_names:
                        # Removed model: every version leaves the aspired set and unloads.
                        self._models[name].config = ModelConfig(name=name)
                        self._models[name].labels = {}
                for model in models:
                    entry = self._models.get(model.name)
                    if entry is None:
                        self._models[model.name] = _Model(config=model)
                    else:
                        entry.config = model
                removed = [n for n in self._models if n not in new_names]
            for name in removed:
                self._drop_model(name)
            self._poll_locked(only=new_names)
        failures: list[str] = []
        failed_models = 0
        for model in models:
            self._wait_until_settled(model.name, deadline)
            with self._lock:
                entry = self._models[model.name]
                available = any(v.state == State.AVAILABLE for v in entry.versions.values())
                errors = [
                    f"{{{servable_id(model.name, v.version)} due to error: {v.error}}}"
                    for v in sorted(entry.versions.values(), key=lambda v: v.version)
                    if v.error is not None and v.aspired
                ]
            if startup:
                failures.extend(errors)  # the initial load waits for every aspired version
            elif not available and errors:
                failed_models += 1
                failures.append(errors[-1])
        if failures:
            # Startup (load_servables_fast) and ReloadConfig (WaitUntilModelsAvailable) word it
            # differently in TF Serving.
            what = f"{len(failures)} servable(s)" if startup else f"{failed_models} model(s)"
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{what} did not become available: {{" + "".join(f"{f}, " for f in failures) + "}",
            )
        self._apply_labels(models)

    def _apply_labels(self, models: list[ModelConfig]) -> None:
        with self._lock:
            for model in models:
                entry = self._models[model.name]
                for version in model.version_labels.values():
                    v = entry.versions.get(version)
                    if v is None or v.state != State.AVAILABLE:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{model.name}, which is not currently available for inference",
                        )
            for model in models:
                self._models[model.name].labels = dict(model.version_labels)

    def _wait_until_settled(self, name: str, deadline: float | None) -> None:
        """Wait until the model has an available version or every aspired version failed."""
        while True:
            with self._lock:
                entry = self._models.get(name)
                if entry is None:
                    return
                versions = [v for v in entry.versions.values() if v.aspired]
                if any(v.state == State.AVAILABLE for v in entry.versions.values()):
                    return
                if versions and all(v.error is not None for v in versions):
                    return
            if self._stop.is_set():
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            # Versions may appear later (empty base path): TF Serving waits for them indefinitely.
            time.sleep(0.05)
            if self._poll_wait != 0 and (self._poller is None or not self._poller.is_alive()):
                with self._transition_lock:
                    self._poll_locked(only={name})

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    # -- polling ---------------------------------------------------------------------------------
    def start_polling(self) -> None:
        """Poll base paths every --file_system_poll_wait_seconds (0: once; negative: never)."""
        if self._poll_wait <= 0 or self._poller is not None:
            return
        self._poller = Poller(self._poll_all, self._poll_wait, self._stop)
        self._poller.start()

    def _poll_all(self) -> None:
        with self._transition_lock:
            self._poll_locked()

    def _poll_locked(self, only: set[str] | None = None) -> None:
        if self._poll_wait < 0:
            return
        with self._lock:
            names = [n for n in self._models if only is None or n in only]
        for name in names:
            if self._stop.is_set():
                return
            self._poll_model(name)

    def _poll_model(self, name: str) -> None:
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                return
            config = ModelConfig()
            config.CopyFrom(entry.config)
        on_disk, problem = versions_on_disk(name, config.base_path)
        aspired = aspired_versions(config, on_disk) if config.base_path else set()
        with self._lock:
            if problem != entry.base_path_problem:
                entry.base_path_problem = problem
                if problem:
                    log.warning(problem)
            mark_aspired(entry.versions, aspired, on_disk)
        self._run_transitions(name)

    def _run_transitions(self, name: str) -> None:
        """AvailabilityPreservingPolicy, applied until no action is left."""
        while not self._stop.is_set():
            with self._lock:
                entry = self._models.get(name)
                if entry is None:
                    return
                to_unload, to_load = next_transition(list(entry.versions.values()))
                if to_unload is not None:
                    to_unload.state = State.UNLOADING
                elif to_load is not None:
                    to_load.state = State.LOADING
            if to_unload is not None:
                self._unload(name, to_unload)
            elif to_load is not None:
                self._load(name, to_load)
            else:
                return

    def _load(self, name: str, version: TrackedVersion) -> None:
        attempts = self._max_retries + 1
        sid = servable_id(name, version.version)
        for attempt in range(attempts):
            started = time.monotonic()
            try:
                servable = Servable(name, version.version, version.path, self._session_options)
                if self._warmup is not None:
                    self._warmup(servable)
            except Exception as err:
                error = from_exception(err)
                self._metrics.load_attempt_count.inc(str(version.path), "fail")
                if attempt + 1 < attempts and not self._stop.is_set():
                    log.error(
                        "Loading servable: %s failed: %s. Retrying in %.3g s (%d retries left).",
                        sid,
                        error,
                        self._retry_interval,
                        attempts - attempt - 1,
                    )
                    if self._stop.wait(self._retry_interval):
                        break
                    continue
                with self._lock:
                    version.state = State.END
                    version.error = error
                log.error("Loading servable: %s failed: %s", sid, error)
                return
            else:
                micros = (time.monotonic() - started) * 1e6
                self._metrics.load_attempt_count.inc(str(version.path), "success")
                self._metrics.load_latency.inc(str(version.path), amount=micros)
                with self._lock:
                    version.servable = servable
                    version.state = State.AVAILABLE
                    version.error = None
                log.info("Successfully loaded servable version %s", sid)
                self._notify_availability()
                return
        with self._lock:
            version.state = State.END
            version.error = ServingError(grpc.StatusCode.CANCELLED, "Load cancelled")

    def _unload(self, name: str, version: TrackedVersion) -> None:
        """Stop routing to the version now; release it once its in-flight requests finished."""
        servable = version.servable

        def finish() -> None:
            if servable is not None:
                servable.wait_idle()
                servable.close()
            with self._lock:
                version.servable = None
                version.state = State.END
            log.info(
                "Successfully unloaded servable version %s", servable_id(name, version.version)
            )
            self._notify_availability()

        thread = threading.Thread(
            target=finish, name=f"unload-{name}-{version.version}", daemon=True
        )
        self._unloaders = [t for t in self._unloaders if t.is_alive()]
        self._unloaders.append(thread)
        thread.start()

    def _drop_model(self, name: str) -> None:
        self._poll_model(name)  # base path cleared -> nothing aspired -> every version unloads
        with self._lock:
            entry = self._models.pop(name, None)
        if entry is not None:
            self._forgotten[name] = entry.versions

    def _notify_availability(self) -> None:
        if self.availability_changed is not None:
            self.availability_changed(self.any_available())

    # -- routing ---------------------------------------------------------------------------------
    def any_available(self) -> bool:
        with self._lock:
            return any(
                v.state == State.AVAILABLE
                for entry in self._models.values()
                for v in entry.versions.values()
            )

    @contextmanager
    def acquire(self, spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """The servable a ModelSpec names, held (not unloadable) for the duration of the block."""
        servable = self._resolve(spec)
        try:
            yield servable
        finally:
            servable.release()

    def _resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        name = spec.name
        choice = spec.WhichOneof("version_choice")
        with self._lock:
            entry = self._models.get(name)
            if choice == "version_label":
                label = spec.version_label
                if entry is None or label not in entry.labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {label}",
                    )
                wanted: int | None = entry.labels[label]
            elif choice == "version":
                wanted = spec.version.value
            else:
                wanted = None
            servable: Servable | None = None
            if entry is not None:
                if wanted is None:
                    ready = [v for v in entry.versions.values() if v.state == State.AVAILABLE]
                    if ready:
                        servable = max(ready, key=lambda v: v.version).servable
                else:
                    v = entry.versions.get(wanted)
                    if v is not None and v.state == State.AVAILABLE:
                        servable = v.servable
            if servable is None:
                request = f"Latest({name})" if wanted is None else f"Specific({name}, {wanted})"
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}"
                )
            servable.acquire()
            return servable

    # -- status ----------------------------------------------------------------------------------
    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        with self._lock:
            entry = self._models.get(name)
            versions = dict(self._forgotten.get(name, {}))
            if entry is not None:
                versions.update(entry.versions)
            return model_status(name, versions, version)

    # -- shutdown --------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout)
        for thread in list(self._unloaders):
            thread.join(timeout)
