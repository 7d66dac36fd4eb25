"""`seam export`: a checkpoint -> `models/NAME/model.onnx` + `manifest.json`, verified."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import console, fail


def _scratch(models_dir: Path) -> tempfile.TemporaryDirectory:
    """A hidden folder inside the repository (same file system; ignored by readers) to export into
    before the export is published as a version."""
    models_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".export-", dir=models_dir)


@app.command("export")
def export(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint: ours (+ <ckpt>.json sidecar) or the authors' state "
                                                  "dict.")],
    kind: Annotated[str, typer.Option(help="seam, affinity or deeplab.")] = "seam",
    name: Annotated[str | None, typer.Option(help="Model name: the directory models/NAME (default: checkpoint "
                                                  "stem).")] = None,
    models_dir: Annotated[Path, typer.Option(help="Model repository.")] = Path("models"),
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 18 for the dynamo exporter).")] = 18,
    atol: Annotated[float, typer.Option(help="Largest |onnxruntime - torch| accepted by the parity check.")] = 1e-4,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing models/NAME.")] = False,
    working_side: Annotated[int | None, typer.Option(
        min=8, help="Long side larger inputs are resized to before inference (default: the top of the "
                    "training range: 768 for the release's 448-768).")] = None,
    cls_threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Class-prediction threshold written to the manifest (default: the sidecar's "
                               "class_prediction.cls_threshold, chosen on held-out images; else 0.5).")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", "--quantize",
        help="fp32, int8 (CPU workers: static QDQ quantization, needs --calibration) or fp16 (CUDA "
             "workers).")] = "fp32",
    calibration: Annotated[Path | None, typer.Option(
        help="int8: list file or image directory to calibrate on (e.g. the training list).")] = None,
    calibration_n: Annotated[int, typer.Option(
        min=1, help="int8: images drawn (seeded) from --calibration; more = closer to fp32, longer "
                    "export.")] = 48,
    version_of: Annotated[str | None, typer.Option(
        help="Publish the export as the next version of this model (models/NAME/<n>/, docs/models.md) instead "
             "of writing models/NAME.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="With --version-of: promote the new version (the "
                                                           "first version of a name always is).")] = False,
) -> None:
    """Export to ONNX with dynamic batch/height/width, check onnxruntime against torch on
    odd sizes, and write the model directory atomically (nothing is written on failure)."""
    import logging

    from seam.modelrepo.versions import publish_version
    from seam.training.export import ExportError, export_model

    logging.basicConfig(level=logging.WARNING)
    if opset < 18:
        fail("--opset must be >= 18 (torch's dynamo exporter)")
    name = version_of or name or checkpoint.stem
    if promote and not version_of:
        fail("--promote needs --version-of NAME")
    scratch = _scratch(models_dir) if version_of else None
    published: Path | None = None
    with console.status(f"exporting {checkpoint} ({kind}) ..."):
        try:
            res = export_model(checkpoint, kind, name, Path(scratch.name) if scratch else models_dir, opset=opset,
                               force=force, atol=atol, working_side=working_side, cls_threshold=cls_threshold,
                               precision=precision, calibration=calibration, calibration_n=calibration_n)
            if scratch is not None:
                n = publish_version(models_dir, name, res.model_dir, promote=promote)
                published = models_dir / name / str(n)  # the scratch copy is deleted below
                console.print(f"[green]published[/] {name}:{n}")
        except (ExportError, ValueError) as exc:
            fail(str(exc), code=1)
        finally:
            if scratch is not None:
                scratch.cleanup()
    m = res.manifest
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in res.max_abs_diff.items())
    console.print(f"[green]wrote[/] {published or res.model_dir}  ({m.kind}, {m.backbone}, "
                  f"{len(m.class_names) or '-'} classes, {res.onnx_bytes / 1e6:.1f} MB; "
                  f"onnxruntime vs torch max |diff|: {diffs})")
    p = m.precision
    if p.weights != "fp32":
        errs = ", ".join(f"{k} {v:.2g}" for k, v in p.max_error.items())
        how = f"calibration {p.calibration.method} on {p.calibration.images} images; " if p.calibration else ""
        console.print(f"  {p.weights} for {p.provider}: {how}max |{p.weights} - fp32| / max |fp32|: {errs}"
                      + (f"; {p.speedup:.2f}x fp32's speed here" if p.speedup else ""))
        if p.speedup is not None and p.speedup < 1.0:
            console.print(f"[yellow]warning:[/] {p.weights} is slower than fp32 on this machine: serve the fp32 "
                          "export here (re-export without --quantize)")
