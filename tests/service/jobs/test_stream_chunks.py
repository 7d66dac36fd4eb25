"""The worker's side of a job over a data set, in process against a real S3-compatible server
(SeaweedFS): a chunk's images read from their s3:// URIs, outputs and a results part written to
output_url, a redelivered chunk recomputed (its part complete, progress counted once), a poison
chunk listed with why, and results.jsonl made by whoever ends the job."""
from __future__ import annotations

import json
import time

import pytest
from seam.service.datasets.fetching import DatasetReader
from seam.service.datasets.policy import DatasetPolicy
from seam.service.jobs.execution import RetryPolicy
from seam.service.jobs.processing import ChunkContext, process_chunk
from seam.service.storage import Storage

from tests.service.fakes import FakeEngine, MemoryJobStore, encode, jid, rgb_image

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path, s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = s3_server.create_bucket()
    s3 = s3_server.client()
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"in/im{i}.png", Body=encode(rgb_image(16, 20, seed=i)))
    store, storage = MemoryJobStore(3600), Storage(tmp_path / "data")
    j = jid()
    lines = [{"n": i + 1, "id": f"im{i}", "uri": f"s3://{bucket}/in/im{i}.png", "labels": None} for i in range(4)]
    lines[3]["uri"] = f"s3://{bucket}/in/missing.png"
    storage.put_chunk(j, 0, lines[:2])
    storage.put_chunk(j, 1, lines[2:])
    storage.write_manifest(j, {"id": j, "created_at": time.time(), "options": {"outputs": ["png"]}, "images": {},
                               "labels": {}, "streamed": True, "output_url": f"s3://{bucket}/out/"})
    store.create(j, 4, 2, {"outputs": ["png"]}, "url")
    reader = DatasetReader(DatasetPolicy(buckets=[bucket]))

    def ctx(max_deliveries: int = 3) -> ChunkContext:
        return ChunkContext(store=store, storage=storage, engine=lambda *a: FakeEngine(), max_pixels=10**7,
                            max_deliveries=max_deliveries, retry=RetryPolicy(0), datasets=reader)

    return j, bucket, s3, store, ctx


def _results(s3, bucket: str) -> list[dict]:
    return [json.loads(x) for x in s3.get_object(Bucket=bucket, Key="out/results.jsonl")["Body"].read().splitlines()]


def test_chunks_write_outputs_parts_and_the_results_manifest(setup):
    j, bucket, s3, store, ctx = setup
    rep = process_chunk(ctx(), j, 0, ["im0", "im1"])
    assert (rep.done, rep.failed, rep.final_state) == (2, 0, None)
    rep = process_chunk(ctx(), j, 0, ["im0", "im1"])  # redelivered: recomputed, counted once
    assert store.snapshot(j).done == 2
    part = [json.loads(x) for x in s3.get_object(Bucket=bucket, Key="out/results/part-0000000.jsonl")["Body"].read()
            .splitlines()]
    assert [r["id"] for r in part] == ["im0", "im1"] and all(r["error"] is None and r["classes"] for r in part)
    rep = process_chunk(ctx(), j, 1, ["im2", "im3"])
    assert (rep.done, rep.failed, rep.final_state) == (1, 1, "succeeded")
    got = _results(s3, bucket)
    assert [r["id"] for r in got] == ["im0", "im1", "im2", "im3"]
    assert got[2]["outputs"] == {"png": f"s3://{bucket}/out/png/im2.png"} and "missing" in got[3]["error"]
    assert s3.get_object(Bucket=bucket, Key="out/png/im2.png")["Body"].read()[:4] == b"\x89PNG"


def test_a_poison_chunk_is_listed_with_why(setup):
    j, bucket, s3, store, ctx = setup
    process_chunk(ctx(), j, 0, ["im0", "im1"])
    for _ in range(2):  # started twice without finishing (the worker died)
        store.incr_delivery(j, 1)
    rep = process_chunk(ctx(max_deliveries=2), j, 1, ["im2", "im3"])
    assert rep.gave_up and rep.final_state == "succeeded"
    got = {r["id"]: r for r in _results(s3, bucket)}
    assert sorted(got) == ["im0", "im1", "im2", "im3"]
    assert "gave up" in got["im2"]["error"] and got["im0"]["error"] is None


def test_retries_spent_on_the_last_chunk_still_make_the_results_manifest(setup, monkeypatch):
    from seam.service.jobs.execution import attempt_chunk

    j, bucket, s3, store, ctx = setup
    process_chunk(ctx(), j, 0, ["im0", "im1"])
    c = ctx()
    monkeypatch.setattr(c.datasets, "read", lambda uri: (_ for _ in ()).throw(ConnectionError("store down")))
    assert attempt_chunk(c, j, 1, ["im2", "im3"], retries=0) is None  # RetryPolicy(0): given up at once
    assert store.snapshot(j).state == "succeeded"
    got = {r["id"]: r for r in _results(s3, bucket)}
    assert sorted(got) == ["im0", "im1", "im2", "im3"] and "store down" in got["im3"]["error"]
