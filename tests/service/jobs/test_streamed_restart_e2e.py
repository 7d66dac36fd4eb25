"""A job over an s3:// prefix survives a SIGKILL of `seam serve` (embedded mode): restarted on the
same data directory, its chunk files re-queue what was unfinished and every image ends exactly once."""
from __future__ import annotations

import httpx
import pytest

from tests.service.fakes import check_results, encode, rgb_image, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow


def test_prefix_job_resumed_after_sigkill(tmp_path, s3_server):
    data = s3_server.create_bucket()
    imgs = {f"im{i:02d}": rgb_image(20 + i % 4, 28 + i % 3, seed=i) for i in range(16)}
    for k, a in imgs.items():
        s3_server.client().put_object(Bucket=data, Key=f"p/{k}.png", Body=encode(a))
    env = {**s3_server.env(), "SEAM_DATASET_BUCKETS": data, "SEAM_FAKE_DELAY_MS": "150", "SEAM_CHUNK_SIZE": "2"}
    with stack(tmp_path, "embedded", **env) as s:
        api = s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.post("/jobs", json={"input_url": f"s3://{data}/p/", "outputs": ["png"]})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_done(c, job_id, 60, until=lambda b: b["done"] >= 4 and b["total"] == 16)
            s.kill(api)
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            body = wait_done(c, job_id, 90)
            assert (body["state"], body["done"], body["failed"], body["total"]) == ("succeeded", 16, 0, 16), body
            check_results(c, job_id, imgs)
