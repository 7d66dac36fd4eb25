"""The service side runs on numpy, onnxruntime and Pillow: importing it (and running the
engine) must never pull in torch or the training package."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import REPO, module_name

# Every module of the torch-free layers, found in the source tree: a module added, renamed or
# moved is checked without anyone editing a list, and a removed one is never silently skipped.
TORCH_FREE_ROOTS = ("service", "seam/common", "seam/modelrepo")
# These must be among them (the app, the workers, the engine and the model contract): the test
# fails when one is missing rather than checking less than it says.
REQUIRED = ["seam.service.main", "seam.service.worker.tasks", "seam.service.worker.celery_app",
            "seam.service.engine.onnx_engine", "seam.modelrepo.manifest", "seam.modelrepo.runtime",
            "seam.modelrepo.pcm"]


def torch_free_modules() -> list[str]:
    return [module_name(path) for root in TORCH_FREE_ROOTS for path in sorted((REPO / root).rglob("*.py"))]


def test_module_list_is_current():
    found = torch_free_modules()
    assert len(found) > 20, found
    missing = [m for m in REQUIRED if m not in found]
    assert not missing, f"REQUIRED names modules that no longer exist: {missing}"


def run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_service_imports_without_torch():
    r = run_isolated(f"""
        import importlib, sys
        for name in {torch_free_modules()!r}:
            importlib.import_module(name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "training", "torchvision"))
        print("LOADED", bad)
        assert not bad, bad
    """)
    assert r.returncode == 0, r.stdout + r.stderr


def test_engine_runs_without_torch(tmp_path):
    """Build a model with onnx.helper, load it and run CAMs, all in a torch-free process."""
    r = run_isolated(f"""
        import sys
        from pathlib import Path
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from tests.service.fakes.onnx_models import write_model
        from seam.service.engine.onnx_engine import OnnxEngine
        write_model(Path({str(tmp_path)!r}), "m")
        eng = OnnxEngine(Path({str(tmp_path)!r}), threads=1)
        rgb = np.zeros((20, 30, 3), np.uint8)
        res = eng.segment(rgb, [0])
        demo = Path({str(REPO / "models" / "seam-demo")!r})
        if (demo / "manifest.json").is_file():
            OnnxEngine.from_model_dir(demo, threads=1).segment(rgb)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "training"))
        assert not bad, bad
        assert res.label.shape == (20, 30)
    """)
    assert r.returncode == 0, r.stdout + r.stderr
