"""A Redis server of one's own on a free loopback port (no persistence), for benchmarks that
count the server's commands: nothing else talks to it."""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from testkit.processes import free_port, wait_until


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """`redis-server` on 127.0.0.1:<free port> for the block; yields its redis:// URL (db 0)."""
    import redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _pings(client) or proc.poll() is not None, 10, 0.05, "redis-server did not answer")
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({proc.returncode})")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
