"""The models of one process: an engine per (name, version) of the versioned repository
(`seam.modelrepo.versions`), replacing the single engine the process used to hold.

* Promoted versions are loaded at start (`refresh`) and kept current by a polling thread
  (`start_watching`, every SEAM_MODELS_POLL_S): when the repository's fingerprint changes, a newly
  promoted version is verified (checksums), built and warmed in that thread, then switched in with
  one dict assignment. A request holds the `ServedModel` it acquired, so it finishes on the engine
  it started with; an engine nobody references any more is freed by the garbage collector.
* A version that fails (checksum mismatch, half-copied, unreadable) is logged, reported
  (`status()`, GET /models) and never replaces the one serving; it is retried when its files change.
* Pinned versions (`NAME:VERSION` other than the promoted one) load on demand and stay in an LRU
  of SEAM_MAX_PINNED_MODELS engines (a replaced promoted version joins it: pinned jobs still use it).

`ModelRegistry` keeps the `EngineHolder` interface (`engine`, `ready`, `get()`, `set()`, ...) for the
default model, so code that only needs "the" engine keeps working.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seam.service.core.config import Settings
from seam.service.core.engine_holder import EngineHolder, build_version_engine, warm_up
from seam.service.core.errors import ApiError
from seam.service.engine import methods
from seam.service.engine.base import InferenceEngine

from seam.modelrepo import versions as repo_versions
from seam.modelrepo.manifest import ManifestError, read_manifest
from seam.modelrepo.versions import ModelEntry, ModelNotFound, ModelVersion

log = logging.getLogger("seam.service")

Key = tuple[str, int]
MODEL_HEADER = "X-Seam-Model"
_FACTS_KEPT = 256  # versions whose classes and kinds a broker-mode API keeps (one small tuple each)


@dataclass(frozen=True)
class ServedModel:
    """An engine and the version it serves; what a request or a chunk holds while it runs."""

    name: str
    version: int
    digest: str
    engine: InferenceEngine
    legacy: bool = False  # the flat model dirs of an unversioned repository

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def model_name(self, fallback: str) -> str:
        """Its name; an unversioned model's is the one its engine reports (else `fallback`)."""
        if not self.legacy:
            return self.name
        models = self.engine.models()
        return models[0].name if models else fallback


class PinMismatch(RuntimeError):
    """A job's pinned version is gone or its files changed since submission (the chunk fails)."""


class ModelRegistry(EngineHolder):
    """Engines per (name, version) over `repo`; `build(version)` opens one (None: the process has
    no engine of its own and `set()` gives it a static one, e.g. the workers' metadata)."""

    def __init__(self, repo: str | Path | None = None,
                 build: Callable[[ModelVersion], InferenceEngine] | None = None, *,
                 default: str | None = None, max_pinned: int = 2, warm: bool = True) -> None:
        super().__init__()
        self.repo = Path(repo) if repo is not None else None
        self._build = build
        self.default = default
        self.max_pinned = max_pinned
        self.warm = warm
        self._catalog: dict[str, ModelEntry] = {}
        self._current: dict[str, ServedModel] = {}  # the promoted engine serving now, per name
        self._pinned: OrderedDict[Key, ServedModel] = OrderedDict()
        self._errors: dict[Key, str] = {}
        self._digests: dict[Key, str] = {}
        # (name, version, digest) -> the version's (classes, kinds); bounded: digests change with every copy
        self._manifest_facts: OrderedDict[tuple[str, int, str], tuple[list[str] | None, list[str]]] = OrderedDict()
        self._fingerprint: str | None = None
        self._lock = threading.RLock()  # the dicts above (short sections, never around a load)
        self._load_locks: dict[Key, threading.Lock] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.swaps: list[dict] = []  # the last switches: {name, version, previous, at, load_s}

    # ------------------------------------------------------------------ static engines

    def set(self, engine: InferenceEngine, warm: bool = True) -> None:
        """A given engine (tests, the fake engine, the workers' metadata in broker mode) serves
        every request; names and versions still come from the repository when there is one."""
        super().set(engine, warm)
        self.loading = False

    @property
    def dynamic(self) -> bool:
        return self._build is not None

    # ------------------------------------------------------------------ loading

    def refresh(self, force: bool = False) -> bool:
        """Rescan when the repository changed; load the promoted versions not serving yet. Returns
        whether anything was rescanned."""
        if self.repo is None:
            return False
        with self._refresh_lock:
            fp = repo_versions.repo_fingerprint(self.repo)
            if fp == self._fingerprint and not force:
                return False
            try:
                catalog = repo_versions.list_models(self.repo)
            except Exception as exc:  # noqa: BLE001 - the repository is missing: report, keep serving
                log.error("model repository unreadable: %s", exc)
                self.error = self.error if self.engine is not None else f"{type(exc).__name__}: {exc}"
                self._fingerprint = fp
                if self.dynamic:  # a load attempt has ended: /readyz and waiting chunks see the error
                    self.loading = False
                    self._done.set()
                return True
            with self._lock:
                self._catalog = catalog
                self._errors.clear()  # something changed: refused versions get another chance
                self._forget_removed(catalog)
            if self._build is not None:
                for entry in catalog.values():
                    self._load_promoted(entry)
            self._fingerprint = fp
            self._sync_default()
            return True

    def _load_promoted(self, entry: ModelEntry) -> None:
        if entry.promoted is None:
            return
        v = entry.versions[entry.promoted]
        cur = self._current.get(entry.name)
        if cur is not None and cur.version == v.version and cur.digest == self._digest(v):
            return
        t0 = time.perf_counter()
        try:
            served = self._load(v)
        except Exception as exc:  # noqa: BLE001 - refused: the serving version stays
            log.error("model %s refused, %s keeps serving: %s", v.ref, cur.ref if cur else "nothing", exc)
            return
        with self._lock:
            old = self._current.get(entry.name)
            self._current[entry.name] = served  # the switch: new requests get the new engine
            self._pinned.pop((v.name, v.version), None)
            if old is not None and old is not served:
                self._pinned[(old.name, old.version)] = old
                self._evict()
            self.swaps = [*self.swaps[-19:], {"name": v.name, "version": v.version, "at": time.time(),
                                              "previous": old.version if old else None,
                                              "load_s": round(time.perf_counter() - t0, 3)}]
        log.info("model %s now serves %s (was %s)", v.name, v.ref, old.ref if old else "nothing")

    def _load(self, v: ModelVersion) -> ServedModel:
        key = (v.name, v.version)
        with self._lock:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:  # one load per version at a time; the others wait for it
            have = self._loaded(key)
            if have is not None and have.digest == self._digest(v):
                return have
            try:
                if v.error is not None:
                    raise repo_versions.ManifestError(v.error)
                repo_versions.verify_version(v)  # checksums: a corrupt or half-copied version stops here
                digest = repo_versions.version_digest(v)
                engine = self._build(v)
                if self.warm:
                    warm_up(engine)
            except Exception as exc:
                with self._lock:
                    self._errors[key] = f"{type(exc).__name__}: {exc}"
                raise
            with self._lock:
                self._errors.pop(key, None)
                self._digests[key] = digest
            return ServedModel(v.name, v.version, digest, engine, v.legacy)

    def _loaded(self, key: Key) -> ServedModel | None:
        with self._lock:
            cur = self._current.get(key[0])
            if cur is not None and cur.version == key[1]:
                return cur
            return self._pinned.get(key)

    def _digest(self, v: ModelVersion) -> str:
        try:
            return repo_versions.version_digest(v)
        except Exception:  # noqa: BLE001 - unreadable now: never equal to a loaded one
            return ""

    def _facts(self, v: ModelVersion, digest: str) -> tuple[list[str] | None, list[str]]:
        """(foreground classes, kinds) a version's manifests declare, read once per digest."""
        key = (v.name, v.version, digest)
        with self._lock:
            facts = self._manifest_facts.get(key)
        if facts is not None:
            return facts
        classes = None
        # unreadable now: None, the workers' own classes are all there is
        with contextlib.suppress(ManifestError, StopIteration):
            if v.error is None:  # every kind of a version has the same classes (verify_version checks it)
                classes = list(read_manifest(next(iter(v.dirs.values()))).foreground)
        facts = (classes, list(v.kinds))
        with self._lock:
            self._manifest_facts[key] = facts
            while len(self._manifest_facts) > _FACTS_KEPT:
                self._manifest_facts.popitem(last=False)
        return facts

    def _evict(self) -> None:
        while len(self._pinned) > self.max_pinned:
            (name, version), _ = self._pinned.popitem(last=False)
            log.info("unloading %s:%d (least recently used pinned version)", name, version)

    def _forget_removed(self, catalog: dict[str, ModelEntry]) -> None:
        for key in [k for k in self._pinned if k[0] not in catalog or k[1] not in catalog[k[0]].versions]:
            del self._pinned[key]
        for name in [n for n in self._current if n not in catalog]:
            del self._current[name]

    def _sync_default(self) -> None:
        """`engine`/`error` of the EngineHolder interface: the default model's serving engine."""
        if not self.dynamic:
            return
        try:
            name = repo_versions.default_name(self._catalog, self.default)
        except ModelNotFound as exc:
            self.engine, self.error = None, str(exc)
            self.loading = False
            self._done.set()
            return
        cur = self._current.get(name)
        entry = self._catalog.get(name)
        key = (name, entry.promoted) if entry and entry.promoted is not None else None
        self.engine = cur.engine if cur else None
        err = self._errors.get(key) if key else f"model {name!r} has no usable version"
        self.error = None if cur else (err or (f"no model named {name!r}" if entry is None else "not loaded"))
        self.loading = False
        self._done.set()

    # ------------------------------------------------------------------ the watcher

    def start_watching(self, poll_s: float) -> threading.Thread:
        """Refresh now and then every `poll_s` seconds, in a daemon thread."""
        self.loading = self.dynamic or self.loading

        def loop() -> None:
            while True:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - keep watching
                    log.exception("refreshing the model repository failed")
                if self._stop.wait(poll_s):
                    return

        self._watcher = threading.Thread(target=loop, name="seam-models-watch", daemon=True)
        self._watcher.start()
        return self._watcher

    def stop_watching(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ serving

    def acquire(self, ref: str | None = None) -> ServedModel:
        """The engine serving `NAME[:VERSION]` (None: the default model's promoted version).
        422 malformed, 404 unknown name/version, 503 not loaded (yet), 422 refused version."""
        try:
            name, version = repo_versions.parse_ref(ref)
        except ValueError as exc:
            raise ApiError(422, "invalid_model", str(exc)) from None
        if not self.dynamic:
            return self._static(ref, name, version)
        with self._lock:
            catalog = self._catalog
        v = self._resolve(catalog, ref)
        have = self._loaded((v.name, v.version))
        if have is not None:
            self._touch(have)
            return have
        if version is None:  # the promoted version is loading (or was refused): the serving one answers
            cur = self._current.get(v.name)
            if cur is not None:
                return cur
            err = self._errors.get((v.name, v.version))
            if err:
                raise ApiError(503, "model_unavailable", f"model {v.ref} could not be loaded: {err}",
                               {"Retry-After": "30"})
            raise ApiError(503, "not_ready", f"model {v.ref} is still loading; retry shortly", {"Retry-After": "5"})
        refused = self._errors.get((v.name, v.version))
        if refused:  # not again until its files change (the watcher clears it): no re-hashing per request
            raise ApiError(422, "model_unavailable", f"model {v.ref} cannot be loaded: {refused}")
        try:
            served = self._load(v)
        except Exception as exc:  # noqa: BLE001
            raise ApiError(422, "model_unavailable", f"model {v.ref} cannot be loaded: {exc}") from None
        with self._lock:
            if self._loaded((v.name, v.version)) is None:
                self._pinned[(v.name, v.version)] = served
                self._evict()
        return served

    def _resolve(self, catalog: dict[str, ModelEntry], ref: str | None) -> ModelVersion:
        try:
            return repo_versions.resolve_in(catalog, ref, self.default)
        except ModelNotFound as exc:
            missing = exc
        # Published since the last poll? Another process (the API that forwarded this request) may
        # list it already: rescan now rather than 404 until the next poll (a stat walk when unchanged).
        if self.repo is not None and self.refresh():
            with self._lock:
                catalog = self._catalog
            try:
                return repo_versions.resolve_in(catalog, ref, self.default)
            except ModelNotFound as exc:
                missing = exc
        if not catalog:
            self.get()  # still loading / unreadable repository: 503
        raise ApiError(404, "model_not_found", str(missing)) from None

    def _touch(self, served: ServedModel) -> None:
        with self._lock:
            key = (served.name, served.version)
            if key in self._pinned:
                self._pinned.move_to_end(key)

    def _static(self, ref: str | None, name: str | None, version: int | None) -> ServedModel:
        engine = self.get()  # 503 while nothing is there
        with self._lock:
            catalog = self._catalog
        if catalog:  # names and versions from the shared repository; the workers load them
            v = self._resolve(catalog, ref)
            digest = self._digests.get((v.name, v.version)) or self._digest(v)
            bound = getattr(engine, "for_model", None)  # the workers' engine, asked for this version
            if bound is None:
                return ServedModel(v.name, v.version, digest, engine, v.legacy)
            # the version's own classes and methods, not those the workers advertise for their
            # default model: a job's labels resolve against the model it pins
            classes, kinds = self._facts(v, digest)
            return ServedModel(v.name, v.version, digest,
                               bound(v.ref, classes=classes, methods=methods.available(kinds)), v.legacy)
        infos = engine.models()  # no repository (an injected or fake engine): one unversioned model
        return ServedModel(name or (infos[0].name if infos else "default"), version or 1, "", engine, legacy=True)

    def forwarded_ref(self, served: ServedModel, ref: str | None) -> str | None:
        """What the request record says: the resolved NAME:VERSION, or, when the workers compute and
        this process cannot read the repository, the caller's own `ref` (the worker resolves it)."""
        remote = hasattr(served.engine, "for_model")  # the workers' engine (realtime.fleet.RemoteModels)
        return ref if remote and not (self.dynamic or self._catalog) else served.ref

    def acquire_pinned(self, name: str, version: int, digest: str | None) -> ServedModel:
        """A job's chunk: exactly that version, with the digest it had at submission."""
        try:
            served = self.acquire(f"{name}:{version}")
        except ApiError as exc:
            if exc.status_code in (404, 422):
                raise PinMismatch(f"the job's model {name}:{version} is not available here: {exc.message}") from None
            raise
        if digest and served.digest and served.digest != digest:
            raise PinMismatch(f"the job's model {name}:{version} changed since the job was submitted (digest "
                              f"{served.digest[:12]}... here, {digest[:12]}... at submission)")
        return served

    # ------------------------------------------------------------------ reporting

    def status(self) -> list[dict]:
        """Per name: its versions, the promoted one, what serves, and per version its load state."""
        with self._lock:
            catalog, current, pinned, errors = dict(self._catalog), dict(self._current), dict(self._pinned), dict(
                self._errors)
        out = []
        for name, entry in catalog.items():
            serving = current.get(name)
            rows = []
            for n, v in entry.versions.items():
                info = repo_versions.version_info(v)
                key = (name, n)
                if serving is not None and serving.version == n:
                    state = "serving"
                elif key in pinned:
                    state = "loaded"
                elif key in errors or v.error:
                    state = "refused"
                else:
                    state = "available"
                info.update(promoted=n == entry.promoted, state=state if self.dynamic else "remote",
                            error=errors.get(key) or v.error, methods=methods.available(v.kinds))
                rows.append(info)
            out.append({"name": name, "legacy": entry.legacy, "promoted": entry.promoted,
                        "serving": serving.version if serving else None, "versions": rows})
        return out

    def default_ref(self) -> str | None:
        try:
            name = repo_versions.default_name(self._catalog, self.default)
        except ModelNotFound:
            return None
        cur = self._current.get(name)
        return cur.ref if cur else None


def make_registry(settings: Settings, engines: bool = True) -> ModelRegistry:
    """The registry of a process over SEAM_MODELS_DIR. `engines=False`: names and versions only
    (an API whose synchronous requests run on the workers); the fake engine: a static one, set later."""
    if settings.engine == "fake":
        return ModelRegistry(None)
    build = (lambda v: build_version_engine(settings, v)) if engines else None
    return ModelRegistry(settings.models_dir, build, default=settings.default_model,
                         max_pinned=settings.max_pinned_models, warm=settings.warmup)


def served_by(holder: EngineHolder, ref: str | None) -> ServedModel:
    """The model version answering a request naming `ref` (held until the answer is rendered, so a
    swap meanwhile does not change it); a plain EngineHolder (no versions): its engine. Blocks while
    a pinned version loads: call it in a worker thread."""
    if isinstance(holder, ModelRegistry):
        return holder.acquire(ref)
    return ServedModel(ref or "default", 1, "", holder.get(), legacy=True)
