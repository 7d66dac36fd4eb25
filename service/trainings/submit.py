"""`POST /trainings`: check the limits, make the training's directory with its data (an
archive extracted with the jobs' archive rules, a folder under SEAM_ALLOWED_ROOT, or a finished
job's images, tags and masks), write spec.json and owner.json, and hand it to the trainers."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError
from seam.service.archives import extract_archive
from seam.service.core.config import Settings
from seam.service.core.errors import ApiError, describe_validation
from seam.service.core.security import Principal
from seam.service.inputs import allowed_directory, read_capped
from seam.service.jobs import lifecycle
from seam.service.jobs.access import visible_snapshot
from seam.service.jobs.stores.base import JobStore
from seam.service.storage import Storage
from seam.service.trainings.schemas import TrainingJsonRequest, TrainingOptions
from seam.service.trainings.store import TrainingStore
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from seam.common.files import LABEL_FILE_NAMES
from seam.modelrepo.manifest import ManifestError
from seam.modelrepo.trainings import DataSpec, Recipe, TrainingSpec, write_spec
from seam.modelrepo.versions import ModelNotFound, resolve

DATA_DIR = "data"
_FORM_FIELDS = ("name", "classes", "stages", "recipe", "base_model", "budget_s", "promote", "heldout_fraction")
_BOOL = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class TrainingServices:
    settings: Settings
    trainings: TrainingStore
    trainers: Any  # CeleryTrainers | EmbeddedTrainers
    storage: Storage
    jobs: JobStore | None


def check_room(settings: Settings, trainings: TrainingStore, trainers: Any) -> None:
    """The limits every new training passes (POST /trainings and the corrections' fits): a
    trainer exists, and fewer than SEAM_MAX_ACTIVE_TRAININGS are queued or running."""
    trainers.check_available()
    active = len(trainings.unfinished())
    if active >= settings.max_active_trainings:
        raise ApiError(503, "queue_full", f"{active} trainings are queued or running (limit "
                                          f"{settings.max_active_trainings}); retry later", {"Retry-After": "60"})


def hand_to_trainers(trainers: Any, tid: str) -> None:
    """Queue the training whose directory is complete; a broker that is down is a 503."""
    try:
        trainers.submit(tid)
    except Exception as exc:  # broker down: the training stays queued on disk; say so
        raise ApiError(503, "unavailable", f"could not queue the training {tid}: {exc}",
                       {"Retry-After": "10"}) from None


def submit_spec(settings: Settings, trainings: TrainingStore, trainers: Any, spec: TrainingSpec, owner: str,
                source: str) -> str:
    """A training whose spec (and data) are already made, e.g. a corrections fit: the limits,
    its directory with spec.json and owner.json, the trainers; its id."""
    check_room(settings, trainings, trainers)
    tid, d = trainings.new_dir()
    try:
        write_spec(d, spec)
        trainings.write_owner(d, owner, source)
    except BaseException:
        trainings.discard(tid)
        raise
    hand_to_trainers(trainers, tid)
    return tid


async def submit(request: Request, svc: TrainingServices, principal: Principal) -> str:
    """Create and queue the training the request describes; its id."""
    await run_in_threadpool(check_room, svc.settings, svc.trainings, svc.trainers)
    declared = request.headers.get("content-length", "")
    incoming = int(declared) if declared.isdigit() else 0
    await run_in_threadpool(lifecycle.check_quota, svc.storage, svc.settings, incoming)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    tid, d = await run_in_threadpool(svc.trainings.new_dir)
    try:
        if ctype == "multipart/form-data":
            options, source, data = await _from_form(request, svc, d)
        elif ctype == "application/json":
            options, source, data = await _from_json(request, svc, principal, d)
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with an 'archive' file, or "
                                                          "application/json with a 'folder' or a 'job_id'")
        spec = await run_in_threadpool(_spec, svc.settings, options, data)
        await run_in_threadpool(write_spec, d, spec)
        await run_in_threadpool(svc.trainings.write_owner, d, principal.owner, source)
    except BaseException:
        await run_in_threadpool(svc.trainings.discard, tid)
        raise
    finally:
        svc.storage.forget_usage()
    await run_in_threadpool(hand_to_trainers, svc.trainers, tid)
    return tid


def _spec(settings: Settings, o: TrainingOptions, data: DataSpec) -> TrainingSpec:
    if o.budget_s is not None and o.budget_s > settings.training_max_budget_s:
        raise ApiError(422, "validation_error", f"budget_s {o.budget_s:g} is above this server's limit of "
                                                f"{settings.training_max_budget_s:g} s")
    if o.base_model is not None:
        try:
            resolve(settings.models_dir, o.base_model, settings_default(settings))
        except (ModelNotFound, ManifestError) as exc:  # ManifestError: no repository at all
            raise ApiError(404, "model_not_found", f"base_model: {exc}") from None
        except ValueError as exc:
            raise ApiError(422, "validation_error", f"base_model: {exc}") from None
    elif o.stages == "deeplab":
        raise ApiError(422, "validation_error", "stages 'deeplab' trains DeepLab alone: give a base_model")
    pseudo = data.root + "/pseudo" if (Path(data.root) / "pseudo").is_dir() else None
    return TrainingSpec(
        name=o.name, data=data, classes=o.classes, stages=o.stages,
        recipe=Recipe(**o.recipe.model_dump()), base_model=o.base_model, budget_s=o.budget_s or
        settings.training_max_budget_s, promote=o.promote, heldout_fraction=o.heldout_fraction,
        max_images=settings.training_max_images, max_disk_bytes=settings.training_max_disk_bytes,
        pseudo_labels_dir=pseudo if o.stages in ("pipeline", "deeplab") else None)


def settings_default(settings: Settings) -> str | None:
    return getattr(settings, "default_model", None) or None


def _validated(model: type, raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None


# ----------------------------------------------------------------------------- archive upload


async def _from_form(request: Request, svc: TrainingServices, d: Path) -> tuple[TrainingOptions, str, DataSpec]:
    form = await request.form(max_files=1, max_fields=len(_FORM_FIELDS) + 1, max_part_size=1024 * 1024)
    try:
        raw: dict[str, Any] = {}
        unknown = sorted(set(form.keys()) - {*_FORM_FIELDS, "archive"})
        if unknown:
            raise ApiError(422, "validation_error", f"unknown form field(s): {', '.join(unknown)}")
        for key in _FORM_FIELDS:
            v = form.get(key)
            if isinstance(v, UploadFile):
                raise ApiError(422, "validation_error", f"field '{key}' must be a plain form field, not a file")
            if v is not None and v != "":
                raw[key] = _form_value(key, v)
        options = _validated(TrainingOptions, raw)
        archive = form.get("archive")
        if not isinstance(archive, UploadFile):
            raise ApiError(422, "validation_error", "field 'archive' is required (a zip or tar of images with "
                                                    "labels.csv)")
        data = await run_in_threadpool(_extract, svc, archive.file, d / DATA_DIR)
    finally:
        await form.close()
    return options, "archive", data


def _form_value(key: str, v: str) -> Any:
    if key == "classes":
        return [c.strip() for c in v.split(",") if c.strip()]
    if key == "recipe":
        try:
            return json.loads(v)
        except json.JSONDecodeError as exc:
            raise ApiError(422, "validation_error", f"field 'recipe' must be a JSON object: {exc}") from None
    if key == "promote":
        if v.strip().lower() not in _BOOL:
            raise ApiError(422, "validation_error", f"field 'promote' must be true or false, not {v[:20]!r}")
        return _BOOL[v.strip().lower()]
    return v


def _extract(svc: TrainingServices, fileobj: Any, dest: Path) -> DataSpec:
    s = svc.settings
    left = None if s.max_data_bytes is None else max(0, s.max_data_bytes - svc.storage.usage_bytes())
    cap = s.training_max_archive_bytes if left is None else min(s.training_max_archive_bytes, left)
    why = "SEAM_TRAINING_MAX_ARCHIVE_BYTES" if cap == s.training_max_archive_bytes else "the data directory's quota"
    ex = extract_archive(fileobj, dest, s.max_archive_members, cap, s.max_labels_bytes, why)
    if ex.labels_file is None:
        raise ApiError(422, "invalid_archive", f"the archive has no label file ({', '.join(LABEL_FILE_NAMES)}): "
                                               "rows 'image,class;class' give each image's tags")
    if len(ex.images) > s.training_max_images + len(ex.images) // 2 + 1:  # masks count as images here
        raise ApiError(413, "too_many_images", f"the archive has {len(ex.images)} images; a training takes at "
                                               f"most {s.training_max_images}")
    root = dest / Path(ex.labels_file).parent
    return DataSpec(root=str(root), source="archive")


# ----------------------------------------------------------------------------- folder / job


async def _from_json(request: Request, svc: TrainingServices, principal: Principal,
                     d: Path) -> tuple[TrainingOptions, str, DataSpec]:
    raw = await read_capped(request.stream(), svc.settings.max_labels_bytes,
                            "JSON training bodies (SEAM_MAX_LABELS_BYTES)")
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(422, "validation_error", f"invalid JSON: {exc}") from None
    req = _validated(TrainingJsonRequest, body)
    if (req.folder is None) == (req.job_id is None):
        raise ApiError(422, "validation_error", "give exactly one of 'folder' (under SEAM_ALLOWED_ROOT) and "
                                                "'job_id' (a finished job); or upload an archive as multipart")
    options = TrainingOptions.model_validate(req.model_dump(exclude={"folder", "job_id"}))
    if req.folder is not None:
        return options, "folder", await run_in_threadpool(_folder, svc.settings, req.folder)
    assert req.job_id is not None
    data = await run_in_threadpool(_from_job, svc, principal, req.job_id, d / DATA_DIR)
    return options, "job", data


def _folder(settings: Settings, folder: str) -> DataSpec:
    return DataSpec(root=str(allowed_directory(settings.allowed_root, folder, "folder trainings")), source="folder")


def _from_job(svc: TrainingServices, principal: Principal, job_id: str, dest: Path) -> DataSpec:
    """The job's images (links) with its tags: the labels it was given, else the classes its png
    masks show; its png masks, when it wrote them, as DeepLab's pseudo labels (dest/pseudo)."""
    if svc.jobs is None:
        raise ApiError(503, "unavailable", "the job store is not ready")
    snap = visible_snapshot(svc.jobs, job_id, principal)
    if snap.state != "succeeded":
        raise ApiError(409, "job_not_finished", f"job {job_id} is {snap.state}; train on a succeeded job")
    manifest = svc.storage.read_manifest(job_id)
    if manifest.get("streamed"):  # its images stay where they live: the service keeps no copy to link
        source = manifest.get("input_url") or "an uploaded manifest"
        raise ApiError(422, "invalid_job", f"job {job_id} read a data set ({source}): the service keeps none of "
                                           "its images; train from an archive or a folder under SEAM_ALLOWED_ROOT")
    names = list(manifest.get("classes") or [])
    if not names:
        raise ApiError(422, "invalid_job", f"job {job_id} recorded no class names")
    masks = svc.storage.outputs_dir(job_id) / "png"
    (dest / "images").mkdir(parents=True)
    rows = io.StringIO()
    w = csv.writer(rows)
    w.writerow(["image", "labels"])
    n = 0
    used: set[str] = set()
    for image_id in sorted(manifest["images"]):
        src = svc.storage.input_path(job_id, manifest, image_id)
        if not src.is_file():
            raise ApiError(410, "inputs_gone", f"job {job_id}'s input images were deleted; resubmit the images")
        tags = manifest.get("labels", {}).get(image_id) or _mask_classes(masks / f"{image_id}.png", len(names))
        if not tags:
            continue  # no tag: nothing to learn from this image
        n += 1
        name = _file_name(image_id, used)
        os.symlink(src, dest / "images" / f"{name}{src.suffix.lower()}")
        w.writerow([name, ";".join(names[int(c)] for c in tags)])
        if (masks / f"{image_id}.png").is_file():
            (dest / "pseudo").mkdir(exist_ok=True)
            os.symlink(masks / f"{image_id}.png", dest / "pseudo" / f"{name}.png")
    if n == 0:
        raise ApiError(422, "invalid_job", f"job {job_id} has no image with labels or a non-empty mask")
    (dest / "labels.csv").write_text(rows.getvalue())
    (dest / "classes.txt").write_text("background\n" + "".join(f"{c}\n" for c in names))
    return DataSpec(root=str(dest), source="job", job_id=job_id)


def _file_name(image_id: str, used: set[str]) -> str:
    """A file-name-safe name for a job's image id, unique among `used` (which it joins): ids of a
    folder job hold '/' ('a/b' -> 'a__b'; 'a__b~2' when an id 'a__b' took that already)."""
    flat = name = image_id.replace("/", "__")
    n = 1
    while name in used:
        n += 1
        name = f"{flat}~{n}"
    used.add(name)
    return name


def _mask_classes(path: Path, num_fg: int) -> list[int]:
    if not path.is_file():
        return []
    with Image.open(path) as im:
        values = np.unique(np.asarray(im))
    return sorted(int(v) - 1 for v in values if 0 < v <= num_fg)
