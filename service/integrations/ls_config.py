"""Reading a Label Studio labelling config (the project's XML) for what a backend needs:
which control tag to fill (BrushLabels / PolygonLabels), the Image it points at, the
task-data key of that image, and the mapping of label names (`value`, `alias`,
`predicted_values`) onto the model's classes."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_CONFIG_CHARS = 1_000_000


class LabelConfigError(ValueError):
    """The labelling config cannot be used by this backend (the message says why)."""


@dataclass
class Control:
    kind: str  # brushlabels | polygonlabels | choices
    name: str
    to_name: str
    labels: list[dict[str, str]] = field(default_factory=list)  # value, alias, predicted_values

    def class_map(self, classes: Sequence[str]) -> dict[int, str]:
        """Model class index -> label value of this control. A label takes the classes named
        in its `predicted_values` (comma separated), else the class named like its value or alias."""
        by_name = {c.casefold(): i for i, c in enumerate(classes)}
        out: dict[int, str] = {}
        for lab in self.labels:
            names = [t.strip() for t in lab.get("predicted_values", "").split(",") if t.strip()]
            if not names:
                names = [lab["value"], lab.get("alias", "")]
            for n in names:
                i = by_name.get(n.casefold())
                if i is not None and i not in out:
                    out[i] = lab["value"]
        return out

    def to_classes(self, tokens: Sequence[str], classes: Sequence[str]) -> list[int] | None:
        """Label Studio label values (or model class names) -> model class indices; None when
        one is unknown."""
        inverse: dict[str, list[int]] = {}
        for i, v in self.class_map(classes).items():
            inverse.setdefault(v.casefold(), []).append(i)
        for lab in self.labels:
            if lab.get("alias"):
                inverse.setdefault(lab["alias"].casefold(), inverse.get(lab["value"].casefold(), []))
        by_name = {c.casefold(): i for i, c in enumerate(classes)}
        out: set[int] = set()
        for t in tokens:
            k = t.strip().casefold()
            if k in inverse:
                out.update(inverse[k])
            elif k in by_name:
                out.add(by_name[k])
            else:
                return None
        return sorted(out)


@dataclass
class LabelConfig:
    controls: list[Control]
    images: dict[str, str]  # Image tag name -> task data key ("$image" -> "image")

    def pick(self, region: str) -> Control:
        """The control to fill: `brush`, `polygon` or `auto` (brush when the config has one)."""
        brush = [c for c in self.controls if c.kind == "brushlabels" and c.to_name in self.images]
        poly = [c for c in self.controls if c.kind == "polygonlabels" and c.to_name in self.images]
        if region == "brush" and brush:
            return brush[0]
        if region == "polygon" and poly:
            return poly[0]
        if region == "auto" and (brush or poly):
            return (brush or poly)[0]
        want = {"brush": "<BrushLabels>", "polygon": "<PolygonLabels>"}.get(region, "<BrushLabels> or <PolygonLabels>")
        raise LabelConfigError(f"the labelling config has no {want} tag pointing at an <Image>; "
                               "seam-wsss predicts masks (brush) or polygons")

    def choices(self) -> list[Control]:
        return [c for c in self.controls if c.kind == "choices"]


def parse_label_config(xml: str) -> LabelConfig:
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the request has no label_config")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError(f"label_config is longer than {MAX_CONFIG_CHARS} characters")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        raise LabelConfigError("label_config may not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label_config is not valid XML: {exc}") from None
    controls: list[Control] = []
    images: dict[str, str] = {}
    for el in root.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag == "image" and el.get("name") and el.get("value", "").startswith("$"):
            images[el.get("name", "")] = el.get("value", "")[1:]
        elif tag in ("brushlabels", "polygonlabels", "choices") and el.get("name"):
            child = "choice" if tag == "choices" else "label"
            labels = [{"value": c.get("value", ""), "alias": c.get("alias", ""),
                       "predicted_values": c.get("predicted_values", "")}
                      for c in el.iter() if isinstance(c.tag, str) and c.tag.lower() == child and c.get("value")]
            controls.append(Control(tag, el.get("name", ""), el.get("toName", el.get("toname", "")), labels))
    return LabelConfig(controls, images)
