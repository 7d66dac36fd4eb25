"""Options shared by the `seam train` commands (seam, affinity, deeplab) and `seam pipeline`,
as typer `Annotated` types: a command declares `device: Device = None` and typer reads the
option from the alias. Options of one command only sit at the top of its module."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Data = Annotated[Path, typer.Option("--data", help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")]
Dataset = Annotated[str, typer.Option(help="voc | folder | synth | auto (detected from the layout).")]
Backbone = Annotated[str, typer.Option(help="resnet38 (the paper) or resnet38_small (CPU).")]
AuthorsMomentum = Annotated[bool, typer.Option("--authors-momentum", help="Momentum 5e-4: what the release's optimiser "
                                                                          "actually used.")]
RECIPE_HELP = ("release: the published runs exactly (SGD momentum 5e-4 from the release's positional-argument "
               "slip, weight decay per group, poly 0.9, fp32, batch 8, 8 epochs, crop 448). tuned: the same "
               "with momentum 0.9 and AMP on CUDA. Default: release, on VOC because it is the paper's run, "
               "on other data because tuned measured no better there (docs/training.md, Ablation). "
               "Explicit options override it.")
Recipe = Annotated[str | None, typer.Option(help=RECIPE_HELP)]
# recipe-governed options: None = "the recipe's value"
REpochs = Annotated[int | None, typer.Option(help="Epochs (recipe: 8).")]
RBatch = Annotated[int | None, typer.Option(help="Global batch size (per GPU = batch / world size) (recipe: 8).")]
RLr = Annotated[float | None, typer.Option(help="Base learning rate, new layers 10x (recipe: 0.01).")]
RWeightDecay = Annotated[float | None, typer.Option(help="Weight decay on weights, not biases (recipe: 5e-4).")]
RMomentum = Annotated[float | None, typer.Option(help="SGD momentum (recipe: release 5e-4, tuned 0.9).")]
RCrop = Annotated[int | None, typer.Option(help="Square training crop (recipe: 448).")]
RAmp = Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision (recipe: release off, tuned on with "
                                                                  "CUDA).")]
NoJitter = Annotated[bool, typer.Option("--no-jitter", help="No colour jitter.")]
Out = Annotated[Path, typer.Option(help="Run directory.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoint.pth exactly.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Device = Annotated[str | None, typer.Option(help="torch device (default: cuda if available).")]
Workers = Annotated[int | None, typer.Option(help="Data loader workers (default 0 on CPU, up to 8 on CUDA).")]
MaxMinutes = Annotated[float | None, typer.Option(help="Stop after this many minutes (checkpoint + weights saved).")]
Deterministic = Annotated[bool, typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms "
                                                                                        "where torch has them.")]
LogEvery = Annotated[int, typer.Option(help="Iterations per log.csv row.")]
StopAfter = Annotated[int | None, typer.Option(hidden=True, help="Stop after N iterations (preemption drill).")]
