"""Service settings: every knob is an environment variable with the `SEAM_` prefix.

Read them through `get_settings()` (cached); tests build `Settings(...)` directly and
hand it to `create_app(settings=...)`. Validators refuse bad values at start-up rather
than deep inside a request.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


def default_data_dir() -> Path:
    """`$XDG_CACHE_HOME/seam` (usually `~/.cache/seam`): runtime files stay out of the repository."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "seam"


def split_csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """All service settings. Environment: `SEAM_<FIELD NAME IN CAPITALS>`."""

    model_config = SettingsConfigDict(env_prefix="SEAM_", extra="ignore", validate_default=True)

    # --- models and engine -------------------------------------------------------
    models_dir: Path = Field(Path("models"), description="Model repository (one sub-directory per exported model).")
    models_url: str | None = Field(None, description=(
        "A model repository by URL (s3://bucket/prefix, same layout as SEAM_MODELS_DIR): copied into SEAM_MODELS_DIR "
        "(then a local cache) at start-up and every SEAM_MODELS_SYNC_S, each version only once complete and its "
        "sha256 verified (docs/deployment.md). Unset = SEAM_MODELS_DIR is the repository."))
    models_sync_s: float = Field(30.0, gt=0, le=86_400, description="How often SEAM_MODELS_URL is looked at for new "
                                                                    "versions and promotions.")
    engine: Literal["onnx", "fake"] = Field(
        "onnx", description="'onnx' (the real engine) or 'fake' (deterministic numpy stand-in for tests and demos).")
    providers: str = Field("auto", description="onnxruntime providers: auto, cpu, cuda or a comma-separated list.")
    threads: int | None = Field(None, ge=1, le=256, description="onnxruntime intra-op threads (default: engine's "
                                                                "choice).")
    warmup: bool = Field(True, description="Run one tiny inference before reporting ready.")
    max_side: int | None = Field(None, ge=8, le=16384, description=(
        "Working side: images with a longer side are resized to it before inference (results stay at the image's "
        "size). Default: each model's manifest `input.working_side` (the top of its training range)."))
    memory_budget_mb: int = Field(4096, ge=64, description=(
        "Estimated peak memory one inference request may hold; above it the request is refused with 413 and "
        "the largest max_side that fits. Peak of the process: about max_inflight x this."))
    fake_delay_ms: float = Field(0.0, ge=0, le=60_000, description="Fake engine only: sleep per image (tests).")
    default_model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description=(
        "Model name used when a request names none (default: the legacy flat model dirs, else the first name)."))
    models_poll_s: float = Field(2.0, gt=0, le=3600, description=(
        "How often the API and the workers look for new or promoted versions in the model repository (hot reload)."))
    max_pinned_models: int = Field(2, ge=0, le=64, description=(
        "Engines kept loaded for versions other than the promoted ones (requests and jobs naming NAME:VERSION), "
        "least recently used unloaded first."))

    # --- storage and jobs --------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir, description="Uploaded job inputs and outputs.")
    allowed_root: Path | None = Field(None, description="Directory jobs may only read images under this path; unset = "
                                                        "directory jobs disabled.")
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="Job state and files are deleted this long after "
                                                             "creation.")
    chunk_size: int = Field(8, ge=1, le=1000, description="Images per task.")
    max_active_jobs: int = Field(16, ge=1, description="Queued + running jobs; beyond it POST /jobs answers 503.")
    embedded_workers: int = Field(1, ge=1, le=64, description="Embedded mode: executor threads processing job chunks.")
    max_deliveries: int = Field(5, ge=1, le=100, description="A chunk delivered more often than this is given up "
                                                             "(poison chunk).")
    max_retries: int = Field(3, ge=0, le=20, description="Retries (with exponential backoff) of a chunk after a "
                                                         "transient error.")
    task_soft_time_limit_s: int = Field(540, ge=1, description="Celery soft time limit of one chunk.")
    task_time_limit_s: int = Field(600, ge=2, description="Celery hard time limit of one chunk.")
    visibility_timeout_s: int | None = Field(None, ge=1, description="Redis visibility timeout; default 2 x hard limit "
                                                                     "+ 60 s.")
    worker_heartbeat_s: int = Field(10, ge=1, le=3600, description=(
        "Celery workers refresh a heartbeat this often; a chunk held by a worker silent for 3 heartbeats is "
        "re-queued without waiting for the visibility timeout."))
    max_data_bytes: int | None = Field(None, ge=1, description=(
        "Quota of the data directory (inputs + outputs + state); over it POST /jobs answers 507. Unset = no quota."))
    max_expansion_ratio: float = Field(50.0, ge=1, le=100_000, description=(
        "An archive may expand to at most this many times its uploaded size (and SEAM_MAX_ARCHIVE_BYTES)."))
    max_labels_bytes: int = Field(16 * MB, ge=1024, description="Label tables (labels.csv/json, labels upload) and "
                                                                "JSON job bodies.")

    # --- object storage and data sets by URL (docs/storage.md) -------------------------
    storage_url: str | None = Field(None, description=(
        "Where job files live: file:///path or s3://bucket/prefix (any S3-compatible store). Unset = the data "
        "directory (file://SEAM_DATA_DIR), as a single host needs; with s3:// the data directory only holds a "
        "bounded cache and upload scratch, and API and workers share nothing but the store and Redis."))
    s3_endpoint_url: str | None = Field(None, description=(
        "S3-compatible endpoint (http(s)://host:port); unset = the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL "
        "variables, else AWS. Credentials always come from the standard AWS variables / profiles."))
    storage_cache_bytes: int = Field(1024 * MB, ge=0, description=(
        "s3:// storage: bytes of job inputs a process keeps cached on local disk (least recently used evicted)."))
    dataset_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Comma-separated `bucket` or `bucket/prefix` entries that job input_url, output_url and manifest s3:// URIs "
        "may name; empty = s3:// data sets refused (the storage bucket is not implied)."))
    dataset_http_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Comma-separated `host` or `host:port` entries that http(s) image and manifest URIs may name (the Label "
        "Studio fetcher's rules: public addresses only unless SEAM_DATASET_ALLOW_PRIVATE); empty = refused."))
    dataset_allow_private: bool = Field(False, description="http(s) data-set URIs may resolve to private addresses.")
    dataset_max_queued_chunks: int = Field(64, ge=1, le=100_000, description=(
        "Back-pressure of a job read from a prefix or manifest: reading pauses while this many chunks wait."))
    dataset_max_lines: int = Field(10_000_000, ge=1, description="Lines of one job manifest (images of one prefix).")

    # --- broker (Celery mode) ----------------------------------------------------
    broker_url: str | None = Field(None, description="redis://host:port/db switches to Celery mode; unset = embedded "
                                                     "executor.")
    key_prefix: str = Field("seam", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Prefix of every Redis key and of "
                                                                                   "the Celery queue name.")

    # --- synchronous requests on workers, batching ---------------------------------
    sync_inference: Literal["auto", "worker", "api"] = Field("auto", description=(
        "Where /segment and /cam run: 'worker' (the Celery workers, over the realtime queue), 'api' (an engine in "
        "the API process: small models), 'auto' = worker when a broker is configured, else api."))
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description=(
        "Worker path: how long the API waits for a worker's answer to /segment or /cam before answering 504."))
    realtime_max_queue: int = Field(32, ge=1, le=10_000, description=(
        "Worker path: synchronous requests waiting for a worker (all API processes together); beyond it 429."))
    batch_window_ms: float = Field(5.0, ge=0, le=10_000, description=(
        "Workers: how long a synchronous request waits for others of the same size to share its engine batch."))
    max_batch: int = Field(8, ge=1, le=256, description="Most images in one engine batch (synchronous requests and job "
                                                        "images).")

    # --- limits ------------------------------------------------------------------
    max_upload_mb: float = Field(20.0, gt=0, le=4096, description="Request body limit of /segment and /cam.")
    max_job_upload_mb: float = Field(1024.0, gt=0, le=65536, description="Request body limit of POST /jobs (archives).")
    max_pixels: int = Field(40_000_000, ge=1, description="Width x height limit, read from the image header before "
                                                          "decoding.")
    max_archive_members: int = Field(10_000, ge=1, description="Files in one job archive.")
    max_archive_bytes: int = Field(4 * 1024 * MB, ge=1, description="Total uncompressed size of one job archive.")
    max_inflight: int = Field(2, ge=1, le=1024, description="Concurrent /segment and /cam computations.")
    max_waiting: int = Field(8, ge=0, le=100_000, description="Requests allowed to wait for a slot; beyond it 429.")
    wait_timeout_s: float = Field(30.0, gt=0, description="How long a waiting request waits before 503.")

    # --- trainings (POST /trainings; service/trainings) ------------------------------
    max_active_trainings: int = Field(4, ge=1, le=1000, description=(
        "Trainings queued or running at once (all keys); beyond it POST /trainings answers 503."))
    embedded_trainers: int = Field(1, ge=1, le=16, description=(
        "Embedded mode: trainings run at once, each a child process (`python -m seam.training.worker`)."))
    training_max_images: int = Field(5000, ge=1, description="Images in one training's data set.")
    training_max_upload_mb: float = Field(2048.0, gt=0, le=65536, description=(
        "Request body limit of POST /trainings (the archive)."))
    training_max_archive_bytes: int = Field(8 * 1024 * MB, ge=1, description=(
        "Uncompressed size of one training archive."))
    training_max_disk_bytes: int = Field(20 * 1024 * MB, ge=1, description=(
        "Files one training may write (its data, run, exports); the trainer fails it beyond."))
    training_max_budget_s: float = Field(7 * 86400.0, gt=0, description=(
        "Largest time budget a training may ask for (and the budget of one that asks none)."))
    training_restarts: int = Field(3, ge=0, le=100, description=(
        "Embedded mode: relaunches of a training whose child process died before it finished."))
    training_stale_s: float = Field(60.0, gt=0, description=(
        "Broker mode: a running training whose trainer's heartbeat (written every "
        "SEAM_TRAINING_HEARTBEAT_S on the trainer, default 10 s) is older than this is sent to the "
        "trainers again, and continues from its last epoch checkpoint."))

    # --- HTTP --------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated accepted X-API-Key values; empty = no authentication.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Comma-separated CORS "
                                                                                           "origins ('*' allowed).")
    metrics_public: bool = Field(True, description="Serve /metrics without an API key.")
    admin_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated X-API-Key values that may see and cancel every key's jobs.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description=(
        "A request body that sends nothing for this long is answered 408 and the connection closed."))

    @field_validator("api_keys", "admin_api_keys", "cors_origins", "dataset_buckets", "dataset_http_hosts",
                     mode="before")
    @classmethod
    def _csv(cls, v: object) -> object:
        return split_csv(v)

    @field_validator("api_keys", "admin_api_keys")
    @classmethod
    def _keys_long_enough(cls, v: list[str]) -> list[str]:
        short = [k for k in v if len(k) < 16]
        if short:
            raise ValueError("API keys must be at least 16 characters")
        return v

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("broker_url must be a redis:// or rediss:// URL")
        return v

    @field_validator("allowed_root")
    @classmethod
    def _root(cls, v: Path | None) -> Path | None:
        if v is None or str(v) == "":
            return None
        if not v.is_dir():
            raise ValueError(f"allowed_root {v} is not a directory")
        return v.resolve()

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.sync_inference == "worker" and not self.broker_url:
            raise ValueError("sync_inference=worker needs a broker (SEAM_BROKER_URL)")
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.visibility_timeout_s is not None and self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError("visibility_timeout_s must exceed task_time_limit_s (else tasks run twice)")
        return self

    # --- derived -----------------------------------------------------------------
    @property
    def mode(self) -> Literal["embedded", "celery"]:
        return "celery" if self.broker_url else "embedded"

    @property
    def sync_on_workers(self) -> bool:
        """Whether /segment and /cam are computed by the workers (else by this process's engine)."""
        return self.sync_inference == "worker" or (self.sync_inference == "auto" and self.broker_url is not None)

    @property
    def realtime_queue_name(self) -> str:
        return f"{self.key_prefix}.realtime"

    @property
    def visibility_timeout(self) -> int:
        return self.visibility_timeout_s or 2 * self.task_time_limit_s + 60

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_job_upload_bytes(self) -> int:
        return int(self.max_job_upload_mb * MB)

    @property
    def queue_name(self) -> str:
        return f"{self.key_prefix}.chunks"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
