"""Step parity with the authors' release (YudeWang/SEAM).

The `_release_*` functions transcribe, line for line, what the release computes:
`train_SEAM.py` (the loss block from `cam1, cam_rv1 = model(img1)` to
`loss = loss_cls + loss_er + loss_ecr`, with `adaptive_min_pooling_loss` and
`max_onehot`), `tool/visualization.py` (`max_norm`, torch 4-D branch), `train_aff.py`
(the AffinityNet loss), `network/resnet38_aff.py` + `tool/pyutils.get_indices_of_pairs`
(pair affinities), `tool/torchutils.py` (`PolyOptimizer`, `ExtractAffinityLabelInRadius`)
and `get_parameter_groups` / `train()` of the release's networks. They keep the
release's in-place style where it matters (max_onehot writes through `.detach()`).

Our code (training.losses, training.engine.*) must give the same losses, the same
input gradients and, for one recipe step, the same weights.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seam.common.affinity_labels import pair_labels
from training.engine.affinity import AffinityTrainConfig, affinity_loss
from training.engine.loop import freeze_parameters, set_train_mode
from training.engine.recipes import recipe_settings
from training.engine.schedule import PolySchedule, make_optimizer
from training.engine.siamese import SiameseConfig, sample_transform
from training.engine.trainer import SiameseStep, TrainConfig
from training.losses import LossSwitches, seam_losses
from training.models.affinity import pair_affinity
from training.models.registry import create_model

TOL = 1e-5


# --------------------------------------------------------------------------- the release, transcribed

def _release_max_norm(p, e=1e-5):  # tool/visualization.py, version 'torch', p.dim() == 4
    N, C, H, W = p.size()
    p = F.relu(p)
    max_v = torch.max(p.view(N, C, -1), dim=-1)[0].view(N, C, 1, 1)
    min_v = torch.min(p.view(N, C, -1), dim=-1)[0].view(N, C, 1, 1)
    p = F.relu(p - min_v - e) / (max_v - min_v + e)
    return p


def _release_adaptive_min_pooling_loss(x):
    n, c, h, w = x.size()
    k = h * w // 4
    x = torch.max(x, dim=1)[0]
    y = torch.topk(x.view(n, -1), k=k, dim=-1, largest=False)[0]
    y = F.relu(y, inplace=False)
    loss = torch.sum(y) / (k * n)
    return loss


def _release_max_onehot(x):
    n, c, h, w = x.size()
    x_max = torch.max(x[:, 1:, :, :], dim=1, keepdim=True)[0]
    x[:, 1:, :, :][x[:, 1:, :, :] != x_max] = 0
    return x


def _release_loss_block(model, img1, label, max_norm=_release_max_norm):
    """train_SEAM.py, one iteration's loss; `model` returns (cam, cam_rv) at input size.
    `label` is pack[2] (N, 20). Returns the release's loss, loss_er, loss_ecr."""
    scale_factor = 0.3
    img2 = F.interpolate(img1, scale_factor=scale_factor, mode='bilinear', align_corners=True)
    N, C, H, W = img1.size()
    bg_score = torch.ones((N, 1))
    label = torch.cat((bg_score, label), dim=1)
    label = label.unsqueeze(2).unsqueeze(3)

    cam1, cam_rv1 = model(img1)
    label1 = F.adaptive_avg_pool2d(cam1, (1, 1))
    loss_rvmin1 = _release_adaptive_min_pooling_loss((cam_rv1 * label)[:, 1:, :, :])
    cam1 = F.interpolate(max_norm(cam1), scale_factor=scale_factor, mode='bilinear', align_corners=True) * label
    cam_rv1 = F.interpolate(max_norm(cam_rv1), scale_factor=scale_factor, mode='bilinear', align_corners=True) * label

    cam2, cam_rv2 = model(img2)
    label2 = F.adaptive_avg_pool2d(cam2, (1, 1))
    loss_rvmin2 = _release_adaptive_min_pooling_loss((cam_rv2 * label)[:, 1:, :, :])
    cam2 = max_norm(cam2) * label
    cam_rv2 = max_norm(cam_rv2) * label

    loss_cls1 = F.multilabel_soft_margin_loss(label1[:, 1:, :, :], label[:, 1:, :, :])
    loss_cls2 = F.multilabel_soft_margin_loss(label2[:, 1:, :, :], label[:, 1:, :, :])

    ns, cs, hs, ws = cam2.size()
    loss_er = torch.mean(torch.abs(cam1[:, 1:, :, :] - cam2[:, 1:, :, :]))
    cam1[:, 0, :, :] = 1 - torch.max(cam1[:, 1:, :, :], dim=1)[0]
    cam2[:, 0, :, :] = 1 - torch.max(cam2[:, 1:, :, :], dim=1)[0]
    tensor_ecr1 = torch.abs(_release_max_onehot(cam2.detach()) - cam_rv1)
    tensor_ecr2 = torch.abs(_release_max_onehot(cam1.detach()) - cam_rv2)
    loss_ecr1 = torch.mean(torch.topk(tensor_ecr1.view(ns, -1), k=(int)(21 * hs * ws * 0.2), dim=-1)[0])
    loss_ecr2 = torch.mean(torch.topk(tensor_ecr2.view(ns, -1), k=(int)(21 * hs * ws * 0.2), dim=-1)[0])
    loss_ecr = loss_ecr1 + loss_ecr2

    loss_cls = (loss_cls1 + loss_cls2) / 2 + (loss_rvmin1 + loss_rvmin2) / 2
    loss = loss_cls + loss_er + loss_ecr
    return {"loss": loss, "er": loss_er, "ecr": loss_ecr}


class _ReleasePolyOptimizer(torch.optim.SGD):  # tool/torchutils.py
    def __init__(self, params, lr, weight_decay, max_step, momentum=0.9):
        super().__init__(params, lr, weight_decay)  # the third positional slot is SGD's momentum
        self.global_step = 0
        self.max_step = max_step
        self.momentum = momentum
        self.__initial_lr = [group['lr'] for group in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            lr_mult = (1 - self.global_step / self.max_step) ** self.momentum
            for i in range(len(self.param_groups)):
                self.param_groups[i]['lr'] = self.__initial_lr[i] * lr_mult
        super().step(closure)
        self.global_step += 1


def _release_parameter_groups(model, from_scratch_layers):  # Net.get_parameter_groups
    groups = ([], [], [], [])
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.modules.normalization.GroupNorm)):
            if m.weight.requires_grad:
                if m in from_scratch_layers:
                    groups[2].append(m.weight)
                else:
                    groups[0].append(m.weight)
            if m.bias is not None and m.bias.requires_grad:
                if m in from_scratch_layers:
                    groups[3].append(m.bias)
                else:
                    groups[1].append(m.bias)
    return groups


def _release_optimizer(model, from_scratch, lr, wt_dec, max_step, cls=_ReleasePolyOptimizer):
    """As train_SEAM.py / train_aff.py build it (before model.train(): every weight still
    requires grad, so the frozen ones sit in group 0 and are skipped for lack of a gradient)."""
    param_groups = _release_parameter_groups(model, from_scratch)
    return cls([
        {'params': param_groups[0], 'lr': lr, 'weight_decay': wt_dec},
        {'params': param_groups[1], 'lr': 2 * lr, 'weight_decay': 0},
        {'params': param_groups[2], 'lr': 10 * lr, 'weight_decay': wt_dec},
        {'params': param_groups[3], 'lr': 20 * lr, 'weight_decay': 0},
    ], lr=lr, weight_decay=wt_dec, max_step=max_step)


def _release_train_mode(model):  # network/resnet38d.py Net.train()
    model.train()
    # [conv1a, b2, b2_1, b2_2]; the small CPU backbone has fewer b2 blocks
    for layer in [getattr(model, n) for n in ("conv1a", "b2", "b2_1", "b2_2") if hasattr(model, n)]:
        if isinstance(layer, torch.nn.Conv2d):
            layer.weight.requires_grad = False
        elif isinstance(layer, torch.nn.Module):
            for c in layer.children():
                c.weight.requires_grad = False
                if c.bias is not None:
                    c.bias.requires_grad = False
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.eval()
            layer.bias.requires_grad = False
            layer.weight.requires_grad = False


def _release_search_dist(radius):  # the same loop opens both release functions below
    search_dist = []
    for x in range(1, radius):
        search_dist.append((0, x))
    for y in range(1, radius):
        for x in range(-radius + 1, radius):
            if x * x + y * y < radius * radius:
                search_dist.append((y, x))
    return search_dist


def _release_indices_of_pairs(radius, size):  # tool/pyutils.get_indices_of_pairs
    search_dist = _release_search_dist(radius)
    radius_floor = radius - 1
    full_indices = np.reshape(np.arange(0, size[0] * size[1], dtype=np.int64), (size[0], size[1]))
    cropped_height = size[0] - radius_floor
    cropped_width = size[1] - 2 * radius_floor
    indices_from = np.reshape(full_indices[:-radius_floor, radius_floor:-radius_floor], [-1])
    indices_to_list = []
    for dy, dx in search_dist:
        indices_to = full_indices[dy:dy + cropped_height, radius_floor + dx:radius_floor + dx + cropped_width]
        indices_to_list.append(np.reshape(indices_to, [-1]))
    return indices_from, np.concatenate(indices_to_list, axis=0)


def _release_aff(x, radius=5):  # the tail of resnet38_aff.Net.forward, to_dense=False
    ind_from, ind_to = _release_indices_of_pairs(radius, (x.size(2), x.size(3)))
    ind_from, ind_to = torch.from_numpy(ind_from), torch.from_numpy(ind_to)
    x = x.view(x.size(0), x.size(1), -1).contiguous()
    ff = torch.index_select(x, dim=2, index=ind_from)
    ft = torch.index_select(x, dim=2, index=ind_to)
    ff = torch.unsqueeze(ff, dim=2)
    ft = ft.view(ft.size(0), ft.size(1), -1, ff.size(3))
    return torch.exp(-torch.mean(torch.abs(ft - ff), dim=1))


def _release_affinity_labels(label, radius=5):  # torchutils.ExtractAffinityLabelInRadius.__call__
    search_dist = _release_search_dist(radius)
    radius_floor = radius - 1
    crop_height = label.shape[0] - radius_floor
    crop_width = label.shape[1] - 2 * radius_floor
    labels_from = np.reshape(label[:-radius_floor, radius_floor:-radius_floor], [-1])
    labels_to_list, valid_pair_list = [], []
    for dy, dx in search_dist:
        labels_to = np.reshape(label[dy:dy + crop_height, radius_floor + dx:radius_floor + dx + crop_width], [-1])
        valid_pair_list.append(np.logical_and(np.less(labels_to, 255), np.less(labels_from, 255)))
        labels_to_list.append(labels_to)
    bc_labels_from = np.expand_dims(labels_from, 0)
    concat_labels_to = np.stack(labels_to_list)
    concat_valid_pair = np.stack(valid_pair_list)
    pos = np.equal(bc_labels_from, concat_labels_to)
    bg = np.logical_and(pos, np.equal(bc_labels_from, 0)).astype(np.float32)
    fg = np.logical_and(np.logical_and(pos, np.not_equal(bc_labels_from, 0)), concat_valid_pair).astype(np.float32)
    neg = np.logical_and(np.logical_not(pos), concat_valid_pair).astype(np.float32)
    return bg, fg, neg


def _release_aff_loss(aff, bg_label, fg_label, neg_label):  # train_aff.py
    bg_count = torch.sum(bg_label) + 1e-5
    fg_count = torch.sum(fg_label) + 1e-5
    neg_count = torch.sum(neg_label) + 1e-5
    bg_loss = torch.sum(- bg_label * torch.log(aff + 1e-5)) / bg_count
    fg_loss = torch.sum(- fg_label * torch.log(aff + 1e-5)) / fg_count
    neg_loss = torch.sum(- neg_label * torch.log(1. + 1e-5 - aff)) / neg_count
    return bg_loss / 4 + fg_loss / 4 + neg_loss / 2


# --------------------------------------------------------------------------- helpers

def _network_outputs(seed, B=2, H=40, W=56, C=21):
    """Random (cam, cam_rv) pairs for both branches, leaves with gradients. The PCM maps
    have a positive floor, as real ones do (a mix of normalised CAMs): that is where
    subtracting the minimum matters."""
    g = torch.Generator().manual_seed(seed)
    h, w = int(H * 0.3), int(W * 0.3)
    cam1 = (torch.randn(B, C, H, W, generator=g) * 2).requires_grad_(True)
    cam2 = (torch.randn(B, C, h, w, generator=g) * 2).requires_grad_(True)
    rv1 = (0.3 + 0.5 * torch.rand(B, C, H, W, generator=g)).requires_grad_(True)
    rv2 = (0.3 + 0.5 * torch.rand(B, C, h, w, generator=g)).requires_grad_(True)
    fg = (torch.rand(B, C - 1, generator=g) < 0.3).float()
    fg[:, 0] = 1.0  # at least one class per image
    return (cam1, rv1), (cam2, rv2), fg


_DEFAULT_SWITCHES = LossSwitches()


def _ours(out1, out2, fg, switches=_DEFAULT_SWITCHES):
    B, _, H, W = out1[0].shape
    label = torch.cat([torch.ones(B, 1), fg], dim=1)
    plan = sample_transform(SiameseConfig(), B, (H, W), torch.Generator().manual_seed(0))
    assert plan.size == tuple(out2[0].shape[-2:])
    return seam_losses(out1, out2, label, plan.map, plan.mask, switches)


def _release_on(out1, out2, fg, max_norm=_release_max_norm):
    """The release's block with `model` replaced by the given outputs (branch 1 for the
    full-size image, branch 2 for the 0.3-scaled one)."""
    outs = iter([out1, out2])
    H, W = out1[0].shape[-2:]
    img1 = torch.zeros(out1[0].shape[0], 3, H, W)
    return _release_loss_block(lambda _img: next(outs), img1, fg, max_norm)


def _grads(loss, leaves):
    return torch.autograd.grad(loss, leaves, allow_unused=True)


# --------------------------------------------------------------------------- the loss block

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seam_losses_equal_the_release_loss_block(seed):
    out1, out2, fg = _network_outputs(seed)
    leaves = [*out1, *out2]
    ref = _release_on(out1, out2, fg)
    ours = _ours(out1, out2, fg)
    for k in ("loss", "er", "ecr"):
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=TOL, abs=TOL), k
    g_ref = _grads(ref["loss"], leaves)
    g_ours = _grads(ours["loss"], leaves)
    for name, a, b in zip(("cam1", "rv1", "cam2", "rv2"), g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL, msg=f"d loss / d {name}")
    # the ECR gradient alone (it reaches the PCM outputs only)
    rvs = [out1[1], out2[1]]
    for a, b in zip(_grads(_ours(out1, out2, fg)["ecr"], rvs), _grads(_release_on(out1, out2, fg)["ecr"], rvs),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


def test_the_old_max_norm_fails_the_parity():
    """Dividing by the max alone (our pre-fix formula, `peak`) is measurably a different loss on
    PCM maps with a floor: this is what the parity test above catches."""
    out1, out2, fg = _network_outputs(0)
    ref = _release_on(out1, out2, fg)
    old = _ours(out1, out2, fg, LossSwitches(norm="peak"))
    assert abs(old["ecr"].item() - ref["ecr"].item()) > 100 * TOL
    assert abs(old["loss"].item() - ref["loss"].item()) > 100 * TOL


# --------------------------------------------------------------------------- AffinityNet loss

@pytest.mark.parametrize("seed", [0, 1])
def test_affinity_loss_equals_train_aff(seed):
    rng = np.random.default_rng(seed)
    h, w = 14, 17
    label = rng.choice([0, 0, 1, 3, 255], size=(h, w)).astype(np.int64)
    label[3:9, 4:12] = 2  # a region, so fg-positive pairs exist
    feat = torch.from_numpy(rng.normal(size=(2, 16, h, w)).astype(np.float32)).requires_grad_(True)

    bg, fg, neg = (torch.from_numpy(a)[None].expand(2, -1, -1) for a in _release_affinity_labels(label))
    ref = _release_aff_loss(_release_aff(feat), bg, fg, neg)
    pairs = torch.from_numpy(pair_labels(label.astype(np.int16)))[None].expand(2, -1, -1, -1)
    ours, _ = affinity_loss(pair_affinity(feat, radius=5), pairs)
    assert ours.item() == pytest.approx(ref.item(), rel=TOL)
    torch.testing.assert_close(_grads(ours, [feat])[0], _grads(ref, [feat])[0], rtol=TOL, atol=1e-7)


# --------------------------------------------------------------------------- one optimiser step per recipe

def _calibrated(model, x):
    """Give the frozen BN data statistics (fresh ones shrink a random network's activations to nothing)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1
    model.eval()
    return model


def _seam_pair(num_classes=21):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64)
    return _calibrated(create_model("seam", "resnet38_small", num_classes), x), x


def _run_release_seam(base, img, fg, recipe_lr, wt_dec, max_step, steps, cls=_ReleasePolyOptimizer):
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(True)  # a fresh release Net: nothing frozen before train()
    opt = _release_optimizer(model, [model.f8_3, model.f8_4, model.f9, model.fc8], recipe_lr, wt_dec, max_step, cls)
    _release_train_mode(model)
    for it in range(steps):
        torch.manual_seed(1000 + it)  # dropout masks: both sides draw them in the same order
        loss = _release_loss_block(model, img, fg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def _run_ours_seam(base, img, fg, cfg: TrainConfig, max_step, steps):
    model = copy.deepcopy(base)
    freeze_parameters(model, train_pcm=cfg.pcm)
    set_train_mode(model)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    sched = PolySchedule(opt, max_step)
    net = SiameseStep(model)
    label = torch.cat([torch.ones(img.shape[0], 1), fg], dim=1)
    for it in range(steps):
        sched.step(it)
        plan = sample_transform(SiameseConfig(scale=cfg.siamese_scale), img.shape[0], tuple(img.shape[-2:]),
                                torch.Generator().manual_seed(it))
        torch.manual_seed(1000 + it)
        out1, out2 = net(img, plan.image(img))
        loss = seam_losses(out1, out2, label, plan.map, plan.mask, cfg.switches)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, opt


def _assert_same_weights(a, b, rtol=1e-4):
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=1e-7, msg=name)


def _update_norms(base, model):
    return {n: (p - q).abs().max().item()
            for (n, p), q in zip(model.named_parameters(), base.parameters(), strict=True)}


def test_release_recipe_step_equals_the_release_polyoptimizer():
    base, x = _seam_pair()
    img = x[:2]
    fg = torch.zeros(2, 20)
    fg[0, [0, 4]] = 1
    fg[1, 7] = 1
    cfg = TrainConfig.from_recipe("release")
    s = recipe_settings("seam", "release")
    assert (cfg.lr, cfg.weight_decay, cfg.effective_momentum, cfg.amp, cfg.cam_norm) == (
        0.01, 5e-4, 5e-4, False, "minmax")
    assert (cfg.batch_size, cfg.epochs, cfg.crop) == (s["batch_size"], s["epochs"], s["crop"]) == (8, 8, 448)
    max_step = 10582 // 8 * 8  # train_aug, as train_SEAM.py's max_step
    ref, ref_opt = _run_release_seam(base, img, fg, 0.01, 5e-4, max_step, steps=2)
    ours, opt = _run_ours_seam(base, img, fg, cfg, max_step, steps=2)
    # what the release's positional call really built
    assert [g["momentum"] for g in ref_opt.param_groups] == [5e-4] * 4
    assert [g["momentum"] for g in opt.param_groups] == [5e-4] * 4
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in ref_opt.param_groups]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in ref_opt.param_groups])
    _assert_same_weights(ours, ref)
    moved = _update_norms(base, ours)
    assert moved["fc8.weight"] > 1e-6 and moved["b3.conv_branch2a.weight"] > 0  # a real step happened
    assert moved["conv1a.weight"] == 0 and moved["b2.conv_branch2a.weight"] == 0  # frozen as the release


@pytest.mark.slow
def test_tuned_recipe_is_the_release_optimizer_with_its_momentum_fixed():
    base, x = _seam_pair()
    img = x[:2]
    fg = torch.zeros(2, 20)
    fg[:, 2] = 1
    cfg = TrainConfig.from_recipe("tuned")
    assert cfg.effective_momentum == 0.9 and cfg.amp is None and cfg.cam_norm == "minmax"
    max_step = 50

    class Fixed(_ReleasePolyOptimizer):  # the release's optimiser as its code meant it
        def __init__(self, params, lr, weight_decay, max_step):
            torch.optim.SGD.__init__(self, params, lr, momentum=0.9)
            self.global_step, self.max_step, self.momentum = 0, max_step, 0.9
            self._ReleasePolyOptimizer__initial_lr = [g['lr'] for g in self.param_groups]

    ref, ref_opt = _run_release_seam(base, img, fg, 0.01, 5e-4, max_step, steps=3, cls=Fixed)
    assert [g["momentum"] for g in ref_opt.param_groups] == [0.9] * 4
    ours, _ = _run_ours_seam(base, img, fg, cfg, max_step, steps=3)
    _assert_same_weights(ours, ref)
    release, _ = _run_ours_seam(base, img, fg, TrainConfig.from_recipe("release"), max_step, steps=3)
    # the recipes really differ after a few steps (momentum 0.9 vs 5e-4)
    diff = max(abs(a - b) for a, b in zip(_update_norms(base, ours).values(), _update_norms(base, release).values(),
                                          strict=True))
    assert diff > 1e-4


def test_affinity_release_recipe_step_equals_train_aff():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 112, 136)
    base = _calibrated(create_model("affinity", "resnet38_small"), x)
    rng = np.random.default_rng(0)
    label = rng.choice([0, 0, 1, 3, 255], size=(2, 14, 17)).astype(np.int64)
    label[:, 3:9, 4:12] = 2
    cfg = AffinityTrainConfig.from_recipe("release")
    assert (cfg.lr, cfg.weight_decay, cfg.effective_momentum, cfg.amp) == (0.01, 5e-4, 5e-4, False)
    assert (cfg.batch_size, cfg.epochs, cfg.crop) == (8, 8, 448)
    max_step = 100

    ref = copy.deepcopy(base)
    for p in ref.parameters():
        p.requires_grad_(True)
    ref_opt = _release_optimizer(ref, [ref.f8_3, ref.f8_4, ref.f8_5, ref.f9], 0.01, 5e-4, max_step)
    _release_train_mode(ref)
    labs = [tuple(torch.from_numpy(a) for a in _release_affinity_labels(lb)) for lb in label]
    bg, fg, neg = (torch.stack([lb[i] for lb in labs]) for i in range(3))

    ours = copy.deepcopy(base)
    freeze_parameters(ours)
    set_train_mode(ours)
    opt = make_optimizer(ours, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    sched = PolySchedule(opt, max_step)
    pairs = torch.stack([torch.from_numpy(pair_labels(lb.astype(np.int16))) for lb in label])
    for it in range(2):
        torch.manual_seed(1000 + it)  # dropout in b6/b7
        loss = _release_aff_loss(_release_aff(ref(x)), bg, fg, neg)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        sched.step(it)
        torch.manual_seed(1000 + it)
        ours_loss, _ = affinity_loss(pair_affinity(ours(x), cfg_radius := 5), pairs)
        assert ours_loss.item() == pytest.approx(loss.item(), rel=TOL)
        opt.zero_grad(set_to_none=True)
        ours_loss.backward()
        opt.step()
    assert cfg_radius == cfg.radius
    _assert_same_weights(ours, ref)
    assert _update_norms(base, ours)["f9.weight"] > 1e-6
