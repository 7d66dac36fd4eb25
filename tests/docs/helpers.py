"""The docs test's pieces: the command blocks of README.md and docs/*.md with their markers, the
files a reader is assumed to have (photo.jpg, images.zip, ...), and running a block as a reader
would paste it into bash."""
from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.support import REPO, shapes_photo

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = ("bash", "sh", "shell", "console")
# <!-- docs-test: skip reason="needs a GPU" --> on the line before a block: not run, with why
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<kind>\w+)(?:\s+reason=\"(?P<reason>[^\"]*)\")?\s*-->")
# the documented server address; the test's server listens elsewhere (a free port)
DOC_ADDRESSES = ("127.0.0.1:8000", "localhost:8000")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the marker's reason when marked skip

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The shell blocks of `doc`, in order. A marker applies to the block right after it; a
    marker that is malformed or has no reason raises ValueError."""
    lines = doc.read_text().split("\n")
    out, i, pending = [], 0, None
    while i < len(lines):
        text = lines[i].strip()
        if "docs-test" in text:
            m = MARKER.search(text)
            if not m or m["kind"] != "skip" or not (m["reason"] or "").strip():
                raise ValueError(f"{doc}:{i + 1}: expected <!-- docs-test: skip reason=\"why\" -->, got {text!r}")
            pending = m["reason"].strip()
        elif text.startswith("```"):
            lang = text[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            if lang in SHELL_LANGS:
                out.append(Block(doc, i + 1, "\n".join(lines[i + 1:end]), pending))
            pending, i = None, end
        elif text:
            pending = None  # a marker is for the block right below it
        i += 1
    return out


def _shapes(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(shapes_photo(h, w, seed))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_reader_files(root: Path) -> None:
    """What the docs assume a reader has in the current folder: photo.jpg, a photos/ folder,
    images.zip (2007_000032.jpg, sub/a.jpg), images.tar.gz with labels.csv beside it, frames.zip,
    photos.zip;
    models/ and docker/ of the repository (linked: the test checks they are left unchanged)."""
    _shapes(300, 451, 0).save(root / "photo.jpg", quality=90)  # the cat-photo size
    (root / "photos").mkdir()
    for i, (h, w) in enumerate([(120, 160), (200, 150), (90, 120)]):
        _shapes(h, w, i + 1).save(root / "photos" / f"p{i}.jpg", quality=90)
    with zipfile.ZipFile(root / "images.zip", "w") as zf:
        zf.writestr("2007_000032.jpg", _jpeg(_shapes(160, 200, 5)))
        zf.writestr("sub/a.jpg", _jpeg(_shapes(150, 100, 6)))
    with tarfile.open(root / "images.tar.gz", "w:gz") as tf:
        for name, img in (("b.jpg", _shapes(100, 140, 7)), ("c.jpg", _shapes(140, 100, 8))):
            data = _jpeg(img)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (root / "labels.csv").write_text("image,labels\nb,disc;triangle\n")
    with zipfile.ZipFile(root / "photos.zip", "w") as zf:
        for p in sorted((root / "photos").iterdir()):
            zf.write(p, p.name)  # served by Label Studio from <root>/photos/ (the docs' prefix)
    with zipfile.ZipFile(root / "frames.zip", "w") as zf:
        for i in range(2):
            zf.writestr(f"frame_{i:06d}.jpg", _jpeg(_shapes(120, 160, 10 + i)))
    for name in ("models", "docker"):
        (root / name).symlink_to(REPO / name)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    # curl answers 4xx/5xx with exit status 22, so a block whose request fails fails
    (bin_dir / "curl").write_text('#!/bin/sh\nexec /usr/bin/curl --fail-with-body "$@"\n')
    (bin_dir / "curl").chmod(0o755)


def tree_digest(*roots: Path) -> str:
    """A digest of every file under `roots`: the repository's folders a block may write into."""
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO)).encode() + p.read_bytes())
    return h.hexdigest()


def run_block(block: Block, cwd: Path, env: dict[str, str], state: Path, server: str,
              timeout: float = 180.0) -> subprocess.CompletedProcess:
    """`block` in bash (-e -o pipefail) in `cwd`, the documented address replaced by `server`'s.
    Variables a block sets (S=..., JOB=$(...)) reach the next blocks of the same document
    through `state`, as they would in the reader's shell."""
    code = block.code
    for addr in DOC_ADDRESSES:
        code = code.replace(addr, server)
    script = (f"set -a\n[ -f {state} ] && . {state}\nset -eo pipefail\n"
              f"trap 'export -p | grep -v -E \" (BASH|SHELL|SHLVL|PWD|OLDPWD|_)=\" > {state}' EXIT\n{code}\n")
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
