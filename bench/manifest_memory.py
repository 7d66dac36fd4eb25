"""The API's memory while it accepts a job over a 1,000,000-line manifest.

    python bench/manifest_memory.py                   # 1,000,000 lines
    python bench/manifest_memory.py --lines 100000

A manifest (JSONL, one `{"uri": "s3://bucket/images/<n>.jpg"}` per line) is put on a SeaweedFS S3
server (testkit/s3server.py); `seam serve` (Celery mode, a Redis of its own, SEAM_STORAGE_URL on
the same server) is asked for a job over it (`input_url`). The API reads the manifest as a
stream: each chunk of lines becomes a job file and a queued task, duplicate ids are checked in a
SQLite file, never a list in memory. No worker runs: back-pressure is lifted
(SEAM_DATASET_MAX_QUEUED_CHUNKS) so the whole manifest is accepted, and the figure is the
acceptance alone. The API's RSS (process + children) is sampled every 0.1 s and printed against
the lines read so far; flat = the same at 10 % and at 100 %.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.processes import free_port, log_tail, seam_serve_argv, service_env, spawn, wait_until  # noqa: E402
from testkit.redisserver import redis_server  # noqa: E402
from testkit.s3server import s3_server  # noqa: E402


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def write_manifest(path: Path, bucket: str, lines: int) -> int:
    with path.open("w") as f:
        for i in range(lines):
            f.write(f'{{"uri": "s3://{bucket}/images/{i:07d}.jpg"}}\n')
    return path.stat().st_size


class RssSampler:
    """Peak and current RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.current = self.peak = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def read(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.current = self.read()
            self.peak = max(self.peak, self.current)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def accept(url: str, bucket: str, lines: int, sampler: RssSampler) -> list[tuple[float, int, int, int]]:
    """Submit the job and follow its reading: [(seconds, lines read, RSS now, peak RSS so far)]."""
    trace = []
    with httpx.Client(base_url=url, timeout=60) as c:
        t0 = time.perf_counter()
        # output_url: a job without one is capped at an archive's size (its results zip), 10,000 images
        r = c.post("/jobs", json={"input_url": f"s3://{bucket}/manifest.jsonl", "output_url": f"s3://{bucket}/out/",
                                  "outputs": ["png"]})
        if r.status_code != 202:
            raise SystemExit(f"POST /jobs: {r.status_code} {r.text[:500]}")
        job_id = r.json()["id"]
        while True:
            body = c.get(f"/jobs/{job_id}").json()
            read = body["total"] if body["total"] == lines else max(body["total"] - 1, 0)
            trace.append((time.perf_counter() - t0, read, sampler.current, sampler.peak))
            if len(trace) % 10 == 1:
                print(f"  {trace[-1][0]:5.0f} s: {body['state']}, total {body['total']:,}, failed {body['failed']}, "
                      f"API RSS {sampler.current / 2**20:.0f} MiB {body.get('errors') or ''}", flush=True)
            if body["total"] == lines or body["state"] not in ("queued", "running"):
                break
            if len(trace) > 30 and trace[-30][1] == read:
                raise SystemExit(f"reading stalled at {read:,} lines: {body}")
            time.sleep(1.0)
        c.delete(f"/jobs/{job_id}")
    return trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=500)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop the servers started here
    work = Path(tempfile.mkdtemp(prefix="seam-manifest-"))
    try:
        with redis_server(work) as broker, s3_server(work / "s3") as s3:
            bucket = s3.create_bucket()
            print(f"S3 server up; writing and uploading a {args.lines:,}-line manifest", flush=True)
            size = write_manifest(work / "manifest.jsonl", bucket, args.lines)
            s3.client().upload_file(str(work / "manifest.jsonl"), bucket, "manifest.jsonl")
            (work / "manifest.jsonl").unlink()
            port = free_port()
            env = service_env(**s3.env(), PYTHONPATH=str(Path(__file__).resolve().parents[1]), SEAM_ENGINE="fake",
                              SEAM_BROKER_URL=broker, SEAM_SYNC_INFERENCE="api", SEAM_STORAGE_URL=f"s3://{bucket}/data",
                              SEAM_DATASET_BUCKETS=bucket, SEAM_CHUNK_SIZE=str(args.chunk_size),
                              SEAM_DATASET_MAX_QUEUED_CHUNKS="100000", SEAM_DATASET_MAX_LINES=str(args.lines),
                              SEAM_DATA_DIR=str(work / "data"),
                              SEAM_MODELS_DIR=str(work / "models"))
            api = spawn([*seam_serve_argv(port), "--log-level", "warning"], env, work / "api.log",
                        start_new_session=True)
            try:
                url = f"http://127.0.0.1:{port}"
                # /healthz, not /readyz: with no worker the API is not ready to compute, but it accepts jobs
                wait_until(lambda: _healthy(url) or api.poll() is not None, 120, 0.2, "the API answering /healthz")
                if api.poll() is not None:
                    raise RuntimeError("seam serve exited")
                time.sleep(2.0)  # settle after start-up
                print("API up; submitting", flush=True)
                sampler = RssSampler(api.pid)
                idle = sampler.read()
                trace = accept(url, bucket, args.lines, sampler)
                sampler.stop()
            except BaseException:
                print(log_tail(work / "api.log"))
                raise
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(api.pid, signal.SIGTERM)
                api.wait(30)
        report(trace, idle, args.lines, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(trace: list[tuple[float, int, int, int]], idle: int, lines: int, size: int) -> None:
    mib = 2 ** 20
    print(f"manifest: {lines:,} lines, {size / mib:.0f} MiB; API RSS idle {idle / mib:.0f} MiB")
    print("| s | lines read | API RSS MiB | peak so far MiB |")
    print("| ---: | ---: | ---: | ---: |")
    marks = {int(lines * f) for f in (0.1, 0.25, 0.5, 0.75)} | {lines}
    shown: set[int] = set()
    for t, read, rss, peak in trace:
        due = [m for m in marks if read >= m and m not in shown]
        if due or t == trace[-1][0]:
            shown.update(due)
            print(f"| {t:.0f} | {read:,} | {rss / mib:.0f} | {peak / mib:.0f} |")
    t, read, _, peak = trace[-1]
    print(f"\naccepted {read:,} lines in {t:.0f} s ({read / max(t, 1e-9):,.0f} lines/s); "
          f"peak API RSS {peak / mib:.0f} MiB = idle + {(peak - idle) / mib:.0f} MiB")


if __name__ == "__main__":
    main()
