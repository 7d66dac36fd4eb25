"""Deployment: the torch-free import guarantee, `seam serve` / `seam worker` registered, the
deployment files (no Docker engine here: the compose file is checked by parsing it) and the
docs naming every endpoint and setting."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from seam.service.core.config import Settings

from testkit import REPO


def test_service_never_imports_torch():
    code = (
        "import sys\n"
        "import seam.service.main, seam.service.worker.tasks, seam.service.jobs.dispatch\n"
        "import seam.cli.serve, seam.cli.worker\n"
        "from seam.service.core.config import Settings\n"
        "from fastapi.testclient import TestClient\n"
        "import tempfile\n"
        "app = seam.service.main.create_app(Settings(engine='fake', data_dir=tempfile.mkdtemp()))\n"
        "with TestClient(app) as c:\n"
        "    assert c.get('/healthz').status_code == 200\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training')))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_registers_serve_and_worker():
    from typer.main import get_command

    from seam.cli import app

    assert {"serve", "worker"} <= set(get_command(app).commands)  # the images' entry points


# --- deployment files ---------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services(compose):
    svc = compose["services"]
    assert set(svc) == {"redis", "api", "worker", "trainer"}
    redis_cmd = " ".join(svc["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    for name in svc:
        assert "healthcheck" in svc[name] and svc[name]["healthcheck"]["test"], name
    assert svc["api"]["build"]["dockerfile"] == "docker/Dockerfile.api"
    assert svc["worker"]["build"]["dockerfile"] == "docker/Dockerfile.worker"
    assert svc["trainer"]["build"]["dockerfile"] == "docker/Dockerfile.trainer"
    for name in ("worker", "trainer"):
        dev = svc[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    for name in ("api", "worker", "trainer"):
        env = svc[name]["environment"]
        assert env["SEAM_BROKER_URL"].startswith("redis://redis:6379")
        assert env["SEAM_DATA_DIR"] == "/data" and env["SEAM_MODELS_DIR"] == "/models"
        vols = svc[name]["volumes"]
        # one model repository and one data volume for all; the API (promotions) and the trainer
        # (new versions) write the repository, the workers only read it
        models = "${SEAM_MODELS:-./models}:/models" + (":ro" if name == "worker" else "")
        assert models in vols and "job-data:/data" in vols
        assert svc[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) >= {"redis-data", "job-data"}
    assert any(p.endswith(":8000") for p in svc["api"]["ports"])


def test_compose_env_names_are_settings(compose):
    fields = {f"SEAM_{n.upper()}" for n in Settings.model_fields}
    for name in ("api", "worker", "trainer"):
        for key in compose["services"][name]["environment"]:
            assert key in fields, f"{name}: {key} is not a setting"


class _ComposeLoader(yaml.SafeLoader):
    """Compose v2's merge tags: `!reset` (drop the value) and `!override` (replace it)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset",))
_ComposeLoader.add_multi_constructor("!override", lambda loader, suffix, node: ("!override",))


def test_compose_cpu_override(compose):
    """docker-compose.cpu.yml only takes the GPU away from the worker (the real run of both
    files together is scripts/compose-test.sh)."""
    cpu = yaml.load((REPO / "docker-compose.cpu.yml").read_text(), Loader=_ComposeLoader)
    assert set(cpu["services"]) == {"worker", "trainer"}
    assert cpu["services"]["trainer"]["deploy"] == ("!reset",)
    worker = cpu["services"]["worker"]
    assert worker["deploy"] == ("!reset",)  # the nvidia reservation Docker refuses without the toolkit
    assert worker["environment"] == {"SEAM_PROVIDERS": "cpu"}
    assert "deploy" in compose["services"]["worker"] and set(worker) == {"deploy", "environment"}
    fields = {f"SEAM_{n.upper()}" for n in Settings.model_fields}
    assert set(worker["environment"]) <= fields


def test_dockerignore_keeps_data_out_but_sources_in():
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {"datasets", "models", ".git", "runs"} <= ignored
    for dockerfile in (REPO / "docker").glob("Dockerfile.*"):
        for src in re.findall(r"^COPY\s+(?!--)(.+?)\s+\S+$", dockerfile.read_text(), re.M):
            for path in src.split():
                assert path.rstrip("*") not in ignored, f"{dockerfile.name} copies ignored {path}"


def test_compose_test_script_is_valid_bash():
    script = REPO / "scripts" / "compose-test.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "docker-compose.cpu.yml" in text and "down -v" in text and "docker kill" in text


def test_dockerfiles():
    api = (REPO / "docker" / "Dockerfile.api").read_text()
    worker = (REPO / "docker" / "Dockerfile.worker").read_text()
    train = (REPO / "docker" / "Dockerfile.train").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", api, re.M) and ".[serve]" in api
    assert not re.search(r"pip install[^\n]*(torch|\[train)", api)
    assert "'torch' not in sys.modules" in api and "'torch' not in sys.modules" in worker  # checked at build
    assert "COPY training" not in api and "COPY training" not in worker
    assert re.search(r"^FROM nvidia/cuda:\S+runtime", worker, re.M) and "onnxruntime-gpu" in worker
    assert "--pool prefork -c 1" in worker
    assert "torch" in train and ".[train" in train
    trainer = (REPO / "docker" / "Dockerfile.trainer").read_text()
    assert ".[trainer]" in trainer and "'seam.service' not in sys.modules" in trainer  # checked at build
    assert "COPY training" in trainer and "seam trainer" in trainer and "HEALTHCHECK" in trainer
    assert "USER " in trainer
    for text in (api, worker):
        assert "HEALTHCHECK" in text and "USER " in text


def test_docs_cover_every_endpoint_and_setting():
    doc = (REPO / "docs" / "service.md").read_text()
    for ep in ("POST /segment", "POST /cam", "POST /cam/refined", "POST /jobs", "GET /jobs/{id}",
               "GET /jobs/{id}/results", "DELETE /jobs/{id}", "GET /jobs", "GET /healthz", "GET /readyz",
               "GET /metrics", "GET /models"):
        assert ep in doc, ep
    assert doc.count("curl ") >= 12
    for name in Settings.model_fields:
        assert f"SEAM_{name.upper()}" in doc, name
    assert "SEAM_ENGINE=fake" in doc and "docker compose" in doc
