"""What each install gets: one import name, `seam` (no generic `service` or `training` beside the
user's own code); the API (serve extra, API image) the CPU onnxruntime, GPU workers (gpu extra,
worker image) onnxruntime-gpu in its place, never both (they install the same module)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import REPO

EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_extras_pick_one_onnxruntime_build():
    for extra in ("serve", "train"):
        assert "onnxruntime" in _names(EXTRAS[extra]) and "onnxruntime-gpu" not in _names(EXTRAS[extra]), extra
    assert _names(EXTRAS["gpu"]) == {"onnxruntime-gpu"}
    assert "gpu" not in " ".join(EXTRAS["all"])  # all = the CPU build, as the tests use


def _dockerfile_requirements(name: str) -> set[str]:
    """Runs the Dockerfile's own requirements step (python -c ... > /tmp/requirements.txt) on
    pyproject.toml, plus the packages its pip line adds."""
    text = (REPO / "docker" / name).read_text().replace("\\\n", "\n")
    m = re.search(r'RUN python -c "(.*?)"\s*> /tmp/requirements.txt\s*&& pip install -r /tmp/requirements.txt(.*)',
                  text, re.S)
    assert m, f"{name}: requirements step not found"
    code, extra = m.group(1), m.group(2).split("\n")[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return _names(out.split()) | _names(re.findall(r'"([^"]+)"', extra))


def test_api_image_gets_cpu_and_worker_image_gpu_onnxruntime():
    api = _dockerfile_requirements("Dockerfile.api")
    worker = _dockerfile_requirements("Dockerfile.worker")
    assert "onnxruntime" in api and "onnxruntime-gpu" not in api
    assert "onnxruntime-gpu" in worker and "onnxruntime" not in worker
    assert {"fastapi", "celery"} <= api & worker


def _imports(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed packages only
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_installed_under_one_name_only(tmp_path: Path):
    """Outside the checkout (its folders are not on the path) the folders exist only as seam.*."""
    ok = _imports("import seam.service.main, seam.training, seam.cli, seam.common", tmp_path)
    assert ok.returncode == 0, ok.stderr
    for bare in ("service", "training"):
        r = _imports(f"import {bare}", tmp_path)
        assert r.returncode != 0 and f"No module named '{bare}'" in r.stderr, (bare, r.stdout, r.stderr)
