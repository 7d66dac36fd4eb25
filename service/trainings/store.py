"""The trainings on disk: `<data_dir>/trainings/<id>/` holds the spec (spec.json), who
submitted it and when (owner.json), and what the trainer reports (status.json, log.txt). The
data directory is shared with the trainers, so the files are the whole state: nothing to
keep in Redis, and an API restarted after a crash finds every training again."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from seam.service.core.errors import ApiError
from seam.service.core.security import Principal

from seam.modelrepo.trainings import (
    CANCEL_FILE,
    LOG_FILE,
    SPEC_FILE,
    TrainingSpec,
    TrainingStatus,
    read_spec,
    read_status,
    trainings_dir,
)

OWNER_FILE = "owner.json"
ID_PATTERN = r"^[0-9a-f]{32}$"


@dataclass(frozen=True)
class TrainingRecord:
    id: str
    dir: Path
    owner: str
    created_at: float
    source: str
    spec: TrainingSpec | None
    status: TrainingStatus  # queued until the trainer writes one

    @property
    def cancel_requested(self) -> bool:
        return (self.dir / CANCEL_FILE).exists()


class TrainingStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = trainings_dir(data_dir)

    def new_dir(self) -> tuple[str, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        tid = uuid.uuid4().hex
        d = self.root / tid
        d.mkdir()
        return tid, d

    def discard(self, tid: str) -> None:
        shutil.rmtree(self.root / tid, ignore_errors=True)

    def write_owner(self, d: Path, owner: str, source: str) -> None:
        tmp = d / f".{OWNER_FILE}.tmp"
        tmp.write_text(json.dumps({"owner": owner, "created_at": time.time(), "source": source}))
        os.replace(tmp, d / OWNER_FILE)  # written last: a dir without it is a submission in progress

    def read(self, tid: str, status: TrainingStatus | None = None) -> TrainingRecord | None:
        """`status`: its status.json, when the caller has just read it."""
        d = self.root / tid
        try:
            meta = json.loads((d / OWNER_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        try:
            spec = read_spec(d)
        except ValueError:
            spec = None
        status = status or read_status(d) or TrainingStatus()
        return TrainingRecord(tid, d, str(meta.get("owner", "")), float(meta.get("created_at", 0.0)),
                              str(meta.get("source", "")), spec, status)

    def visible(self, tid: str, principal: Principal) -> TrainingRecord:
        """The training, or 404 when unknown or someone else's (an id leaks nothing)."""
        rec = self.read(tid)
        if rec is None or not principal.may_see(rec.owner):
            raise ApiError(404, "not_found", f"no training {tid}")
        return rec

    def all(self) -> list[TrainingRecord]:
        if not self.root.is_dir():
            return []
        out = [r for r in (self.read(p.name) for p in self.root.iterdir() if p.is_dir()) if r is not None]
        return sorted(out, key=lambda r: r.created_at, reverse=True)

    def list(self, principal: Principal) -> list[TrainingRecord]:
        return [r for r in self.all() if principal.may_see(r.owner)]

    def unfinished(self) -> list[TrainingRecord]:
        """The trainings not yet ended; an ended one costs one status read (the watchers call
        this every few seconds over a directory that only grows)."""
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if not d.is_dir():
                continue
            status = read_status(d)
            if status is not None and status.terminal:
                continue  # ended: its spec and owner are never read
            rec = self.read(d.name, status)
            if rec is not None:
                out.append(rec)
        return sorted(out, key=lambda r: r.created_at, reverse=True)

    def log_tail(self, rec: TrainingRecord, max_bytes: int) -> str:
        path = rec.dir / LOG_FILE
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                data = f.read()
        except OSError:
            return ""
        if size > max_bytes:  # start at a whole line
            data = data[data.find(b"\n") + 1:]
        return data.decode("utf-8", "replace")


def spec_path(d: Path) -> Path:
    return d / SPEC_FILE
