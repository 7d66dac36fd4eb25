"""Many hosts, tested on one: `seam serve` and three `seam worker`s as if on separate machines.
Each has its own working directory, data directory and model directory; they share nothing
but Redis and a real S3 server (SeaweedFS, testkit/s3server.py). The model repository lives in
the bucket (SEAM_MODELS_URL) and every host syncs it; the job reads its images from an S3
prefix and writes its outputs and results manifest to another (output_url). One worker is
SIGKILLed mid-job: the other two finish the job, and every output exists exactly once."""
from __future__ import annotations

import collections
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from contextlib import suppress
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from seam.service.blobs.stores import open_blob_store
from seam.service.model_sync import push_repository

from seam.modelrepo.versions import list_models, resolve, version_digest
from testkit import REPO
from testkit.processes import free_port, log_tail, service_env, wait_ready, wait_until
from tests.service.fakes.redis_db import REDIS_DB, drop_keys, redis_client
from tests.support import redis_url, wait_done

pytestmark = pytest.mark.slow

N_IMAGES = 36
SIDE = 192  # ~0.1-0.2 s per image on the demo model with 1 thread: the job lasts long enough to kill a worker in it


class Hosts:
    """Processes with nothing on disk in common: host `name` lives in tmp/<name>/."""

    def __init__(self, tmp: Path, common_env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = common_env
        self.procs: dict[str, subprocess.Popen] = {}

    def home(self, name: str) -> Path:
        return self.tmp / name

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        home = self.home(name)
        (home / "cwd").mkdir(parents=True, exist_ok=True)
        env = {**self.env, "SEAM_DATA_DIR": str(home / "data"), "SEAM_MODELS_DIR": str(home / "models"),
               "HOME": str(home), "TMPDIR": str(home / "cwd")}
        with (home / "log.txt").open("ab") as out:
            p = subprocess.Popen(argv, cwd=home / "cwd", env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs[name] = p
        return p

    def kill(self, name: str) -> None:
        """SIGKILL the host's process group (a worker's main process and its pool child)."""
        p = self.procs[name]
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{log_tail(self.home(n) / 'log.txt', 2500)}" for n in self.procs)


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    a = np.full((SIDE, SIDE, 3), rng.integers(60, 140, 3), np.uint8)
    y, x = rng.integers(0, SIDE // 2, 2)
    a[y:y + SIDE // 3, x:x + SIDE // 3] = rng.integers(150, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_api_and_three_workers_share_only_redis_and_s3(tmp_path, redis_ok, s3_server, s3_bucket):
    prefix = f"seamhosts-{uuid.uuid4().hex[:8]}"
    env = service_env(**s3_server.env(), **{
        "PYTHONPATH": str(REPO), "SEAM_BROKER_URL": redis_url(REDIS_DB), "SEAM_KEY_PREFIX": prefix,
        "SEAM_STORAGE_URL": f"s3://{s3_bucket}/data", "SEAM_MODELS_URL": f"s3://{s3_bucket}/models",
        "SEAM_MODELS_SYNC_S": "5", "SEAM_DATASET_BUCKETS": s3_bucket, "SEAM_THREADS": "1", "OMP_NUM_THREADS": "1",
        "SEAM_CHUNK_SIZE": "3", "SEAM_WORKER_HEARTBEAT_S": "1", "SEAM_TASK_SOFT_TIME_LIMIT_S": "20",
        "SEAM_TASK_TIME_LIMIT_S": "25", "SEAM_VISIBILITY_TIMEOUT_S": "30", "SEAM_WARMUP": "false"})
    # the model repository and the data set are in the bucket, nowhere else
    os.environ.update(s3_server.env())
    pushed = push_repository(open_blob_store(f"s3://{s3_bucket}/models"), REPO / "models")
    assert pushed == ["seam-demo"]
    s3 = s3_server.client()
    for i in range(N_IMAGES):
        s3.put_object(Bucket=s3_bucket, Key=f"datasets/run1/img{i:03d}.jpg", Body=_jpeg(i))
    hosts = Hosts(tmp_path, env)
    try:
        for w in ("w1", "w2", "w3"):
            hosts.start(w, [sys.executable, "-m", "seam.cli", "worker", "--hostname", f"{w}@%h",
                            "--loglevel", "warning"])
        port = free_port()
        api = hosts.start("api", [sys.executable, "-m", "seam.cli", "serve", "--host", "127.0.0.1",
                                  "--port", str(port), "--log-level", "warning"])
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, api, hosts.home("api") / "log.txt", timeout=90, interval=0.2)
        _run_and_kill(url, hosts, s3, s3_bucket)
        # every host synced the same, verified model from the bucket into its own directory
        want = version_digest(resolve(REPO / "models", "seam-demo"))
        for name in ("api", "w1", "w2", "w3"):
            models = hosts.home(name) / "models"
            assert list(list_models(models)) == ["seam-demo"], name
            assert version_digest(resolve(models, "seam-demo")) == want, name
    except BaseException:
        print(hosts.logs())
        raise
    finally:
        hosts.stop()
        drop_keys(redis_client(), prefix)


def _object(s3, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def _run_and_kill(url: str, hosts: Hosts, s3, bucket: str) -> None:
    out = f"s3://{bucket}/results/run1/"
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/jobs", json={"input_url": f"s3://{bucket}/datasets/run1/", "output_url": out,
                                  "outputs": ["png"]})
        assert r.status_code == 202, r.text
        job = r.json()
        mid = wait_done(c, job["id"], 60, until=lambda b: b["done"] >= 6)
        assert mid["state"] == "running", mid
        hosts.kill("w2")
        assert c.get(f"/jobs/{job['id']}").json()["done"] < N_IMAGES, "the job ended before the kill: slow it down"
        done = wait_done(c, job["id"], 60)
        counts = (done["state"], done["done"], done["failed"], done["total"])
        assert counts == ("succeeded", N_IMAGES, 0, N_IMAGES), done
    want = sorted(f"img{i:03d}" for i in range(N_IMAGES))
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="results/run1/png/") for o in page.get("Contents", [])]
    assert sorted(Path(k).stem for k in keys) == want, keys  # each output object once, nothing else
    # written by the worker that ends the job, just after it records the end
    body = wait_until(lambda: _object(s3, bucket, "results/run1/results.jsonl"), 20, 0.1, "results.jsonl written")
    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
    ids = collections.Counter(Path(str(x.get("id") or x.get("image"))).stem for x in lines)
    assert sorted(ids) == want and set(ids.values()) == {1}, lines[:3]  # one results line per image
    assert not any(x.get("error") for x in lines), [x for x in lines if x.get("error")][:3]
    deliveries = redis_client().hgetall(f"{hosts.env['SEAM_KEY_PREFIX']}:job:{job['id']}:deliveries")
    counts = sorted(int(v) for v in deliveries.values())
    print(f"\nchunk deliveries after the kill: {counts}")
    assert max(counts) == 2  # the killed worker's chunk ran again, once
