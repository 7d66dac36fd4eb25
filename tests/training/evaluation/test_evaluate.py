"""seam.training.evaluation.evaluate and `seam eval` on tiny directories written here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seam.training.evaluation.evaluate import CURVE_THRESHOLDS, evaluate, plot_curve
from typer.testing import CliRunner

from seam.cli import app
from seam.common.palette import label_to_pil

NAMES = ("background", "a", "b", "c")
C = len(NAMES)


def _ref_miou(preds, gts):
    """Direct per-class counts, independent of seam.common.metrics."""
    ious = []
    for c in range(C):
        tp = t = p = 0
        for pr, g in zip(preds, gts, strict=True):
            v = g != 255
            tp += int(np.sum((pr == c) & (g == c) & v))
            t += int(np.sum((g == c) & v))
            p += int(np.sum((pr == c) & v))
        if t + p - tp:
            ious.append(tp / (t + p - tp))
    return 100 * float(np.mean(ious))


def _ref_label(cam_dict, t, shape):
    """Background unless some CAM is strictly above t; then the first maximal class."""
    if not cam_dict:
        return np.zeros(shape, np.int64)
    keys = sorted(cam_dict)
    stack = np.stack([cam_dict[k] for k in keys]).astype(np.float32)
    best = np.asarray(keys)[stack.argmax(0)] + 1
    return np.where(stack.max(0) > np.float32(t), best, 0)


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, png_dir, npy_dir = tmp_path / "gt", tmp_path / "png", tmp_path / "npy"
    for d in (gt_dir, png_dir, npy_dir):
        d.mkdir()
    gts, preds, cams = {}, {}, {}
    for k in range(4):
        iid = f"img_{k}"
        h, w = 18 + k, 22
        g = np.zeros((h, w), np.uint8)
        g[3:12, 4:15] = 1 + k % 3
        g[10:16, 12:20] = 1 + (k + 1) % 3
        g[2, :] = 255
        pred = np.where(rng.random((h, w)) < 0.8, g, rng.integers(0, C, (h, w))).astype(np.uint8)
        pred[g == 255] = 0
        present = sorted({int(v) - 1 for v in np.unique(g) if 0 < v < 255})
        # CAMs: high inside the class's region, noisy elsewhere; ranges overlap the sweep
        cd = {c: np.clip((g == c + 1) * rng.uniform(0.2, 0.6) + rng.random((h, w)) * 0.45, 0, 1).astype(np.float32)
              for c in present}
        for c in present:  # exact ties with the swept thresholds: background must win them
            q = rng.random((h, w)) < 0.5
            cd[c][q] = (np.round(cd[c][q].astype(np.float64) * 100) / 100).astype(np.float32)
        label_to_pil(g).save(gt_dir / f"{iid}.png")
        label_to_pil(pred).save(png_dir / f"{iid}.png")
        np.save(npy_dir / f"{iid}.npy", cd)
        gts[iid], preds[iid], cams[iid] = g, pred, cd
    # a GT image without a prediction: skipped when ids is None
    label_to_pil(np.zeros((5, 5), np.uint8)).save(gt_dir / "no_pred.png")
    return {"gt": gt_dir, "png": png_dir, "npy": npy_dir, "gts": gts, "preds": preds, "cams": cams}


def test_png_matches_reference(data):
    r = evaluate(data["png"], data["gt"], class_names=NAMES, progress=False)
    ids = sorted(data["preds"])
    assert r["num_images"] == 4 and r["kind"] == "png" and r["threshold"] is None
    ref = _ref_miou([data["preds"][i] for i in ids], [data["gts"][i] for i in ids])
    assert r["miou"] == pytest.approx(ref, abs=1e-9)
    assert set(r["per_class"]) == set(NAMES)
    assert r["mfn"] is not None and r["mfp"] is not None


def test_npy_single_threshold_matches_reference(data):
    ids = sorted(data["cams"])
    for t in (0.0, 0.26, 0.5):
        r = evaluate(data["npy"], data["gt"], kind="npy", threshold=t, class_names=NAMES, progress=False)
        ref = _ref_miou([_ref_label(data["cams"][i], t, data["gts"][i].shape) for i in ids],
                        [data["gts"][i] for i in ids])
        assert r["miou"] == pytest.approx(ref, abs=1e-9)
        assert r["threshold"] == t


def test_curve_equals_separate_evaluations(data):
    r = evaluate(data["npy"], data["gt"], curve=True, class_names=NAMES, progress=False)
    assert len(r["curve"]) == 60 and r["curve"][0]["threshold"] == 0.0 and r["curve"][-1]["threshold"] == 0.59
    separate = [evaluate(data["npy"], data["gt"], threshold=t, class_names=NAMES, progress=False)
                for t in CURVE_THRESHOLDS]
    for point, single in zip(r["curve"], separate, strict=True):
        assert point["miou"] == pytest.approx(single["miou"], abs=1e-9)
        assert point["mfn"] == pytest.approx(single["mfn"], abs=1e-12)
        assert point["mfp"] == pytest.approx(single["mfp"], abs=1e-12)
    mious = [s["miou"] for s in separate]
    best = CURVE_THRESHOLDS[int(np.argmax(mious))]
    assert r["best_threshold"] == best
    assert r["miou"] == pytest.approx(max(mious))
    # not a degenerate curve: the sweep must matter on this data
    assert max(mious) - min(mious) > 5


def test_npz_files_give_same_scores(data, tmp_path):
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    for iid, cd in data["cams"].items():
        keys = sorted(cd)
        np.savez(npz_dir / f"{iid}.npz", classes=np.asarray(keys), cams=np.stack([cd[k] for k in keys]))
    a = evaluate(data["npy"], data["gt"], threshold=0.3, class_names=NAMES, progress=False)
    b = evaluate(npz_dir, data["gt"], threshold=0.3, class_names=NAMES, progress=False)
    assert b["kind"] == "npy" and a["miou"] == b["miou"]


def test_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no prediction.*ghost"):
        evaluate(data["png"], data["gt"], ids=["img_0", "ghost"], class_names=NAMES, progress=False)
    label_to_pil(np.zeros((4, 4), np.uint8)).save(data["png"] / "orphan.png")
    with pytest.raises(FileNotFoundError, match="no ground truth.*orphan"):
        evaluate(data["png"], data["gt"], ids=["img_1", "orphan"], class_names=NAMES, progress=False)
    with pytest.raises(ValueError, match="CAM files"):
        evaluate(data["png"], data["gt"], threshold=0.3, class_names=NAMES, progress=False)
    with pytest.raises(FileNotFoundError, match="directory not found"):
        evaluate(tmp_path / "missing", data["gt"], class_names=NAMES, progress=False)
    with pytest.raises(ValueError, match="outside"):
        evaluate(data["png"], data["gt"], class_names=("background", "a"), progress=False)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "x.png").write_bytes(b"")
    (mixed / "x.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="both"):
        evaluate(mixed, data["gt"], class_names=NAMES, progress=False)


def test_plot_curve(data, tmp_path):
    pytest.importorskip("matplotlib")
    r = evaluate(data["npy"], data["gt"], curve=True, class_names=NAMES, progress=False)
    out = plot_curve(r, tmp_path / "curve.png")
    assert Image.open(out).size[0] > 100


def _classes_file(tmp_path: Path) -> Path:
    p = tmp_path / "classes.txt"
    p.write_text("\n".join(NAMES) + "\n")
    return p


def test_cli_json(data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    ids = tmp_path / "ids.txt"
    ids.write_text("img_0\nimg_2\n\n")
    res = runner.invoke(app, ["eval", "--pred", str(data["npy"]), "--gt", str(data["gt"]), "--curve",
                              "--classes", str(_classes_file(tmp_path)), "--list", str(ids), "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["num_images"] == 2 and "best_threshold" in r and len(r["curve"]) == 60
    assert "mIoU" in res.stdout
    direct = evaluate(data["npy"], data["gt"], ids=["img_0", "img_2"], curve=True, class_names=NAMES, progress=False)
    assert r["miou"] == pytest.approx(direct["miou"])


def test_cli_user_errors_are_one_line(data, tmp_path):
    runner = CliRunner()
    cls = str(_classes_file(tmp_path))
    cases = [
        ["eval", "--pred", str(tmp_path / "nope"), "--gt", str(data["gt"]), "--classes", cls],
        ["eval", "--pred", str(data["png"]), "--gt", str(data["gt"]), "--threshold", "0.3", "--classes", cls],
        ["eval", "--pred", str(data["png"]), "--gt", str(data["gt"]), "--type", "jpg", "--classes", cls],
        ["eval", "--pred", str(data["png"]), "--gt", str(data["gt"]), "--classes", str(tmp_path / "none.txt")],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "Traceback" not in res.output and "error" in res.output


def test_rgb_label_pngs_read_through_palette(data, tmp_path):
    from seam.common.palette import colorize

    rgb_dir = tmp_path / "rgb"
    rgb_dir.mkdir()
    for iid, pred in data["preds"].items():
        Image.fromarray(colorize(pred)).save(rgb_dir / f"{iid}.png")
    a = evaluate(data["png"], data["gt"], class_names=NAMES, progress=False)
    b = evaluate(rgb_dir, data["gt"], class_names=NAMES, progress=False)
    assert a["miou"] == b["miou"] and a["per_class"] == b["per_class"]
