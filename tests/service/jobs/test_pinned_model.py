"""A chunk runs on exactly the model version its job pinned (name, version, digest in the job's
manifest), through the same engine getter the executor threads and the Celery task use; a
version that is gone or whose files changed since submission fails the chunk's images with that
reason instead of running another version."""
from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image
from seam.service.core.config import Settings
from seam.service.core.registry import make_registry
from seam.service.jobs.execution import RetryPolicy, engine_getter
from seam.service.jobs.processing import ChunkContext, process_chunk
from seam.service.storage import Storage

from seam.modelrepo import versions
from testkit.versions import BG, publish_variant
from tests.service.fakes import MemoryJobStore
from tests.support import shapes_photo


def _job(storage: Storage, store, pin: dict) -> tuple[str, list[str]]:
    j = uuid.uuid4().hex
    inputs = storage.inputs_dir(j)
    inputs.mkdir(parents=True)
    images = {}
    for i in range(2):
        Image.fromarray(shapes_photo(48, 64, seed=i)).save(inputs / f"im{i}.png")
        images[f"im{i}"] = f"im{i}.png"
    storage.write_manifest(j, {"id": j, "created_at": time.time(), "options": {"outputs": ["png"], "method": "cam"},
                               "source": "upload", "source_dir": None, "images": images, "labels": {}, **pin})
    store.create(j, 2, 1, {"outputs": ["png"]}, "upload")
    return j, sorted(images)


def test_chunks_run_on_the_pinned_version_or_fail_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for n in (1, 2):
        publish_variant(repo, "shapes", BG[n], tmp_path)
    reg = make_registry(Settings(models_dir=repo, engine="onnx", warmup=False, threads=1))
    reg.refresh()
    ctx = ChunkContext(store=MemoryJobStore(3600), storage=Storage(tmp_path / "data"), engine=engine_getter(reg),
                       max_pixels=10**7, max_deliveries=3, retry=RetryPolicy(0))
    digest = {n: versions.version_digest(versions.resolve(repo, f"shapes:{n}")) for n in (1, 2)}

    def run(version: int, pin_digest: str) -> tuple[str, dict[str, bytes]]:
        j, ids = _job(ctx.storage, ctx.store, {"model": "shapes", "model_version": version,
                                               "model_digest": pin_digest})
        process_chunk(ctx, j, 0, ids)
        out = ctx.storage.outputs_dir(j) / "png"
        return j, {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))} if out.is_dir() else {}

    versions.promote(repo, "shapes", 2)
    reg.refresh()  # version 2 serves the requests without a version now
    _, on1 = run(1, digest[1])
    _, on2 = run(2, digest[2])
    assert len(on1) == 2 and on1 != on2  # pinned to 1: version 1's masks, although 2 is promoted
    expected = reg.acquire("shapes:1").engine.segment(shapes_photo(48, 64, seed=0), method="cam").label
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(on1["im0.png"]))), expected)

    for version, pin_digest, why in ((1, "0" * 64, "changed since the job was submitted"),
                                     (7, digest[1], "not available here")):
        j, files = run(version, pin_digest)
        snap = ctx.store.snapshot(j)
        assert files == {} and snap.failed == 2 and snap.state == "failed"
        assert all(why in err for _, err in snap.errors), snap.errors


def test_jobs_written_before_versions_use_the_default_engine(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    publish_variant(repo, "shapes", BG[1], tmp_path)
    reg = make_registry(Settings(models_dir=repo, engine="onnx", warmup=False, threads=1))
    reg.refresh()
    ctx = ChunkContext(store=MemoryJobStore(3600), storage=Storage(tmp_path / "data"), engine=engine_getter(reg),
                       max_pixels=10**7, max_deliveries=3, retry=RetryPolicy(0))
    j, ids = _job(ctx.storage, ctx.store, {})
    process_chunk(ctx, j, 0, ids)
    assert ctx.store.snapshot(j).done == 2
    assert json.loads(json.dumps(ctx.storage.read_manifest(j))).get("model") is None
