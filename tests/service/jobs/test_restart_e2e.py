"""A real `seam serve` process (embedded mode, fake engine) SIGKILLed mid-job and started again
on the same data directory: the job completes with every output exactly once."""
from __future__ import annotations

import httpx
import pytest

from tests.service.fakes import check_results, make_archive, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow

KEY = "restart-e2e-key-" + "k" * 8


def test_sigkill_of_seam_serve_mid_job_then_restart(tmp_path):
    with stack(tmp_path, "embedded", SEAM_FAKE_DELAY_MS="120", SEAM_API_KEYS=KEY) as s:
        api = s.start_api()
        archive, imgs = make_archive(24)
        with httpx.Client(base_url=s.url, timeout=30, headers={"X-API-Key": KEY}) as c:
            r = c.post("/jobs", files={"archive": ("a.zip", archive, "application/zip")}, data={"outputs": "png"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_done(c, job_id, 60, until=lambda b: b["done"] >= 6)
            s.kill(api)  # SIGKILL: no shutdown hook runs
        out = tmp_path / "data" / "jobs" / job_id / "outputs" / "png"
        before = {p.name: p.stat().st_ino for p in out.iterdir() if p.suffix == ".png"}
        assert 6 <= len(before) < 24, before

        s.start_api()  # same data directory: the job is resumed from its SQLite state
        with httpx.Client(base_url=s.url, timeout=30, headers={"X-API-Key": KEY}) as c:
            body = wait_done(c, job_id, 90)
            assert (body["state"], body["done"], body["failed"], body["total"]) == ("succeeded", 24, 0, 24), body
            check_results(c, job_id, imgs)  # every image exactly once, the right label map
        after = {p.name: p.stat().st_ino for p in out.iterdir()}
        assert sorted(after) == sorted(f"{k}.png" for k in imgs)
        assert all(after[n] == ino for n, ino in before.items())  # outputs done before the kill: not redone
        assert not (tmp_path / "data" / "jobs" / job_id / "inputs").exists()  # inputs freed at the end


