"""`seam cam`: multi-scale CAMs as pickle-free `.npz` files (or the authors' `.npy`), optional
label PNGs and CRF."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from seam.cli._app import app
from seam.cli._util import fail, parse_floats, progress_bar
from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_CLS_THRESHOLD


@app.command("cam")
def cam(
    images: Annotated[Path, typer.Option(help="Image directory or list file (ids or VOC-style paths).")],
    out: Annotated[Path, typer.Option(help="Output directory for <id>.npz (<id>.npy with --authors-npy) and "
                                           "<id>.png.")],
    checkpoint: Annotated[Path | None, typer.Option(help="SEAM checkpoint: runs the torch engine.")] = None,
    model: Annotated[Path | None, typer.Option(help="Exported model directory models/NAME: runs the onnx "
                                                    "engine.")] = None,
    engine: Annotated[str | None, typer.Option(help="torch or onnx; default: onnx with --model, torch with "
                                                    "--checkpoint.")] = None,
    labels: Annotated[Path | None, typer.Option(help="cls_labels.npy, JSON {id: [classes]} or CSV; absent: predict "
                                                     "classes.")] = None,
    scales: Annotated[str, typer.Option(help="Comma-separated input scales.")] = "0.5,1.0,1.5,2.0",
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Skip the horizontally flipped passes.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Raw CAM instead of the PCM-refined one.")] = False,
    save_png: Annotated[bool, typer.Option("--save-png", help="Also write VOC-palette label PNGs.")] = False,
    threshold: Annotated[float, typer.Option(help="Background score for the label PNGs.")] = DEFAULT_BG_THRESHOLD,
    crf: Annotated[bool, typer.Option("--crf", help="Refine the label PNGs with dense CRF (implies "
                                                    "--save-png).")] = False,
    cls_threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Without --labels, a class is predicted present when sigmoid(GAP score) >= this. "
                               "Default: the model manifest's cam.cls_threshold (--model, as the service), "
                               f"{DEFAULT_CLS_THRESHOLD} for a checkpoint.")] = None,
    authors_npy: Annotated[bool, typer.Option(
        "--authors-npy", help="Write the release's <id>.npy instead: a pickled dict {fg class: HxW} with "
                              "infer_SEAM's exact values (negative where a map is zeroed), for parity "
                              "checks.")] = False,
    image_root: Annotated[Path | None, typer.Option(help="Where list-file entries live.")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if available).")] = None,
    max_side: Annotated[int | None, typer.Option(
        min=0, help="Images with a longer side are resized to it before the passes; maps are written at the "
                    "image's size. Default: the model's working side (top of its training range); 0: never.")] = None,
) -> None:
    """Multi-scale + flip CAMs as the authors' infer_SEAM (PCM maps, label masking, sum, clip,
    per-class min-max). Default output: <id>.npz with plain arrays `classes` (K,) and `cams`
    (K, H, W) float32 in [0, 1] (np.load(..., allow_pickle=False) reads it); --authors-npy writes
    the release's pickled <id>.npy instead."""
    from seam.common.cam import MultiScaleConfig
    from seam.common.files import list_images

    scale_tuple = parse_floats(scales)
    try:
        items = list_images(images, image_root)
    except FileNotFoundError as exc:
        fail(str(exc))
    cam_fn, foreground = _build(_engine_of(engine, checkpoint, model), checkpoint, model, device, MultiScaleConfig(
        scales=scale_tuple, flip=not no_flip, refined=not raw,
        cls_threshold=DEFAULT_CLS_THRESHOLD if cls_threshold is None else cls_threshold), cls_threshold, max_side)
    label_table = None if labels is None else _label_table(labels, foreground, [i for i, _ in items])
    png = ("crf" if crf else "plain") if crf or save_png else None
    errors = _write_all(items, out, cam_fn, label_table, foreground, authors_npy, png, threshold)
    if errors:
        for e in errors:
            typer.echo(f"skipped {e}", err=True)
        fail(f"{len(errors)} of {len(items)} images could not be read", code=1)


def _write_all(items: list, out: Path, cam_fn, label_table: dict | None, foreground: list[str], authors_npy: bool,
               png: str | None, threshold: float) -> list[str]:
    """Each image's CAM file (and label PNG: `png` "plain", or "crf"-refined); the unreadable
    images' errors."""
    from seam.common.cam import cams_to_label
    from seam.common.encoders import encode_cams_npz
    from seam.common.image import ImageDecodeError, load_rgb
    from seam.common.palette import label_to_pil

    if png == "crf":
        from seam.common.crf import crf_refine_cams
    out.mkdir(parents=True, exist_ok=True)
    errors = []
    with progress_bar() as bar:
        task = bar.add_task("CAMs", total=len(items), status="")
        for image_id, path in items:
            try:
                rgb = load_rgb(path)
            except ImageDecodeError as exc:
                errors.append(f"{path}: {exc}")
                bar.advance(task)
                continue
            res = cam_fn(rgb, None if label_table is None else label_table[image_id])
            target = out / f"{image_id}.{'npy' if authors_npy else 'npz'}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if authors_npy:
                np.save(target, res.as_dict())
            else:
                target.write_bytes(encode_cams_npz(res.classes, res.cams,
                                                   class_names=[foreground[c] for c in res.classes]))
            if png is not None:
                label = (crf_refine_cams(rgb, res.cams, res.classes, threshold) if png == "crf"
                         else cams_to_label(res.cams, res.classes, threshold))
                label_to_pil(label).save(out / f"{image_id}.png")
            bar.update(task, advance=1, status=",".join(foreground[c] for c in res.classes))
    return errors


def _engine_of(engine: str | None, checkpoint: Path | None, model: Path | None) -> str:
    """The engine the options ask for: --model is an exported (ONNX) model, --checkpoint a torch one."""
    if checkpoint is not None and model is not None:
        fail("pass either --model models/NAME (onnx engine) or --checkpoint FILE (torch engine), not both")
    if engine is None:
        if model is None and checkpoint is None:
            fail("pass --model models/NAME (onnx engine) or --checkpoint FILE (torch engine)")
        return "onnx" if model is not None else "torch"
    if engine not in ("torch", "onnx"):
        fail(f"unknown engine {engine!r}: use torch or onnx")
    if engine == "torch" and checkpoint is None:
        fail("--engine torch runs a checkpoint: pass --checkpoint FILE (or --model models/NAME for onnx)")
    if engine == "onnx" and model is None:
        fail("--engine onnx runs an exported model: pass --model models/NAME (or --checkpoint FILE for torch)")
    return engine


def _label_table(labels: Path, foreground: list[str], ids: list[str]) -> dict:
    """--labels, read against the model's classes; every image must have an entry."""
    from seam.common.files import load_label_file

    try:
        table = load_label_file(labels, foreground)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    missing = [i for i in ids if i not in table]
    if missing:
        fail(f"{len(missing)} images have no labels in {labels} (first: {missing[0]})")
    return table


def _build(engine: str, checkpoint: Path | None, model_dir: Path | None, device: str | None, cfg,
           cls_threshold: float | None, max_side: int | None):
    """Returns (cam_fn(rgb, labels) -> CamResult, foreground class names). `cls_threshold` None:
    the onnx engine takes its manifest's, the torch path `cfg`'s."""
    from seam.common.cam import multiscale_cam, working_size
    from seam.common.image import resize_rgb

    if engine == "torch":
        from seam.training.inference.cam import default_device, torch_runner
        from seam.training.models.checkpoint import CheckpointError
        from seam.training.models.registry import model_from_checkpoint, train_long_side

        try:
            net, meta = model_from_checkpoint(checkpoint, "seam")
        except CheckpointError as exc:
            fail(str(exc))
        foreground = _foreground_names(meta, net.num_classes)
        runner = torch_runner(net, default_device(device), refined=cfg.refined)
        side = train_long_side(meta.get("config") or {})[1] if max_side is None else max_side or None

        def torch_cams(rgb, labels):
            small = resize_rgb(rgb, working_size(rgb.shape[:2], side))
            return multiscale_cam(small, runner, labels, cfg).at_size(rgb.shape[:2])

        return torch_cams, foreground
    if engine == "onnx":
        from seam.service.engine.onnx_engine import OnnxEngine

        try:
            eng = OnnxEngine.from_model_dir(model_dir)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        return (lambda rgb, labels: eng.cam(rgb, labels, refined=cfg.refined, scales=cfg.scales, flip=cfg.flip,
                                            cls_threshold=cls_threshold,
                                            max_side=max(rgb.shape[:2]) if max_side == 0 else max_side)
                ), eng.foreground_classes()
    fail(f"unknown engine {engine!r}: use torch or onnx")


def _foreground_names(meta: dict, num_classes: int) -> list[str]:
    from seam.common.classes import VOC_CLASSES, VOC_FOREGROUND

    names = meta.get("class_names")
    if names:
        return list(names)[1:] if names[0] == "background" else list(names)
    if num_classes == len(VOC_CLASSES):
        return list(VOC_FOREGROUND)
    return [f"class_{i}" for i in range(num_classes - 1)]
