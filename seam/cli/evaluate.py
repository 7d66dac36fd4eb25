"""`seam eval`: mIoU, per-class IoU, m_FN and m_FP of label PNGs or CAM files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli._app import app
from seam.cli._util import fail
from seam.common.classes import VOC_CLASSES


@app.command("eval")
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Directory of predictions: <id>.png label maps or <id>.npy/.npz "
                                                      "CAMs.")],
    gt: Annotated[Path, typer.Option("--gt", help="Directory of ground-truth label PNGs (e.g. VOC "
                                                  "SegmentationClass).")],
    ids_file: Annotated[Path | None, typer.Option(
        "--list", help="File of image ids, one per line (VOC ImageSets style); default: every GT image with a "
                       "prediction.")] = None,
    kind: Annotated[str | None, typer.Option("--type", help="png or npy; default: detected from the files in "
                                                            "--pred.")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Background score for CAM files (default "
                                                                        "0.26).")] = None,
    curve: Annotated[bool, typer.Option("--curve", help="Sweep the background threshold 0.00..0.59 and report the "
                                                        "best.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full result as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="With --curve: save the mIoU/mFN/mFP curve as a PNG "
                                                             "(needs matplotlib).")] = None,
    classes: Annotated[Path | None, typer.Option(
        "--classes", help=f"Class names, one per line, background first; default: the {len(VOC_CLASSES)} VOC "
                          "classes.")] = None,
) -> None:
    """Score predictions against ground truth the way the authors' evaluation.py does
    (GT 255 ignored, IoU over all classes incl. background) plus the paper's m_FN / m_FP."""
    from rich.console import Console

    from seam.training.evaluation.evaluate import evaluate as run_evaluation
    from seam.training.evaluation.evaluate import plot_curve

    if plot is not None and not curve:
        fail("--plot draws the threshold curve; add --curve")
    class_names = VOC_CLASSES if classes is None else _class_names(classes)
    ids = None if ids_file is None else _ids(ids_file)
    if kind is not None:
        kind = kind.strip().lower()
        if kind not in ("png", "npy", "npz"):
            fail(f"--type must be png or npy, got {kind!r}")
    try:
        result = run_evaluation(pred, gt, ids=ids, kind=kind, threshold=threshold, curve=curve,
                                class_names=class_names, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    out = Console()
    out.print(_table(result, class_names))
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2))
        except OSError as exc:
            fail(f"cannot write {json_out}: {exc}")
        out.print(f"wrote {json_out}")
    if plot is not None:
        try:
            plot_curve(result, plot)
        except (RuntimeError, ValueError, OSError) as exc:
            fail(str(exc))
        out.print(f"wrote {plot}")


def _class_names(path: Path) -> tuple[str, ...]:
    names = tuple(_read_lines(path, "class file"))
    if len(names) < 2:
        fail(f"{path}: need at least two class names (background first)")
    if len(set(names)) != len(names):
        fail(f"{path}: class names must be unique")
    return names


def _ids(path: Path) -> list[str]:
    # VOC lists may hold "2007_000032" or "/JPEGImages/2007_000032.jpg /Seg.../x.png"
    ids = [_id_of(line.split()[0]) for line in _read_lines(path, "id list")]
    if not ids:
        fail(f"{path}: the id list is empty")
    return ids


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _id_of(token: str) -> str:
    name = Path(token).name
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext.lower() in ("jpg", "jpeg", "png", "npy", "npz") else name


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if pct else f"{v:.3f}"


def _table(result: dict[str, Any], class_names: tuple[str, ...]) -> Any:
    from rich.table import Table

    title = f"{result['num_images']} images ({result['kind']})"
    table = Table(title=title, show_footer=False)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name in class_names:
        table.add_row(name, _fmt(result["per_class"][name]))
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{_fmt(result['miou'])}")
    table.add_row("pixel accuracy", _fmt(result["pixel_acc"]))
    table.add_row("mFN", _fmt(result["mfn"], pct=False))
    table.add_row("mFP", _fmt(result["mfp"], pct=False))
    if "best_threshold" in result:
        table.add_row("best threshold", f"{result['best_threshold']:.2f}")
    elif result.get("threshold") is not None:
        table.add_row("threshold", f"{result['threshold']:.2f}")
    return table
