"""Synchronous requests on the workers: batched computation, the worker-side batching
window, the API side (hand-over, deadline, back-pressure, no-worker 503) against a real
Redis with an in-test stand-in for the worker."""
from __future__ import annotations

import io
import json
import threading
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from seam.service.core.liveness import live_workers, worker_key
from seam.service.main import create_app
from seam.service.realtime.compute import run_requests
from seam.service.realtime.messages import Keys, Reply, SyncRequest
from seam.service.realtime.server import RealtimeServer
from seam.service.worker.heartbeat import WorkerHeartbeat

from seam.modelrepo import versions
from testkit.processes import wait_until
from testkit.versions import BG, demo_variant
from tests.service.fakes import (
    FAIL_PIXEL,
    REDIS_URL,
    BatchCountingEngine,
    FakeEngine,
    drop_keys,
    encode,
    png_bytes,
    post_job,
    redis_reachable,
    rgb_image,
    zip_bytes,
)


# --- computation -------------------------------------------------------------------
def test_run_requests_batches_same_size_and_isolates_failures():
    engine = BatchCountingEngine()
    names = engine.foreground_classes()
    seg = SyncRequest(op="segment", fmt="png", method="pcm")
    seg_json = SyncRequest(op="segment", fmt="json", method="pcm", labels=[0])
    cam = SyncRequest(op="cam", fmt="npz", refined=True)
    bad = rgb_image(48, 64, seed=9)
    bad[0, 0] = FAIL_PIXEL
    items = [(seg, png_bytes(48, 64, seed=1)), (seg_json, png_bytes(48, 64, seed=2)), (seg, png_bytes(30, 40)),
             (cam, png_bytes(48, 64, seed=3)), (cam, png_bytes(48, 64, seed=4)), (seg, b"not an image"),
             (seg, encode(bad)), (seg, png_bytes(48, 64, seed=5))]
    replies = run_requests(engine, names, items, max_pixels=10**7, max_batch=8)
    # 48x64 pcm segments (seeds 1, 2, 5 and the failing one) share one batch call; cams another
    assert sorted(engine.batches) == [("cam", 2), ("segment", 4)]
    assert [r.status for r in replies] == [200, 200, 200, 200, 200, 415, 500, 200]
    assert replies[6].code == "internal_error" and replies[5].code == "unsupported_media_type"
    # each batched answer equals the same request computed alone
    for i in (0, 1, 2, 3, 4, 7):
        alone = run_requests(FakeEngine(), names, [items[i]], max_pixels=10**7)[0]
        assert (replies[i].body, replies[i].headers, replies[i].media_type) == \
               (alone.body, alone.headers, alone.media_type), i
    got = np.asarray(Image.open(io.BytesIO(replies[0].body)))
    assert np.array_equal(got, FakeEngine().segment(rgb_image(48, 64, seed=1)).label)


def test_max_batch_caps_a_batch():
    engine = BatchCountingEngine()
    req = SyncRequest(op="segment", fmt="png")
    items = [(req, png_bytes(20, 20, seed=i)) for i in range(7)]
    run_requests(engine, engine.foreground_classes(), items, max_pixels=10**7, max_batch=3)
    assert sorted(n for _, n in engine.batches) == [3, 3]  # + one image alone, without a batch call


def test_reply_round_trip():
    r = Reply(status=422, body=b"\x00\n\x01", media_type="image/png", headers={"X-A": "b"}, code="c", message="m\nn",
              details={"k": [1]}, meta={"method": "pcm"})
    assert Reply.decode(r.encode()) == r


# --- the worker side: batching window -------------------------------------------------
@pytest.fixture
def rkeys():
    import redis

    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`)")
    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    prefix = f"seamrt-{uuid.uuid4().hex[:8]}"
    yield r, prefix
    drop_keys(r, prefix)


def _enqueue(r, keys: Keys, req: SyncRequest, data: bytes) -> str:
    rid = uuid.uuid4().hex
    r.hset(keys.request(rid), mapping={"params": req.model_dump_json(), "image": data})
    r.expire(keys.request(rid), 60)
    r.rpush(keys.pending, rid)
    return rid


def test_window_collects_late_arrivals(rkeys):
    r, prefix = rkeys
    keys = Keys(prefix)
    engine = BatchCountingEngine()
    srv = RealtimeServer(r, prefix, lambda: engine, "test@node", 10**7, max_batch=4, window_s=0.3)
    req = SyncRequest(op="segment", fmt="png")
    first = _enqueue(r, keys, req, png_bytes(seed=1))
    threading.Timer(0.05, lambda: _enqueue(r, keys, req, png_bytes(seed=2))).start()
    assert srv.serve() == 2
    assert engine.batches == [("segment", 2)]  # the late one joined the first one's batch
    assert 0 < r.ttl(keys.reply(first)) <= 60  # an uncollected reply expires
    rep = Reply.decode(r.lpop(keys.reply(first)))
    assert rep.status == 200 and rep.headers["X-Seam-Worker"] == "test@node"
    assert not r.exists(keys.request(first))  # the upload is deleted once claimed

    # without a window, the late one runs in a round of its own
    engine.batches.clear()
    srv.window_s = 0.0
    _enqueue(r, keys, req, png_bytes(seed=3))
    threading.Timer(0.1, lambda: _enqueue(r, keys, req, png_bytes(seed=4))).start()
    assert srv.serve() == 1
    wait_until(lambda: r.llen(keys.pending) == 1, 10, what="the late request enqueued")
    assert srv.serve() == 1 and engine.batches == []  # two rounds of one: no batch call at all

    # up to max_batch at once; a request whose API gave up (key gone) is skipped
    ids = [_enqueue(r, keys, req, png_bytes(seed=10 + i)) for i in range(6)]
    r.delete(keys.request(ids[0]))
    srv.window_s = 0.0
    assert srv.serve() == 5
    assert engine.batches == [("segment", 3), ("segment", 2)]  # rounds of 4 ids (one dead) then 2
    assert not r.exists(keys.reply(ids[0]))


def test_heartbeat_expires(rkeys):
    r, prefix = rkeys
    hb = WorkerHeartbeat(r, prefix, "w@h", 0.2, lambda: {"queues": ["q"], "ready": True})
    hb.beat()
    (w,) = live_workers(r, prefix)
    assert w["node"] == "w@h" and w["queues"] == ["q"] and w["ready"]
    assert 0 < r.pttl(worker_key(prefix, hb.wid)) <= 600  # gone after 3 missed beats (Redis' TTL), ...
    wait_until(lambda: live_workers(r, prefix) == [], 10, what="the worker expired")  # ... not beating: it expires
    assert not r.smembers(f"{prefix}:workers")


# --- the API side, against a stand-in worker --------------------------------------------
class StandIn:
    """A worker without Celery: heartbeat + a thread serving the pending requests."""

    def __init__(self, r, prefix: str, settings, engine) -> None:
        self.engine = engine
        payload = {"queues": [settings.realtime_queue_name, settings.queue_name], "ready": True,
                   "classes": engine.foreground_classes(), "methods": engine.methods(),
                   "models": [{"name": "fake", "kind": "seam", "classes": engine.foreground_classes()}]}
        self.hb = WorkerHeartbeat(r, prefix, "standin@test", settings.worker_heartbeat_s, lambda: payload)
        self.srv = RealtimeServer(r, prefix, lambda: engine, "standin@test", settings.max_pixels, settings.max_batch,
                                  0.02)
        self._stop = threading.Event()
        self.serving = True

    def start(self) -> StandIn:
        self.hb.beat()
        self.hb.start()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.serving or self.srv.serve() == 0:
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self.hb.stop()


@pytest.fixture
def broker_client(rkeys, make_settings):
    r, prefix = rkeys
    made = []

    def make(serve: bool = True, **kw):
        settings = make_settings(broker_url=REDIS_URL, key_prefix=prefix, worker_heartbeat_s=1, **kw)
        standin = StandIn(r, prefix, settings, BatchCountingEngine())
        if serve:
            standin.start()
        app = create_app(settings)  # no engine: the API learns the models from the heartbeat
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        made.append((client, standin))
        return client, standin

    yield make
    for client, standin in made:
        standin.stop()
        client.__exit__(None, None, None)


def test_worker_path_equals_local_path(broker_client, client):
    bc, standin = broker_client()
    assert bc.app.state.holder.engine.__class__.__name__ == "RemoteModels"  # no engine in the API process
    ready = bc.get("/readyz").json()
    assert ready["ready"] and "standin@test" in ready["checks"]["workers"]["detail"], ready
    data = png_bytes(48, 64, seed=3)
    for path, fields in (("/segment", {}), ("/segment", {"format": "json", "labels": "red"}),
                         ("/cam", {}), ("/cam/refined", {"format": "json", "threshold": "0.3"}),
                         ("/cam", {"format": "png"})):
        remote = bc.post(path, files={"image": ("a.png", data)}, data=fields)
        local = client.post(path, files={"image": ("a.png", data)}, data=fields)
        assert remote.status_code == local.status_code == 200, (path, remote.text)
        assert remote.content == local.content, path
        assert remote.headers["x-seam-worker"] == "standin@test"
        assert remote.headers.get("x-seam-classes") == local.headers.get("x-seam-classes")
    assert standin.engine.calls >= 5
    # errors computed on the worker come back as the same 4xx
    trunc = png_bytes(64, 64)[:300]
    remote, local = (c.post("/segment", files={"image": ("t.png", trunc)}) for c in (bc, client))
    assert remote.status_code == local.status_code == 422 and remote.json() == local.json()
    assert bc.post("/segment", files={"image": ("x.txt", b"hello")}).status_code == 415
    # in-process callers (the labelling-tool integrations) get SegmentResults computed by the worker
    remote_engine = bc.app.state.holder.engine
    rgb = rgb_image(30, 50, seed=4)

    async def call():
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(remote_engine.segment, rgb, [0], "cam", 0.4)
    before = standin.engine.calls
    seg = bc.portal.call(call)
    want = FakeEngine().segment(rgb, [0], method="cam", threshold=0.4)
    assert standin.engine.calls > before and seg.method == "cam" and seg.classes == want.classes
    assert np.array_equal(seg.label, want.label) and np.allclose(seg.scores, want.scores)


def test_jobs_resolve_labels_against_the_version_they_name(broker_client, tmp_path):
    """On the worker path the API loads no model: class names come from the workers' heartbeat,
    which describes their default model. A job naming another model must read its labels with
    that model's classes (from its manifest), or a label would become the wrong class index."""
    repo = tmp_path / "repo"
    letters = ["alpha", "beta", "gamma", "delta", "epsilon"]
    for name, classes in (("shapes", None), ("letters", letters)):
        src = demo_variant(tmp_path / f"src-{name}", BG[1])
        if classes:
            mf = json.loads((src / "manifest.json").read_text())
            mf["class_names"] = ["background", *classes]
            (src / "manifest.json").write_text(json.dumps(mf))
        assert versions.publish_version(repo, name, src, promote=True) == 1
    bc, standin = broker_client(engine="onnx", models_dir=repo, default_model="shapes")
    assert standin.engine.foreground_classes() != letters  # what the heartbeat advertises
    archive = zip_bytes({"a.png": png_bytes(32, 32), "b.png": png_bytes(32, 32, seed=1)})

    r = post_job(bc, archive, model="letters", labels='{"a.png": ["beta"], "b.png": ["alpha", "epsilon"]}')
    assert r.status_code == 202, r.text
    manifest = bc.app.state.storage.read_manifest(r.json()["id"])
    assert manifest["classes"] == letters and manifest["model"] == "letters"
    assert manifest["labels"] == {"a": [1], "b": [0, 4]}
    r = post_job(bc, archive, model="letters", labels='{"a.png": ["disc"]}')  # a class of the other model
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_class", r.text
    r = post_job(bc, archive, model="shapes:1", labels='{"a.png": ["disc"]}')
    assert r.status_code == 202, r.text
    assert bc.app.state.storage.read_manifest(r.json()["id"])["classes"] == ["disc", "square", "triangle", "ring",
                                                                             "cross"]


def test_no_worker_503_and_readiness(broker_client):
    bc, standin = broker_client(serve=False)
    r = bc.get("/readyz")
    assert r.status_code == 503 and "no live worker" in r.json()["checks"]["workers"]["detail"]
    t0 = time.monotonic()
    r = bc.post("/segment", files={"image": ("a.png", png_bytes())})
    assert r.status_code == 503 and time.monotonic() - t0 < 2  # at once, not after the deadline
    assert r.headers["retry-after"] and r.json()["error"]["code"] in ("no_worker", "not_ready")


def test_deadline_504_and_queue_full_429(broker_client, rkeys):
    r, prefix = rkeys
    bc, standin = broker_client(request_timeout_s=0.5, realtime_max_queue=2)
    standin.serving = False  # alive (heartbeat) but never answers
    t0 = time.monotonic()
    resp = bc.post("/segment", files={"image": ("a.png", png_bytes())})
    assert resp.status_code == 504 and 0.4 < time.monotonic() - t0 < 5
    assert "SEAM_REQUEST_TIMEOUT_S" in resp.json()["error"]["message"]
    assert not list(r.scan_iter(f"{prefix}:rt:req:*"))  # the abandoned upload is gone
    keys = Keys(prefix)
    r.rpush(keys.pending, "x", "y")  # two requests already waiting: the queue is full
    resp = bc.post("/segment", files={"image": ("a.png", png_bytes())})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert "queued" in resp.json()["error"]["message"]
    r.delete(keys.pending)
    standin.serving = True
    assert bc.post("/segment", files={"image": ("a.png", png_bytes())}).status_code == 200
    metrics = bc.get("/metrics").text
    assert 'seam_rejected_total{reason="timeout"} 1.0' in metrics and 'reason="busy"} 1.0' in metrics


# --- Redis timeouts, abandoned requests ------------------------------------------------------
def test_every_redis_client_reads_longer_than_it_blocks(broker_client, tmp_path):
    from seam.service.core.redisconn import COMMAND_TIMEOUT_S
    from seam.service.jobs.stores.redis import RedisJobStore

    def timeouts(client) -> tuple[float | None, float | None]:
        kw = client.connection_pool.connection_kwargs
        return kw.get("socket_timeout"), kw.get("socket_connect_timeout")

    bc, _ = broker_client(request_timeout_s=60)
    side = bc.app.state.broker_side
    # redis-py's async default (5 s) cut the reply's BLPOP short: 503 after 5 s for slow requests
    read, connect = timeouts(side.client.blocking)
    assert read is not None and read > 60 and connect
    for client in (side.client.r, side._sync, RedisJobStore(REDIS_URL, "seamrt-x", 60).r,
                   bc.app.state.dispatcher.redis):
        read, connect = timeouts(client)
        assert read == COMMAND_TIMEOUT_S and connect, client


def test_abandoned_request_stops_costing_the_worker(rkeys):
    r, prefix = rkeys
    keys = Keys(prefix)
    srv = RealtimeServer(r, prefix, lambda: FakeEngine(delay_ms=5000), "test@node", 10**7, max_batch=4, window_s=0)
    rid = _enqueue(r, keys, SyncRequest(op="segment", fmt="png"), png_bytes(seed=1))
    threading.Timer(0.3, lambda: r.delete(keys.request(rid))).start()  # what the API does when its client hangs up
    t0 = time.monotonic()
    assert srv.serve() == 1
    assert time.monotonic() - t0 < 2  # not the engine's 5 s
    assert not r.exists(keys.reply(rid)) and not r.exists(keys.request(rid))


def test_client_hangup_withdraws_the_request(broker_client, rkeys):
    r, prefix = rkeys
    bc, standin = broker_client(request_timeout_s=30)
    standin.serving = False  # alive, busy elsewhere
    client = bc.app.state.broker_side.client
    hung_up = time.monotonic() + 0.5

    async def gone() -> bool:
        return time.monotonic() > hung_up

    async def call():
        from seam.service.core.errors import ApiError

        try:
            await client.submit(SyncRequest(op="segment", fmt="png"), png_bytes(), gone=gone)
        except ApiError as exc:
            return exc.status_code
    t0 = time.monotonic()
    assert bc.portal.call(call) == 499
    assert time.monotonic() - t0 < 2  # not the 30 s deadline
    assert not list(r.scan_iter(f"{prefix}:rt:req:*"))  # withdrawn: a worker taking its id skips it
