"""CVAT: `POST /corrections` with a "Segmentation mask 1.1" export zip (as CVAT/datumaro write it:
labelmap.txt, ImageSets/Segmentation/default.txt, SegmentationClass/<frame>.png coloured by the
label map, JPEGImages/ with "Save images"). Bad input is a 422 naming it, and nothing is written."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.corrections.helpers import KEY_A, KEY_B, png

H, W = 20, 30
LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nred:128,0,0::\nblue:0,0,128::\nzebra:0,128,0::\n"
COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 3: (0, 0, 128)}


def colour_png(label: np.ndarray, paletted: bool = False, extra: dict | None = None) -> bytes:
    rgb = np.zeros((*label.shape, 3), np.uint8)
    for v, c in {**COLOURS, **(extra or {})}.items():
        rgb[label == v] = c
    img = Image.fromarray(rgb)
    if paletted:
        img = img.quantize(colors=8, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def label(cls: int = 1, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:9, 4:15] = cls
    return m


def export(frames: dict[str, bytes], images: dict[str, bytes] | None = None, labelmap: str = LABELMAP,
           extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labelmap.txt", labelmap)
        z.writestr("ImageSets/Segmentation/default.txt", "\n".join(frames) + "\n")
        for name, data in frames.items():
            z.writestr(f"SegmentationClass/{name}.png", data)
            z.writestr(f"SegmentationObject/{name}.png", data)
        for name, data in (images or {}).items():
            z.writestr(f"JPEGImages/{name}.png", data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def post(client, data: bytes, task: str = "42", key: str = KEY_A):
    return client.post("/corrections", headers={"X-API-Key": key}, data={"task": task},
                       files={"archive": ("masks.zip", data, "application/zip")})


def stored(tmp_path: Path) -> list[str]:
    root = tmp_path / "data" / "corrections" / "cvat-42"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def test_an_export_with_images_is_stored_and_again_changes_nothing(client, tmp_path) -> None:
    zipped = export({"frame_000000": colour_png(label(1)), "sub/frame_000001": colour_png(label(3), paletted=True)},
                    {"frame_000000": png(H, W, 1), "sub/frame_000001": png(H, W, 2)})
    r = post(client, zipped)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changes"] == {"frame_000000": "created", "sub/frame_000001": "created"}
    assert body["corrections"] == 2
    items = {it["image_id"]: it for it in client.get("/corrections/cvat/42", headers={"X-API-Key": KEY_A}).json()[
        "items"]}
    assert items["frame_000000"]["labels"] == ["red"] and items["sub/frame_000001"]["labels"] == ["blue"]
    files = stored(tmp_path)
    assert post(client, zipped).json()["changes"] == {"frame_000000": "unchanged", "sub/frame_000001": "unchanged"}
    assert stored(tmp_path) == files
    # a later export without images updates the masks of frames already seen
    r = post(client, export({"frame_000000": colour_png(label(3))}))
    assert r.status_code == 200 and r.json()["changes"] == {"frame_000000": "updated"}


@pytest.mark.parametrize(("make", "words"), [
    (lambda: export({"f": colour_png(label(1))}), "f: an image we never saw"),
    (lambda: export({"f": colour_png(label(1), extra={1: (9, 9, 9)})}, {"f": png(H, W)}),
     "f: mask colour (9, 9, 9) is not declared in labelmap.txt"),
    (lambda: export({"f": colour_png(label(2), extra={2: (0, 128, 0)})}, {"f": png(H, W)}),
     "f: label 'zebra' is not a class of the model"),
    (lambda: export({"f": colour_png(label(1, H + 1))}, {"f": png(H, W)}), "the mask is 30x21 but the image is 30x20"),
    (lambda: export({"f": b"not a png"}, {"f": png(H, W)}), "f: the mask is not a readable PNG"),
    (lambda: b"PK\x03\x04 broken", "not a zip file"),
    (lambda: export({"f": colour_png(label(1))}, {"f": png(H, W)}, extra={"../evil.txt": b"x"}),
     "escapes the archive root"),
    (lambda: export({"f": colour_png(label(1))}, {"f": png(H, W)}, labelmap="oops\n"), "labelmap.txt line 1"),
])
def test_bad_exports_are_422_naming_the_problem_and_nothing_is_written(client, tmp_path, make, words: str) -> None:
    good = {"ok": colour_png(label(1))}
    data = make()
    if data.startswith(b"PK\x03\x04") and b"broken" not in data:  # put a good frame beside the bad one
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {n: z.read(n) for n in z.namelist()}
        members["SegmentationClass/ok.png"] = good["ok"]
        members["JPEGImages/ok.png"] = png(H, W, 5)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
        data = buf.getvalue()
    r = post(client, data)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"]
    assert [f for f in stored(tmp_path) if f != "project.json"] == []


def test_an_export_without_masks_or_labelmap_is_refused(client) -> None:
    r = post(client, export({}))
    assert r.status_code == 422 and "no SegmentationClass/*.png masks" in r.json()["error"]["message"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SegmentationClass/f.png", colour_png(label(1)))
    r = post(client, buf.getvalue())
    assert r.status_code == 422 and "no labelmap.txt" in r.json()["error"]["message"]


def test_a_zip_bomb_is_refused(client, tmp_path) -> None:
    from seam.service.integrations.corrections_fit import CorrectionsSettings

    client.app.state.corrections_settings = CorrectionsSettings(webhook_wait_s=0, max_zip_bytes=50_000)
    big = export({"f": colour_png(label(1))}, {"f": png(H, W)}, extra={"JPEGImages/pad.bin": b"\0" * 200_000})
    r = post(client, big)
    assert r.status_code == 422 and "uncompressed bytes" in r.json()["error"]["message"]


def test_a_cvat_task_belongs_to_the_first_key(client) -> None:
    assert post(client, export({"f": colour_png(label(1))}, {"f": png(H, W)})).status_code == 200
    r = post(client, export({"f": colour_png(label(3))}), key=KEY_B)
    assert r.status_code == 404
    assert client.get("/corrections/cvat/42", headers={"X-API-Key": KEY_B}).status_code == 404
