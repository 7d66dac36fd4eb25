"""process_chunk's idempotency and poison-chunk guard, batches of same-size images, and the
embedded executor's retries."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seam.service.jobs.dispatch import EmbeddedDispatcher
from seam.service.jobs.execution import RetryPolicy, attempt_chunk
from seam.service.jobs.processing import ChunkContext, TransientError, process_chunk
from seam.service.storage import Storage

from tests.service.fakes import (
    FAIL_PIXEL,
    FAKE_CLASSES,
    BatchCountingEngine,
    FakeEngine,
    MemoryJobStore,
    jid,
    rgb_image,
)


# --- process_chunk ----------------------------------------------------------------
def make_job(storage: Storage, store, n: int, outputs=("png",)) -> tuple[str, list[str]]:
    j = jid()
    inputs = storage.inputs_dir(j)
    inputs.mkdir(parents=True)
    images = {}
    for i in range(n):
        Image.fromarray(rgb_image(16, 20, seed=i)).save(inputs / f"im{i}.png")
        images[f"im{i}"] = f"im{i}.png"
    storage.write_manifest(j, {"id": j, "created_at": time.time(), "options": {"outputs": list(outputs)},
                               "source": "upload", "source_dir": None, "images": images, "labels": {}})
    store.create(j, n, 1, {"outputs": list(outputs)}, "upload")
    return j, sorted(images)


class CountingEngine(FakeEngine):
    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__()
        self.crash_after = crash_after
        self.segments = 0

    def segment(self, *a, **kw):
        if self.crash_after is not None and self.segments >= self.crash_after:
            raise KeyboardInterrupt("simulated worker death")  # not caught by the per-image handler
        self.segments += 1
        return super().segment(*a, **kw)


def ctx_for(tmp_path: Path, engine, store=None, max_deliveries: int = 3, max_retries: int = 3,
            max_batch: int = 1) -> ChunkContext:
    return ChunkContext(store=store or MemoryJobStore(3600), storage=Storage(tmp_path / "data"),
                        engine=lambda: engine, max_pixels=10**7, max_deliveries=max_deliveries, max_batch=max_batch,
                        retry=RetryPolicy(max_retries, backoff_s=0.01))


def test_redelivered_chunk_neither_duplicates_nor_loses(tmp_path):
    engine = CountingEngine(crash_after=3)
    ctx = ctx_for(tmp_path, engine)
    j, ids = make_job(ctx.storage, ctx.store, 6)
    with pytest.raises(KeyboardInterrupt):
        process_chunk(ctx, j, 0, ids)  # the "worker" dies after 3 images
    assert ctx.store.snapshot(j).done == 3
    written = {p: p.stat().st_mtime_ns for p in (ctx.storage.outputs_dir(j) / "png").iterdir()}
    assert len(written) == 3
    engine.crash_after = None
    rep = process_chunk(ctx, j, 0, ids)  # redelivery
    assert (rep.done, rep.skipped, rep.failed) == (3, 3, 0)
    assert engine.segments == 6  # each image computed exactly once
    snap = ctx.store.snapshot(j)
    assert (snap.state, snap.done, snap.failed) == ("succeeded", 6, 0)
    outs = sorted(p.name for p in (ctx.storage.outputs_dir(j) / "png").iterdir())
    assert outs == [f"{i}.png" for i in ids]
    for p, mtime in written.items():
        assert p.stat().st_mtime_ns == mtime  # not rewritten
    assert not list(ctx.storage.tmp_dir(j).glob("*.tmp"))
    ref = FakeEngine()
    for i in ids:
        a = rgb_image(16, 20, seed=int(i[2:]))  # what make_job wrote (inputs are deleted once the job ends)
        got = np.asarray(Image.open(ctx.storage.output_path(j, "png", i)))
        assert np.array_equal(got, ref.segment(a).label)


def test_poison_chunk_given_up(tmp_path):
    engine = CountingEngine(crash_after=1)
    ctx = ctx_for(tmp_path, engine, max_deliveries=3)
    j, ids = make_job(ctx.storage, ctx.store, 4)
    engine.crash_after = 0  # every delivery dies on the first unfinished image
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            process_chunk(ctx, j, 0, ids)
    rep = process_chunk(ctx, j, 0, ids)  # 4th delivery: give up instead of looping
    assert rep.gave_up and rep.failed == 4 and rep.final_state == "failed"
    snap = ctx.store.snapshot(j)
    assert snap.state == "failed" and all("started 3 times" in e for _, e in snap.errors)


def test_cancelled_job_chunk_is_noop(tmp_path):
    engine = CountingEngine()
    ctx = ctx_for(tmp_path, engine)
    j, ids = make_job(ctx.storage, ctx.store, 3)
    ctx.store.cancel(j)
    rep = process_chunk(ctx, j, 0, ids)
    assert rep.cancelled and engine.segments == 0


def test_missing_inputs_recorded_per_image(tmp_path):
    ctx = ctx_for(tmp_path, FakeEngine())
    j, ids = make_job(ctx.storage, ctx.store, 3)
    (ctx.storage.inputs_dir(j) / "im1.png").unlink()
    process_chunk(ctx, j, 0, ids)
    snap = ctx.store.snapshot(j)
    assert (snap.state, snap.done, snap.failed) == ("succeeded", 2, 1) and snap.errors[0][0] == "im1"


class FlakyStore(MemoryJobStore):
    def __init__(self, failures: int) -> None:
        super().__init__(3600)
        self.failures = failures

    def mark_running(self, job_id):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker hiccup")
        return super().mark_running(job_id)


def test_embedded_executor_retries_transient_errors(tmp_path):
    store = FlakyStore(failures=2)
    ctx = ctx_for(tmp_path, FakeEngine(), store=store, max_retries=3)
    j, ids = make_job(ctx.storage, store, 3)
    d = EmbeddedDispatcher(ctx, workers=1)
    d.run_chunk(j, 0, ids)
    assert store.snapshot(j).state == "succeeded"

    store2 = FlakyStore(failures=10)
    ctx2 = ctx_for(tmp_path, FakeEngine(), store=store2, max_retries=2)
    j2, ids2 = make_job(ctx2.storage, store2, 2)
    d2 = EmbeddedDispatcher(ctx2, workers=1)
    d2.run_chunk(j2, 0, ids2)
    snap = store2.snapshot(j2)
    assert snap.state == "failed" and "gave up after 3 attempts" in snap.errors[0][1]


def test_retry_policy_and_attempts(tmp_path):
    pol = RetryPolicy(max_retries=4, backoff_s=0.5, backoff_max_s=3.0)
    assert [pol.delay(r) for r in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    store = FlakyStore(failures=1)
    ctx = ctx_for(tmp_path, FakeEngine(), store=store, max_retries=1)
    j, ids = make_job(ctx.storage, store, 1)
    assert attempt_chunk(ctx, j, 0, ids, retries=0) == ctx.retry.delay(1)  # transient: run again later
    assert attempt_chunk(ctx, j, 0, ids, retries=1) is None and store.snapshot(j).state == "succeeded"


def test_chunk_batches_same_size_images(tmp_path):
    engine = BatchCountingEngine()
    ctx = ctx_for(tmp_path, engine, max_batch=3)
    j = jid()
    inputs = ctx.storage.inputs_dir(j)
    inputs.mkdir(parents=True)
    shapes = [(16, 20)] * 5 + [(24, 20)] * 2 + [(9, 9)]  # 5 + 2 + 1 of three sizes
    arrays = {}
    for i, (h, w) in enumerate(shapes):
        a = rgb_image(h, w, seed=i)
        if i == 3:
            a[0, 0] = FAIL_PIXEL  # the engine raises on this one: it must fail alone
        Image.fromarray(a).save(inputs / f"im{i}.png")
        arrays[f"im{i}"] = a
    labels = {"im1": [1]}
    storage_manifest = {"id": j, "created_at": time.time(), "options": {"outputs": ["png", "npz"]}, "source": "upload",
                        "source_dir": None, "images": {k: f"{k}.png" for k in arrays}, "labels": labels,
                        "classes": list(FAKE_CLASSES)}
    ctx.storage.write_manifest(j, storage_manifest)
    ctx.store.create(j, len(arrays), 1, {"outputs": ["png", "npz"]}, "upload")
    rep = process_chunk(ctx, j, 0, sorted(arrays))
    assert sorted(engine.sizes()) == [2, 2, 3]  # 16x20: 3 + 2 ; 24x20: 2 ; the 9x9 one alone (no batch call)
    assert (rep.done, rep.failed) == (7, 1)
    snap = ctx.store.snapshot(j)
    assert [e[0] for e in snap.errors] == ["im3"] and "trigger pixel" in snap.errors[0][1]
    ref = FakeEngine()
    for iid, a in arrays.items():
        if iid == "im3":
            continue
        got = np.asarray(Image.open(ctx.storage.output_path(j, "png", iid)))
        assert np.array_equal(got, ref.segment(a, labels.get(iid)).label), iid  # batch result = one-by-one result


def test_chunk_of_another_label_set_fails_clearly(tmp_path):
    ctx = ctx_for(tmp_path, FakeEngine(classes=("cat", "dog")))
    j, ids = make_job(ctx.storage, ctx.store, 2)
    m = ctx.storage.read_manifest(j)
    ctx.storage.write_manifest(j, {**m, "classes": ["red", "green", "blue"], "models": [{"name": "old-model"}]})
    rep = process_chunk(ctx, j, 0, ids)
    assert rep.failed == 2 and rep.final_state == "failed"
    assert "old-model" in ctx.store.snapshot(j).errors[0][1]


def test_engine_not_loaded_is_transient(tmp_path):
    ctx = ctx_for(tmp_path, None)

    def no_engine():
        raise TransientError("engine not loaded")
    ctx.engine = no_engine
    j, ids = make_job(ctx.storage, ctx.store, 1)
    with pytest.raises(TransientError):
        process_chunk(ctx, j, 0, ids)
