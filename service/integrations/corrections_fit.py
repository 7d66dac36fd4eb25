"""A fit: a training job made from a project's corrections.

The project's images go to `<data_dir>/corrections/<project>/fits/<fit id>/data/` as an
"images + labels.csv" data set whose per-image pseudo labels (`pseudo/`) are the corrected masks
where an annotator corrected the image and the served model's masks elsewhere; the corrected
masks are also its ground truth (`SegmentationClass/`), so the held-out split the trainer scores
is made of corrected images. It is submitted as a training (seam.service.trainings, stage
`deeplab` by default) that publishes a new version of the model; promoted, that version is what
Label Studio's predictions (`model_version`) come from.

`SEAM_CORRECTIONS_FIT_EVERY` = N starts a fit by itself once N corrections changed since the last.
"""
from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from seam.service.core.engine_holder import resolve_method
from seam.service.core.errors import ApiError
from seam.service.core.registry import ServedModel, served_by
from seam.service.core.security import Principal
from seam.service.corrections.fit_data import write_fit_data
from seam.service.corrections.store import CorrectionError, CorrectionStore, ProjectStore
from seam.service.engine.base import InferenceEngine
from seam.service.integrations.ls_settings import app_ls_settings
from seam.service.integrations.upload import segment_upload
from seam.service.trainings.submit import submit_spec

from seam.modelrepo.trainings import TrainingSpec

log = logging.getLogger("seam.service")


class CorrectionsSettings(BaseSettings):
    """`SEAM_CORRECTIONS_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SEAM_CORRECTIONS_", extra="ignore")

    fit_every: int = Field(0, ge=0, description="Start a fit after this many new corrections (0: only on request "
                                                "or Label Studio's Start Training).")
    fit_budget_s: float = Field(600.0, gt=0, description="Default training budget of a fit (seconds).")
    fit_epochs: int | None = Field(None, ge=1, description="Default epochs of a fit (None: the recipe's).")
    fit_backbone: str = Field("resnet38_small", description="Backbone of a fit's DeepLab.")
    fit_crop: int | None = Field(None, ge=32, description="Training crop of a fit.")
    webhook_wait_s: float = Field(15.0, ge=0, description=(
        "After /labelstudio/setup, how long to look for the project's ML-backend webhook (Label Studio creates it "
        "after the set-up answered) to put the backend's auth on it."))
    max_zip_bytes: int = Field(2 << 30, ge=1, description="Most uncompressed bytes of a CVAT export zip.")


class FitRequest(BaseModel):
    """What a fit trains (every field optional)."""

    model_config = ConfigDict(extra="forbid")
    stages: Literal["deeplab", "pipeline"] = Field("deeplab", description=(
        "deeplab: DeepLab on the pseudo labels with the corrections in place (fast); pipeline: SEAM and "
        "AffinityNet too, on the corrected image-level labels."))
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description=(
        "Model name to publish the version as (default: the served model's)."))
    base_model: str | None = Field(None, description=(
        "NAME[:VERSION] to fine-tune from; default for deeplab: the model's promoted version (a version published "
        "by a training: ONNX-only models such as the bundled demo keep no checkpoint)."))
    budget_s: float | None = Field(None, gt=0, le=7 * 86400)
    epochs: int | None = Field(None, ge=1, le=1000)
    batch_size: int | None = Field(None, ge=1, le=256, description="Batch (the recipe's 8 needs 8 images).")
    promote: bool = Field(True, description="Promote the version when its held-out evaluation is not worse.")
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Corrected images kept out and scored.")
    min_corrected: int = Field(1, ge=0, description="Refuse (409) with fewer corrected images; 0 retrains on the "
                                                     "pseudo labels alone (the loop's baseline).")
    include_uncorrected: bool = Field(True, description="Train on the model's masks of uncorrected images too.")


def engine_labeller(engine: InferenceEngine, max_pixels: int) -> Callable[[bytes, Sequence[int] | None], np.ndarray]:
    """The served model's mask of an image: the pseudo label of an image nobody corrected."""
    method = resolve_method(engine, None, "method", where="sync")

    def label(data: bytes, labels: Sequence[int] | None) -> np.ndarray:
        return segment_upload(engine, data, max_pixels, labels, method).label

    return label


def served_for(app: Any, source: str) -> ServedModel:
    """The model a project's images are predicted with: Label Studio's (`SEAM_LABELSTUDIO_MODEL`,
    else the default), CVAT's the default. Its classes are the project's; a fit fine-tunes it."""
    return served_by(app.state.holder, app_ls_settings(app).model if source == "labelstudio" else None)


def training_spec(store: ProjectStore, req: FitRequest, data_root: str, pseudo: str, classes: list[str],
                  name: str, cs: CorrectionsSettings) -> dict[str, Any]:
    """The TrainingSpec (seam.modelrepo.trainings) of a fit, as a dict."""
    recipe: dict[str, Any] = {"backbone": cs.fit_backbone}
    if req.epochs or cs.fit_epochs:
        recipe["epochs"] = req.epochs or cs.fit_epochs
    if cs.fit_crop:
        recipe["crop"] = cs.fit_crop
    if req.batch_size:
        recipe["batch_size"] = req.batch_size
    return {"name": name, "data": {"root": data_root, "source": "dir"}, "classes": classes, "stages": req.stages,
            "recipe": recipe, "base_model": req.base_model, "pseudo_labels_dir": pseudo,
            "budget_s": req.budget_s or cs.fit_budget_s, "promote": req.promote,
            "heldout_fraction": req.heldout_fraction}


SubmitTraining = Callable[[dict[str, Any], Principal], str]  # (spec, owner) -> training id


def start_fit(store: ProjectStore, principal: Principal, served: ServedModel, max_pixels: int,
              req: FitRequest, cs: CorrectionsSettings, submit: SubmitTraining | None, reason: str) -> dict:
    """Write the fit's data and submit its training; the fit's record (also in project.json).
    `served`: the project's model (pseudo-labels the uncorrected images; the fit's default base)."""
    engine = served.engine
    if submit is None:
        raise ApiError(503, "training_unavailable", "this server has no training service (seam.service.trainings)")
    fit_id = uuid.uuid4().hex
    root = store.dir / "fits" / fit_id
    labeller = engine_labeller(engine, max_pixels) if req.include_uncorrected else None
    try:
        data = write_fit_data(store, root / "data", labeller, req.min_corrected)
    except CorrectionError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise ApiError(409, "nothing_to_fit", str(exc)) from None
    gt = data.root / "SegmentationClass"  # the corrected masks are the ground truth the held-out split scores
    gt.mkdir()
    for it in store.corrected():
        src = data.pseudo_dir / f"{it['key']}.png"
        if src.exists():
            shutil.copyfile(src, gt / src.name)
    name = req.name or served.model_name("corrections")
    base = req.base_model or (None if req.stages != "deeplab" else name if served.legacy else served.ref)
    spec = training_spec(store, req.model_copy(update={"base_model": base}), str(data.root), str(data.pseudo_dir),
                         data.classes, name, cs)
    training_id = submit(spec, principal)
    fit = {"id": fit_id, "training": training_id, "reason": reason, "created": time.time(), "model": name,
           "images": data.images, "corrected": data.corrected, "pseudo": data.pseudo, "stages": req.stages}
    store.record_fit(fit)
    log.info("corrections: fit %s of %s (%d images, %d corrected) -> training %s", fit_id, store.name,
             data.images, data.corrected, training_id)
    return fit


def due(store: ProjectStore, cs: CorrectionsSettings) -> bool:
    """Whether the threshold asks for a fit now."""
    return cs.fit_every > 0 and int(store.meta().get("changes_since_fit", 0)) >= cs.fit_every


# --- what the routes and the webhook read from the app -----------------------------------------
def store_of(app: Any) -> CorrectionStore:
    return CorrectionStore(app.state.settings.data_dir)


def settings_of(app: Any) -> CorrectionsSettings:
    """Tests (and embedders) put their own on `app.state.corrections_settings`."""
    cs = getattr(app.state, "corrections_settings", None)
    if cs is None:
        cs = app.state.corrections_settings = CorrectionsSettings()
    return cs


def submitter_of(app: Any) -> SubmitTraining | None:
    """`app.state.submit_training` (tests, the benchmark), else the training service's."""
    given = getattr(app.state, "submit_training", None)
    if given is not None:
        return given
    trainings, trainers = getattr(app.state, "trainings", None), getattr(app.state, "trainers", None)
    if trainings is None or trainers is None:
        return None

    def submit(spec: dict[str, Any], principal: Principal) -> str:
        """What POST /trainings does with a spec it has made (seam.service.trainings.submit): the
        same limits, directory, spec.json and owner.json, and the same trainers (embedded or Celery)."""
        try:
            checked = TrainingSpec(**spec)
        except ValidationError as exc:
            raise ApiError(422, "invalid_fit", f"the fit's training spec is invalid: {exc}") from None
        return submit_spec(app.state.settings, trainings, trainers, checked, principal.owner, "corrections")

    return submit


def fit_if_due(app: Any, store: ProjectStore, principal: Principal) -> dict | None:
    """The threshold's fit (after a correction changed), or None; failures are logged."""
    cs = settings_of(app)
    if not due(store, cs):
        return None
    try:
        return start_fit(store, principal, served_for(app, store.source), app.state.settings.max_pixels,
                         FitRequest(), cs, submitter_of(app), f"{cs.fit_every} new corrections")
    except ApiError as exc:
        log.warning("corrections: the threshold's fit of %s did not start: %s", store.name, exc.message)
        return None
