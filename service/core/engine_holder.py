"""Building, warming and holding the inference engine.

`build_engine(settings)` is the only place that picks an implementation: the
onnxruntime engine over `settings.models_dir`, or the fake engine when
`SEAM_ENGINE=fake`. The import is lazy so the API starts (and answers /healthz and
a 503 /readyz) even when the model repository is missing or broken.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.engine import methods
from seam.service.engine.base import InferenceEngine

from seam.modelrepo.versions import ModelVersion

log = logging.getLogger("seam.service")


def build_engine(settings: Settings) -> InferenceEngine:
    if settings.engine == "fake":
        from seam.service.fake_engine import FakeEngine

        return FakeEngine(delay_ms=settings.fake_delay_ms)
    from seam.service.engine.onnx_engine import OnnxEngine

    return OnnxEngine(settings.models_dir, providers=settings.providers, threads=settings.threads,
                      max_side=settings.max_side, memory_budget=settings.memory_budget_mb << 20)


def build_version_engine(settings: Settings, version: ModelVersion) -> InferenceEngine:
    """The onnxruntime engine over one version of the repository (its kinds' model dirs); the
    registry has verified the checksums already."""
    from seam.service.engine.onnx_engine import OnnxEngine

    engine = OnnxEngine(version.path, providers=settings.providers, threads=settings.threads, verify=False,
                        max_side=settings.max_side, memory_budget=settings.memory_budget_mb << 20,
                        _model_dirs=list(version.dirs.values()))
    if not version.legacy:  # a version's dirs are named 1/ or seam/: report the model's name
        for loaded in engine._models.values():
            loaded.name = version.name
    return engine


def warm_up(engine: InferenceEngine) -> None:
    """One small inference per available method so the first request pays no session set-up."""
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)
    methods = engine.methods()
    if not methods:
        engine.cam(rgb, refined=False)
        return
    engine.segment(rgb, method=methods[0])


class EngineHolder:
    """The engine of one process plus its readiness; loading may run in a thread."""

    def __init__(self) -> None:
        self.engine: InferenceEngine | None = None
        self.error: str | None = None
        self.loading = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.error is None

    def set(self, engine: InferenceEngine, warm: bool = True) -> None:
        if warm:
            warm_up(engine)
        self.engine, self.error = engine, None
        self._done.set()

    def load(self, build: Callable[[], InferenceEngine], warm: bool = True) -> None:
        with self._lock:
            self.loading = True
            try:
                self.set(build(), warm)
                log.info("engine ready")
            except Exception as exc:  # report through /readyz, keep the API up
                log.exception("engine failed to load")
                self.engine, self.error = None, f"{type(exc).__name__}: {exc}"
            finally:
                self.loading = False
                self._done.set()

    def wait(self, timeout: float) -> bool:
        """Block until a load attempt has finished (or an engine was set)."""
        return self.engine is not None or self._done.wait(timeout)

    def load_in_background(self, build: Callable[[], InferenceEngine], warm: bool = True) -> threading.Thread:
        self.loading = True
        t = threading.Thread(target=self.load, args=(build, warm), name="seam-engine-load", daemon=True)
        t.start()
        return t

    def get(self) -> InferenceEngine:
        if self.engine is not None:
            return self.engine
        if self.loading or self.error is None:
            raise ApiError(503, "not_ready", "models are still loading; retry shortly", {"Retry-After": "5"})
        raise ApiError(503, "not_ready", f"no model is loaded: {self.error}", {"Retry-After": "30"})


def resolve_method(engine: InferenceEngine, wanted: str | None, name: str = "method",
                   where: methods.Place = "sync") -> str:
    """`wanted`, else the best method the loaded models offer in `where` (the methods table says
    where each may run). 422 naming `name` (the field or setting it came from) when the models
    cannot run it there; 503 when they offer none."""
    offered = engine.methods()
    available = methods.runnable(offered, where)
    if not available:
        raise ApiError(503, "not_ready", "the loaded model repository offers no segmentation method"
                       + (f" for {where}" if offered else ""))
    if wanted is None:
        return available[0]
    if wanted not in available:
        elsewhere = (f" in {where} (it runs only in {', '.join(sorted(methods.get(wanted).where))})"
                     if wanted in offered else "")
        raise ApiError(422, "method_unavailable", f"{name} {wanted!r} is not available with the loaded models"
                                                  f"{elsewhere}; available: {', '.join(available)}")
    return wanted
