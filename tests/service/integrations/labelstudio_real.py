"""The real Label Studio for the end-to-end test: the pinned PyPI release, in its own virtual
environment (it pins numpy and Django versions of its own, so never in ours), started on
loopback with a throwaway data directory, and the few REST calls the test makes as a user
would in its web UI.

The venv is made by scripts/test.sh, which pins the version (`SEAM_LS_VENV`, default
~/.cache/seam-ls-venv). Not a test module: the real-Label-Studio tests import from here, and
call `require_label_studio()` at import.
"""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from testkit.processes import free_port, log_tail, wait_until
from tests.support import REPO

# read at import: the integration tests' autouse fixture clears SEAM_* from the environment
LS_VENV = Path(os.environ.get("SEAM_LS_VENV") or Path.home() / ".cache" / "seam-ls-venv")
LS_VENV_REQUIRED = "SEAM_LS_VENV" in os.environ  # set by scripts/test.sh, which makes the venv
USER, PASSWORD = "seam-test@example.com", "seam-test-password-1"
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"
DOCS = REPO / "docs" / "labelstudio.md"


def ls_executable() -> Path | None:
    exe = LS_VENV / "bin" / "label-studio"
    return exe if exe.exists() else None


def require_label_studio() -> None:
    """Skip the calling module when Label Studio is not installed, unless scripts/test.sh (which
    installs it) ran us: there a missing venv is a failure, not a skip."""
    if ls_executable() is None and not LS_VENV_REQUIRED:
        pytest.skip(f"no Label Studio venv in {LS_VENV}: scripts/test.sh makes it", allow_module_level=True)


def docs_label_config() -> str:
    """The labelling config docs/labelstudio.md tells the user to paste."""
    block = re.search(r"```xml\n(.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/labelstudio.md has no ```xml block"
    return "\n".join(line.strip() for line in block.group(1).splitlines())


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def ls_environment(data_dir: Path, files_root: Path) -> dict[str, str]:
    """Label Studio's settings for a backend on loopback (as docs/labelstudio.md gives them),
    with nothing that reaches the internet."""
    return {
        "PATH": f"{LS_VENV / 'bin'}:/usr/bin:/bin", "HOME": str(data_dir), "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir / "ls"),
        # the ML backend runs on 127.0.0.1: Label Studio's SSRF guards refuse that by default
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
        # the batch route's tasks point at images Label Studio serves from this directory
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
        # no version check, analytics or error reporting over the network
        "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    }


@dataclass
class LabelStudio:
    url: str
    log: Path
    files_root: Path  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT

    def api(self, token: str = LEGACY_TOKEN, scheme: str = "Token") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"{scheme} {token}"}, timeout=120,
                            trust_env=False)

    def personal_access_token(self) -> str:
        """Account & Settings -> Personal Access Token -> Create (POST /api/token/)."""
        with self.api() as c:
            r = c.post("/api/token/")
            assert r.status_code == 201, r.text
            return r.json()["token"]


@contextmanager
def label_studio(workdir: Path, files_root: Path, timeout: float = 150.0) -> Iterator[LabelStudio]:
    """`label-studio start` on a free loopback port with a fresh database, a user with a legacy
    token (legacy tokens enabled for the organisation), until the block ends."""
    exe = ls_executable()
    assert exe is not None, f"no Label Studio in {LS_VENV} (scripts/test.sh makes it)"
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "label-studio.log"
    port = free_port()
    argv = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
            "--username", USER, "--password", PASSWORD, "--user-token", LEGACY_TOKEN, "--enable-legacy-api-token"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=ls_environment(workdir, files_root), stdout=out, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"label-studio exited ({proc.returncode}):\n{log_tail(log)}")
        try:
            return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        started = time.monotonic()
        wait_until(up, timeout, 0.25, lambda: f"Label Studio at {url}; log:\n{log_tail(log)}")
        (workdir / "startup_s").write_text(f"{time.monotonic() - started:.1f}\n")
        yield LabelStudio(url, log, files_root)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and anything it started
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
