"""CVAT's "Segmentation mask 1.1" export -> corrections of one CVAT task.

The zip CVAT writes (Export task dataset -> Segmentation mask 1.1; datumaro's VOC segmentation
writer), read without extracting anything to disk:

    labelmap.txt                       `# label:color_rgb:parts:actions`, then `name:r,g,b::` per label
    ImageSets/Segmentation/default.txt the frame names (optional: else the masks' names)
    SegmentationClass/<frame>.png      the class masks, coloured by labelmap.txt (RGB or paletted)
    SegmentationObject/<frame>.png     instances (ignored)
    JPEGImages/<frame>.<ext>           the frames, when exported with "Save images"

Frames without their image in the zip must have been sent before (an image we never saw is a
422). Every member is named and sized before use: paths that escape, links, too many members,
more bytes than allowed (counted while decompressing) refuse the whole zip; a mask colour that
labelmap.txt does not declare, a label the model does not have, a mask of the wrong size: 422
naming the frame, and nothing is written.
"""
from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image
from seam.service.archives import safe_member_path
from seam.service.corrections.store import Correction, CorrectionError

from seam.common.classes import IGNORE_INDEX
from seam.common.files import IMAGE_EXTENSIONS

SOURCE = "cvat"
MAX_MEMBERS = 20_000
IGNORE_COLOUR = (224, 224, 192)  # VOC's 255 band: not a label, kept as "ignore"
IMAGE_DIRS = ("JPEGImages", "images", "Images")


@dataclass
class _Zip:
    names: dict[str, zipfile.ZipInfo]
    zf: zipfile.ZipFile
    budget: int

    def read(self, rel: str) -> bytes:
        """A member's bytes, counted against the byte budget while decompressing (a lying header
        cannot inflate past it)."""
        info = self.names[rel]
        out = bytearray()
        with self.zf.open(info) as f:
            while chunk := f.read(1 << 20):
                out += chunk
                self.budget -= len(chunk)
                if self.budget < 0:
                    raise CorrectionError("the zip expands to more bytes than allowed")
        return bytes(out)


def _open(data: bytes, max_bytes: int) -> _Zip:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise CorrectionError(f"not a zip file: {exc}") from None
    if len(infos) > MAX_MEMBERS:
        raise CorrectionError(f"the zip has {len(infos)} members; at most {MAX_MEMBERS}")
    if sum(i.file_size for i in infos) > max_bytes:
        raise CorrectionError(f"the zip declares more than {max_bytes} uncompressed bytes")
    names: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        try:
            rel = safe_member_path(info.filename)
        except Exception as exc:  # ApiError: the archive rules' message
            raise CorrectionError(getattr(exc, "message", str(exc))) from None
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CorrectionError(f"zip member {info.filename!r} is a link")
        if info.is_dir():
            continue
        if rel in names:
            raise CorrectionError(f"zip member {rel!r} appears twice")
        names[rel] = info
    return _Zip(names, zf, max_bytes)


def parse_labelmap(text: str) -> dict[tuple[int, int, int], str]:
    """labelmap.txt -> {colour: label name}."""
    out: dict[tuple[int, int, int], str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        rgb = rest.split(":")[0].split(",")
        try:
            colour = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
        except (ValueError, IndexError):
            raise CorrectionError(f"labelmap.txt line {n}: {line[:80]!r} is not `name:r,g,b::`") from None
        if colour in out:
            raise CorrectionError(f"labelmap.txt: colour {colour} is used by {out[colour]!r} and {name!r}")
        out[colour] = name.strip()
    if not out:
        raise CorrectionError("labelmap.txt declares no label")
    return out


def _mask(png: bytes, frame: str, colours: dict[tuple[int, int, int], str], classes: Sequence[str]) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(png)) as img:
            rgb = np.array(img.convert("RGB"))
    except Exception as exc:  # Pillow raises many types for broken files
        raise CorrectionError(f"{frame}: the mask is not a readable PNG: {exc}") from None
    by_name = {c.casefold(): i for i, c in enumerate(classes)}
    code = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    out = np.zeros(code.shape, np.uint8)
    for value in np.unique(code):
        colour = (int(value) >> 16, (int(value) >> 8) & 255, int(value) & 255)
        if colour == IGNORE_COLOUR and colour not in colours:
            out[code == value] = IGNORE_INDEX
            continue
        if colour not in colours:
            raise CorrectionError(f"{frame}: mask colour {colour} is not declared in labelmap.txt")
        name = colours[colour]
        if name.casefold() == "background":
            continue
        if name.casefold() not in by_name:
            raise CorrectionError(f"{frame}: label {name!r} is not a class of the model ({', '.join(classes)})")
        out[code == value] = by_name[name.casefold()] + 1
    return out


def read_segmentation_mask_zip(data: bytes, classes: Sequence[str], max_bytes: int) -> list[Correction]:
    """The corrections a "Segmentation mask 1.1" zip holds (validated; nothing stored)."""
    z = _open(data, max_bytes)
    lm = next((n for n in z.names if PurePosixPath(n).name == "labelmap.txt"), None)
    if lm is None:
        raise CorrectionError("no labelmap.txt: export the task as \"Segmentation mask 1.1\"")
    root = str(PurePosixPath(lm).parent)
    prefix = "" if root == "." else root + "/"
    colours = parse_labelmap(z.read(lm).decode("utf-8", "replace"))
    masks = {n[len(prefix) + len("SegmentationClass/"):-4]: n for n in z.names
             if n.startswith(prefix + "SegmentationClass/") and n.lower().endswith(".png")}
    if not masks:
        raise CorrectionError("no SegmentationClass/*.png masks in the zip")
    listed = _listed_frames(z, prefix)
    unlisted = sorted(set(listed) - set(masks))
    if unlisted:
        raise CorrectionError(f"frames listed in ImageSets have no mask: {unlisted[:5]}")
    images = {}
    for n in z.names:
        for d in IMAGE_DIRS:
            head = prefix + d + "/"
            if n.startswith(head) and PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS:
                images[str(PurePosixPath(n[len(head):]).with_suffix(""))] = n
    out = []
    for frame in sorted(masks):
        mask = _mask(z.read(masks[frame]), frame, colours, classes)
        present = [classes[int(v) - 1] for v in np.unique(mask) if 1 <= v <= len(classes)]
        image = z.read(images[frame]) if frame in images else None
        out.append(Correction(frame, mask, present, image, {"frame": frame}))
    return out


def _listed_frames(z: _Zip, prefix: str) -> list[str]:
    out: list[str] = []
    for n in z.names:
        if n.startswith(prefix + "ImageSets/Segmentation/") and n.endswith(".txt"):
            out += [line.strip().split(" ")[0] for line in z.read(n).decode("utf-8", "replace").splitlines()
                    if line.strip()]
    return out
