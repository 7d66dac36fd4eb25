"""The segmentation methods: ONE table, the single source for every place that knows them.

An entry gives a method the models it needs (manifest kinds), its runner (`runners/`), where it
may run (synchronous requests, batch jobs), which CAMs it starts from and the texts the API and
the web page show. Everything else reads this table: the engines' `methods()` (the entries whose
models are loaded) and their dispatch (`Method.run`), the memory estimate (`cams`, `footprint`),
the request schemas' `method` fields and their OpenAPI enum (`seam.service.schemas.MethodName`),
the Label Studio and CVAT settings, the checks of a request's method
(`seam.service.core.engine_holder.resolve_method`), the CAMs a job's npz output holds, and
`GET /models` (what each model offers; the web page's method lists). The table's order is the
order of preference: the default method is the first one the loaded models can run. Adding a
method is one `register(Method(...))` (docs/architecture.md, "Add a method").
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from seam.service.engine.runners import deeplab, random_walk
from seam.service.engine.runners.host import FootprintFn, SegmentRunner
from seam.service.engine.runners.thresholded import thresholded

from seam.modelrepo.manifest import MODEL_KINDS

Place = Literal["sync", "jobs"]
# sync: POST /segment and the labelling tools' predictions; jobs: POST /jobs
PLACES: tuple[Place, ...] = ("sync", "jobs")
CamsKind = Literal["raw", "refined"]


@dataclass(frozen=True)
class Method:
    """One method. `models`: the manifest kinds it needs, the first being the one whose working side
    and scales size a request. `cams`: the CAMs it computes (and a job's npz output holds), None
    when it computes none (its npz then holds the refined ones). `plain_threshold`: its mask is
    just `cams` above the background threshold, which the web page recomputes itself as its slider
    moves. `footprint`: the memory of its own passes beyond the CAMs, for the engine's estimate."""

    name: str
    models: tuple[str, ...]
    run: SegmentRunner
    label: str
    description: str
    where: frozenset[Place] = frozenset(PLACES)
    cams: CamsKind | None = "refined"
    plain_threshold: bool = False
    footprint: FootprintFn | None = None

    def public(self) -> dict:
        """What `GET /models` says of this method."""
        return {"name": self.name, "label": self.label, "description": self.description, "models": list(self.models),
                "where": [p for p in PLACES if p in self.where], "cams": self.cams,
                "plain_threshold": self.plain_threshold}


METHODS: dict[str, Method] = {}


def register(method: Method, before: str | None = None) -> Method:
    """Add `method` to the table, last or just before the entry `before` (its place is its preference)."""
    if not method.name.isidentifier() or method.name in METHODS:
        raise ValueError(f"method name {method.name!r} is not a new identifier")
    bad = [k for k in method.models if k not in MODEL_KINDS]
    if not method.models or bad:
        raise ValueError(f"method {method.name!r}: models must name model kinds ({', '.join(MODEL_KINDS)}), "
                         f"got {list(method.models)}")
    if not method.where or not set(method.where) <= set(PLACES):
        raise ValueError(f"method {method.name!r}: where must be a non-empty subset of {PLACES}")
    if method.plain_threshold and method.cams is None:
        raise ValueError(f"method {method.name!r}: a plain threshold needs the CAMs it thresholds (cams)")
    entries = list(METHODS.values())
    at = len(entries) if before is None else [m.name for m in entries].index(get(before).name)
    entries.insert(at, method)
    METHODS.clear()
    METHODS.update((m.name, m) for m in entries)
    return method


def method_names() -> list[str]:
    return list(METHODS)


def check_name(name: str) -> str:
    """`name` when it is a known method; else ValueError naming the known ones (a 422 in requests)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return name


def help_text() -> str:
    """'name: description; ...' of every method, for the API's help."""
    return "; ".join(f"{m.name}: {m.description}" for m in METHODS.values())


def get(name: str) -> Method:
    return METHODS[check_name(name)]


def available(kinds: Iterable[str]) -> list[str]:
    """The methods that models of these kinds can run, best first."""
    have = set(kinds)
    return [m.name for m in METHODS.values() if set(m.models) <= have]


def runnable(names: Sequence[str], where: Place) -> list[str]:
    """Those of `names` (an engine's methods) that may run in `where`, in their order."""
    return [n for n in names if n in METHODS and where in METHODS[n].where]


def best(names: Sequence[str], where: Place) -> str | None:
    """The default method in `where` among an engine's methods (None: it has none there)."""
    usable = runnable(names, where)
    return usable[0] if usable else None


def _builtin() -> None:
    register(Method(
        "deeplab", ("deeplab",), deeplab.run, "DeepLab",
        "DeepLab trained on the pseudo-labels, the paper's final step (multi-scale softmax, argmax)", cams=None))
    register(Method(
        "rw", ("seam", "affinity"), random_walk.run, "random walk",
        "the PCM-refined CAMs propagated by AffinityNet's random walk (the release's pseudo-labels)",
        footprint=random_walk.footprint))
    register(Method(
        "pcm", ("seam",), thresholded(refined=True), "PCM-refined CAMs",
        "SEAM's PCM-refined class activation maps above the background threshold", plain_threshold=True))
    register(Method(
        "cam", ("seam",), thresholded(refined=False), "raw CAMs",
        "SEAM's raw class activation maps above the background threshold", cams="raw", plain_threshold=True))


_builtin()
