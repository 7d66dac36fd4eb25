"""Settings validation, the torch-free import guarantee, and the deployment files
(no Docker engine here: the compose file is checked by parsing it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from seam.service.core.config import Settings

from tests.support import redis_url

REPO = Path(__file__).resolve().parents[2]


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_API_KEYS", "a" * 16 + ", " + "b" * 20)
    monkeypatch.setenv("SEAM_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("SEAM_BROKER_URL", redis_url(3))
    monkeypatch.setenv("SEAM_MAX_PIXELS", "1000")
    monkeypatch.setenv("SEAM_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.api_keys == ["a" * 16, "b" * 20] and len(s.cors_origins) == 2
    assert s.mode == "celery" and s.max_pixels == 1000 and s.data_dir == tmp_path
    assert s.visibility_timeout > s.task_time_limit_s


def test_settings_defaults(monkeypatch):
    s = Settings()
    assert s.mode == "embedded" and s.models_dir == Path("models") and s.api_keys == []
    assert str(s.data_dir).endswith("seam")


@pytest.mark.parametrize("kw,match", [
    ({"api_keys": ["short"]}, "16 characters"),
    ({"broker_url": "amqp://x"}, "redis"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"max_upload_mb": -1}, "max_upload_mb"),
    ({"task_soft_time_limit_s": 600, "task_time_limit_s": 600}, "soft"),
    ({"visibility_timeout_s": 100, "task_time_limit_s": 600, "task_soft_time_limit_s": 500}, "visibility"),
    ({"allowed_root": "/definitely/not/here"}, "not a directory"),
    ({"key_prefix": "bad prefix!"}, "key_prefix"),
    ({"engine": "torch"}, "engine"),
])
def test_settings_refuse_bad_values(kw, match):
    with pytest.raises(ValidationError, match=match):
        Settings(**kw)


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
    assert set(svc) == {"redis", "api", "worker"}
    redis_cmd = " ".join(svc["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    for name in svc:
        assert "healthcheck" in svc[name] and svc[name]["healthcheck"]["test"], name
    assert svc["api"]["build"]["dockerfile"] == "docker/Dockerfile.api"
    assert svc["worker"]["build"]["dockerfile"] == "docker/Dockerfile.worker"
    dev = svc["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    for name in ("api", "worker"):
        env = svc[name]["environment"]
        assert env["SEAM_BROKER_URL"].startswith("redis://redis:6379")
        assert env["SEAM_DATA_DIR"] == "/data" and env["SEAM_MODELS_DIR"] == "/models"
        vols = svc[name]["volumes"]
        assert "./models:/models:ro" in vols and "job-data:/data" in vols  # shared by api and worker
        assert svc[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) >= {"redis-data", "job-data"}
    assert any(p.endswith(":8000") for p in svc["api"]["ports"])


def test_compose_env_names_are_settings(compose):
    fields = {f"SEAM_{n.upper()}" for n in Settings.model_fields}
    for name in ("api", "worker"):
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
    assert set(cpu["services"]) == {"worker"}
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
