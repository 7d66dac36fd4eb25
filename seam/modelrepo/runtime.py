"""onnxruntime plumbing: provider choice, thread counts, session options.

onnxruntime-gpu lists the CUDA provider even on machines without a GPU, and asking
for it there logs an error before falling back to CPU. We therefore only request
CUDA when a GPU is actually usable, and report the provider a session really got.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ORT_ERROR = 3  # onnxruntime log severity: 0 verbose .. 3 error, 4 fatal


@lru_cache(maxsize=1)
def gpu_usable() -> bool:
    """True when an NVIDIA device node exists and `nvidia-smi -L` lists a GPU (when installed).

    Cheap and quiet: no CUDA context is created, nothing is logged.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return True  # device nodes without the tool (minimal containers): let the session decide
    try:
        out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


_ALIASES = {"cpu": CPU, "cuda": CUDA}


def select_providers(requested: str = "auto") -> list[str]:
    """Provider list for InferenceSession.

    'auto' = CUDA when a GPU is usable, else CPU. Otherwise a comma-separated list of
    'cpu', 'cuda' or full provider names, in preference order; CUDA is dropped
    quietly when no GPU is usable and another provider follows it, and is an error
    when it is the only one asked for.
    """
    tokens = [t.strip() for t in requested.split(",") if t.strip()] or ["auto"]
    available = ort.get_available_providers()
    cuda_ok = CUDA in available and gpu_usable()
    if [t.lower() for t in tokens] == ["auto"]:
        return [CUDA, CPU] if cuda_ok else [CPU]
    chosen: list[str] = []
    for tok in tokens:
        name = _ALIASES.get(tok.lower(), tok)
        # CUDA is a provider we know even where this build lacks it (the CPU onnxruntime package):
        # then it is dropped or refused below like an unusable GPU, not called unknown.
        if name not in available and name != CUDA:
            raise ValueError(f"unknown provider {tok!r}; choose from auto, cpu, cuda or {', '.join(available)}")
        if name == CUDA and not cuda_ok:
            continue
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        why = "this onnxruntime build has no CUDA provider" if CUDA not in available else "no usable GPU"
        raise ValueError(f"providers {requested!r} requested but {why}; use 'cpu' or 'auto'")
    if CPU not in chosen:
        chosen.append(CPU)  # onnxruntime's own fallback for unsupported nodes
    return chosen


def default_threads() -> int:
    """CPUs this process may use (affinity mask and cgroup quota), at least 1.

    onnxruntime's default (0) means every physical core and ignores container limits.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    try:  # cgroup v2 quota, e.g. "200000 100000" = 2 CPUs
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


@dataclass(frozen=True)
class RuntimeConfig:
    providers: tuple[str, ...] = (CPU,)
    threads: int = 1

    @property
    def provider(self) -> str:
        return self.providers[0]


def resolve_runtime(providers: str = "auto", threads: int | None = None) -> RuntimeConfig:
    chosen = select_providers(providers)
    if threads is not None and threads < 1:
        raise ValueError("threads must be >= 1")
    cfg = RuntimeConfig(tuple(chosen), threads or default_threads())
    log.info("onnxruntime providers %r -> %s (GPU usable: %s), %d intra-op threads",
             providers, ", ".join(chosen), CUDA in chosen, cfg.threads)
    return cfg


def session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # every request has its own image size: per-shape memory patterns would only pile up
    so.enable_mem_pattern = False
    so.log_severity_level = _ORT_ERROR
    return so


def cpu_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session as the engine makes them (export checks, calibration, benches)."""
    return create_session(path, RuntimeConfig(threads=threads or default_threads()))[0]


def create_session(path: str | Path, runtime: RuntimeConfig) -> tuple[ort.InferenceSession, str]:
    """(session, provider it actually runs on)."""
    provider_options = [
        {"cudnn_conv_algo_search": "HEURISTIC"} if p == CUDA else {} for p in runtime.providers
    ]
    sess = ort.InferenceSession(str(path), session_options(runtime.threads),
                                providers=list(runtime.providers), provider_options=provider_options)
    got = sess.get_providers()[0]
    if got != runtime.provider:
        log.warning("%s: asked for %s, onnxruntime runs it on %s", Path(path).name, runtime.provider, got)
    return sess, got


def warm_up(sess: ort.InferenceSession, size: int = 64) -> None:
    """One small pass so the first request does not pay for kernel set-up and allocation."""
    inp = sess.get_inputs()[0]
    sess.run(None, {inp.name: np.zeros((1, 3, size, size), np.float32)})
