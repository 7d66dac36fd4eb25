"""The SEAM network: the authors' keys load strictly, and PCM matches an independent numpy version."""
import numpy as np
import pytest
import torch
from seam.training.models.checkpoint import CheckpointError, infer_backbone_config, load_weights, read_checkpoint
from seam.training.models.registry import BACKBONES, create_model, model_from_checkpoint
from seam.training.models.seam import SEAM, pcm, pcm_normalize


def _random_official_sd(keys: dict, with_nbt: bool, prefix: str = "") -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            if with_nbt:
                sd[prefix + k] = torch.tensor(7)
            continue
        t = torch.rand(shape, generator=g) if "running_var" in k else torch.randn(shape, generator=g) * 0.01
        sd[prefix + k] = t
    return sd


def test_model_keys_equal_official(official_keys):
    sd = SEAM().state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == official_keys["seam"]


@pytest.mark.slow  # a full-size ResNet-38 state dict saved and loaded: seconds per case
@pytest.mark.parametrize("with_nbt,prefix", [(True, ""), (False, ""), (True, "module."), (False, "module.")])
def test_official_state_dict_loads_strict(tmp_path, official_keys, with_nbt, prefix):
    sd = _random_official_sd(official_keys["seam"], with_nbt, prefix)
    path = tmp_path / "res38_SEAM.pth"
    torch.save(sd, path)
    model, meta = model_from_checkpoint(path, "seam")
    assert meta["backbone"] == "resnet38" and meta["num_classes"] == 21
    loaded = model.state_dict()
    for k in ("fc8.weight", "b4_5.conv_branch2b1.weight", "bn7.running_var", "f9.weight"):
        assert torch.equal(loaded[k], sd[prefix + k])


@pytest.mark.slow  # a full-size state dict and two full-size networks
def test_bad_checkpoints_are_refused(tmp_path, official_keys):
    sd = _random_official_sd(official_keys["seam"], True)
    sd["fc8.weight"] = torch.zeros(21, 100, 1, 1)
    with pytest.raises(CheckpointError, match="fc8.weight"):
        load_weights(SEAM(), sd)
    del sd["fc8.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(SEAM(), sd)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_config_recovered_from_weights(name):
    model = create_model("seam", name)
    assert infer_backbone_config(model.state_dict()) == BACKBONES[name]


def test_small_backbone_is_small():
    n = sum(p.numel() for p in create_model("seam", "resnet38_small").parameters())
    assert n * 4 < 8e6  # "a few MB" as float32


def _numpy_pcm(cam: np.ndarray, feats: np.ndarray, w9: np.ndarray) -> np.ndarray:
    """Independent loop-light numpy version of the release's PCM for one image."""
    C, h, w = cam.shape
    c = np.maximum(cam, 0)
    n = np.maximum(c - 1e-5, 0) / (c.reshape(C, -1).max(1)[:, None, None] + 1e-5)
    fgmax = n[1:].max(0)
    n[1:][n[1:] < fgmax[None]] = 0  # the release's masked in-place assignment
    n[0] = 1 - fgmax
    g = w9[:, :, 0, 0] @ feats.reshape(feats.shape[0], -1)
    g = g / (np.sqrt((g ** 2).sum(0, keepdims=True)) + 1e-5)
    aff = np.maximum(g.T @ g, 0)
    aff = aff / (aff.sum(0, keepdims=True) + 1e-5)
    return (n.reshape(C, -1) @ aff).reshape(C, h, w)


def test_pcm_matches_numpy():
    torch.manual_seed(0)
    cam = torch.randn(2, 5, 6, 7, dtype=torch.float64) * 3
    feats = torch.randn(2, 11, 6, 7, dtype=torch.float64)
    f9 = torch.nn.Conv2d(11, 9, 1, bias=False).double()
    out = pcm(pcm_normalize(cam), feats, f9).detach().numpy()
    for b in range(2):
        ref = _numpy_pcm(cam[b].numpy(), feats[b].numpy(), f9.weight.detach().numpy())
        np.testing.assert_allclose(out[b], ref, atol=1e-10)


def test_forward_shapes_and_upsampling():
    torch.manual_seed(0)
    model = create_model("seam", "resnet38_small").eval()
    x = torch.randn(2, 3, 37, 61)
    with torch.inference_mode():
        cam8, rv8 = model.forward_stride8(x)
        cam, rv = model(x)
    assert cam8.shape == rv8.shape == (2, 21, 5, 8)
    assert cam.shape == rv.shape == (2, 21, 37, 61)
    ref = torch.nn.functional.interpolate(rv8, (37, 61), mode="bilinear", align_corners=True)
    torch.testing.assert_close(rv, ref)
