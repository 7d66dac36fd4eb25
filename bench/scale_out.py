"""Throughput against the number of Celery workers, and what coordinating them costs per image.

    python bench/scale_out.py                          # 1, 2, 4, 8, 16 workers, 200 ms per image
    python bench/scale_out.py --workers 1,4 --delay-ms 100 --per-worker 40
    python bench/scale_out.py --storage s3             # job inputs and outputs on a SeaweedFS S3 server

Everything is real except the model: a Redis server of its own (started on a free loopback port,
so `INFO commandstats` counts this bench's commands only), `seam serve` and N `seam worker`
processes (prefork -c 1, as deployed), the fake engine sleeping a fixed time per image
(SEAM_FAKE_DELAY_MS, engine batches of 1) so that the figure isolates our coordination: a
worker that sleeps costs no CPU, so 16 of them on 2 cores are meaningful. Workers are added
between the rows (1 -> 2 -> 4 ...) and each row runs one job of `per_worker x N` images.

Printed: workers, images/s, the ideal N x (1-worker rate), efficiency, and per image the Redis
commands (all clients: API, workers' chunk work, broker polling, heartbeats) and the storage
requests (S3 mode: the S3 server's own request counter).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.processes import free_port, log_tail, seam_serve_argv, service_env, spawn, wait_ready, wait_until  # noqa: E402
from testkit.redisserver import redis_server  # noqa: E402


@dataclass
class Row:
    workers: int
    images: int
    seconds: float
    redis_sent: int
    redis_run: int
    redis_top: list[tuple[str, int]]
    storage_requests: Counter | None  # by type (GET, PUT, ...)
    worker_cpu_s: float = 0.0  # CPU time of all worker processes during the job
    busy: float = 0.0  # the machine's CPU use during the job, 0-1 (all processes, other users' too)

    @property
    def rate(self) -> float:
        return self.images / self.seconds


# --- what the server ran ---------------------------------------------------------------------
class CommandLog:
    """Every command the Redis server runs, from MONITOR: (server time, sent by a client or run
    inside a Lua script, command name). Sent = round trips (a pipeline's commands count one each)."""

    def __init__(self, url: str) -> None:
        import redis

        self.entries: list[tuple[float, bool, str]] = []
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # raw lines: `1733.123 [0 127.0.0.1:5000] "EVALSHA" ...` or `[0 lua] "SADD" ...` (redis-py's
        # own parser gives up on some arguments)
        conn = self._monitor.connection
        while True:
            try:
                line = conn.read_response()
            except Exception:  # noqa: BLE001 - the connection closed: done
                return
            if isinstance(line, bytes):
                line = line.decode("utf-8", "replace")
            try:
                stamp, rest = line.split(" ", 1)
                client, command = rest.split("] ", 1)
                name = command.split(" ", 1)[0].strip('"').lower()
                self.entries.append((float(stamp), not client.endswith(" lua"), name))
            except ValueError:
                continue

    def now(self) -> float:
        t = self._client.time()
        return t[0] + t[1] / 1e6

    def window(self, t0: float, t1: float) -> tuple[Counter, Counter]:
        """(commands sent by clients, commands run in all) between two server times, by name."""
        time.sleep(0.3)  # let the reader catch up
        sent, run = Counter(), Counter()
        for t, client, name in list(self.entries):
            if t0 <= t <= t1 and name not in ("time", "monitor"):
                run[name] += 1
                if client:
                    sent[name] += 1
        return sent, run

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()
        self._client.close()


# --- images ---------------------------------------------------------------------------------
def tiny_png(seed: int, side: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder: Path, n: int, side: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i:06d}.png").write_bytes(tiny_png(i, side))


# --- the cluster ------------------------------------------------------------------------------
class Cluster:
    """`seam serve` and `seam worker` processes sharing a broker and a key prefix; with a
    storage URL, their data plane is that store (else a shared data directory)."""

    def __init__(self, work: Path, broker: str, args: argparse.Namespace, storage_env: dict[str, str]) -> None:
        self.work = work
        self.prefix = f"scale-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.env = service_env(
            PYTHONPATH=str(Path(__file__).resolve().parents[1]), SEAM_ENGINE="fake", SEAM_BROKER_URL=broker,
            SEAM_KEY_PREFIX=self.prefix, SEAM_FAKE_DELAY_MS=str(args.delay_ms), SEAM_MAX_BATCH="1",
            SEAM_CHUNK_SIZE=str(args.chunk_size), SEAM_DATA_DIR=str(work / "data"),
            SEAM_ALLOWED_ROOT=str(work / "inputs"), SEAM_MODELS_DIR=str(work / "models"),
            SEAM_MAX_ACTIVE_JOBS="4", SEAM_WORKER_HEARTBEAT_S=str(args.heartbeat_s), **storage_env)
        (work / "inputs").mkdir(parents=True, exist_ok=True)
        self.url = ""

    def start_api(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.work / "api.log"
        p = spawn([*seam_serve_argv(port), "--log-level", "warning"], self.env, log, start_new_session=True)
        self.procs.append(p)
        wait_ready(self.url, p, log, timeout=120, interval=0.2)

    def add_workers(self, n: int, pool: str) -> None:
        for _ in range(n):
            i = len(self.workers)
            argv = [sys.executable, "-m", "seam.cli", "worker", "--hostname", f"w{i}@%h", "--loglevel", "warning",
                    "--pool", pool]  # both queues, as deployed
            p = spawn(argv, self.env, self.work / f"w{i}.log", start_new_session=True)
            self.procs.append(p)
            self.workers.append(p)

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the worker processes (main + pool children)."""
        total = 0.0
        for w in self.workers:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(w.pid)
                for p in [proc, *proc.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
        return total

    def ready_workers(self, client) -> int:
        from seam.service.core.liveness import live_workers

        return sum(1 for w in live_workers(client, self.prefix) if w.get("ready"))

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def run_job(c: httpx.Client, body: dict) -> tuple[float, dict, int]:
    """Submit a directory job and wait for its end: (seconds from submission to end, final
    body, how many status requests the wait made)."""
    t0 = time.perf_counter()
    r = c.post("/jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["id"]
    last: dict = {"polls": 0}

    def ended() -> bool:
        last.update(c.get(f"/jobs/{job_id}").json())
        last["polls"] += 1
        return last.get("state") not in ("queued", "running")

    wait_until(ended, 3600, 0.05, lambda: f"job {job_id}: {last}")
    return time.perf_counter() - t0, last, last["polls"]


def poll_cost(c: httpx.Client, log: CommandLog, job_id: str, n: int = 20) -> tuple[Counter, Counter]:
    """Redis commands (sent, run) of one GET /jobs/{id}: the bench's own polling, taken out of
    the figures."""
    t0 = log.now()
    for _ in range(n):
        c.get(f"/jobs/{job_id}")
    sent, run = log.window(t0, log.now())
    return Counter({k: v / n for k, v in sent.items()}), Counter({k: v / n for k, v in run.items()})


def _less(counts: Counter, per_poll: Counter, polls: int) -> Counter:
    return Counter({k: v - round(per_poll.get(k, 0) * polls) for k, v in counts.items()
                    if v - round(per_poll.get(k, 0) * polls) > 0})


def measure(cluster: Cluster, log: CommandLog, n_workers: int, args: argparse.Namespace, data: DataPlane) -> Row:
    n_images = args.per_worker * n_workers
    folder = f"set{n_workers}"
    data.put_images(folder, n_images, args.side)
    counter = data.counter
    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        t0, s_before, cpu0 = log.now(), counter(), cluster.worker_cpu()
        psutil.cpu_percent()
        seconds, body, polls = run_job(c, data.job_body(folder))
        t1, s_after, cpu1, busy = log.now(), counter(), cluster.worker_cpu(), psutil.cpu_percent() / 100
        if (body["state"], body["done"]) != ("succeeded", n_images):
            raise SystemExit(f"the job did not succeed: {body}\nAPI log:\n{log_tail(cluster.work / 'api.log')}")
        poll_sent, poll_run = poll_cost(c, log, body["id"])
    sent, run = log.window(t0, t1)
    sent, run = _less(sent, poll_sent, polls), _less(run, poll_run, polls)
    storage = None if s_before is None else Counter(s_after) - Counter(s_before)
    shutil.rmtree(cluster.work / "inputs" / folder, ignore_errors=True)
    return Row(n_workers, n_images, seconds, sum(sent.values()), sum(run.values()), sent.most_common(8), storage,
               cpu1 - cpu0, busy)


def table(rows: list[Row], args: argparse.Namespace) -> str:
    single = rows[0].rate / rows[0].workers
    lines = [f"fake engine {args.delay_ms:g} ms/image (1 image per engine call), chunks of {args.chunk_size}, "
             f"{args.per_worker} images per worker, storage: {args.storage}",
             "| workers | images | s | images/s | ideal N x single | efficiency | Redis sent/image "
             "| Redis run/image | storage req/image | worker CPU ms/image | machine CPU busy |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ideal = single * r.workers
        sreq = "-" if r.storage_requests is None else f"{sum(r.storage_requests.values()) / r.images:.1f}"
        lines.append(f"| {r.workers} | {r.images} | {r.seconds:.1f} | {r.rate:.1f} | {ideal:.1f} | "
                     f"{r.rate / ideal:.2f} | {r.redis_sent / r.images:.1f} | {r.redis_run / r.images:.1f} | {sreq} | "
                     f"{1000 * r.worker_cpu_s / r.images:.1f} | {r.busy:.0%} |")
    lines += ["", "Redis sent = commands clients sent (round trips; a pipeline's count one each); run = also "
              "those inside Lua scripts. The bench's own status polls are taken out.", ""]
    for r in rows:
        lines.append(f"{r.workers:>3} workers, commands sent per image: "
                     + ", ".join(f"{k} {v / r.images:.2f}" for k, v in r.redis_top))
        if r.storage_requests is not None:
            lines.append("             S3 requests per image: " + ", ".join(
                f"{k} {v / r.images:.2f}" for k, v in r.storage_requests.most_common()))
    return "\n".join(lines)


@dataclass
class DataPlane:
    """Where a row's images are put and how the job names them: a folder under
    SEAM_ALLOWED_ROOT (directory job) or an S3 prefix (input_url job), and the store's request
    counts so far by type (None in file mode)."""

    env: dict[str, str]
    put_images: Callable[[str, int, int], None]  # (set name, count, side)
    job_body: Callable[[str], dict]
    counter: Callable[[], dict[str, int] | None]


def storage_setup(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> DataPlane:
    if args.storage == "file":
        return DataPlane({}, lambda name, n, side: write_images(work / "inputs" / name, n, side),
                         lambda name: {"directory": name, "outputs": ["png"]}, lambda: None)
    from testkit.s3server import s3_server  # the SeaweedFS starter shared with the tests

    server = stack.enter_context(s3_server(work / "s3", metrics=True))
    bucket = server.create_bucket()
    client = server.client()

    def put_images(name: str, n: int, side: int) -> None:
        for i in range(n):
            client.put_object(Bucket=bucket, Key=f"datasets/{name}/img{i:06d}.png", Body=tiny_png(i, side))

    env = {**server.env(), "SEAM_STORAGE_URL": f"s3://{bucket}/data", "SEAM_DATASET_BUCKETS": bucket}
    return DataPlane(env, put_images, lambda name: {"input_url": f"s3://{bucket}/datasets/{name}/",
                                                    "outputs": ["png"]}, server.request_counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4,8,16", help="comma-separated worker counts, ascending")
    ap.add_argument("--delay-ms", type=float, default=200.0, help="fake engine time per image")
    ap.add_argument("--per-worker", type=int, default=60, help="images per worker in each row's job")
    ap.add_argument("--chunk-size", type=int, default=8, help="SEAM_CHUNK_SIZE")
    ap.add_argument("--heartbeat-s", type=int, default=10, help="SEAM_WORKER_HEARTBEAT_S")
    ap.add_argument("--side", type=int, default=64, help="side of the (random) test images")
    ap.add_argument("--pool", default="prefork", choices=["prefork", "solo"])
    ap.add_argument("--storage", default="file", choices=["file", "s3"], help="shared data dir or an S3 server")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs)")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    if counts != sorted(counts):
        ap.error("--workers must be ascending (workers are added between rows)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop the processes started here
    work = Path(tempfile.mkdtemp(prefix="seam-scale-"))
    rows: list[Row] = []
    import redis

    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(redis_server(work))
        data = storage_setup(args, work, stack)
        cluster = Cluster(work, broker, args, data.env)
        stack.callback(cluster.stop)
        rclient = redis.Redis.from_url(broker)
        log = CommandLog(broker)
        stack.callback(log.close)
        cluster.add_workers(counts[0], args.pool)  # the API is ready once a worker is (it serves /segment)
        cluster.start_api()
        for n in counts:
            cluster.add_workers(n - len(cluster.workers), args.pool)
            wait_until(lambda n=n: cluster.ready_workers(rclient) >= n, 300, 0.2, f"{n} workers ready")
            time.sleep(1.0)  # let start-up traffic settle
            rows.append(measure(cluster, log, n, args, data))
            r = rows[-1]
            print(f"{n:>3} workers: {r.images} images in {r.seconds:.1f} s = {r.rate:.1f} images/s", flush=True)
    print()
    print(table(rows, args))
    if args.keep:
        print(f"\nlogs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
