"""One entry point, `create_model(kind, backbone, num_classes)`, over named backbones."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from seam.common.classes import VOC_CLASSES
from seam.training.data.augment import AUTHORS_CROP, release_resize_range
from seam.training.models.checkpoint import infer_backbone_config, load_weights, read_checkpoint
from seam.training.models.resnet38 import ResNet38Config

DEFAULT_NUM_CLASSES = len(VOC_CLASSES)  # background + VOC's 20: the published models' head

BACKBONES: dict[str, ResNet38Config] = {
    "resnet38": ResNet38Config(),
    # same module names and heads, 1/8 of the channels and fewer blocks: ~1M params, ~4 MB
    "resnet38_small": ResNet38Config(width=0.125, depths=(1, 1, 2, 1)),
}

# onnxruntime CPU working set of one forward pass per input pixel and batch item, measured
# as peak RSS growth of a fresh process (ResNet-38: ~1.1 kB at 448x448 and 896x896, batch 1
# and 2; the small backbone: ~0.22 kB) with a 1.4x margin; the engine's memory admission
# reads it from the manifest
WORKING_SET_BYTES_PER_PIXEL: dict[str, float] = {"resnet38": 1536.0, "resnet38_small": 320.0}


def working_set_bytes_per_pixel(backbone: str) -> float:
    """Measured value for a known backbone, else ResNet-38's (the widest we ship)."""
    return WORKING_SET_BYTES_PER_PIXEL.get(backbone, WORKING_SET_BYTES_PER_PIXEL["resnet38"])


def train_long_side(config: Any) -> tuple[int, int]:
    """The long-side range a checkpoint was trained at: its `resize_long`, else the release's
    448-768 scaled by crop / 448 (an authors' checkpoint has no config: 448-768)."""
    config = config if isinstance(config, dict) else {}
    rl = config.get("resize_long")
    if isinstance(rl, (list, tuple)) and len(rl) == 2:
        return int(rl[0]), int(rl[1])
    return release_resize_range(int(config.get("crop") or AUTHORS_CROP))


def backbone_config(name: str) -> ResNet38Config:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}") from None


def backbone_name(cfg: ResNet38Config) -> str:
    for name, c in BACKBONES.items():
        if c == cfg:
            return name
    return f"resnet38_w{cfg.width:g}_d{'-'.join(map(str, cfg.depths))}"


def _constructors() -> dict[str, Any]:
    # imported lazily so that adding a head never slows `import training`
    from seam.training.models.seam import SEAM

    ctors: dict[str, Any] = {"seam": SEAM}
    try:
        from seam.training.models.affinity import AffinityNet

        ctors["affinity"] = AffinityNet
    except ImportError:
        pass
    try:
        from seam.training.models.deeplab import DeepLabLargeFOV

        ctors["deeplab"] = DeepLabLargeFOV
    except ImportError:
        pass
    return ctors


def create_model(kind: str, backbone: str | ResNet38Config = "resnet38",
                 num_classes: int = DEFAULT_NUM_CLASSES) -> nn.Module:
    """kind: seam | affinity | deeplab. num_classes includes background."""
    cfg = backbone_config(backbone) if isinstance(backbone, str) else backbone
    ctors = _constructors()
    if kind not in ctors:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(ctors)}")
    if kind == "affinity":
        return ctors[kind](backbone=cfg)
    return ctors[kind](num_classes=num_classes, backbone=cfg)


def model_from_checkpoint(path: str | Path, kind: str = "seam") -> tuple[nn.Module, dict[str, Any]]:
    """Build the network a checkpoint describes (backbone and class count read from its
    weights) and load it strictly. Returns (model in eval mode, metadata)."""
    sd, meta = read_checkpoint(path)
    if kind == "deeplab":  # the authors' released deeplabv1 (seamv1-pseudovoc): their key names -> ours
        from seam.training.models.deeplab import from_authors_state_dict

        sd = from_authors_state_dict(sd)
    cfg = infer_backbone_config(sd)
    num_classes = DEFAULT_NUM_CLASSES  # AffinityNet has no classifier to read it from
    for key in ("fc8.weight", "classifier.weight"):
        if key in sd:
            num_classes = sd[key].shape[0]
    model = create_model(kind, cfg, num_classes)
    load_weights(model, sd, strict=True)
    model.eval()
    meta.setdefault("backbone", backbone_name(cfg))
    meta.setdefault("num_classes", num_classes)
    return model, meta
