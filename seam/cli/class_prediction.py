"""`seam class-prediction`: how a SEAM model does without image labels, as the web page uses
it: precision / recall of the predicted classes and the mIoU of the masks built from them,
at the default and at a tuned class threshold."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli._app import app, config_command
from seam.cli._util import fail


def _config() -> type:
    from seam.training.evaluation.class_prediction import ClassPredictionConfig

    return ClassPredictionConfig


@config_command(app, "class-prediction", _config)
def class_prediction(given: dict[str, Any], out: Annotated[Path | None, typer.Option(
        help="Also write the report (the whole threshold grid) as JSON here.")] = None) -> None:
    """Score the classes a SEAM model predicts without labels (sigmoid of the GAP score >= the
    class threshold, averaged over the multi-scale passes) and the masks argmax([bg threshold,
    CAMs of the predicted classes]) against a VOC-layout set's ground truth. --tune-data picks the
    class threshold on another set first."""
    from seam.training.evaluation.class_prediction import ClassPredictionConfig, class_prediction_report
    from seam.training.models.checkpoint import CheckpointError

    try:
        report = class_prediction_report(ClassPredictionConfig(**given))
    except (CheckpointError, OSError, ValueError) as exc:
        fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    for k in ("default", "chosen"):
        r = report[k]
        typer.echo(f"{k:8s} cls_threshold {r['cls_threshold']:.2f}: precision {r['precision']:.3f} "
                      f"recall {r['recall']:.3f} no-class images {r['no_class_found']}/{r['images']} "
                      f"mask mIoU {r['miou']:.2f}% (bg {r['bg_threshold']})")
