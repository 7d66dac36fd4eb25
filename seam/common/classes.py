"""Class-name tables. Index 0 is always background in label maps; CAM dicts use
foreground indices (0-based, background excluded), as the authors' files do."""
from __future__ import annotations

from collections.abc import Sequence

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
VOC_FOREGROUND: tuple[str, ...] = VOC_CLASSES[1:]
IGNORE_INDEX = 255


def resolve_labels(tokens: Sequence[str | int], foreground: Sequence[str]) -> list[int]:
    """Turn class names or foreground indices into sorted unique foreground indices.

    Raises ValueError naming the offending token so that CLIs and the API can say
    exactly what was wrong.
    """
    lookup = {name.lower(): i for i, name in enumerate(foreground)}
    out: set[int] = set()
    for tok in tokens:
        if isinstance(tok, int) or (isinstance(tok, str) and tok.strip().lstrip("-").isdigit()):
            idx = int(tok)
            if not 0 <= idx < len(foreground):
                raise ValueError(f"class index {idx} out of range 0..{len(foreground) - 1}")
            out.add(idx)
            continue
        name = str(tok).strip().lower()
        if not name:
            continue
        if name not in lookup:
            raise ValueError(f"unknown class {tok!r}; known: {', '.join(foreground)}")
        out.add(lookup[name])
    return sorted(out)
