"""Submitting jobs under limits: concurrent submissions against SEAM_MAX_ACTIVE_JOBS (atomic
reservations) and the data quota."""
from __future__ import annotations

import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

from tests.service.fakes import (
    GatedEngine,
    assert_error,
    png_bytes,
    post_job,
    zip_bomb,
    zip_bytes,
)


def test_data_quota(app_client):
    c = app_client(max_data_bytes=64 * 1024)
    c.app.state.storage.forget_usage()
    big = zip_bytes({f"{i}.png": os.urandom(30_000) for i in range(4)}, compression=zipfile.ZIP_STORED)
    err = assert_error(post_job(c, big), 507, "insufficient_storage", "storage is full")
    assert "/" not in err["message"]
    # a small upload that would expand past what is left of the quota: refused while extracting
    c2 = app_client(max_data_bytes=(c.app.state.storage.usage_bytes(max_age_s=0) + 400_000),
                    max_expansion_ratio=100_000, data_dir=c.app.state.settings.data_dir.parent / "q2")
    assert_error(post_job(c2, zip_bomb(4 << 20)), 413, "archive_too_large", "SEAM_MAX_DATA_BYTES")
    assert c2.app.state.storage.job_ids() == []


def test_ten_concurrent_submissions_against_a_limit_of_three(app_client, mode):
    engine = GatedEngine(hold_s=30)
    c = app_client(mode, engine=engine, warmup=False, max_active_jobs=3)
    archive = zip_bytes({f"{i}.png": png_bytes(16, 16, seed=i) for i in range(40)})
    barrier = threading.Barrier(10)

    def go(_):
        barrier.wait()
        return post_job(c, archive)

    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(go, range(10)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] * 3 + [503] * 7, codes
        for r in answers:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "queue_full"
        assert len(c.app.state.storage.job_ids()) == 3  # the refused ones left nothing behind
    finally:
        engine.gate.set()
