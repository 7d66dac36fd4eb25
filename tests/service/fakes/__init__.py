"""Everything the service tests share, in one place: engines (the fake engine, gated and
batch-counting ones), images and hostile archives, the in-memory job store and any store opened
for the contract tests, the tests' Redis, the checks of error bodies and jobs, and the stack of
real processes. `onnx_models` (hand-built ONNX models; imports onnx) is imported by name.
bench/ uses testkit/, never this package."""
from tests.service.fakes.checks import (
    ADMIN,
    KEY_A,
    KEY_B,
    assert_error,
    check_results,
    jid,
    make_archive,
    post_job,
    wait,
)
from tests.service.fakes.engines import FAIL_PIXEL, FAKE_CLASSES, BatchCountingEngine, FakeEngine, GatedEngine
from tests.service.fakes.inputs import (
    encode,
    jpeg_with_orientation,
    lying_jpeg,
    png_bytes,
    png_header_bomb,
    rgb_image,
    scene,
    tar_bytes,
    tar_with_link,
    truncated_png,
    zip_bomb,
    zip_bytes,
    zip_lying_sizes,
    zip_with_symlink,
)
from tests.service.fakes.redis_db import REDIS_DB, REDIS_URL, drop_keys, redis_client, redis_reachable
from tests.service.fakes.stack import Stack, stack
from tests.service.fakes.store import STORE_KINDS, MemoryJobStore, open_store

__all__ = [
    "ADMIN", "FAIL_PIXEL", "FAKE_CLASSES", "KEY_A", "KEY_B", "REDIS_DB", "REDIS_URL", "STORE_KINDS",
    "BatchCountingEngine", "FakeEngine", "GatedEngine", "MemoryJobStore", "Stack",
    "assert_error", "check_results", "drop_keys", "encode", "jid", "jpeg_with_orientation", "lying_jpeg",
    "make_archive", "open_store", "png_bytes", "png_header_bomb", "post_job", "redis_client",
    "redis_reachable", "rgb_image", "scene", "stack", "tar_bytes", "tar_with_link", "truncated_png", "wait",
    "zip_bomb", "zip_bytes", "zip_lying_sizes", "zip_with_symlink",
]
