"""Independent re-implementations of what the authors' releases compute (YudeWang/SEAM and
YudeWang/semantic-segmentation-codebase, experiment/seamv1-pseudovoc), written for the
parity tests from the facts of their code (docs/training.md, "Release parity"), in this
project's own words: numpy where no gradient is needed, plain functional torch otherwise.
Nothing here imports the code under test (training.*, seam.common.*).

Networks are run straight from a state dict with the authors' key names, so a parity test
checks our modules, loaders and inference paths against a second, separate forward pass.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-5
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------- SEAM loss block

def minmax_normalise(p: torch.Tensor) -> torch.Tensor:
    """visualization.max_norm (4-D torch): per (image, channel) of relu(p), shift by the minimum
    (plus eps, clipped at 0) and divide by the range plus eps."""
    p = p.clamp(min=0)
    lo = p.amin(dim=(2, 3), keepdim=True)
    hi = p.amax(dim=(2, 3), keepdim=True)
    return (p - lo - EPS).clamp(min=0) / (hi - lo + EPS)


def low_quarter_penalty(x: torch.Tensor) -> torch.Tensor:
    """adaptive_min_pooling_loss: per-pixel max over channels; the hw // 4 smallest of each
    image, relu'd, averaged over images and those pixels."""
    n, _, h, w = x.shape
    k = h * w // 4
    peak = x.amax(dim=1).reshape(n, -1)
    lowest = peak.sort(dim=1).values[:, :k]
    return lowest.clamp(min=0).sum() / (n * k)


def fg_winner_only(x: torch.Tensor) -> torch.Tensor:
    """max_onehot, out of place: channel 0 as is, a foreground channel kept only where it is
    the pixel's foreground maximum."""
    fg = x[:, 1:]
    return torch.cat([x[:, :1], torch.where(fg == fg.amax(dim=1, keepdim=True), fg, torch.zeros_like(fg))], dim=1)


def _with_background(cam: torch.Tensor) -> torch.Tensor:
    return torch.cat([1 - cam[:, 1:].amax(dim=1, keepdim=True), cam[:, 1:]], dim=1)


def _top_fifth_mean(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(t.shape[0], -1)
    k = int(flat.shape[1] * 0.2)
    return flat.sort(dim=1, descending=True).values[:, :k].mean()


def seam_loss_block(outputs, fg_labels: torch.Tensor, scale: float = 0.3, norm=minmax_normalise) -> dict:
    """train_SEAM.py's loss for one iteration. `outputs(i)` gives (cam, cam_rv) of branch i
    (0: the full image, 1: the image rescaled by `scale`); fg_labels (N, 20)."""
    n = fg_labels.shape[0]
    label = torch.cat([torch.ones(n, 1), fg_labels], dim=1)[..., None, None]
    branches = []
    for i in range(2):
        cam, rv = outputs(i)
        cls = F.multilabel_soft_margin_loss(cam.mean(dim=(2, 3), keepdim=True)[:, 1:], label[:, 1:])
        low = low_quarter_penalty((rv * label)[:, 1:])
        cam_n, rv_n = norm(cam), norm(rv)
        if i == 0:  # branch 1 is brought to branch 2's size before the comparisons
            cam_n = F.interpolate(cam_n, scale_factor=scale, mode="bilinear", align_corners=True)
            rv_n = F.interpolate(rv_n, scale_factor=scale, mode="bilinear", align_corners=True)
        branches.append({"cls": cls, "low": low, "cam": cam_n * label, "rv": rv_n * label})
    b1, b2 = branches
    er = (b1["cam"][:, 1:] - b2["cam"][:, 1:]).abs().mean()
    target1 = fg_winner_only(_with_background(b1["cam"]).detach())
    target2 = fg_winner_only(_with_background(b2["cam"]).detach())
    ecr = _top_fifth_mean((target2 - b1["rv"]).abs()) + _top_fifth_mean((target1 - b2["rv"]).abs())
    cls = (b1["cls"] + b2["cls"]) / 2 + (b1["low"] + b2["low"]) / 2
    return {"loss": cls + er + ecr, "er": er, "ecr": ecr}


# --------------------------------------------------------------------------- optimiser of the SEAM release

def release_param_groups(model: torch.nn.Module, new_layers: Iterable[torch.nn.Module]) -> list[list]:
    """get_parameter_groups: conv weights/biases that require grad, split old / new (4 lists)."""
    new_ids = {id(m) for m in new_layers}
    groups: list[list] = [[], [], [], []]
    for m in model.modules():
        if not isinstance(m, (torch.nn.Conv2d, torch.nn.GroupNorm)):
            continue
        new = 2 if id(m) in new_ids else 0
        if m.weight.requires_grad:
            groups[new].append(m.weight)
        if m.bias is not None and m.bias.requires_grad:
            groups[new + 1].append(m.bias)
    return groups


class PolySGD:
    """The release's PolyOptimizer as it behaved: SGD whose momentum is the value passed
    third (the weight decay, 5e-4) unless `momentum` is given, per-group weight decay, and
    lr_i = lr0_i * (1 - step / max_step) ** 0.9 set before each step while step < max_step."""

    def __init__(self, groups: Sequence[list], lr: float, weight_decay: float, max_step: int,
                 momentum: float | None = None) -> None:
        mults, decays = (1, 2, 10, 20), (weight_decay, 0, weight_decay, 0)
        self.sgd = torch.optim.SGD(
            [{"params": g, "lr": lr * m, "weight_decay": d} for g, m, d in zip(groups, mults, decays, strict=True)],
            lr=lr, momentum=weight_decay if momentum is None else momentum)
        self.base = [lr * m for m in mults]
        self.max_step, self.done = max_step, 0

    @property
    def param_groups(self) -> list[dict]:
        return self.sgd.param_groups

    def zero_grad(self) -> None:
        self.sgd.zero_grad()

    def step(self) -> None:
        if self.done < self.max_step:
            factor = (1 - self.done / self.max_step) ** 0.9
            for g, b in zip(self.sgd.param_groups, self.base, strict=True):
                g["lr"] = b * factor
        self.sgd.step()
        self.done += 1


def release_train_mode(model: torch.nn.Module) -> None:
    """resnet38d.Net.train(): train mode, then conv1a and the b2 stage frozen, every BN in eval
    mode with frozen affine parameters."""
    model.train()
    for name, p in model.named_parameters():
        if re.match(r"(conv1a|b2(_\d+)?)\.", name):
            p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)


# --------------------------------------------------------------------------- AffinityNet pairs and loss

def half_plane_offsets(radius: int) -> list[tuple[int, int]]:
    """get_indices_of_pairs' search offsets, in its order: row 0 to the right, then the rows below."""
    first = [(0, dx) for dx in range(1, radius)]
    below = [(dy, dx) for dy in range(1, radius) for dx in range(1 - radius, radius) if dy * dy + dx * dx < radius ** 2]
    return first + below


def pair_index_arrays(h: int, w: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(from (N,), to (P, N)) flat indices: sources are rows [0, h-r+1) x columns [r-1, w-r+1)."""
    r1 = radius - 1
    ys, xs = np.meshgrid(np.arange(h - r1), np.arange(r1, w - r1), indexing="ij")
    src = (ys * w + xs).ravel()
    dst = np.stack([((ys + dy) * w + xs + dx).ravel() for dy, dx in half_plane_offsets(radius)])
    return src, dst


def pair_affinities(feat: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """(B, D, h, w) -> (B, P, N): exp(-mean |f_from - f_to|)."""
    b, d, h, w = feat.shape
    src, dst = pair_index_arrays(h, w, radius)
    flat = feat.reshape(b, d, h * w)
    f_src = flat[:, :, torch.from_numpy(src)][:, :, None]  # (B, D, 1, N)
    f_dst = flat[:, :, torch.from_numpy(dst.ravel())].reshape(b, d, *dst.shape)  # (B, D, P, N)
    return torch.exp(-(f_dst - f_src).abs().mean(dim=1))


def pair_label_sets(label: np.ndarray, radius: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ExtractAffinityLabelInRadius: (bg-positive, fg-positive, negative) float32 (P, N)."""
    h, w = label.shape
    src, dst = pair_index_arrays(h, w, radius)
    a = label.ravel()[src][None]
    b = label.ravel()[dst]
    valid = (a < 255) & (b < 255)
    same = a == b
    bg = same & (a == 0)  # both background (255 is never 0)
    fg = same & (a != 0) & valid
    neg = ~same & valid
    return bg.astype(np.float32), fg.astype(np.float32), neg.astype(np.float32)


def affinity_ce(aff: torch.Tensor, bg, fg, neg) -> torch.Tensor:
    """train_aff.py's loss: bg/4 + fg/4 + neg/2 of per-set mean cross-entropies."""
    def mean_over(mask, per_pair):
        return (mask * per_pair).sum() / (mask.sum() + EPS)

    pos = -torch.log(aff + EPS)
    return mean_over(bg, pos) / 4 + mean_over(fg, pos) / 4 + mean_over(neg, -torch.log(1 + EPS - aff)) / 2


# --------------------------------------------------------------------------- AffinityNet labels at stride 8

def release_stride8_label(la: np.ndarray, ha: np.ndarray, stride: int = 8) -> np.ndarray:
    """VOC12AffDataset after its joint crop/flip: la, ha (K+1, H, W) posteriors (channel 0 =
    background, 0 outside the image) -> mean over stride x stride cells, argmax of each, label =
    la's channel, 255 where la says background, 0 where ha says background, 255 where no channel
    of either has a score (the cell lies in the crop padding)."""
    def cells(x):
        k, h, w = x.shape
        return x.reshape(k, h // stride, stride, w // stride, stride).mean(axis=(2, 4))

    pla, pha = cells(la), cells(ha)
    out = pla.argmax(axis=0).astype(np.uint8)
    out[out == 0] = 255
    out[pha.argmax(axis=0) == 0] = 0
    out[np.concatenate([pla, pha]).max(axis=0) < 1e-5] = 255
    return out


# --------------------------------------------------------------------------- ResNet-38 from a state dict

def _block_names(sd: dict) -> list[str]:
    names = {k.split(".")[0] for k in sd if re.match(r"b\d(_\d+)?\.", k)}
    return sorted(names, key=lambda n: (int(n[1]), int(n.split("_")[1]) if "_" in n else 0))


class _BN:
    """Batch norm from sd[prefix.*]: running statistics in eval; in training, statistics per
    `group` images with the running statistics moved (momentum m) by the first group only."""

    def __init__(self, sd: dict, train: bool, group: int | None, momentum: float) -> None:
        self.sd, self.train, self.group, self.momentum = sd, train, group, momentum

    def __call__(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        g, b = self.sd[f"{prefix}.weight"], self.sd[f"{prefix}.bias"]
        rm, rv = self.sd[f"{prefix}.running_mean"], self.sd[f"{prefix}.running_var"]
        if not self.train:
            return (x - rm[:, None, None]) / torch.sqrt(rv[:, None, None] + EPS) * g[:, None, None] + b[:, None, None]
        size = self.group or x.shape[0]
        outs = []
        for i, chunk in enumerate(x.split(size)):
            mu = chunk.mean(dim=(0, 2, 3))
            var = chunk.var(dim=(0, 2, 3), unbiased=False)
            if i == 0:
                cnt = chunk.numel() / chunk.shape[1]
                with torch.no_grad():
                    rm.mul_(1 - self.momentum).add_(self.momentum * mu)
                    rv.mul_(1 - self.momentum).add_(self.momentum * var * cnt / (cnt - 1))
            outs.append((chunk - mu[:, None, None]) / torch.sqrt(var[:, None, None] + EPS) * g[:, None, None]
                        + b[:, None, None])
        return torch.cat(outs)


def resnet38_features(sd: dict, x: torch.Tensor, train: bool = False, bn_group: int | None = None,
                      bn_momentum: float = 0.1, drop: bool = False) -> dict[str, torch.Tensor]:
    """conv4 / conv5 (bn-relu inputs of b5 / b6) and conv6 = relu(bn7(b7)) of resnet38d,
    straight from its state dict. Strides 2 in b2, b3, b4; b5 dilation 2 (its first conv 1),
    b6 / b7 bottlenecks with dilation 4 and dropout2d 0.3 / 0.5 when `drop`."""
    bn = _BN(sd, train, bn_group, bn_momentum)
    out = {}
    x = F.conv2d(x, sd["conv1a.weight"], padding=1)
    for name in _block_names(sd):
        stage = int(name[1])
        t = F.relu(bn(x, f"{name}.bn_branch2a"))
        if stage in (5, 6) and "_" not in name:
            out[f"conv{stage - 1}"] = t
        skip = F.conv2d(t, sd[f"{name}.conv_branch1.weight"], stride=2 if stage in (2, 3, 4) and "_" not in name
                        else 1) if f"{name}.conv_branch1.weight" in sd else x
        if stage >= 6:  # bottleneck
            p = 0.3 if stage == 6 else 0.5
            y = F.conv2d(t, sd[f"{name}.conv_branch2a.weight"])
            y = F.dropout2d(F.relu(bn(y, f"{name}.bn_branch2b1")), p, training=drop)
            y = F.conv2d(y, sd[f"{name}.conv_branch2b1.weight"], padding=4, dilation=4)
            y = F.dropout2d(F.relu(bn(y, f"{name}.bn_branch2b2")), p, training=drop)
            y = F.conv2d(y, sd[f"{name}.conv_branch2b2.weight"])
        else:
            d1 = 2 if stage == 5 and "_" in name else 1
            d2 = 2 if stage == 5 else 1
            stride = 2 if stage in (2, 3, 4) and "_" not in name else 1
            y = F.conv2d(t, sd[f"{name}.conv_branch2a.weight"], stride=stride, padding=d1, dilation=d1)
            y = F.conv2d(F.relu(bn(y, f"{name}.bn_branch2b1")), sd[f"{name}.conv_branch2b1.weight"], padding=d2,
                         dilation=d2)
        x = skip + y
    out["conv6"] = F.relu(bn(x, "bn7"))
    return out


def seam_net(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """resnet38_SEAM.Net.forward in eval mode -> (cam, cam_rv) at the input size (align_corners=True)."""
    f = resnet38_features(sd, x)
    cam = F.conv2d(f["conv6"], sd["fc8.weight"])
    n, c, h, w = cam.shape
    r = cam.clamp(min=0)
    peak = r.reshape(n, c, -1).amax(dim=2)[..., None, None] + EPS
    norm = (r - EPS).clamp(min=0) / peak
    fg = norm[:, 1:]
    top = fg.amax(dim=1, keepdim=True)
    norm = torch.cat([1 - top, torch.where(fg < top, torch.zeros_like(fg), fg)], dim=1)
    feats = torch.cat([F.interpolate(x, (h, w), mode="bilinear", align_corners=True),
                       F.conv2d(f["conv4"], sd["f8_3.weight"]).clamp(min=0),
                       F.conv2d(f["conv5"], sd["f8_4.weight"]).clamp(min=0)], dim=1)
    g = F.conv2d(feats, sd["f9.weight"]).reshape(n, -1, h * w)
    g = g / (g.norm(dim=1, keepdim=True) + EPS)
    a = (g.transpose(1, 2) @ g).clamp(min=0)
    a = a / (a.sum(dim=1, keepdim=True) + EPS)
    rv = (norm.reshape(n, c, h * w) @ a).reshape(n, c, h, w)
    size = x.shape[-2:]
    return (F.interpolate(cam, size, mode="bilinear", align_corners=True),
            F.interpolate(rv, size, mode="bilinear", align_corners=True))


def deeplab_net(sd: dict, x: torch.Tensor, train: bool = False, bn_group: int | None = None) -> torch.Tensor:
    """deeplabv1 (authors' keys: backbone.*, conv_fov, bn_fov, conv_fov2, bn_fov2, cls_conv) ->
    logits upsampled to the input (align_corners=True). Training: every BN on batch statistics
    (per `bn_group` images, momentum 3e-4), dropout2d in b6 / b7, element-wise dropout 0.5."""
    back = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    f = resnet38_features(back, x, train, bn_group, 3e-4, drop=train)["conv6"]
    bn = _BN(sd, train, bn_group, 3e-4)
    f = F.relu(bn(F.conv2d(f, sd["conv_fov.weight"], padding=12, dilation=12), "bn_fov"))
    f = F.relu(bn(F.conv2d(f, sd["conv_fov2.weight"]), "bn_fov2"))
    f = F.dropout(f, 0.5, training=train)
    logits = F.conv2d(f, sd["cls_conv.weight"], sd["cls_conv.bias"])
    return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------- inference protocols

def _rescaled(rgb: np.ndarray, s: float) -> np.ndarray:
    """(3, h, w) normalised float32 of the image rescaled by s (PIL bicubic, rounded size)."""
    from PIL import Image

    H, W = rgb.shape[:2]
    im = np.asarray(Image.fromarray(rgb).resize((round(W * s), round(H * s)), Image.BICUBIC), np.float32)
    return ((im / 255 - MEAN) / STD).transpose(2, 0, 1).copy()


def infer_seam_cams(net, rgb: np.ndarray, fg_labels: np.ndarray,
                    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0)) -> dict[int, np.ndarray]:
    """infer_SEAM.py for one image: cam_rv of every scale and its mirror, foreground channels
    resized to the image (align_corners=False), times the image's labels, mirrors undone;
    summed, negatives clipped, then per class everything under min + eps zeroed and the rest
    scaled by (x - min - eps) / (max - min + eps). -> {class: (H, W)} of the labelled classes."""
    H, W = rgb.shape[:2]
    total = np.zeros((len(fg_labels), H, W), np.float32)
    with torch.no_grad():
        for s in scales:
            x = torch.from_numpy(_rescaled(rgb, s))[None]
            for mirrored in (False, True):
                _, rv = net(x.flip(-1) if mirrored else x)
                m = F.interpolate(rv[:, 1:], (H, W), mode="bilinear", align_corners=False)[0].numpy()
                m = m * fg_labels[:, None, None]
                total += m[..., ::-1] if mirrored else m
    total = np.maximum(total, 0)
    lo = total.min(axis=(1, 2), keepdims=True)
    hi = total.max(axis=(1, 2), keepdims=True)
    total = np.where(total < lo + EPS, 0, total)
    norm = (total - lo - EPS) / (hi - lo + EPS)
    return {int(c): norm[c] for c in np.flatnonzero(fg_labels > EPS)}


def infer_aff_walk(feat: np.ndarray, cams: dict[int, np.ndarray], image_hw: tuple[int, int], num_fg: int = 20,
                   alpha: float = 6, beta: float = 8, logt: int = 6, radius: int = 5) -> np.ndarray:
    """infer_aff.py for one image from the AffinityNet features (D, h, w) of the image padded
    to multiples of 8: radius (min side - 1) // 2 on grids under 2 * radius + 1 cells; dense
    affinity (pairs both ways + identity) ** beta, columns normalised, squared logt times;
    CAMs in all num_fg + 1 channels (bg (1 - max)^alpha), padded, mean-pooled by 8, times T,
    upsampled (bilinear, align_corners=False) to the padded size, cropped, argmax channel."""
    H, W = image_hw
    d, h, w = feat.shape
    r = (min(h, w) - 1) // 2 if min(h, w) < 2 * radius + 1 else radius
    A = np.eye(h * w)
    if r > 1:
        src, dst = pair_index_arrays(h, w, r)
        flat = feat.reshape(d, -1).astype(np.float64)
        for row in dst:
            a = np.exp(-np.abs(flat[:, src] - flat[:, row]).mean(axis=0))
            A[src, row] = a
            A[row, src] = a
    T = A ** beta
    T = T / T.sum(axis=0, keepdims=True)
    for _ in range(logt):
        T = T @ T
    full = np.zeros((num_fg + 1, h * 8, w * 8), np.float32)
    for c, m in cams.items():
        full[c + 1, :H, :W] = m
    full[0, :H, :W] = (1 - full[1:, :H, :W].max(axis=0)) ** alpha
    pooled = full.reshape(num_fg + 1, h, 8, w, 8).mean(axis=(2, 4))
    walked = (pooled.reshape(num_fg + 1, -1) @ T).reshape(1, num_fg + 1, h, w)
    up = F.interpolate(torch.from_numpy(walked.astype(np.float32)), (h * 8, w * 8), mode="bilinear",
                       align_corners=False)[0, :, :H, :W]
    return up.argmax(dim=0).numpy().astype(np.uint8)


def deeplab_test(net, rgb: np.ndarray, scales: Sequence[float], crf: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """seamv1-pseudovoc test.py for one image: every scale and its mirror, logits to the image
    size (align_corners=True), mirrors undone, mean of the logits, softmax; then
    lib/utils/DenseCRF.dense_crf with one iteration (Gaussian sxy 3 compat 3, bilateral sxy 32
    srgb 13 compat 10) -> (probabilities (C, H, W), argmax label (H, W))."""
    H, W = rgb.shape[:2]
    outs = []
    with torch.no_grad():
        for s in scales:
            x = torch.from_numpy(_rescaled(rgb, s))[None]
            for mirrored in (False, True):
                z = F.interpolate(net(x.flip(-1) if mirrored else x), (H, W), mode="bilinear", align_corners=True)
                outs.append(z.flip(-1) if mirrored else z)
    prob = torch.cat(outs).mean(dim=0).softmax(dim=0).numpy()
    if crf:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax

        c = prob.shape[0]
        model = dcrf.DenseCRF2D(W, H, c)
        model.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
        model.addPairwiseGaussian(sxy=3, compat=3)
        model.addPairwiseBilateral(sxy=32, srgb=13, rgbim=np.array(rgb, np.uint8, order="C"), compat=10)
        prob = np.array(model.inference(1), np.float32).reshape(c, H, W)
    return prob, prob.argmax(axis=0).astype(np.uint8)
