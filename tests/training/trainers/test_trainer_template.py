"""The trainer template is the one place a training stage plugs in: a toy stage (a config,
a `Trainer` subclass with `build` and `make_step`, and its recipe) gets the whole run from
it - run directory, log.csv, checkpoint, final weights + sidecar, and an exact --resume."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from seam.training.trainers import recipes
from seam.training.trainers.config import StageConfig
from seam.training.trainers.template import Parts, Trainer
from torch import nn

TOY_RELEASE = {"batch_size": 4, "epochs": 2, "lr": 0.1, "weight_decay": 5e-4, "momentum": 0.9, "crop": 8,
               "jitter": False, "amp": False}


@dataclass
class ToyConfig(StageConfig):
    recipe: str = "release"

    STAGE = "toy"

    def validate(self) -> None:
        super().validate()
        self.validate_recipe()


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def frozen_prefixes(self) -> tuple[str, ...]:
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class ToyData(torch.utils.data.Dataset):
    """16 samples keyed (index, epoch) as the real data sets: (image, target, index)."""

    seed = 0

    def __len__(self) -> int:
        return 16

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = key[0]
        g = torch.Generator().manual_seed(index)
        return torch.randn(3, 8, 8, generator=g), torch.tensor([index % 2, 1 - index % 2], dtype=torch.float32), index


class ToyTrainer(Trainer[ToyConfig]):
    kind = "toy"
    final_name = "toy_final.pth"
    loss_terms = ("loss",)

    def build(self, log):
        return Parts(ToyNet(), ToyData(), "toy-data-v1", {"class_names": ["background", "odd"]})

    def make_step(self, model, d, amp):
        net = d.parallel(model)
        return lambda batch, _iteration: {"loss": F.mse_loss(net(batch[0]), batch[1])}


@pytest.fixture
def toy_recipe(monkeypatch):
    monkeypatch.setitem(recipes.SETTINGS, "toy", {"release": TOY_RELEASE})


def _config(out, **kw) -> ToyConfig:
    return ToyConfig.from_recipe("release", out=str(out), device="cpu", bn_calibration=0, **kw)


def test_a_toy_stage_gets_the_whole_run_from_the_template(toy_recipe, tmp_path):
    side = ToyTrainer(_config(tmp_path / "run")).train(log=lambda _m: None)
    assert side["kind"] == "toy" and side["class_names"] == ["background", "odd"]
    assert side["training"]["iterations"] == 8 and side["training"]["completed"]  # 2 epochs x 16 / 4
    assert side["recipe"]["name"] == "release" and side["recipe"]["exact"]
    assert json.loads((tmp_path / "run" / "toy_final.json").read_text())["kind"] == "toy"
    ck = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert ck["kind"] == "toy" and ck["class_names"] == ["background", "odd"] and ck["iteration"] == 8
    assert (tmp_path / "run" / "log.csv").read_text().startswith("iteration,epoch,lr,loss")


def test_a_toy_stage_resumes_exactly(toy_recipe, tmp_path):
    ToyTrainer(_config(tmp_path / "full")).train(log=lambda _m: None)
    ToyTrainer(_config(tmp_path / "cut", stop_after=3)).train(log=lambda _m: None)
    ToyTrainer(_config(tmp_path / "cut", resume=True)).train(log=lambda _m: None)
    full = torch.load(tmp_path / "full" / "toy_final.pth", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "toy_final.pth", weights_only=True)
    assert full.keys() == cut.keys()
    for k in full:
        torch.testing.assert_close(cut[k], full[k], rtol=0, atol=0)


def test_a_resume_refuses_another_stages_checkpoint(toy_recipe, tmp_path):
    from seam.training.models.checkpoint import CheckpointError

    ToyTrainer(_config(tmp_path / "run", stop_after=2)).train(log=lambda _m: None)

    class OtherToy(ToyTrainer):
        kind = "other"

    with pytest.raises(CheckpointError, match="is a toy run, not other"):
        OtherToy(_config(tmp_path / "run", resume=True)).train(log=lambda _m: None)
