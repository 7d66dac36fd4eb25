"""A 1,000,000-line manifest is accepted with flat API memory: read as a stream, chunked as read
and counted exactly once per line (total = lines, failed = the malformed ones), while the API's
resident memory stays far below the manifest's size. Real `seam serve` (Celery mode: the chunks go
to Redis; no worker runs, so nothing is processed and the job is cancelled after the count), the
manifest in a real S3-compatible server (SeaweedFS)."""
from __future__ import annotations

import json
import time

import httpx
import psutil
import pytest

from testkit.processes import seam_serve_argv, wait_until
from tests.service.fakes import stack
from tests.support import wait_done

pytestmark = pytest.mark.slow

LINES = 1_000_000
BAD_EVERY = 100_000  # lines 100000, 200000, ...: malformed


def _write_manifest(path, bucket: str) -> int:
    with path.open("w") as f:
        for i in range(1, LINES + 1):
            if i % BAD_EVERY == 0:
                f.write("{not json\n")
            else:
                f.write(json.dumps({"uri": f"s3://{bucket}/big/set/dir-{i % 997:03d}/image-{i:07d}.jpg",
                                    "labels": ["red"] if i % 3 else []}) + "\n")
    return path.stat().st_size


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_million_line_manifest_with_flat_api_memory(tmp_path, redis_ok, s3_server):
    data = s3_server.create_bucket()
    manifest = tmp_path / "m.jsonl"
    size = _write_manifest(manifest, data)
    s3_server.client().upload_file(str(manifest), data, "lists/big.jsonl")
    manifest.unlink()
    env = {**s3_server.env(), "SEAM_DATASET_BUCKETS": data, "SEAM_CHUNK_SIZE": "1000",
           "SEAM_DATASET_MAX_QUEUED_CHUNKS": "5000", "SEAM_SYNC_INFERENCE": "api"}  # the API knows the classes
    with stack(tmp_path, "celery", **env) as s:
        # no worker: /readyz would wait for one, so the API is up once /healthz answers
        api = s._spawn([*seam_serve_argv(s.port), "--log-level", "warning"], "api")
        wait_until(lambda: _healthy(s.url), 60, 0.2, lambda: s.logs("api"))
        proc = psutil.Process(api.pid)
        with httpx.Client(base_url=s.url, timeout=30) as c:
            base = proc.memory_info().rss
            r = c.post("/jobs", json={"input_url": f"s3://{data}/lists/big.jsonl",
                                      "output_url": f"s3://{data}/big-out/"})
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            peak, t0, body, warm = base, time.monotonic(), {}, None
            while time.monotonic() - t0 < 400:
                rss = proc.memory_info().rss
                peak = max(peak, rss)
                body = c.get(f"/jobs/{job}").json()
                if warm is None and body["total"] > 50_000:  # reading runs: its clients and buffers exist
                    warm = rss
                if body["total"] == LINES:  # while reading: read so far + 1 (never equal before the end)
                    break
                time.sleep(0.25)
            read_s = time.monotonic() - t0
            assert body["total"] == LINES, body  # every line counted once: 999,990 queued + 10 failed
            assert body["failed"] == LINES // BAD_EVERY and body["done"] == 0, body
            assert body["state"] == "queued" and warm is not None
            mib = 2 ** 20
            print(f"\n1M-line manifest ({size / 1e6:.0f} MB): read in {read_s:.1f} s; API RSS {base / mib:.0f} MiB "
                  f"before, {warm / mib:.0f} MiB after 50k lines, peak {peak / mib:.0f} MiB "
                  f"(+{(peak - warm) / mib:.1f} MiB over the remaining 950k lines)")
            # flat: the S3 client and reader's buffers are made once (first 50k lines); the other
            # 950k lines add next to nothing, far below the manifest's size
            assert peak - warm < 24 * mib, (peak, warm)
            assert peak - base < 64 * mib, (peak, base)  # all told (boto3's S3 client is ~40 MiB of it)
            assert c.delete(f"/jobs/{job}").json()["state"] == "cancelled"
            wait_done(c, job, 30)
