"""Step parity with the authors' release (YudeWang/SEAM).

The reference side is `tests/training/release_oracles.py`: independent implementations of
what the release computes - train_SEAM.py's loss block (with max_norm, the adaptive min
pooling term and max_onehot), train_aff.py's loss, the pair affinities and pair labels of
resnet38_aff / ExtractAffinityLabelInRadius, the PolyOptimizer as it ran (momentum 5e-4),
get_parameter_groups and the networks' train(). Our code (seam.training.losses,
seam.training.trainers.*) must give the same losses, the same input gradients and, for one
recipe step, the same weights.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seam.training.losses import LossSwitches, seam_losses
from seam.training.models.affinity import pair_affinity
from seam.training.models.registry import create_model
from seam.training.trainers.affinity import AffinityTrainConfig, affinity_loss
from seam.training.trainers.batchnorm import freeze_parameters, set_train_mode
from seam.training.trainers.recipes import recipe_settings
from seam.training.trainers.schedule import PolySchedule, make_optimizer
from seam.training.trainers.seam import SiameseStep, TrainConfig
from seam.training.trainers.siamese import SiameseConfig, sample_transform
from torch import nn

from seam.common.affinity_labels import pair_labels
from tests.training import release_oracles as rel

TOL = 1e-5


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


def _release_on(out1, out2, fg, norm=rel.minmax_normalise):
    """The release's block on the given outputs (branch 1 for the full-size image, branch 2
    for the 0.3-scaled one)."""
    return rel.seam_loss_block(lambda i: (out1, out2)[i], fg, norm=norm)


def _grads(loss, leaves):
    return torch.autograd.grad(loss, leaves, allow_unused=True)


# --------------------------------------------------------------------------- the loss block

@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
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

    bg, fg, neg = (torch.from_numpy(a)[None].expand(2, -1, -1) for a in rel.pair_label_sets(label))
    ref = rel.affinity_ce(rel.pair_affinities(feat), bg, fg, neg)
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


def _release_optimizer(model, new_layers, lr, wt_dec, max_step, momentum=None):
    """As train_SEAM.py / train_aff.py build it: before model.train(), so every weight still
    requires grad and the frozen ones sit in group 0, skipped for lack of a gradient."""
    for p in model.parameters():
        p.requires_grad_(True)  # a fresh release Net: nothing frozen before train()
    return rel.PolySGD(rel.release_param_groups(model, new_layers), lr, wt_dec, max_step, momentum)


def _run_release_seam(base, img, fg, recipe_lr, wt_dec, max_step, steps, momentum=None):
    model = copy.deepcopy(base)
    opt = _release_optimizer(model, [model.f8_3, model.f8_4, model.f9, model.fc8], recipe_lr, wt_dec, max_step,
                             momentum)
    rel.release_train_mode(model)
    img2 = F.interpolate(img, scale_factor=0.3, mode="bilinear", align_corners=True)
    for it in range(steps):
        torch.manual_seed(1000 + it)  # dropout masks: both sides draw them in the same order
        loss = rel.seam_loss_block(lambda i: model((img, img2)[i]), fg)["loss"]
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


@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
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

    # the release's optimiser as its code meant it: momentum 0.9
    ref, ref_opt = _run_release_seam(base, img, fg, 0.01, 5e-4, max_step, steps=3, momentum=0.9)
    assert [g["momentum"] for g in ref_opt.param_groups] == [0.9] * 4
    ours, _ = _run_ours_seam(base, img, fg, cfg, max_step, steps=3)
    _assert_same_weights(ours, ref)
    release, _ = _run_ours_seam(base, img, fg, TrainConfig.from_recipe("release"), max_step, steps=3)
    # the recipes really differ after a few steps (momentum 0.9 vs 5e-4)
    diff = max(abs(a - b) for a, b in zip(_update_norms(base, ours).values(), _update_norms(base, release).values(),
                                          strict=True))
    assert diff > 1e-4


@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
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
    ref_opt = _release_optimizer(ref, [ref.f8_3, ref.f8_4, ref.f8_5, ref.f9], 0.01, 5e-4, max_step)
    rel.release_train_mode(ref)
    labs = [tuple(torch.from_numpy(a) for a in rel.pair_label_sets(lb)) for lb in label]
    bg, fg, neg = (torch.stack([lb[i] for lb in labs]) for i in range(3))

    ours = copy.deepcopy(base)
    freeze_parameters(ours)
    set_train_mode(ours)
    opt = make_optimizer(ours, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    sched = PolySchedule(opt, max_step)
    pairs = torch.stack([torch.from_numpy(pair_labels(lb.astype(np.int16))) for lb in label])
    for it in range(2):
        torch.manual_seed(1000 + it)  # dropout in b6/b7
        loss = rel.affinity_ce(rel.pair_affinities(ref(x)), bg, fg, neg)
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
