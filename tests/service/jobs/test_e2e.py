"""A job of 40 images end to end with real processes on loopback, in embedded mode and in Celery
mode (Redis, `seam worker`), on the fake engine (SEAM_ENGINE=fake) so no trained model is needed."""
from __future__ import annotations

import httpx
import pytest

from tests.service.fakes import check_results, make_archive, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_job_of_40_images(tmp_path, redis_ok, mode):
    with stack(tmp_path, mode) as s:
        if mode == "celery":
            s.start_worker("w1")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            ready = c.get("/readyz").json()
            assert ready["mode"] == mode and ready["ready"]
            archive, imgs = make_archive(40)
            r = c.post("/jobs", files={"archive": ("a.zip", archive)})
            assert r.status_code == 202, r.text
            done = wait_done(c, r.json()["id"], 60)
            assert (done["state"], done["done"], done["failed"], done["total"]) == ("succeeded", 40, 0, 40), done
            check_results(c, done["id"], imgs)
            metrics = c.get("/metrics").text
            assert 'seam_job_images_total{result="done"} 40.0' in metrics


