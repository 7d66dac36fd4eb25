"""The bundled demo model (models/) served by `seam serve` under an address-space cap, and
photo-like JPEGs to send it (tests/service/api/test_any_photo.py, bench/any_photo.py)."""
from __future__ import annotations

import io
import resource
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from testkit import REPO
from testkit.processes import seam_serve_argv, service_env, start_server

# Before the fix one 1024x1024 photo took the server to 23.6 GB; 3 GiB of address space
# holds Python, onnxruntime, the demo model and a 12-megapixel photo's buffers.
ADDRESS_SPACE = 3 << 30


def photo(h: int, w: int, seed: int = 0) -> bytes:
    """A smooth JPEG with a few coloured blobs (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 90 + 60 * np.sin(xx / 97), 110 + 50 * np.cos(yy / 83), 120
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def serve_demo(data_dir: Path, log: Path, cap: bool = True, **env_extra: str) -> tuple[str, subprocess.Popen]:
    """`seam serve` over the repository's models/ (embedded mode) on a free port, ready;
    under the address-space cap unless cap=False. (url, process)."""
    env = service_env(**{"PYTHONPATH": str(REPO), "SEAM_MODELS_DIR": str(REPO / "models"),
                         "SEAM_DATA_DIR": str(data_dir), "SEAM_THREADS": "2", "MALLOC_ARENA_MAX": "2",
                         "OMP_NUM_THREADS": "2", **env_extra})
    log.unlink(missing_ok=True)
    return start_server(seam_serve_argv, env, log, timeout=120, preexec_fn=_cap if cap else None)
