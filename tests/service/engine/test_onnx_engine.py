"""OnnxEngine without torch: small hand-built ONNX graphs with the exported models'
interface (image -> stride-8 maps; tests/service/fakes/onnx_models.py) stand in for trained networks."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from seam.service.engine.base import MemoryBudgetError
from seam.service.engine.onnx_engine import OnnxEngine
from seam.service.engine.runners.random_walk import affinity_features

from seam.common.cam import MultiScaleConfig, cams_to_label, multiscale_cam
from seam.common.image import Normalization
from seam.modelrepo.manifest import ManifestError
from tests.service.fakes.onnx_models import FG, write_model


def dense_pcm(n: np.ndarray, g: np.ndarray) -> np.ndarray:
    """numpy reference of the release's dense PCM: (B, C, h, w), (B, D, h, w) -> (B, C, h, w)."""
    B, C, h, w = n.shape
    n2, g2 = n.reshape(B, C, -1).astype(np.float64), g.reshape(B, g.shape[1], -1).astype(np.float64)
    aff = np.maximum(np.einsum("bdi,bdj->bij", g2, g2), 0)
    aff /= aff.sum(axis=1, keepdims=True) + 1e-5
    return np.einsum("bci,bij->bcj", n2, aff).reshape(B, C, h, w).astype(np.float32)


def image(h: int = 45, w: int = 61, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_model(root, "seam-a", "seam")
    write_model(root, "aff", "affinity", seed=1)
    write_model(root, "dl", "deeplab", seed=2)
    return root


@pytest.fixture(scope="module")
def engine(repo) -> OnnxEngine:
    return OnnxEngine(repo, providers="auto", threads=2)


def test_repository_and_methods(engine):
    infos = {m.kind: m for m in engine.models()}
    assert set(infos) == {"seam", "affinity", "deeplab"}
    assert infos["seam"].classes == FG and infos["seam"].provider == "CPUExecutionProvider"
    assert infos["seam"].manifest["onnx"]["outputs"] == ["cam", "pcm_n", "pcm_g"]
    assert engine.methods() == ["deeplab", "rw", "pcm", "cam"]
    assert engine.foreground_classes() == FG
    assert engine.runtime.threads == 2


def test_single_model_dir(repo):
    eng = OnnxEngine.from_model_dir(repo / "seam-a", threads=1)
    assert [m.name for m in eng.models()] == ["seam-a"]
    assert eng.methods() == ["pcm", "cam"]
    with pytest.raises(ValueError, match="not available"):
        eng.segment(image(), method="rw")
    with pytest.raises(ManifestError, match="no manifest.json"):
        OnnxEngine.from_model_dir(repo)


def test_cam_equals_shared_code_with_an_onnx_runner(engine, repo):
    """The engine is multiscale_cam over onnxruntime: same maps as calling it directly."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(repo / "seam-a" / "model.onnx"), providers=["CPUExecutionProvider"])

    def runner(b):
        cam, n, g = sess.run(["cam", "pcm_n", "pcm_g"], {"image": b})
        return cam, dense_pcm(n, g)

    rgb = image(37, 61)
    for refined in (True, False):
        ref = multiscale_cam(rgb, runner, [0, 2], MultiScaleConfig(scales=(0.5, 1.0), refined=refined,
                                                                    normalization=Normalization()))
        got = engine.cam(rgb, [2, 0], refined=refined)
        assert got.classes == [0, 2] and got.cams.shape == (2, 37, 61) and got.cams.dtype == np.float32
        np.testing.assert_allclose(got.cams, ref.cams, atol=1e-5)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)
    pred = engine.cam(rgb, None, scales=[1.0], flip=False, cls_threshold=0.0)
    assert pred.classes == [0, 1, 2]  # every class at threshold 0
    assert engine.cam(rgb, None, cls_threshold=1.0).classes == []


def test_small_budgets_cut_passes_and_pcm_blocks_with_equal_results(repo):
    """A tiny memory budget runs the flip pair as two passes; a tiny PCM block budget cuts
    the affinity into many column blocks: the maps do not change."""
    from seam.common import pcm_blocks

    rgb = image(40, 48)
    ref = OnnxEngine(repo, threads=1).cam(rgb, [1])
    eng = OnnxEngine(repo, threads=1, memory_budget=1 << 30)
    eng.admission = replace(eng.admission, budget=100_000)  # below one pass: every item alone (no admission here)
    runner = eng._runner(eng.model("seam"), refined=True)
    calls = []
    orig = eng.run
    eng.run = lambda m, b, names=None: calls.append(b.shape[0]) or orig(m, b, names)
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 48)).astype(np.float32)
    cam, rv = runner(x)
    assert calls == [1, 1] and cam.shape[0] == rv.shape[0] == 2
    blocks = OnnxEngine(repo, threads=1, pcm_block_bytes=4 * 30 * 2)
    np.testing.assert_allclose(blocks.cam(rgb, [1]).cams, ref.cams, atol=1e-5)
    assert pcm_blocks.block_columns(30, 2, 4 * 30 * 2) == 1


def test_raw_cams_never_run_the_pcm(repo):
    eng = OnnxEngine(repo, threads=1)
    m = eng.model("seam")
    calls = []

    class Spy:
        def run(self, *a, **k):
            calls.append(1)
            return real.run(*a, **k)

    real, m.pcm_session = m.pcm_session, Spy()
    rgb = image(37, 45)
    eng.cam(rgb, [0], refined=False)
    eng.segment(rgb, [0], method="cam")
    assert calls == []
    eng.cam(rgb, [0], refined=True)
    assert calls


def test_large_images_run_at_the_working_side(repo):
    """An image longer than max_side is resized before the passes; maps and labels come back
    at its own size and equal the small image's maps upsampled."""
    from seam.common.cam import resize_bilinear
    from seam.common.image import resize_rgb

    eng = OnnxEngine(repo, threads=1, max_side=64)
    rgb = image(150, 201)
    small = resize_rgb(rgb, (48, 64))
    got = eng.cam(rgb, [0, 2])
    ref = eng.cam(small, [0, 2])
    assert got.cams.shape == (2, 150, 201)
    np.testing.assert_allclose(got.cams, resize_bilinear(ref.cams, (150, 201)), atol=1e-5)
    seg = eng.segment(rgb, [0, 2], method="pcm", threshold=0.3)
    assert seg.label.shape == (150, 201) and seg.cams.cams.shape == (2, 48, 64)
    np.testing.assert_array_equal(seg.label, cams_to_label(seg.cams.cams, [0, 2], 0.3, out_hw=(150, 201)))
    for method in ("rw", "deeplab"):
        assert eng.segment(rgb, [0, 2], method=method).label.shape == (150, 201)
    # per request: a larger max_side processes at the image's own size
    full = eng.cam(rgb, [0, 2], max_side=400)
    np.testing.assert_allclose(full.cams, OnnxEngine(repo, threads=1).cam(rgb, [0, 2]).cams, atol=1e-6)
    with pytest.raises(ValueError, match="max_side must be in"):
        eng.cam(rgb, max_side=4)


def test_memory_admission_refuses_with_numbers(repo):
    eng = OnnxEngine(repo, threads=1, memory_budget=1 << 30)
    est = eng.estimate((3000, 4000), "pcm", max_side=1800)
    assert not est.fits and est.working_hw == (1350, 1800)
    assert est.suggested_max_side is not None and est.suggested_max_side < 1800
    assert eng.estimate((3000, 4000), "pcm", max_side=est.suggested_max_side).fits
    assert not eng.estimate((3000, 4000), "pcm", max_side=est.suggested_max_side + 1).fits
    with pytest.raises(MemoryBudgetError, match="over the engine's memory budget") as exc:
        eng.segment(np.zeros((1500, 2000, 3), np.uint8), max_side=2000, method="pcm")
    assert exc.value.estimate.needed_bytes > 1 << 30
    assert eng.estimate((300, 400), "cam").needed_bytes < eng.estimate((300, 400), "pcm").needed_bytes


def test_batched_calls_equal_single_calls(engine):
    imgs = [image(33, 47, seed=i) for i in range(3)] + [image(40, 40, seed=9)]
    labels = [[0], None, [1, 2], [2]]
    many = engine.cam_many(imgs, labels)
    for rgb, lb, got in zip(imgs, labels, many, strict=True):
        ref = engine.cam(rgb, lb)
        assert got.classes == ref.classes
        np.testing.assert_allclose(got.cams, ref.cams, atol=1e-5)
    segs = engine.segment_many(imgs, labels, method="pcm")
    for rgb, lb, got in zip(imgs, labels, segs, strict=True):
        np.testing.assert_array_equal(got.label, engine.segment(rgb, lb, method="pcm").label)
    with pytest.raises(ValueError, match="label lists"):
        engine.cam_many(imgs, [None])


def test_input_validation(engine):
    with pytest.raises(ValueError, match="uint8"):
        engine.cam(image().astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        engine.cam(image()[..., 0])
    with pytest.raises(ValueError, match="out of range"):
        engine.cam(image(), [3])
    with pytest.raises(ValueError, match="scales"):
        engine.cam(image(), scales=[0.0])
    with pytest.raises(ValueError, match="at most 4096"):  # explicit scales beyond the graph's size
        engine.cam(np.zeros((8, 700, 3), np.uint8), scales=[6.0])
    with pytest.raises(ValueError, match=r"max_side must be in \[8, 4096\]"):  # manifest scales top out at 1
        engine.cam(np.zeros((8, 2100, 3), np.uint8), max_side=5000)
    # without max_side a long image runs at the working side (768 for a manifest naming none)
    assert engine.cam(np.zeros((8, 2100, 3), np.uint8), [0]).cams.shape == (1, 8, 2100)
    with pytest.raises(ValueError, match="method 'nope'"):
        engine.segment(image(), method="nope")
    with pytest.raises(ValueError, match="threshold"):
        engine.segment(image(), method="pcm", threshold=2.0)


def test_segment_cam_methods(engine):
    rgb = image(33, 47)
    for method in ("pcm", "cam"):
        res = engine.segment(rgb, [0, 1], method=method, threshold=0.3)
        cams = engine.cam(rgb, [0, 1], refined=method == "pcm")
        assert res.method == method and res.label.shape == (33, 47) and res.label.dtype == np.uint8
        np.testing.assert_array_equal(res.label, cams_to_label(cams.cams, cams.classes, 0.3))
        assert set(np.unique(res.label)) <= {0, 1, 2}


def test_segment_random_walk_equals_shared_random_walk(engine, repo):
    from seam.common.random_walk import random_walk_labels

    rgb = image(43, 50)
    res = engine.segment(rgb, [0, 2], method="rw")
    aff = engine.model("affinity")
    feat = affinity_features(engine, rgb)
    assert feat.shape == (16, 6, 7)  # ceil(43/8), ceil(50/8)
    rw = aff.manifest.random_walk
    cams = engine.cam(rgb, [0, 2])
    ref = random_walk_labels(feat, cams.cams, cams.classes, (43, 50), alpha=rw.alpha, beta=rw.beta,
                             logt=rw.logt, radius=rw.radius)
    np.testing.assert_array_equal(res.label, ref)
    # the classes reported are those the mask shows
    assert res.classes == [c for c in (0, 2) if (ref == c + 1).any()] and res.cams is not None


def test_segment_deeplab(engine):
    rgb = image(41, 57)
    res = engine.segment(rgb)  # best method first
    assert res.method == "deeplab" and res.label.shape == (41, 57) and res.scores.shape == (3,)
    assert set(res.classes) == {int(c) - 1 for c in np.unique(res.label) if c > 0}
    only = engine.segment(rgb, [1], method="deeplab")
    assert set(np.unique(only.label)) <= {0, 2} and only.classes == [1]


def test_concurrent_calls_are_safe(engine):
    imgs = [image(30 + i, 40 + 2 * i, seed=i) for i in range(6)]
    seq = [engine.cam(im, [0, 1]).cams for im in imgs]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda im: engine.cam(im, [0, 1]).cams, imgs * 2))
    for a, b in zip(seq * 2, par, strict=True):
        np.testing.assert_array_equal(a, b)


# --- CRF ----------------------------------------------------------------------------------
def test_crf_uses_the_shared_crf(engine):
    pytest.importorskip("pydensecrf")
    from seam.common.crf import crf_refine_cams

    rgb = image(35, 42)
    res = engine.segment(rgb, [0, 2], method="pcm", threshold=0.3, crf=True)
    ref = crf_refine_cams(rgb, res.cams.cams, res.cams.classes, 0.3)  # manifest CRF = the authors' defaults
    np.testing.assert_array_equal(res.label, ref)
    for method in ("rw", "deeplab"):
        out = engine.segment(rgb, [0, 2], method=method, crf=True)
        assert out.label.shape == (35, 42) and set(np.unique(out.label)) <= {0, 1, 3}


