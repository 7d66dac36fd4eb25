"""Waiting for a condition and running the service as a real server: a process on a free
loopback port, ready when its /readyz answers 200, stopped with SIGTERM then SIGKILL. Shared by
tests/ and the benchmarks that start `seam serve`."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from testkit import REPO

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str | Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something truthy, and return that. `timeout` is a
    generous deadline for a loaded machine, not the expected time: the wait ends as soon as
    the condition holds. On the deadline: AssertionError naming `what` (a string, or a
    callable giving one, e.g. the current state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {detail or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict[str, str]:
    """This process's environment without the developer's SEAM_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update(extra)
    return env


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


class ServerNotReady(RuntimeError):
    pass


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0, interval: float = 0.1) -> None:
    """Until GET {url}/readyz answers 200; ServerNotReady (with the log's tail) when the
    process exits first or the deadline passes."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise ServerNotReady(f"the server exited ({proc.returncode}); log:\n{log_tail(log)}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout, interval)
    except AssertionError:
        raise ServerNotReady(f"{url} not ready in {timeout} s; log:\n{log_tail(log)}") from None


def spawn(argv: Sequence[str], env: dict[str, str], log: Path, **popen: Any) -> subprocess.Popen:
    """A child process in the repository root, stdout and stderr appended to `log`."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(list(argv), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, **popen)


def start_server(argv: Callable[[int], Sequence[str]], env: dict[str, str], log: Path, timeout: float = 60.0,
                 attempts: int = 3, **popen: Any) -> tuple[str, subprocess.Popen]:
    """Run `argv(port)` on a free loopback port and wait until it is ready: (base URL, process).
    A few attempts, as the port may be taken between probing it and the server binding it."""
    last: ServerNotReady | None = None
    for _ in range(attempts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = spawn(argv(port), env, log, **popen)
        try:
            wait_ready(url, proc, log, timeout)
            return url, proc
        except ServerNotReady as exc:
            stop_process(proc)
            last = exc
    raise RuntimeError(f"the service did not become ready: {last}")


def uvicorn_argv(port: int) -> list[str]:
    """The app factory under uvicorn (what the container runs); configured by SEAM_* variables."""
    return [sys.executable, "-m", "uvicorn", "--factory", "seam.service.main:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]


def seam_serve_argv(port: int) -> list[str]:
    """`seam serve` (the CLI entry point) on loopback."""
    return [sys.executable, "-m", "seam.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
