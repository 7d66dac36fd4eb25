"""SEAM's loss terms and optimiser schedule against independent hand computations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seam.training.losses import (
    LossSwitches,
    classification_loss,
    ecr_loss,
    equivariant_loss,
    max_norm,
    max_onehot,
    min_pool_loss,
    ohem_mean,
    peak_norm,
    seam_losses,
    with_background,
)
from seam.training.models.registry import create_model
from seam.training.trainers.schedule import (
    AUTHORS_MOMENTUM,
    LR_MULTS,
    PolySchedule,
    make_optimizer,
    param_groups,
    poly_factor,
)
from seam.training.trainers.siamese import SiameseConfig, parse_transforms, sample_transform
from torch import nn


def test_max_norm_by_hand():
    """The release's max_norm: relu, then (p - min - eps) / (max - min + eps), clipped at 0."""
    e = 1e-5
    x = torch.tensor([[[[1.0, -2.0], [4.0, 2.0]], [[-1.0, -3.0], [-0.5, -7.0]],
                       [[3.0, 5.0], [2.0, 4.0]]]])  # (1, 3, 2, 2)
    out = max_norm(x)
    # channel 0: relu -> [1, 0, 4, 2], min 0, max 4
    want0 = torch.tensor([[max(1 - e, 0) / (4 + e), 0.0], [(4 - e) / (4 + e), (2 - e) / (4 + e)]])
    assert torch.allclose(out[0, 0], want0, rtol=0, atol=1e-7)
    assert torch.equal(out[0, 1], torch.zeros(2, 2))  # all negative -> 0, no division blow-up
    # channel 2 has a floor of 2: the minimum is subtracted, so the map spans [0, ~1]
    want2 = torch.tensor([[(1 - e) / (3 + e), (3 - e) / (3 + e)], [0.0, (2 - e) / (3 + e)]])
    assert torch.allclose(out[0, 2], want2, rtol=0, atol=1e-7)
    # the pre-fix formula (divide by the max only) keeps the floor
    assert torch.allclose(peak_norm(x)[0, 2], x[0, 2] / (5 + e))


def test_classification_loss_is_eq7_on_foreground_channels():
    torch.manual_seed(0)
    cam = torch.randn(2, 4, 3, 5)
    label = torch.tensor([[1.0, 1, 0, 1], [1.0, 0, 0, 1]])
    z = cam.mean(dim=(2, 3))[:, 1:].double()
    lab = label[:, 1:].double()
    by_hand = -(lab * torch.log(1 / (1 + torch.exp(-z)))
                + (1 - lab) * torch.log(torch.exp(-z) / (1 + torch.exp(-z)))).mean(dim=1).mean()
    assert classification_loss(cam, label).item() == pytest.approx(by_hand.item(), rel=1e-5)
    cam2 = cam.clone()
    cam2[:, 0] += 100.0  # background channel is never supervised
    assert classification_loss(cam2, label).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_equivariant_loss_by_hand():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    a[0, 0] = 9.0  # background differences do not count
    a[0, 1, 0, 0], b[0, 1, 0, 0] = 0.75, 0.25  # |d| = 0.5
    a[0, 2, 1, 1], b[0, 2, 1, 1] = 0.0, 1.0  # |d| = 1
    assert equivariant_loss(a, b).item() == pytest.approx(1.5 / 8)
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])  # drops the (1, 1) pixel
    assert equivariant_loss(a, b, mask).item() == pytest.approx(0.5 / 6)


def test_max_onehot_keeps_only_the_winning_foreground():
    x = torch.tensor([[
        [[0.3, 0.1], [0.9, 0.0]],  # background: untouched
        [[0.5, 0.2], [0.1, 0.0]],
        [[0.4, 0.7], [0.1, 0.0]],
        [[0.2, 0.7], [0.05, 0.0]],
    ]])
    out = max_onehot(x)
    expected = torch.tensor([[
        [[0.3, 0.1], [0.9, 0.0]],
        [[0.5, 0.0], [0.1, 0.0]],
        [[0.0, 0.7], [0.1, 0.0]],  # ties (0.7, 0.7) and (0.1, 0.1) both survive, as the release's `!=`
        [[0.0, 0.7], [0.0, 0.0]],
    ]])
    assert torch.equal(out, expected)
    assert x[0, 2, 0, 0] == 0.4  # out of place


def test_with_background_is_one_minus_max_foreground():
    x = torch.tensor([[[[5.0]], [[0.2]], [[0.7]]]])
    assert torch.allclose(with_background(x)[0, :, 0, 0], torch.tensor([0.3, 0.2, 0.7]))


def test_ohem_selects_the_top_20_percent_per_sample():
    vals = torch.arange(1.0, 25.0).reshape(2, 3, 2, 2)  # 12 values per sample
    # k = int(3*2*2*0.2) = 2: sample 0 keeps 12, 11; sample 1 keeps 24, 23
    assert ohem_mean(vals).item() == pytest.approx((12 + 11 + 24 + 23) / 4)
    shuffled = vals.flatten(1)[:, torch.randperm(12)].reshape(2, 3, 2, 2)
    assert ohem_mean(shuffled).item() == pytest.approx((12 + 11 + 24 + 23) / 4)
    assert ohem_mean(vals, ratio=1.0).item() == pytest.approx(12.5)  # --no-ohem: plain mean


def test_ecr_with_ohem_by_hand():
    # one sample, C = 3, 1 x 5 pixels: 15 entries, k = int(15 * 0.2) = 3
    cam1 = torch.tensor([[[[0.2, 0.5, 0.0, 1.0, 0.4]], [[0.8, 0.3, 0.0, 0.0, 0.6]], [[0.1, 0.5, 1.0, 0.0, 0.6]]]])
    cam2 = torch.tensor([[[[0.6, 0.3, 0.1, 0.2, 0.0]], [[0.4, 0.7, 0.9, 0.0, 1.0]], [[0.3, 0.1, 0.2, 0.8, 0.0]]]])
    rv1 = torch.full((1, 3, 1, 5), 0.25)
    rv2 = torch.zeros(1, 3, 1, 5)
    rv2[0, 1] = 1.0

    def onehot_np(c):
        c = c[0, :, 0].numpy().copy()
        for j in range(c.shape[1]):
            m = c[1:, j].max()
            for k in range(1, c.shape[0]):
                if c[k, j] != m:
                    c[k, j] = 0
        return c

    def top3_mean(a):
        return float(np.sort(a.reshape(-1))[::-1][:3].mean())

    t1 = np.abs(onehot_np(cam2) - rv1[0, :, 0].numpy())
    t2 = np.abs(onehot_np(cam1) - rv2[0, :, 0].numpy())
    expected = top3_mean(t1) + top3_mean(t2)
    assert ecr_loss(cam1, rv1, cam2, rv2).item() == pytest.approx(expected, abs=1e-6)
    # the selection really is top-k: the plain mean differs
    plain = float(t1.mean() + t2.mean())
    assert ecr_loss(cam1, rv1, cam2, rv2, ohem_ratio=1.0).item() == pytest.approx(plain, abs=1e-6)
    assert plain != pytest.approx(expected)


def test_ecr_gradients_reach_only_the_pcm_outputs():
    cam1 = torch.rand(1, 3, 4, 4, requires_grad=True)
    cam2 = torch.rand(1, 3, 4, 4, requires_grad=True)
    rv1 = torch.rand(1, 3, 4, 4, requires_grad=True)
    rv2 = torch.rand(1, 3, 4, 4, requires_grad=True)
    ecr_loss(cam1, rv1, cam2, rv2).backward()
    assert cam1.grad is None and cam2.grad is None
    assert rv1.grad.abs().sum() > 0 and rv2.grad.abs().sum() > 0


def test_min_pool_by_hand():
    rv = torch.tensor([[
        [[9.0, 9.0], [9.0, 9.0]],  # background ignored
        [[0.5, -1.0], [0.2, 3.0]],
        [[0.1, 0.3], [0.4, 5.0]],  # masked out by the label
    ]])
    label = torch.tensor([[1.0, 1.0, 0.0]])
    # per-pixel max over fg of rv*label: [0.5, 0.0 (max(-1, 0)), 0.2, 3.0]; k = 4 // 4 = 1 -> 0.0
    assert min_pool_loss(rv, label).item() == pytest.approx(0.0)
    label = torch.tensor([[1.0, 1.0, 1.0]])
    # maxes [0.5, 0.3, 0.4, 5.0]; smallest 1 = 0.3
    assert min_pool_loss(rv, label).item() == pytest.approx(0.3)
    big = torch.rand(2, 4, 8, 8) - 0.2
    lab = torch.tensor([[1.0, 1, 0, 1], [1.0, 0, 1, 1]])
    x = (big * lab[:, :, None, None])[:, 1:].amax(1).reshape(2, -1).numpy()
    k = 64 // 4
    expected = sum(np.maximum(np.sort(r)[:k], 0).sum() for r in x) / (k * 2)
    assert min_pool_loss(big, lab).item() == pytest.approx(expected, rel=1e-5)


def _authors_step(cam1, rv1, cam2, rv2, label):
    """train_SEAM.py's loss lines, in the release's own (in-place) style."""
    scale = cam2.shape[-1] / cam1.shape[-1]
    lab = label.unsqueeze(2).unsqueeze(3)

    def mn(p):  # tool/visualization.py max_norm, torch 4-D branch
        p = F.relu(p)
        mx = p.view(*p.shape[:2], -1).max(-1)[0].view(*p.shape[:2], 1, 1)
        mi = p.view(*p.shape[:2], -1).min(-1)[0].view(*p.shape[:2], 1, 1)
        return F.relu(p - mi - 1e-5) / (mx - mi + 1e-5)

    def amp_loss(x):
        n, c, h, w = x.size()
        k = h * w // 4
        x = torch.max(x, dim=1)[0]
        y = torch.topk(x.view(n, -1), k=k, dim=-1, largest=False)[0]
        return torch.sum(F.relu(y)) / (k * n)

    def onehot(x):
        x_max = torch.max(x[:, 1:], dim=1, keepdim=True)[0]
        x[:, 1:][x[:, 1:] != x_max] = 0
        return x

    label1 = F.adaptive_avg_pool2d(cam1, (1, 1))
    rvmin1 = amp_loss((rv1 * lab)[:, 1:])
    size = cam2.shape[-2:]
    assert size == F.interpolate(cam1, scale_factor=scale, mode="bilinear", align_corners=True).shape[-2:]
    c1 = F.interpolate(mn(cam1), size, mode="bilinear", align_corners=True) * lab
    r1 = F.interpolate(mn(rv1), size, mode="bilinear", align_corners=True) * lab
    label2 = F.adaptive_avg_pool2d(cam2, (1, 1))
    rvmin2 = amp_loss((rv2 * lab)[:, 1:])
    c2 = mn(cam2) * lab
    r2 = mn(rv2) * lab
    cls1 = F.multilabel_soft_margin_loss(label1[:, 1:, 0, 0], label[:, 1:])
    cls2 = F.multilabel_soft_margin_loss(label2[:, 1:, 0, 0], label[:, 1:])
    ns, cs, hs, ws = c2.size()
    er = torch.mean(torch.abs(c1[:, 1:] - c2[:, 1:]))
    c1[:, 0] = 1 - torch.max(c1[:, 1:], dim=1)[0]
    c2[:, 0] = 1 - torch.max(c2[:, 1:], dim=1)[0]
    e1 = torch.abs(onehot(c2.detach().clone()) - r1)
    e2 = torch.abs(onehot(c1.detach().clone()) - r2)
    k = int(cs * hs * ws * 0.2)
    ecr = (torch.mean(torch.topk(e1.view(ns, -1), k=k, dim=-1)[0])
           + torch.mean(torch.topk(e2.view(ns, -1), k=k, dim=-1)[0]))
    cls = (cls1 + cls2) / 2 + (rvmin1 + rvmin2) / 2
    return {"loss": cls + er + ecr, "er": er, "ecr": ecr}


def test_seam_losses_match_the_release_composition():
    torch.manual_seed(0)
    B, C, H = 2, 4, 20
    cam1, rv1 = torch.randn(B, C, H, H), torch.randn(B, C, H, H)
    h = int(H * 0.3)
    cam2, rv2 = torch.randn(B, C, h, h), torch.randn(B, C, h, h)
    label = torch.tensor([[1.0, 1, 0, 1], [1.0, 0, 1, 0]])
    ours = seam_losses((cam1, rv1), (cam2, rv2), label)
    ref = _authors_step(cam1, rv1, cam2, rv2, label)
    for k in ("loss", "er", "ecr"):
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k


def test_table1_switches():
    torch.manual_seed(0)
    cam1, rv1 = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    cam2, rv2 = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    label = torch.tensor([[1.0, 1, 1]])
    base = seam_losses((cam1, rv1), None, label, switches=LossSwitches(er=False, pcm=False))
    assert base["er"].item() == 0 and base["ecr"].item() == 0 and base["minpool"].item() == 0
    assert base["loss"].item() == pytest.approx(classification_loss(cam1, label).item())
    er_only = seam_losses((cam1, rv1), (cam2, rv2), label, switches=LossSwitches(er=True, pcm=False))
    assert er_only["er"].item() > 0 and er_only["ecr"].item() == 0
    full = seam_losses((cam1, rv1), (cam2, rv2), label)
    no_ohem = seam_losses((cam1, rv1), (cam2, rv2), label, switches=LossSwitches(ohem=False))
    assert no_ohem["ecr"].item() < full["ecr"].item()  # the mean of all <= the mean of the largest 20%
    assert not LossSwitches(er=False, pcm=False).siamese


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, bias=True)
        self.frozen = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1, bias=True)
        self.frozen.weight.requires_grad_(False)

    def new_modules(self):
        return [self.head]


def test_four_parameter_groups():
    m = _Toy()
    groups = param_groups(m, lr=0.01, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["pretrained_weight", "pretrained_bias", "new_weight", "new_bias"]
    assert [g["params"] for g in groups] == [[m.body.weight], [m.body.bias], [m.head.weight], [m.head.bias]]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.02, 0.1, 0.2])
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert LR_MULTS == (1.0, 2.0, 10.0, 20.0)


def test_seam_groups_exclude_frozen_layers():
    from seam.training.trainers.batchnorm import freeze_parameters

    model = create_model("seam", "resnet38_small", 6)
    freeze_parameters(model)
    groups = param_groups(model, 0.01, 5e-4)
    new = {id(p) for mod in model.new_modules() for p in mod.parameters()}
    assert {id(p) for p in groups[2]["params"]} == new
    assert groups[1]["params"] == [] and groups[3]["params"] == []  # every conv is bias-free
    names = {id(p): n for n, p in model.named_parameters()}
    pre = [names[id(p)] for p in groups[0]["params"]]
    assert pre and not any(n.startswith(("conv1a.", "b2.")) or ".bn" in n for n in pre)
    assert any(n.startswith("b3.") for n in pre)
    opt = make_optimizer(model, 0.01, 5e-4, AUTHORS_MOMENTUM)
    assert all(g["momentum"] == 5e-4 for g in opt.param_groups)


def test_poly_schedule():
    m = _Toy()
    opt = make_optimizer(m, 0.01, 5e-4, 0.9)
    sched = PolySchedule(opt, max_iter=100)
    assert sched.step(0) == pytest.approx([0.01, 0.02, 0.1, 0.2])
    f = (1 - 50 / 100) ** 0.9
    assert sched.step(50) == pytest.approx([0.01 * f, 0.02 * f, 0.1 * f, 0.2 * f])
    last = sched.step(99)
    assert last[0] == pytest.approx(0.01 * 0.01 ** 0.9)
    assert sched.step(150) == pytest.approx(last)  # held past the end
    assert poly_factor(0, 10) == 1.0
    assert math.isclose(poly_factor(3, 10), 0.7 ** 0.9)


def test_siamese_rescale_matches_the_release():
    x = torch.randn(2, 3, 64, 48)
    plan = sample_transform(SiameseConfig(), 2, (64, 48), torch.Generator().manual_seed(0))
    ref = F.interpolate(x, scale_factor=0.3, mode="bilinear", align_corners=True)
    assert torch.equal(plan.image(x), ref)
    assert plan.mask is None and plan.size == (19, 14)


@pytest.mark.parametrize("ops", [("flip",), ("rescale", "flip"), ("rotate",), ("translate",), ("rescale", "rotate")])
def test_siamese_transform_applies_the_same_geometry_to_images_and_maps(ops):
    x = torch.rand(2, 3, 32, 32)
    plan = sample_transform(SiameseConfig(ops=ops), 2, (32, 32), torch.Generator().manual_seed(1))
    img2 = plan.image(x)
    assert torch.allclose(plan.map(x), img2)  # a map equal to the image moves like the image
    if "rotate" in ops or "translate" in ops:
        assert plan.mask is not None and 0 < plan.mask.mean() < 1
    if ops == ("flip",):
        assert torch.equal(img2, x.flip(-1))


def test_translation_moves_content_by_pixels():
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 20] = 1.0
    cfg = SiameseConfig(ops=("translate",), translation=15.0)
    for seed in range(3):
        plan = sample_transform(cfg, 1, (41, 41), torch.Generator().manual_seed(seed))
        shift = -plan.theta[0, :, 2] * 40 / 2  # pixels (x, y)
        assert shift.abs().max() <= 15
        y = plan.image(x)[0, 0]
        cy, cx = divmod(int(y.argmax()), 41)
        assert abs(cx - (20 + shift[0].item())) <= 1 and abs(cy - (20 + shift[1].item())) <= 1


def test_parse_transforms():
    assert parse_transforms("flip, rescale") == ("rescale", "flip")
    with pytest.raises(ValueError, match="shear"):
        parse_transforms("rescale,shear")
