"""Label Studio's settings (`SEAM_LABELSTUDIO_*`), apart from its routes: the corrections loop
needs them too (which model a project is predicted with) without importing the routes."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from seam.service.core.config import split_csv
from seam.service.schemas import MODEL_REF_PATTERN, MethodName, method_help


class LabelStudioSettings(BaseSettings):
    """`SEAM_LABELSTUDIO_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SEAM_LABELSTUDIO_", extra="ignore", validate_default=True)

    url: str | None = Field(None, description="Label Studio's URL (e.g. http://labelstudio:8080); images are "
                                              "fetched from it only. Unset: /labelstudio/health is DOWN and "
                                              "/labelstudio/predict answers 503.")
    api_key: SecretStr | None = Field(None, description="Label Studio token, sent only to `url`: a legacy token, "
                                                        "or a personal access token (exchanged for access tokens "
                                                        "at /api/token/refresh/).")
    allow_private: bool = Field(False, description="Allow Label Studio (and extra hosts) on private/loopback "
                                                   "addresses.")
    extra_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated host or host:port also allowed (cloud-storage redirects).")
    labels_field: str | None = Field(None, description="Task data field holding image-level labels (list or "
                                                       "comma-separated names); else a Choices annotation; else "
                                                       "predicted.")
    region: Literal["auto", "brush", "polygon"] = Field("auto", description="brushlabels, polygonlabels, or auto "
                                                                            "(brush when the config has BrushLabels).")
    method: MethodName | None = Field(None, json_schema_extra=method_help)
    model: str | None = Field(None, max_length=200, pattern=MODEL_REF_PATTERN, description=(
        "Model (NAME or NAME:VERSION) predictions use; unset = the default model's promoted version. A /predict "
        "request may name its own in params.model (Label Studio's extra params)."))
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Background threshold.")
    min_polygon_area: int = Field(4, ge=1, description="Polygons enclosing fewer pixels are dropped.")
    fetch_timeout_s: float = Field(20.0, gt=0, le=100, description="Timeout of one image download.")
    max_tasks: int = Field(100, ge=1, le=10_000, description="Tasks accepted in one /predict request.")

    @field_validator("extra_hosts", mode="before")
    @classmethod
    def _csv(cls, v: object) -> object:
        return split_csv(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("SEAM_LABELSTUDIO_URL must start with http:// or https://")
        return v.strip().rstrip("/")


@lru_cache(maxsize=1)
def get_labelstudio_settings() -> LabelStudioSettings:
    return LabelStudioSettings()


def app_ls_settings(app: Any) -> LabelStudioSettings:
    """Tests (and embedders) put their own on `app.state.labelstudio_settings`."""
    return getattr(app.state, "labelstudio_settings", None) or get_labelstudio_settings()


def ls_settings(request: Request) -> LabelStudioSettings:
    return app_ls_settings(request.app)


LsSettingsDep = Annotated[LabelStudioSettings, Depends(ls_settings)]
