"""The import layers, read from the source with `ast` (nothing is imported): the shared
layer (`seam.common`, `seam.modelrepo`) imports neither side; training never imports the
service; the service imports neither training nor torch; only the CLI sees everything.
Imports inside functions count too: a lazy import is still an arrow between layers. And in
tests/ and bench/, nothing imports a test module or a conftest.py; bench/ and testkit/ import
nothing from tests/, and the product (seam/, service/, training/) neither tests/ nor testkit/."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support import NAMESPACED, REPO, module_name

SHARED = ("seam/common", "seam/modelrepo")
# Forbidden targets per layer: a module name equal to one of them or below it.
RULES: dict[str, tuple[str, ...]] = {
    "shared": ("seam.training", "seam.service", "seam.cli", "torch", "torchvision"),
    "training": ("seam.service", "seam.cli"),
    "service": ("seam.training", "seam.cli", "torch", "torchvision"),
}
# The folders' bare names exist only in a checkout: installed, they are seam.service / seam.training.
GENERIC = tuple(NAMESPACED)


def _files(*roots: str) -> list[Path]:
    return sorted(p for r in roots if (REPO / r).is_dir() for p in (REPO / r).rglob("*.py"))


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against `package`,
    by default the one `path` lies in)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from seam.service import engine`
    return found


def _hits(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def violations(layer: str, roots: tuple[str, ...]) -> list[str]:
    out = []
    for path in _files(*roots):
        for name in sorted(imports_of(path)):
            if _hits(name, RULES[layer]):
                out.append(f"{path.relative_to(REPO)} imports {name}")
    return out


def test_the_checker_sees_arrows(tmp_path: Path) -> None:
    """The checker itself: a lazy import, a relative import and a `from pkg import mod` are all arrows."""
    probe = tmp_path / "probe.py"
    probe.write_text("from . import cam\nfrom seam.service import engine\n\ndef f():\n    import torch.nn\n")
    names = imports_of(probe, package="seam.common")
    assert {"seam.common.cam", "seam.service.engine", "torch.nn"} <= names
    assert _hits("torch.nn", RULES["shared"]) and not _hits("torchmetrics_like", ("torch",))


def test_layer_roots_exist() -> None:
    for root in ("seam/common", "seam/modelrepo", "training", "service"):
        assert _files(root), f"{root} has no Python files: the layer test would check nothing"


def test_shared_layer_imports_neither_side() -> None:
    assert violations("shared", SHARED) == []


def test_service_imports_neither_training_nor_torch() -> None:
    assert violations("service", ("service",)) == []


def test_training_does_not_import_service() -> None:
    assert violations("training", ("training",)) == []


def test_no_import_of_the_folders_bare_names() -> None:
    """`import service` works in a checkout but not once installed: every import names seam.service."""
    roots = ("seam", "service", "training", "tests", "testkit", "bench", "scripts")
    out = [f"{p.relative_to(REPO)} imports {n}"
           for p in _files(*roots) for n in sorted(imports_of(p)) if _hits(n, GENERIC)]
    assert out == []


def test_nothing_imports_a_test_module() -> None:
    """Test modules hold tests and conftest.py files fixtures; what several of them (or a
    benchmark) need lives in a helper module (tests/support.py, tests/<dir>/helpers.py, ...)."""
    out = []
    for path in _files("tests", "testkit", "bench"):
        for name in sorted(imports_of(path)):
            parts = name.split(".")
            if parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts[1:]):
                out.append(f"{path.relative_to(REPO)} imports {name}")
    assert out == []


def outward_imports(roots: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """Imports from the files under `roots` of a module named in `forbidden` or below it."""
    return [f"{p.relative_to(REPO)} imports {n}" for p in _files(*roots) for n in sorted(imports_of(p))
            if _hits(n, forbidden)]


def test_the_outward_checker_sees_a_bench_importing_tests(tmp_path: Path, monkeypatch) -> None:
    """A benchmark reaching into tests/ (what bench/inference.py did before testkit/) is reported,
    lazily or not; one importing testkit is not."""
    _probe_tree(tmp_path, monkeypatch, "bench", {
        "a.py": "def f():\n    from tests.training.checkpoints import make_checkpoint\n",
        "b.py": "import tests.support\nfrom testkit.checkpoints import make_checkpoint\n",
    })
    assert outward_imports(("bench",), ("tests",)) == [
        "bench/a.py imports tests.training.checkpoints",
        "bench/a.py imports tests.training.checkpoints.make_checkpoint",
        "bench/b.py imports tests.support"]


def test_bench_and_testkit_import_nothing_from_tests() -> None:
    """What a benchmark shares with the tests lives in testkit/, which stands on its own."""
    assert outward_imports(("bench", "testkit"), ("tests",)) == []


def test_the_product_imports_neither_tests_nor_testkit() -> None:
    assert outward_imports(("seam", "service", "training"), ("tests", "testkit")) == []


# --- floors inside training/ -------------------------------------------------------------
# Bottom first. A subpackage (or top-level module) of seam.training imports only its own
# modules and those of lower floors; the names of one floor are siblings that do not import
# each other. data holds what every stage reads (data sets, augmentation, label PNGs),
# models the networks, evaluation scores what inference writes; trainers, export and the
# per-image label directories (label_dirs) each start from models; the pipeline chains them all.
TRAINING_FLOORS: tuple[tuple[str, ...], ...] = (
    ("data",), ("models",), ("losses", "inference"), ("evaluation",), ("trainers", "export", "label_dirs"),
    ("pipeline",), ("worker",),
)


def _floor_of(module: str, package: str, floors: tuple[tuple[str, ...], ...]) -> tuple[int, str] | None:
    """(floor index, unit name) of `module` inside `package`; None outside it or for the package itself."""
    if not module.startswith(package + "."):
        return None
    unit = module[len(package) + 1:].split(".")[0]
    for level, names in enumerate(floors):
        if unit in names:
            return level, unit
    raise AssertionError(f"{module}: {unit!r} is on no floor of {package}; add it to the floors table")


def floor_violations(files: list[Path], package: str, floors: tuple[tuple[str, ...], ...]) -> list[str]:
    """Imports from a unit of `package` to a sibling on its floor or to a unit on a higher floor."""
    out = []
    for path in files:
        here = _floor_of(module_name(path), package, floors)
        if here is None:
            continue
        targets = {t for t in (_floor_of(n, package, floors) for n in imports_of(path)) if t is not None}
        out += [f"{path.relative_to(REPO)} ({here[1]}) imports {unit}"
                for level, unit in sorted(targets) if unit != here[1] and level >= here[0]]
    return out


def module_cycles(files: list[Path]) -> list[list[str]]:
    """Import cycles between the modules of `files` (lazy imports count), one list per cycle."""
    names = {module_name(p): p for p in files}
    graph = {m: sorted(n for n in imports_of(p) if n in names and n != m) for m, p in names.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's strongly connected components
        order[m] = low[m] = len(order)
        stack.append(m)
        for n in graph[m]:
            if n not in order:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], order[n])
        if low[m] == order[m]:
            comp = [stack.pop()]
            while comp[-1] != m:
                comp.append(stack.pop())
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in graph:
        if m not in order:
            visit(m)
    return cycles


def _probe_tree(tmp_path: Path, monkeypatch, root: str, sources: dict[str, str]) -> list[Path]:
    """A throw-away `root/` package of the given modules, read as if it were the repository's."""
    for rel, text in sources.items():
        (tmp_path / root / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / root / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules["tests.support"], "REPO", tmp_path)
    return sorted((tmp_path / root).rglob("*.py"))


def test_the_floor_checker_sees_up_going_imports(tmp_path: Path, monkeypatch) -> None:
    """A data module importing evaluation (the loop the issue named), a sibling import on one
    floor and a two-module cycle are all reported; a down-going import is not."""
    files = _probe_tree(tmp_path, monkeypatch, "training", {
        "data/augment.py": "from seam.training.evaluation.evaluate import read_label_png\n",
        "evaluation/evaluate.py": "from seam.training.data import augment\n",
        "trainers/loop.py": "def f():\n    from seam.training.export import specs\n",
        "export/specs.py": "import numpy\n",
    })
    found = floor_violations(files, "seam.training", TRAINING_FLOORS)
    assert found == ["training/data/augment.py (data) imports evaluation",
                     "training/trainers/loop.py (trainers) imports export"]
    assert module_cycles(files) == [["seam.training.data.augment", "seam.training.evaluation.evaluate"]]


def test_training_floors() -> None:
    assert floor_violations(_files("training"), "seam.training", TRAINING_FLOORS) == []


def test_no_import_cycles_in_training() -> None:
    assert module_cycles(_files("training")) == []


# --- floors inside service/ ---------------------------------------------------------------
# Bottom first (docs/architecture.md, "Floors inside the service"). engine: inference on ONNX,
# knowing nothing of the service; core: settings, errors, limits, metrics, the engine holder,
# the broker's Celery app and the worker liveness records; outputs: the output-kinds table and
# the files and bodies made from engine results; then the request schemas, the data directory
# and input decoding; archives; jobs and realtime (the two kinds of work, siblings); worker (the
# Celery tasks running both); api (routes); integrations (the labelling tools' routes); main.
SERVICE_FLOORS: tuple[tuple[str, ...], ...] = (
    ("engine",), ("fake_engine", "batching"), ("core",), ("blobs",), ("outputs",),
    ("schemas", "storage", "inputs"), ("archives", "object_storage", "model_sync", "datasets"),
    ("jobs", "realtime", "corrections"),
    ("worker", "trainings"), ("api",), ("integrations",), ("main",),
)


def test_the_floor_checker_sees_the_service_arrows_the_issue_named(tmp_path: Path, monkeypatch) -> None:
    """jobs -> worker (dispatch), outputs -> integrations, realtime <-> jobs (siblings) and the
    jobs <-> worker cycle are reported; worker -> realtime and api -> jobs (down) are not."""
    files = _probe_tree(tmp_path, monkeypatch, "service", {
        "jobs/dispatch.py": "def f():\n    from seam.service.worker.tasks import app\n",
        "worker/tasks.py": ("from seam.service.jobs import dispatch\n"
                            "from seam.service.realtime.server import RealtimeServer\n"),
        "realtime/server.py": "from seam.service.jobs.access import visible_snapshot\n",
        "outputs/kinds.py": "from seam.service.integrations import exports\n",
        "integrations/exports.py": "import numpy\n",
        "api/jobs.py": "from seam.service.jobs.dispatch import TASK_NAME\n",
    })
    assert floor_violations(files, "seam.service", SERVICE_FLOORS) == [
        "service/jobs/dispatch.py (jobs) imports worker",
        "service/outputs/kinds.py (outputs) imports integrations",
        "service/realtime/server.py (realtime) imports jobs",
    ]
    assert module_cycles(files) == [["seam.service.jobs.dispatch", "seam.service.worker.tasks"]]


def test_service_floors() -> None:
    assert floor_violations(_files("service"), "seam.service", SERVICE_FLOORS) == []


def test_no_import_cycles_in_service() -> None:
    assert module_cycles(_files("service")) == []
