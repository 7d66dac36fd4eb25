"""MXNet `.params` files written byte by byte (tests/training/helpers.py, independently of the
reader) and read back."""
import numpy as np
import pytest
from seam.training.models.checkpoint import load_weights, read_checkpoint
from seam.training.models.mxnet_params import ParamsFormatError, mxnet_to_torch_name, read_params
from seam.training.models.registry import create_model

from tests.training.helpers import torch_to_mxnet, write_params


@pytest.mark.parametrize("legacy", [False, True])
def test_params_roundtrip_into_backbone(tmp_path, legacy):
    model = create_model("seam", "resnet38_small")
    rng = np.random.default_rng(0)
    expected = {}
    named = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") or k.split(".")[0] in ("fc8", "f8_3", "f8_4", "f9"):
            continue
        arr = rng.standard_normal(tuple(v.shape)).astype(np.float32)
        expected[k] = arr
        named[torch_to_mxnet(k)] = arr
    named["arg:linear1000_weight"] = rng.standard_normal((1000, 4)).astype(np.float32)
    path = tmp_path / "ilsvrc-cls_rnn-38_1.params"
    write_params(path, named, legacy=legacy)

    raw = read_params(path)
    assert "res2a_branch1_weight" in raw and raw["res2a_branch1_weight"].dtype == np.float32
    sd, meta = read_checkpoint(path)
    assert meta["source"] == "mxnet" and not any("linear1000" in k for k in sd)
    missing = load_weights(model, sd, strict=False)
    assert sorted(missing) == ["f8_3.weight", "f8_4.weight", "f9.weight", "fc8.weight"]
    state = model.state_dict()
    for k, arr in expected.items():
        np.testing.assert_array_equal(state[k].numpy(), arr)


def test_published_name_examples():
    assert mxnet_to_torch_name("res2a_branch1_weight") == "b2.conv_branch1.weight"
    assert mxnet_to_torch_name("bn2b1_branch2a_gamma") == "b2_1.bn_branch2a.weight"
    assert mxnet_to_torch_name("bn5b2_branch2b1_moving_var") == "b5_2.bn_branch2b1.running_var"
    assert mxnet_to_torch_name("bn7_beta") == "bn7.bias"
    assert mxnet_to_torch_name("linear1000_weight") is None


def test_truncated_params_rejected(tmp_path):
    path = tmp_path / "x.params"
    write_params(path, {"arg:conv1a_weight": np.ones((2, 3, 3, 3), np.float32)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ParamsFormatError):
        read_params(path)
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ParamsFormatError, match="magic"):
        read_params(path)
