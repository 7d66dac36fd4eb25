"""Label Studio ML backend, served by the API under `/labelstudio`.

The contract of HumanSignal/label-studio-ml-backend (`label_studio_ml/api.py`), as Label
Studio's `ml/api_connector.py` calls it (URL joined with the route name):

    POST /labelstudio/predict  {tasks, project, label_config, params} -> {"results": [one per task]}
    POST /labelstudio/setup    {project, schema, hostname, access_token, ...} -> {"model_version"}
    POST /labelstudio/webhook  {action, project, ...} -> 201 {"result", "status": "ok"} (ls_webhook.py: corrections)
    GET  /labelstudio/health, /labelstudio/ -> {"status": "UP", "model_class"}; GET /labelstudio/metrics -> {}

Health is DOWN (503, with the reason) while the model loads and while the backend cannot fetch
task images (no SEAM_LABELSTUDIO_URL or no token): Label Studio then refuses to connect the
backend instead of "retrieving" predictions that never arrive.

Every predicted class becomes one `brushlabels` region (Label Studio's own RLE) or, with
`SEAM_LABELSTUDIO_REGION=polygon` (or a config with only PolygonLabels), `polygonlabels` regions.
Images come only from `SEAM_LABELSTUDIO_URL` (see `fetch.py`). Label Studio sends only HTTP
Basic auth: the password is checked as an API key (`SEAM_API_KEYS`).
"""
from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from seam.service.api.deps import HolderDep, LimiterDep, MetricsDep, SettingsDep, require_api_key
from seam.service.core.engine_holder import resolve_method
from seam.service.core.errors import ApiError
from seam.service.core.limits import run_limited
from seam.service.core.registry import MODEL_HEADER, ServedModel, served_by
from seam.service.core.urlrules import UrlRefused
from seam.service.engine.base import InferenceEngine, SegmentResult
from seam.service.inputs import parse_label_tokens
from seam.service.integrations.fetch import FetchFailed, FetchPolicy
from seam.service.integrations.ls_config import Control, LabelConfig, LabelConfigError, parse_label_config
from seam.service.integrations.ls_events import claim_project
from seam.service.integrations.ls_settings import LabelStudioSettings, LsSettingsDep
from seam.service.integrations.upload import segment_upload
from seam.service.jobs.access import visible_snapshot
from seam.service.jobs.results import job_files
from seam.service.outputs.labelling import job_labelstudio_tasks, ls_model_version, ls_regions, prediction_score
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("seam.service")
PREFIX = "/labelstudio"


# --- request models (what Label Studio sends; unknown fields are kept and ignored) -------
class LsTask(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int | str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    annotations: list[dict[str, Any]] | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[LsTask] = Field(default_factory=list)
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | int | None = None
    schema_: str | None = Field(None, alias="schema")


# --- auth: Label Studio can only send HTTP Basic ------------------------------------------
class BasicAuthAsApiKey:
    """For /labelstudio/* only: an `Authorization: Basic user:password` header becomes
    `X-API-Key: password`, so the ordinary API-key checks apply to Label Studio's requests.
    Added last in create_app (outermost), before the API-key middleware sees the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")):
            headers = list(scope.get("headers") or [])
            names = {k.lower() for k, _ in headers}
            if b"x-api-key" not in names:
                for k, v in headers:
                    if k.lower() == b"authorization" and v[:6].lower() == b"basic ":
                        try:
                            _user, _, password = base64.b64decode(v[6:].strip(), validate=True).partition(b":")
                        except (binascii.Error, ValueError):
                            break
                        if password:
                            scope = dict(scope, headers=[*headers, (b"x-api-key", password)])
                        break
        await self.app(scope, receive, send)


async def require_key(request: Request, settings: SettingsDep) -> None:
    try:
        require_api_key(settings, request.headers.get("x-api-key"))
    except ApiError as exc:
        raise ApiError(401, "unauthorized", "Label Studio must connect with Basic auth whose password is one of "
                                            "SEAM_API_KEYS (any user name)", {"WWW-Authenticate": 'Basic realm="seam"'}
                       ) from exc


router = APIRouter(prefix=PREFIX, tags=["labelstudio"], dependencies=[Depends(require_key)])


def install(app: FastAPI) -> None:
    """Register the routes and the Basic-auth translation (call after the other middleware)."""
    app.include_router(router)
    app.include_router(jobs_router)
    app.add_middleware(BasicAuthAsApiKey)


# --- helpers --------------------------------------------------------------------------------
def model_version(served: ServedModel, method: str) -> str:
    """The model part names the version (NAME:VERSION) for a versioned model; a legacy one keeps
    the name it always had, so Label Studio does not predict its tasks again."""
    return ls_model_version(served.ref if not served.legacy else served.model_name("model"), method)


def _ls_model(body: PredictRequest, ls: LabelStudioSettings) -> str | None:
    wanted = (body.params or {}).get("model")
    if wanted is not None and not isinstance(wanted, str):
        raise ApiError(422, "invalid_model", "params.model must be a string: NAME or NAME:VERSION")
    return wanted or ls.model


def ls_method(engine: InferenceEngine, ls: LabelStudioSettings) -> str:
    """The method predictions run: SEAM_LABELSTUDIO_METHOD, else the best of the loaded models."""
    return resolve_method(engine, ls.method, "SEAM_LABELSTUDIO_METHOD", where="sync")


def fetch_problem(ls: LabelStudioSettings) -> str | None:
    """Why this backend cannot fetch task images from Label Studio, or None."""
    if not ls.url:
        return ("SEAM_LABELSTUDIO_URL is not set: the backend cannot fetch task images from Label Studio "
                "(set it to Label Studio's URL as seam reaches it, and SEAM_LABELSTUDIO_API_KEY)")
    if not ls.api_key or not ls.api_key.get_secret_value().strip():
        return ("SEAM_LABELSTUDIO_API_KEY is not set: Label Studio serves task images only to authenticated "
                "requests (set a legacy token or a personal access token)")
    return None


def policy_for(ls: LabelStudioSettings, max_bytes: int) -> FetchPolicy:
    problem = fetch_problem(ls)
    if problem:
        raise ApiError(503, "labelstudio_not_configured", problem)
    assert ls.url is not None and ls.api_key is not None  # fetch_problem said so
    return FetchPolicy(base_url=ls.url, api_key=ls.api_key.get_secret_value().strip(),
                       allow_private=ls.allow_private, extra_hosts=ls.extra_hosts, max_bytes=max_bytes,
                       timeout_s=ls.fetch_timeout_s)


def task_ref(task: LsTask, i: int) -> str:
    """How messages name a task: Label Studio's id, else its position in the request."""
    return f"task {task.id}" if task.id is not None else f"task #{i}"


def _tokens(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        toks = parse_label_tokens(value) or []
    elif isinstance(value, list) and all(isinstance(t, str) for t in value):
        toks = [t.strip() for t in value if t.strip()]
    else:
        return None
    return toks


def image_labels(task: LsTask, cfg: LabelConfig, control: Control, classes: Sequence[str],
                 field: str | None) -> tuple[list[int] | None, str]:
    """Image-level labels of a task and where they came from: the configured data field,
    else the latest Choices annotation, else None (the model predicts them)."""
    if field and field in task.data:
        toks = _tokens(task.data[field])
        if toks is None:
            raise ApiError(422, "invalid_labels", f"task {task.id}: data.{field} must be a list of names or a "
                                                  "comma-separated string")
        idx = control.to_classes(toks, classes)
        if idx is None:
            raise ApiError(422, "unknown_class", f"task {task.id}: data.{field} = {toks} names a class the model "
                                                 f"does not have (model classes: {', '.join(classes)})")
        return idx, "field"
    choices = {c.name: c for c in cfg.choices()}
    for ann in reversed(task.annotations or []):
        if not isinstance(ann, dict) or ann.get("was_cancelled"):
            continue
        picked: list[int] = []
        found = False
        for r in ann.get("result") or []:
            if not isinstance(r, dict) or r.get("type") != "choices" or r.get("from_name") not in choices:
                continue
            toks = _tokens((r.get("value") or {}).get("choices"))
            if toks is None:
                continue
            found = True
            ctl = choices[r["from_name"]]
            idx = ctl.to_classes(toks, classes) or control.to_classes(toks, classes)
            if idx is None:
                raise ApiError(422, "unknown_class", f"task {task.id}: the choices {toks} do not map to model classes "
                                                     f"({', '.join(classes)}); set predicted_values on the <Choice> "
                                                     "tags")
            picked.extend(idx)
        if found:
            return sorted(set(picked)), "choices"
    return None, "predicted"


def regions(seg: SegmentResult, control: Control, to_name: str, class_map: dict[int, str], kind: str,
            min_area: int, task_key: str) -> list[dict]:
    names = {c: class_map[c] for c in seg.classes if c in class_map}
    return ls_regions(seg.label, names, seg.scores, control.name, to_name,
                      "brush" if kind == "brushlabels" else "polygon", min_area, f"{task_key}_", {"readonly": False})


# --- routes ---------------------------------------------------------------------------------
@router.post("/predict", summary="Label Studio ML backend: predictions for tasks.",
             description="One `{result, score, model_version}` per task, in order. Label Studio waits at most 100 s "
                         "(ML_TIMEOUT_PREDICT); pre-compute large batches with a job and import its "
                         "`labelstudio` output instead (docs/labelstudio.md).")
async def predict(body: Annotated[PredictRequest, Body()], request: Request, holder: HolderDep,
                  settings: SettingsDep, ls: LsSettingsDep, limiter: LimiterDep, metrics: MetricsDep) -> JSONResponse:
    served = await run_in_threadpool(served_by, holder, _ls_model(body, ls))
    engine = served.engine  # every task of the request on this version, whatever is promoted meanwhile

    if len(body.tasks) > ls.max_tasks:
        raise ApiError(413, "too_many_tasks", f"{len(body.tasks)} tasks in one request; the limit is {ls.max_tasks}")
    try:
        cfg = parse_label_config(body.label_config or "")
        control = cfg.pick(ls.region)
    except LabelConfigError as exc:
        raise ApiError(422, "invalid_label_config", str(exc)) from None
    classes = engine.foreground_classes()
    class_map = control.class_map(classes)
    if not class_map:
        labels = ", ".join(lab["value"] for lab in control.labels) or "(none)"
        raise ApiError(422, "no_matching_labels", f"no label of <{control.name}> ({labels}) matches a model class "
                                                  f"({', '.join(classes)}); name labels like the classes or add "
                                                  "predicted_values=\"class\" to them")
    data_key = cfg.images[control.to_name]
    method = ls_method(engine, ls)
    policy = policy_for(ls, settings.max_upload_bytes)
    # every URL is checked before anything is fetched: one forbidden task refuses the request
    urls: list[str] = []
    for i, task in enumerate(body.tasks):
        raw = task.data.get(data_key)
        if not isinstance(raw, str):
            raise ApiError(422, "missing_image", f"{task_ref(task, i)}: data.{data_key} "
                                                 "(the <Image> value of the labelling config) is missing")
        try:
            url = policy.absolute(raw, task.id)
            await run_in_threadpool(policy.check, url)
        except UrlRefused as exc:
            log.warning("labelstudio: refused image URL of %s: %s", task_ref(task, i), exc)
            raise ApiError(422, "forbidden_image_url", f"{task_ref(task, i)}: image URL refused: {exc}") from None
        urls.append(url)
    version = model_version(served, method)
    results = []
    for i, (task, url) in enumerate(zip(body.tasks, urls, strict=True)):
        labels, _source = image_labels(task, cfg, control, classes, ls.labels_field)
        try:
            data = await run_in_threadpool(policy.fetch, url)
        except UrlRefused as exc:  # a redirect to somewhere not allowed, or to no valid URL at all
            raise ApiError(422, "forbidden_image_url", f"{task_ref(task, i)}: image URL refused: {exc}") from None
        except FetchFailed as exc:
            status = 413 if exc.status == 413 else 502
            raise ApiError(status, "image_fetch_failed", f"{task_ref(task, i)}: {exc}") from None
        seg = await run_limited(limiter, metrics, "labelstudio", method, segment_upload, engine, data,
                                settings.max_pixels, labels, method, ls.threshold)
        kind = control.kind
        regs = await run_in_threadpool(regions, seg, control, control.to_name, class_map, kind,
                                       ls.min_polygon_area, str(task.id if task.id is not None else i))
        results.append({"result": regs, "score": prediction_score(regs), "model_version": version})
        metrics.images_labelled.labels("labelstudio").inc()
    return JSONResponse({"results": results, "model_version": version}, headers={MODEL_HEADER: served.ref})


@router.post("/setup", summary="Label Studio ML backend: project set-up.",
             description="Also makes the calling API key the owner of the project's corrections and puts it on "
                         "the project's ML-backend webhook (docs/corrections.md).")
async def setup(body: Annotated[SetupRequest, Body()], request: Request, holder: HolderDep, settings: SettingsDep,
                ls: LsSettingsDep) -> dict:
    policy = policy_for(ls, settings.max_upload_bytes)  # 503 when Label Studio is not configured
    served = await run_in_threadpool(served_by, holder, ls.model)  # the model /predict answers with
    engine = served.engine
    if body.project is not None:
        key = request.headers.get("x-api-key")
        principal = require_api_key(settings, key)
        await run_in_threadpool(claim_project, request.app, str(body.project), principal,
                                engine.foreground_classes(), policy, key)
    if body.schema_:
        try:
            cfg = parse_label_config(body.schema_)
            control = cfg.pick(ls.region)
        except LabelConfigError as exc:
            raise ApiError(422, "invalid_label_config", str(exc)) from None
        if not control.class_map(engine.foreground_classes()):
            raise ApiError(422, "no_matching_labels", f"no label of <{control.name}> matches a model class "
                                                      f"({', '.join(engine.foreground_classes())})")
    return {"model_version": model_version(served, ls_method(engine, ls))}


@router.get("/health", summary="Label Studio ML backend: health.")
@router.get("/", include_in_schema=False)
async def health(request: Request, ls: LsSettingsDep) -> JSONResponse:
    holder = request.app.state.holder
    problem = fetch_problem(ls)
    if holder.engine is None or problem:
        reason = problem or holder.error or "loading"
        if problem:  # Label Studio shows only the status code: the reason is in the body and in our log
            log.warning("labelstudio: health is DOWN: %s", reason)
        return JSONResponse({"status": "DOWN", "model_class": "SeamWSSS", "error": reason}, status_code=503)
    return JSONResponse({"status": "UP", "model_class": "SeamWSSS"})


@router.get("/metrics", summary="Label Studio ML backend: metrics (empty).")
async def ls_metrics() -> dict:
    return {}


@router.get("/versions", summary="Label Studio ML backend: model versions.")
async def versions(holder: HolderDep, ls: LsSettingsDep) -> dict:
    served = await run_in_threadpool(served_by, holder, ls.model)
    return {"versions": [model_version(served, ls_method(served.engine, ls))]}


# --- a finished job's outputs as a Label Studio import file, with the project's tag names -------
jobs_router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
UrlPrefix = Annotated[str | None, Query(max_length=2048, pattern=r"^(https?://|/)")]
TagName = Annotated[str, Query(min_length=1, max_length=200)]
EXPORT_DESCRIPTION = ("Requires the `labelstudio` output. Import the file in Label Studio (Import -> Upload files). "
                      "With the project's `label_config`, regions carry its label values (`predicted_values` "
                      "mapping) and its tag names; without it, `from_name`/`to_name`/`data_key` name the tags and "
                      "regions carry the model's class names.")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_config: str = Field(..., min_length=1, max_length=1_000_000,
                              description="The project's labelling config (XML), as Label Studio's "
                                          "GET /api/projects/<id> returns it.")
    image_url_prefix: str | None = Field(None, max_length=2048, pattern=r"^(https?://|/)")
    region: Literal["auto", "brush", "polygon"] = "auto"


@jobs_router.get("/jobs/{job_id}/export/labelstudio", summary="A job's Label Studio tasks-with-predictions JSON.",
                 description=EXPORT_DESCRIPTION)
def export_labelstudio(job_id: JobId, request: Request, image_url_prefix: UrlPrefix = None,
                       label_config: Annotated[str | None, Query(max_length=100_000)] = None,
                       from_name: TagName = "tag", to_name: TagName = "image", data_key: TagName = "image",
                       region: Literal["auto", "brush", "polygon"] = "auto") -> Response:
    return _export(job_id, request, image_url_prefix, label_config, from_name, to_name, data_key, region)


@jobs_router.post("/jobs/{job_id}/export/labelstudio", summary="A job's Label Studio tasks, for a labelling config.",
                  description=EXPORT_DESCRIPTION + " POST: the config in a JSON body (long configs).")
def export_labelstudio_for_config(job_id: JobId, request: Request, body: Annotated[ExportRequest, Body()]) -> Response:
    return _export(job_id, request, body.image_url_prefix, body.label_config, "tag", "image", "image", body.region)


def _export(job_id: str, request: Request, image_url_prefix: str | None, label_config: str | None, from_name: str,
            to_name: str, data_key: str, region: Literal["auto", "brush", "polygon"]) -> Response:
    settings = request.app.state.settings
    principal = require_api_key(settings, request.headers.get("x-api-key"))
    store, storage = request.app.state.store, request.app.state.storage
    snap = visible_snapshot(store, job_id, principal)
    if snap.active:
        raise ApiError(409, "job_not_finished", f"job is {snap.state}; export once it has "
                                                "finished", {"Retry-After": "5"})
    if "labelstudio" not in snap.options.get("outputs", []):
        raise ApiError(409, "output_not_requested", "this job was not run with the labelstudio output")
    try:
        manifest = storage.read_manifest(job_id)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"the files of job {job_id} are gone") from None
    if manifest.get("output_url"):  # its outputs are the user's objects, possibly millions: not merged here
        raise ApiError(409, "outputs_at_output_url",
                       f"this job wrote its outputs to {manifest['output_url']}: its Label Studio tasks are "
                       f"{manifest['output_url']}labelstudio_tasks.json (jobs of at most "
                       f"{manifest.get('merge_max_images') or 0} images) and "
                       f"{manifest['output_url']}labelstudio/<image id>.json, one per image, listed in "
                       f"{manifest['output_url']}results.jsonl (docs/storage.md)")
    prefix = image_url_prefix or snap.options.get("image_url_prefix")
    if not prefix:
        raise ApiError(422, "missing_image_url_prefix", "give image_url_prefix: the URL under which Label Studio "
                                                        "serves the job's images (see docs/labelstudio.md)")
    labels: dict[int, str] | None = None
    kind: Literal["brush", "polygon"] = "polygon" if region == "polygon" else "brush"
    if label_config is not None:
        try:
            cfg = parse_label_config(label_config)
            control = cfg.pick(region)
        except LabelConfigError as exc:
            raise ApiError(422, "invalid_label_config", str(exc)) from None
        classes = manifest.get("classes") or []
        labels = control.class_map(classes)
        if not labels:
            raise ApiError(422, "no_matching_labels", f"no label of <{control.name}> matches a class of the job's "
                                                      f"model ({', '.join(classes)}); add predicted_values")
        from_name, to_name, data_key = control.name, control.to_name, cfg.images[control.to_name]
        kind = "brush" if control.kind == "brushlabels" else "polygon"
    job = job_files(storage, job_id, manifest, manifest.get("classes") or [])
    body = job_labelstudio_tasks(job, prefix, from_name, to_name, data_key, kind, labels)
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="labelstudio-{job_id}.json"'})
