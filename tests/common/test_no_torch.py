"""The service side runs on numpy, onnxruntime and Pillow: importing it (and running the
engine) must never pull in torch or the training package."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ["service", "service.engine", "service.engine.base", "service.engine.manifest",
           "service.engine.runtime", "service.engine.onnx_engine"]
# the app / workers, when they exist in this checkout
OPTIONAL = ["service.main", "service.app", "service.api.app", "service.worker.tasks", "service.worker.celery_app"]


def run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_service_imports_without_torch():
    r = run_isolated(f"""
        import importlib, importlib.util, sys
        for name in {MODULES!r}:
            importlib.import_module(name)
        for name in {OPTIONAL!r}:
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                found = False
            if found:
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
        from tests.service.test_engine import write_model
        from service.engine.onnx_engine import OnnxEngine
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
