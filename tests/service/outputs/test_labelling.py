"""Job outputs for the labelling tools: the Label Studio tasks JSON (validated with
label_studio_sdk's models and its LabelInterface, masks decoded with its brush decoder) and the
CVAT "Segmentation mask 1.1" zip (checked against CVAT's format description: labelmap.txt,
ImageSets/Segmentation/default.txt, SegmentationClass/ PNGs whose colours are all declared)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.types import ImportApiRequest, PredictionRequest
from PIL import Image
from seam.service.outputs.labelling import cvat_mask_png, cvat_segmentation_zip

from seam.common.palette import voc_palette
from tests.service.fakes import encode, scene
from tests.support import wait_done

SIZES = {"a": (23, 37), "sub/b": (29, 51), "c": (31, 17)}
LS_CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="red"/><Label value="green"/><Label value="blue"/></BrushLabels>
<PolygonLabels name="label" toName="image">
<Label value="red"/><Label value="green"/><Label value="blue"/></PolygonLabels>
</View>"""


def job_archive() -> tuple[bytes, dict[str, np.ndarray]]:
    buf = io.BytesIO()
    imgs = {}
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (iid, (h, w)) in enumerate(SIZES.items()):
            rgb = scene(h, w, seed=i)
            imgs[iid] = rgb
            zf.writestr(f"{iid}.png", encode(rgb))
    return buf.getvalue(), imgs


def run_job(client, **fields) -> tuple[str, zipfile.ZipFile, dict[str, np.ndarray]]:
    data, imgs = job_archive()
    r = client.post("/jobs", files={"archive": ("x.zip", data, "application/zip")}, data=fields)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert wait_done(client, job_id, 30)["state"] == "succeeded"
    r = client.get(f"/jobs/{job_id}/results")
    assert r.status_code == 200
    return job_id, zipfile.ZipFile(io.BytesIO(r.content)), imgs


def png_label(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zf.read(name))))


def test_labelstudio_tasks_json_validates_and_decodes(make_client) -> None:
    client = make_client()
    prefix = "/data/local-files/?d=photos/"
    job_id, zf, imgs = run_job(client, outputs="png,labelstudio", image_url_prefix=prefix)
    tasks = json.loads(zf.read("labelstudio_tasks.json"))
    assert len(tasks) == len(SIZES)
    li = LabelInterface(LS_CONFIG)
    n_regions = 0
    for task in tasks:
        # the SDK's import model: the task; its prediction model (the task id LS assigns on import)
        ImportApiRequest.model_validate({k: v for k, v in task.items() if k != "predictions"})
        for pred in task["predictions"]:
            PredictionRequest.model_validate({**pred, "task": 0})
            assert li.validate_prediction(pred, return_errors=True) == []
        rel = task["data"]["image"][len(prefix):]
        iid = rel.rsplit(".", 1)[0]
        assert task["data"]["image"].startswith(prefix) and iid in SIZES
        label = png_label(zf, f"png/{iid}.png")
        h, w = label.shape
        for reg in task["predictions"][0]["result"]:
            c = ["red", "green", "blue"].index(reg["value"]["brushlabels"][0])
            decoded = decode_rle(reg["value"]["rle"]).reshape(h, w, 4)[:, :, 3] == 255
            assert np.array_equal(decoded, label == c + 1)
            n_regions += 1
    assert n_regions >= 4
    # the export endpoint: polygons under the project's own tag names
    r = client.get(f"/jobs/{job_id}/export/labelstudio", params={"region": "polygon", "from_name": "label"})
    assert r.status_code == 200
    for task in r.json():
        for pred in task["predictions"]:
            assert pred["result"] and all(g["type"] == "polygonlabels" for g in pred["result"])
            assert li.validate_prediction(pred, return_errors=True) == []
    bad = li.validate_prediction({"result": [dict(r.json()[0]["predictions"][0]["result"][0], from_name="nope")]},
                                 return_errors=True)
    assert bad  # the validator does reject what does not fit the config


def test_labelstudio_output_needs_a_prefix(make_client) -> None:
    client = make_client()
    data, _ = job_archive()
    r = client.post("/jobs", files={"archive": ("x.zip", data, "application/zip")}, data={"outputs": "labelstudio"})
    assert r.status_code == 422 and "image_url_prefix" in r.json()["error"]["message"]


def parse_labelmap(text: str) -> dict[tuple[int, int, int], str]:
    colours = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, rgb, _parts, _actions = line.split(":")
        colours[tuple(int(v) for v in rgb.split(","))] = name
    return colours


def check_cvat_zip(data: bytes, labels: dict[str, np.ndarray], names: list[str]) -> None:
    """CVAT's "Segmentation mask 1.1" description: labelmap.txt `label:r,g,b:parts:actions`,
    ImageSets/Segmentation/default.txt listing the images, SegmentationClass/<image>.png whose
    pixel colours are each a label of labelmap.txt."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    colours = parse_labelmap(zf.read("labelmap.txt").decode())
    assert sorted(colours.values()) == sorted(["background", *names])
    ids = zf.read("ImageSets/Segmentation/default.txt").decode().split()
    assert sorted(ids) == sorted(labels)
    for iid in ids:
        rgb = np.asarray(Image.open(io.BytesIO(zf.read(f"SegmentationClass/{iid}.png"))).convert("RGB"))
        found = {tuple(int(v) for v in c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}
        assert found <= set(colours), f"undeclared colours {found - set(colours)}"
        by_name = {n: c for c, n in colours.items()}
        expected = labels[iid].copy()
        expected[(expected == 255) | (expected > len(names))] = 0
        for v, n in enumerate(["background", *names]):
            assert np.array_equal(np.all(rgb == by_name[n], axis=-1), expected == v), (iid, n)


def test_cvat_zip_from_a_job(make_client) -> None:
    client = make_client()
    job_id, zf, imgs = run_job(client, outputs="png,cvat")
    labels = {iid: png_label(zf, f"png/{iid}.png") for iid in SIZES}
    assert sum(int((lab > 0).sum()) for lab in labels.values()) > 0
    check_cvat_zip(zf.read("cvat_segmentation_mask.zip"), labels, ["red", "green", "blue"])


def test_cvat_zip_maps_the_ignore_band() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (13, 21)).astype(np.uint8)
    label[3:6, 4:9] = 255
    names = ["red", "green", "blue"]
    data = cvat_segmentation_zip([("x", label), ("dir/y", label[::-1].copy())], names)
    check_cvat_zip(data, {"x": label, "dir/y": label[::-1].copy()}, names)
    # the PNG is a VOC-palette image: index = class value, so datumaro/CVAT read colours and indices alike
    img = Image.open(io.BytesIO(cvat_mask_png(label, 3)))
    assert img.mode == "P" and np.asarray(img).max() <= 3
    assert tuple(np.asarray(img.getpalette()[:12]).reshape(4, 3)[3]) == tuple(voc_palette()[3])
