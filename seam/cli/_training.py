"""What the `seam train` commands share beyond their options: the recipe default, the
validated config, the run with a progress bar, the closing line."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from seam.cli._util import console, fail, progress_bar

C = TypeVar("C")
ProgressFactory = Callable[[Any, str], Callable[[Any], None]]


def main_rank() -> bool:
    """Rank 0 of a torchrun launch, or a single process."""
    return os.environ.get("RANK", "0") == "0"


def dataset_recipe(given: dict[str, Any], stage: str) -> str:
    """--recipe (taken out of `given`), else the default for the data set kind (given, or
    detected from the layout)."""
    from seam.training.data.datasets import default_recipe, detect_dataset_kind

    recipe = given.pop("recipe")
    if recipe is not None:
        return recipe
    dataset = given["dataset"]
    return default_recipe(dataset if dataset != "auto" else detect_dataset_kind(Path(given["data"])), stage)


def build_config(make: Callable[[], C]) -> C:
    """make(), validated. A ValueError (a bad recipe name or value) is a one-line CLI error;
    make() rather than a config lets the caller parse options inside the same guard."""
    try:
        cfg = make()
        cfg.validate()  # type: ignore[attr-defined]
    except ValueError as exc:
        fail(str(exc))
    return cfg


def recipe_config(config: Callable[..., C], given: dict[str, Any], recipe: str) -> C:
    """`config.from_recipe(recipe, **given)`, validated: the options given override the recipe."""
    return build_config(lambda: config.from_recipe(recipe, **given))  # type: ignore[attr-defined]


def train_progress(bar: Any, name: str) -> Callable[[Any], None]:
    """An on_progress callback drawing the trainers' `Progress` on a rich bar."""
    task: list[int] = []

    def on_progress(p: Any) -> None:
        if not task:
            task.append(bar.add_task(name, total=p.max_iter, status=""))
        status = (f"ep {p.epoch + 1}/{p.epochs} " + " ".join(f"{k} {v:.3f}" for k, v in p.losses.items())
                  + f" | {p.images_per_s:.1f} img/s lr {p.lr:.2e}")
        bar.update(task[0], completed=p.iteration, status=status)

    return on_progress


def run_with_progress(run: Callable[..., Any], cfg: Any, name: str, progress: ProgressFactory = train_progress) -> Any:
    """run(cfg): rank 0 with a progress bar and the log on the console, other ranks quietly."""
    if not main_rank():
        return run(cfg)
    with progress_bar() as bar:
        return run(cfg, on_progress=progress(bar, name), log=lambda m: console.print(m, highlight=False))


def train_stage(run: Callable[..., Any], cfg: Any, name: str, errors: tuple[type[Exception], ...],
                progress: ProgressFactory = train_progress) -> Any:
    """run_with_progress; the trainer's expected failures (`errors`) are one-line CLI errors."""
    try:
        return run_with_progress(run, cfg, name, progress)
    except errors as exc:
        fail(str(exc))


def print_weights(out: str | Path, final: str) -> None:
    """The closing line, once per launch (rank 0 under torchrun)."""
    if not main_rank():
        return
    out = Path(out)
    console.print(f"weights: {out / final}  sidecar: {(out / final).with_suffix('.json')}")
