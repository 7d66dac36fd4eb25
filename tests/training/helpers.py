"""What the training tests share: small data sets, and MXNet `.params` files written byte by
byte (independently of seam.training.models.mxnet_params, the reader under test)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from seam.common.palette import label_to_pil


def tiny_set(root: Path, n: int = 4, size: int = 64) -> tuple[Path, Path]:
    """n images with one 16x16 square of class 1 or 2 each, and their VOC-palette labels."""
    rng = np.random.default_rng(0)
    img_dir, lab_dir = root / "images", root / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        y, x = rng.integers(8, size - 24, 2)
        label[y:y + 16, x:x + 16] = 1 + i % 2
        rgb = np.where(label[..., None] > 0, np.array([200, 40, 40], np.uint8), np.array([30, 30, 30], np.uint8))
        Image.fromarray(rgb.astype(np.uint8)).save(img_dir / f"im{i}.png")
        label_to_pil(label).save(lab_dir / f"im{i}.png")
    (lab_dir / "classes.txt").write_text("background\na\nb\n")
    return img_dir, lab_dir


def _ndarray_v2(arr: np.ndarray) -> bytes:
    flag = {np.float32: 0, np.float64: 1, np.float16: 2}[arr.dtype.type]
    out = struct.pack("<Ii", 0xF993FAC9, 0)  # V2 magic, dense storage
    out += struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
    out += struct.pack("<iii", 1, 0, flag)  # cpu(1), dev 0, dtype
    return out + arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _ndarray_legacy(arr: np.ndarray) -> bytes:
    out = struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
    return out + struct.pack("<iii", 1, 0, 0) + arr.astype("<f4").tobytes()


def write_params(path: Path, named: dict[str, np.ndarray], legacy: bool = False) -> None:
    """An MXNet NDArray-list file (V2 arrays, or the legacy format) of `named` arrays."""
    enc = _ndarray_legacy if legacy else _ndarray_v2
    buf = struct.pack("<QQQ", 0x112, 0, len(named))
    buf += b"".join(enc(a) for a in named.values())
    buf += struct.pack("<Q", len(named))
    for n in named:
        b = n.encode()
        buf += struct.pack("<Q", len(b)) + b
    path.write_bytes(buf)


def torch_to_mxnet(key: str) -> str:
    """Our inverse of the published conversion (a torch state-dict key -> an MXNet .params
    name), written separately from the reader."""
    if key == "conv1a.weight":
        return "arg:conv1a_weight"
    if key.startswith("bn7."):
        suffix = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_var"}[key[4:]]
        return f"{'aux' if 'moving' in suffix else 'arg'}:bn7_{suffix}"
    block, layer, param = key.split(".")
    stage, _, idx = block[1:].partition("_")
    letter = "a" if not idx else f"b{idx}"
    kind, branch = layer.split("_", 1)
    if kind == "conv":
        return f"arg:res{stage}{letter}_{branch}_weight"
    suffix = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}[param]
    return f"{'aux' if 'moving' in suffix else 'arg'}:bn{stage}{letter}_{branch}_{suffix}"


def voc_layout(root: Path, n: int = 12, size: int = 64, seed: int = 1) -> tuple[Path, Path, Path]:
    """A synthetic set in the PASCAL VOC layout (detected as `voc`: JPEGImages/, ImageSets/,
    SegmentationClass/, no classes.txt beside them): returns (data root, cls_labels.npy with
    20-class vectors, training list). The five synthetic classes sit at VOC's indices 0..4."""
    from seam.training.data.synth import generate

    info = generate(root, n=n, seed=seed, size=size)
    info.classes_file.unlink()
    five = np.load(info.cls_labels, allow_pickle=True).item()
    info.cls_labels.unlink()
    labels = root.parent / f"{root.name}_cls_labels.npy"
    np.save(labels, {k: np.pad(np.asarray(v, np.float32), (0, 20 - len(v))) for k, v in five.items()})
    return root, labels, info.train_list
