"""Training data and waits shared by the trainings tests: a `seam synth` set turned into the
archive a user uploads (images/, labels.csv with each image's tags, SegmentationClass/ ground
truth), and polling a training over REST."""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

from testkit.processes import wait_until

# small enough for a CPU test, long enough per epoch to be killed in the middle of one
RECIPE = {"backbone": "resnet38_small", "epochs": 1, "batch_size": 4, "crop": 64}


def synth_set(root: Path, n: int = 12, seed: int = 1) -> Path:
    from seam.training.data.synth import generate

    generate(root, n=n, seed=seed, size=64)
    return root


def tagged_folder(synth: Path, dest: Path) -> Path:
    """The user's layout: images/<id>.jpg, labels.csv (id,class;class), SegmentationClass/<id>.png."""
    names = [ln.strip() for ln in (synth / "classes.txt").read_text().splitlines() if ln.strip()][1:]
    table = np.load(synth / "cls_labels.npy", allow_pickle=True).item()  # our own generator's file
    (dest / "images").mkdir(parents=True)
    (dest / "SegmentationClass").mkdir()
    rows = ["image,labels"]
    for iid, vec in sorted(table.items()):
        (dest / "images" / f"{iid}.jpg").write_bytes((synth / "JPEGImages" / f"{iid}.jpg").read_bytes())
        (dest / "SegmentationClass" / f"{iid}.png").write_bytes((synth / "SegmentationClass" / f"{iid}.png")
                                                                .read_bytes())
        rows.append(f"{iid}.jpg,{';'.join(names[i] for i in np.flatnonzero(vec > 0.5))}")
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")
    return dest


def zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def wait_training(c: httpx.Client, tid: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
                  timeout: float = 240.0, seen: list[dict] | None = None) -> dict:
    last: dict = {}

    def check() -> dict | None:
        r = c.get(f"/trainings/{tid}")
        assert r.status_code == 200, r.text
        last.update(r.json())
        if seen is not None:
            seen.append(dict(last))
        return last if last["state"] in states else None

    return wait_until(check, timeout, 0.1, lambda: f"{last}\nlog:\n{c.get(f'/trainings/{tid}/log').text[-3000:]}")


def elapsed(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f} s"
