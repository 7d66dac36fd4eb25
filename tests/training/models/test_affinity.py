"""AffinityNet: labels from la/ha, stride-8 reduction, pair labels, loss, authors' keys."""
import numpy as np
import pytest
import torch
from seam.training.data.affinity import AffinityAugmentConfig, augment_pair
from seam.training.models.affinity import AffinityNet, pair_affinity
from seam.training.models.checkpoint import load_weights
from seam.training.models.registry import create_model, model_from_checkpoint
from seam.training.trainers.affinity import affinity_loss

from seam.common.affinity_labels import (
    PAD,
    affinity_label_map,
    combine_la_ha,
    pair_labels,
    stride_labels,
    stride_labels_from_scores,
)
from seam.common.random_walk import pair_affinities, pair_offsets


def _pairs_bruteforce(label8, radius):
    """Independent loop version of the release's ExtractAffinityLabelInRadius."""
    h, w = label8.shape
    r1 = radius - 1
    offs = [(0, dx) for dx in range(1, radius)] + [
        (dy, dx) for dy in range(1, radius) for dx in range(-r1, radius) if dx * dx + dy * dy < radius * radius]
    out = np.zeros((3, len(offs), (h - r1) * (w - 2 * r1)), np.float32)
    for k, (dy, dx) in enumerate(offs):
        n = 0
        for y in range(h - r1):
            for x in range(r1, w - r1):
                a, b = int(label8[y, x]), int(label8[y + dy, x + dx])
                if a == b == 0:
                    out[0, k, n] = 1
                elif a == b and a != 255:
                    out[1, k, n] = 1
                elif a != b and a != 255 and b != 255:
                    out[2, k, n] = 1
                n += 1
    return out


def test_combine_rule():
    la = np.array([[0, 0, 3, 3]])
    ha = np.array([[0, 3, 3, 0]])
    assert combine_la_ha(la, ha).tolist() == [[0, 255, 3, 0]]


def test_pair_labels_hand_built():
    # radius 2: offsets (0,1), (1,-1), (1,0), (1,1); sources rows 0..1, cols 1..2
    lab = np.array([
        [0, 0, 1, 1],
        [0, 255, 1, 2],
        [0, 0, 2, 2],
    ], np.uint8)
    assert pair_offsets(2) == ((0, 1), (1, -1), (1, 0), (1, 1))
    bg, fg, neg = pair_labels(lab, radius=2)
    # rows: offsets; columns: sources (0,1)=0, (0,2)=1, (1,1)=255, (1,2)=1
    # source (0,1) -> targets (0,2)=1, (1,0)=0, (1,1)=255, (1,2)=1
    # source (0,2) -> targets (0,3)=1, (1,1)=255, (1,2)=1, (1,3)=2
    # source (1,1) is unknown: no pairs at all
    # source (1,2) -> targets (1,3)=2, (2,1)=0, (2,2)=2, (2,3)=2
    assert bg.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert fg.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert neg.tolist() == [[1, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 0, 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_labels_match_bruteforce(seed):
    rng = np.random.default_rng(seed)
    lab = rng.choice(np.array([0, 0, 0, 3, 3, 7, 255], np.uint8), size=(14, 16))
    assert np.array_equal(pair_labels(lab, 5), _pairs_bruteforce(lab, 5))


def test_stride_labels_hand_built():
    L = np.zeros((16, 24), np.int16)
    L[:8, 8:16] = 3           # block (0,1): class 3 everywhere
    L[:8, 16:24] = 255        # block (0,2): unknown
    L[8:, :8] = 3
    L[8:12, :8] = 0           # block (1,0): half 0, half 3 -> la: bg 32 vs 32 -> tie -> bg; ha: 32 >= 32 -> 0
    L[8:, 8:16] = 255
    L[8:10, 8:16] = 0         # block (1,1): 16 zeros, 48 unknown -> la bg, ha fg -> 255
    L[8:, 16:24] = PAD
    L[8:9, 16:24] = 5         # block (2): 8 pixels of class 5, rest padding -> 5
    out = stride_labels(L)
    assert out.tolist() == [[0, 3, 255], [0, 255, 5]]
    assert stride_labels(np.full((8, 8), PAD, np.int16)).tolist() == [[255]]


def test_stride_labels_equal_release_rule_on_one_hot_scores():
    rng = np.random.default_rng(3)
    H = W = 32
    la_arg = rng.choice([0, 1], size=(H, W), p=[0.6, 0.4])
    ha_arg = np.where(la_arg == 1, 1, rng.choice([0, 1], size=(H, W)))  # ha bg only where la bg
    onehot = lambda a: np.stack([a == 0, a == 1]).astype(np.float32)  # noqa: E731
    ref = stride_labels_from_scores(onehot(la_arg), onehot(ha_arg))
    got = stride_labels(combine_la_ha(la_arg, ha_arg))
    assert np.array_equal(ref, got)


def test_affinity_label_map_without_crf():
    rgb = np.zeros((16, 16, 3), np.uint8)
    cams = np.zeros((1, 16, 16), np.float32)
    cams[0, :, :4] = 0.95   # (1-.95)^4 tiny: confident fg
    cams[0, :, 4:8] = 0.5   # la: bg .0625 < .5 -> fg; ha: .5^24 < .5 -> fg
    cams[0, :, 8:12] = 0.2  # la: .8^4 = .41 > .2 -> bg; ha: .8^24 = .005 < .2 -> fg => unknown
    lab = affinity_label_map(rgb, cams, [6], crf=False)  # cams[:, 12:] = 0: confident bg
    assert lab[0].tolist() == [7] * 8 + [255] * 4 + [0] * 4


def test_affinity_label_map_with_crf():
    pytest.importorskip("pydensecrf")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    rgb[:, :12] = (200, 30, 30)
    cams = np.zeros((1, 24, 32), np.float32)
    cams[0, :, :12] = 0.9
    lab = affinity_label_map(rgb, cams, [2])
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 3, 255}
    assert (lab[:, :10] == 3).mean() > 0.9 and (lab[:, 16:] == 0).mean() > 0.9


def test_augment_pair_pads_with_no_score():
    from PIL import Image

    img = Image.fromarray(np.full((20, 30, 3), 128, np.uint8))
    label = np.full((20, 30), 3, np.uint8)
    cfg = AffinityAugmentConfig(crop=80, jitter=None, radius=2)
    x, lab = augment_pair(img, label, cfg, np.random.default_rng(0))
    assert x.shape == (3, 80, 80) and lab.shape == (80, 80)
    assert (lab == 3).sum() == 600 and (lab == PAD).sum() == 80 * 80 - 600
    lab8 = stride_labels(lab)
    assert set(np.unique(lab8)) <= {3, 255} and (lab8 == 3).any()


def test_loss_on_hand_built_pairs():
    aff = torch.tensor([[[0.9, 0.5, 0.2, 0.7]]])  # (B=1, P=1, N=4)
    pairs = torch.zeros(1, 3, 1, 4)
    pairs[0, 0, 0, 0] = 1  # bg-positive: aff 0.9
    pairs[0, 1, 0, 1] = 1  # fg-positive: aff 0.5
    pairs[0, 1, 0, 3] = 1  # fg-positive: aff 0.7
    pairs[0, 2, 0, 2] = 1  # negative: aff 0.2
    total, parts = affinity_loss(aff, pairs)
    eps = 1e-5
    bg = -np.log(0.9 + eps) / (1 + eps)
    fg = (-np.log(0.5 + eps) - np.log(0.7 + eps)) / (2 + eps)
    neg = -np.log(1 + eps - 0.2) / (1 + eps)
    assert parts["bg"].item() == pytest.approx(bg, rel=1e-5)
    assert parts["fg"].item() == pytest.approx(fg, rel=1e-5)
    assert parts["neg"].item() == pytest.approx(neg, rel=1e-5)
    assert total.item() == pytest.approx(bg / 4 + fg / 4 + neg / 2, rel=1e-5)
    # empty sets contribute 0, never NaN
    total0, _ = affinity_loss(aff, torch.zeros(1, 3, 1, 4))
    assert total0.item() == 0.0
    # gradients push positives up and negatives down
    a = aff.clone().requires_grad_(True)
    affinity_loss(a, pairs)[0].backward()
    assert a.grad[0, 0, 0] < 0 and a.grad[0, 0, 1] < 0 and a.grad[0, 0, 2] > 0


def test_model_keys_equal_official(official_keys):
    sd = AffinityNet().state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == official_keys["affinitynet"]


@pytest.mark.slow  # a full-size ResNet-38 state dict saved and loaded: seconds per case
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_affinitynet_state_dict_loads_strict(tmp_path, official_keys, prefix):
    g = torch.Generator().manual_seed(0)
    sd = {prefix + k: (torch.tensor(3) if k.endswith("num_batches_tracked")
                       else torch.rand(shape, generator=g) if "running_var" in k
                       else torch.randn(shape, generator=g) * 0.01)
          for k, shape in official_keys["affinitynet"].items()}
    path = tmp_path / "res38_aff.pth"
    torch.save(sd, path)
    model, meta = model_from_checkpoint(path, "affinity")
    assert isinstance(model, AffinityNet) and meta["backbone"] == "resnet38"
    loaded = model.state_dict()
    for k in ("f8_3.weight", "f8_5.weight", "f9.weight", "b7.conv_branch1.weight"):
        assert torch.equal(loaded[k], sd[prefix + k])
    del sd[prefix + "f8_5.weight"]
    with pytest.raises(ValueError, match="missing"):
        load_weights(AffinityNet(), sd, strict=True)


def test_small_affinitynet_forward_and_pair_affinity_order():
    torch.manual_seed(0)
    net = create_model("affinity", "resnet38_small").eval()
    with torch.no_grad():
        f = net(torch.randn(2, 3, 96, 120))
    assert f.shape == (2, 448, 12, 15)
    aff = pair_affinity(f, radius=5)
    n_src = (12 - 4) * (15 - 8)
    assert aff.shape == (2, 34, n_src)
    assert (aff > 0).all() and (aff <= 1).all()
    # the same pairs in the same order as the numpy random walk's
    ref = pair_affinities(f[1].numpy(), radius=5).reshape(34, n_src)
    np.testing.assert_allclose(aff[1].numpy(), ref, rtol=1e-5, atol=1e-6)
