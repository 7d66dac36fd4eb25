"""Training recipes: `release` reproduces the published runs, `tuned` is our measured choice.

A recipe is a set of config values (optimiser, schedule, data sizes, precision, the
loss block's CAM normalisation). Explicit settings override it; the sidecar records the
recipe's name, its values and every override, so a run says exactly how it differs
from the published one. `RecipeConfig` gives the three trainers' configs that behaviour
(`from_recipe`, `recipe_report`, `effective_momentum`).

release (SEAM `train_SEAM.py`, `train_aff.py`, `tool/torchutils.py`):
  - SGD through the release's `PolyOptimizer`, which calls `SGD(params, lr, weight_decay)`:
    the third positional slot is momentum, so the published runs used momentum 5e-4 (the
    authors acknowledged it); weight decay 5e-4 applied per parameter group (weights of
    groups 0 and 2), none on biases.
  - poly decay, power 0.9 (the optimiser's `momentum` attribute, 0.9, is the power);
    base lr 0.01, groups x1 / x2 / x10 / x20.
  - batch 8, 8 epochs, crop 448; SEAM: long side random in [448, 768]; ColorJitter
    (0.3, 0.3, 0.3, 0.1); fp32 (no AMP); loss-block `max_norm` subtracts the minimum.
  - AffinityNet: the same optimiser and lr 0.01 (SEAM's `train_aff.py`; psa's 0.1 is
    another release), batch 8, 8 epochs, crop 448, flip + jitter.
tuned: the same except momentum 0.9 (what the code meant) and AMP on CUDA (not measured
  here on a GPU); not better on the CPU ablation (docs/training.md, "Ablation"), so opt-in.

DeepLab (the last stage) was run by the authors in another code base,
YudeWang/semantic-segmentation-codebase, experiment/seamv1-pseudovoc: its `release`
recipe is that run (seam.training.trainers.deeplab); `tuned` is our stage-loop default.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from seam.training.data.augment import RELEASE_JITTER
from seam.training.trainers.schedule import AUTHORS_MOMENTUM

RECIPES = ("release", "tuned")

_SEAM_RELEASE: dict[str, Any] = {
    "batch_size": 8, "epochs": 8, "lr": 0.01, "weight_decay": 5e-4, "momentum": AUTHORS_MOMENTUM,
    "crop": 448, "resize_long": None, "jitter": RELEASE_JITTER, "amp": False, "cam_norm": "minmax",
    "siamese_scale": 0.3,
}
_AFF_RELEASE: dict[str, Any] = {
    "batch_size": 8, "epochs": 8, "lr": 0.01, "weight_decay": 5e-4, "momentum": AUTHORS_MOMENTUM,
    "crop": 448, "jitter": True, "flip": True, "amp": False,
}
_TUNED = {"momentum": 0.9, "amp": None}  # amp None: on with CUDA

# seamv1-pseudovoc (config.py): TRAIN_LR 0.001, TRAIN_MOMENTUM 0.9, TRAIN_WEIGHT_DECAY 0.0005,
# TRAIN_BN_MOM 0.0003, TRAIN_POWER 0.9, TRAIN_BATCHES 10, TRAIN_ITERATION 20000,
# DATA_RANDOMCROP 448, DATA_RANDOMSCALE [0.5, 1.5], DATA_RANDOM_H/S/V 10, DATA_RANDOMFLIP 0.5, GPUS 2
# (plain BN under DataParallel: each BN saw 5 images; bn_group 5 gives those statistics on one device)
_DEEPLAB: dict[str, dict[str, Any]] = {
    "release": {"batch_size": 10, "max_iterations": 20000, "epochs": 10_000, "lr": 1e-3, "weight_decay": 5e-4,
                "momentum": 0.9, "crop": 448, "scale_min": 0.5, "scale_max": 1.5, "jitter": False,
                "hsv": (10, 10, 10), "bn_mode": "authors", "bn_group": 5, "loss_align_corners": True,
                "poly_plus_one": True, "amp": False},
    "tuned": {"batch_size": 8, "max_iterations": None, "epochs": 20, "lr": 1e-3, "weight_decay": 5e-4,
              "momentum": 0.9, "crop": 448, "scale_min": 0.5, "scale_max": 1.5, "jitter": False, "hsv": None,
              "bn_mode": "frozen", "bn_group": None, "loss_align_corners": False, "poly_plus_one": False,
              "amp": None},
}

SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "seam": {"release": _SEAM_RELEASE, "tuned": {**_SEAM_RELEASE, **_TUNED}},
    "affinity": {"release": _AFF_RELEASE, "tuned": {**_AFF_RELEASE, **_TUNED}},
    "deeplab": _DEEPLAB,
}

# Which recipe a run gets when none is named depends on the data: the data set table says
# (`seam.training.data.datasets.DATASETS`, `default_recipe`).

# The --recipe help of the SEAM and AffinityNet trainers (their `recipe` field's metadata).
RECIPE_HELP = ("release: the published runs exactly (SGD momentum 5e-4 from the release's positional-argument "
               "slip, weight decay per group, poly 0.9, fp32, batch 8, 8 epochs, crop 448). tuned: the same "
               "with momentum 0.9 and AMP on CUDA. Default: release, on VOC because it is the paper's run, "
               "on other data because tuned measured no better there (docs/training.md, Ablation). "
               "Explicit options override it.")


def recipe_settings(stage: str, name: str) -> dict[str, Any]:
    """The config values of recipe `name` for `stage` (seam | affinity); a copy."""
    if stage not in SETTINGS:
        raise ValueError(f"no recipes for stage {stage!r}")
    if name not in SETTINGS[stage]:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(SETTINGS[stage][name])


def with_recipe(stage: str, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe values updated by the explicit settings (None values are 'not given')."""
    out = recipe_settings(stage, name)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def _listed(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values with tuples as lists (JSON's view, so that (1, 2) and [1, 2] compare equal)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def recipe_report(stage: str, name: str, config: Mapping[str, Any], effective_momentum: float) -> dict[str, Any]:
    """The sidecar's "recipe" entry: name, the recipe's values, and the config's departures."""
    base = _listed(recipe_settings(stage, name))
    got = _listed({**config, "momentum": effective_momentum})
    # an iteration-counted run derives its epochs from the data size: not a departure (an
    # explicit epoch count drops the iteration cap, and then both are)
    derived = {"epochs"} if base.get("max_iterations") and got.get("max_iterations") else set()
    overrides = {k: got[k] for k, v in base.items() if k in got and k not in derived and got[k] != v}
    return {"name": name, "settings": base, "overrides": overrides, "exact": not overrides}


class RecipeConfig:
    """The recipe side of a training config dataclass (SEAM, AffinityNet, DeepLab): built from
    a recipe, reporting its departures from it. The dataclass has `recipe`, `momentum` and
    `authors_momentum` fields; `STAGE` names its table in SETTINGS."""

    STAGE: ClassVar[str]
    # fields of the dataclass (annotations here only: `dataclass` does not collect a plain base's)
    recipe: str
    momentum: float
    authors_momentum: bool

    @classmethod
    def from_recipe(cls, recipe: str, **settings: Any) -> Self:
        """Recipe values, then `settings` (None = not given, the recipe's value stays)."""
        return cls(recipe=recipe, **with_recipe(cls.STAGE, recipe, settings))

    def to_dict(self) -> dict[str, Any]:
        return _listed(dataclasses.asdict(self))  # type: ignore[call-overload]  # the subclass is a dataclass

    @property
    def effective_momentum(self) -> float:
        """The momentum SGD runs with: the release's slip (5e-4) when `authors_momentum` forces it."""
        return AUTHORS_MOMENTUM if self.authors_momentum else self.momentum

    def recipe_report(self) -> dict[str, Any]:
        return recipe_report(self.STAGE, self.recipe, self.to_dict(), self.effective_momentum)

    def validate_recipe(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")


def describe(cfg: RecipeConfig) -> str:
    """One log line: 'recipe release (exact)' or 'recipe tuned, overridden: epochs=60, crop=160'."""
    rep = cfg.recipe_report()
    name, s = rep["name"], rep["settings"]
    length = f"{s['max_iterations']} iterations" if s.get("max_iterations") else f"{s['epochs']} epochs"
    head = (f"recipe {name}: SGD momentum {s['momentum']:g}, weight decay {s['weight_decay']:g} per group, "
            f"poly 0.9, lr {s['lr']:g}, batch {s['batch_size']}, {length}, crop {s['crop']}, "
            f"{'fp32' if s['amp'] is False else 'AMP on CUDA'}")
    if "bn_mode" in s:
        head += f", BN {s['bn_mode']}" + (f" (statistics per {s['bn_group']} images)" if s.get("bn_group") else "")
    if "cam_norm" in s:
        head += f", max_norm {s['cam_norm']}"
    if not rep["overrides"]:
        return head + " (exact)"
    return head + "; overridden: " + ", ".join(f"{k}={v}" for k, v in rep["overrides"].items())


__all__ = ["RECIPES", "RECIPE_HELP", "RELEASE_JITTER", "RecipeConfig", "describe", "recipe_report", "recipe_settings",
           "with_recipe"]
