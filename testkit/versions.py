"""Versioned model repositories for tests and benchmarks: the bundled demo model published as
versions whose answers differ (each version its own background threshold in the manifest)."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from seam.modelrepo import versions
from testkit import REPO

DEMO = REPO / "models" / "seam-demo"
# background thresholds far apart: the label maps of the two versions differ visibly
BG = {1: 0.05, 2: 0.6}


def demo_variant(dest: Path, bg: float) -> Path:
    """A copy of the demo model whose manifest has background threshold `bg`."""
    shutil.copytree(DEMO, dest)
    mf = json.loads((dest / "manifest.json").read_text())
    mf["cam"]["bg_threshold"] = bg
    (dest / "manifest.json").write_text(json.dumps(mf, indent=2))
    return dest


def publish_variant(repo: Path, name: str, bg: float, scratch: Path, promote: bool = False) -> int:
    src = demo_variant(scratch / f"src-{name}-{bg}-{len(list(scratch.glob('src-*')))}", bg)
    return versions.publish_version(repo, name, src, promote=promote)


def corrupt(path: Path) -> None:
    """Flip a byte in the middle of a file (a bad copy)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()
