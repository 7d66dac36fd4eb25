"""Per-image COCO files and the merged coco.json of a job give each image the same `image_id`,
also when images before it failed (the merge used to renumber the images that succeeded)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from pycocotools.coco import COCO
from seam.service.outputs.coco import coco_rle_decode

from seam.common.encoders import coco_rle
from tests.service.fakes import (
    FAIL_PIXEL,
    encode,
    rgb_image,
    zip_bytes,
)
from tests.support import wait_done


def test_per_image_coco_files_use_the_merged_image_ids(client, tmp_path):
    bad = rgb_image(seed=1)
    bad[0, 0] = FAIL_PIXEL  # the fake engine raises on this image
    members = {"a.png": encode(rgb_image(seed=2)), "b_fails.png": encode(bad), "c.png": encode(rgb_image(40, 30, 3)),
               "sub/d.png": encode(rgb_image(20, 50, 4))}
    job = client.post("/jobs", files={"archive": ("x.zip", zip_bytes(members), "application/zip")},
                      data={"outputs": "coco"}).json()
    done = wait_done(client, job["id"])
    assert (done["done"], done["failed"]) == (3, 1), done
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job['id']}/results").content))
    merged = json.loads(zf.read("coco.json"))
    merged_ids = {im["seam_id"]: im["id"] for im in merged["images"]}
    assert merged_ids == {"a": 1, "c": 3, "sub/d": 4}  # rank among all submitted ids: b keeps its number 2
    for seam_id, image_id in merged_ids.items():
        own = json.loads(zf.read(f"coco/{seam_id}.json"))
        assert own["image"]["id"] == image_id
        assert own["annotations"] and {a["image_id"] for a in own["annotations"]} == {image_id}
        single = client.get(f"/jobs/{job['id']}/results/coco/{seam_id}").json()
        assert single["image"]["id"] == image_id
        merged_anns = [a for a in merged["annotations"] if a["image_id"] == image_id]
        assert [a["segmentation"] for a in merged_anns] == [a["segmentation"] for a in own["annotations"]]
    # the merged file is valid COCO with unique annotation ids
    path = tmp_path / "coco.json"
    path.write_bytes(zf.read("coco.json"))
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 3, 4] and len(coco.getAnnIds()) == len(merged["annotations"])


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        m = rng.random((h, w)) < rng.random()
        ours = coco_rle(m)
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == ref["counts"].decode()
        assert np.array_equal(coco_rle_decode(ours), m)
