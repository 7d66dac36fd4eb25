"""Manifest lines -> entries, as a stream: never the whole manifest in memory.

JSONL: one object per line, `{"uri": "s3://bucket/a/x.jpg", "id": "x", "labels": ["cat", 3]}`
(`uri` required, also accepted as `url` or `image`; `id` optional; `labels` optional: class
names or indices). CSV: a header naming the same columns; labels separated by `;` or `|`.
Blank lines and JSONL lines starting with `#` are skipped. A line that cannot be read is a
LineError (its number and why), never an exception: the job records it and reads on.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

MAX_LINE_BYTES = 64 * 1024  # a longer line is an error (and is never held whole)
URI_FIELDS = ("uri", "url", "image")
MAX_ID_CHARS = 512


@dataclass(frozen=True)
class Entry:
    n: int  # 1-based number of the line (or listed object)
    id: str  # the name outputs are written under
    uri: str
    labels: list[str | int] | None = None


@dataclass(frozen=True)
class LineError:
    n: int
    error: str


def image_id_of(uri: str, base: str = "") -> str:
    """The output name of an image URI: its path (under `base` when given) without extension.
    String operations only: this runs once per manifest line."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    path = rest.split("/", 1)[1] if "/" in rest else ""  # the host or bucket is not part of the name
    path = path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path)
    if base and path.startswith(base):
        path = path[len(base):]
    name_start = path.rfind("/") + 1
    dot = path.rfind(".")
    return path[:dot] if dot > name_start else path  # ".hidden" has no extension


def check_id(iid: str) -> str | None:
    """Why `iid` cannot name output files, or None."""
    if not iid or len(iid) > MAX_ID_CHARS or "\x00" in iid or "\\" in iid or iid.startswith("/"):
        return "the image id must be 1-512 characters, no NUL or backslash, not starting with /"
    if any(part in ("", ".", "..") for part in iid.split("/")):
        return f"the image id {iid[:100]!r} has an empty, '.' or '..' segment"
    return None


def lines_of(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the newline) of a byte stream; None for a line over `max_line`
    (skipped to its end without being kept)."""
    rest = b""  # the unfinished last line of what has arrived
    n = 0
    too_long = False
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = parts.pop()
        for line in parts:
            n += 1
            yield (n, None) if too_long or len(line) > max_line else (n, line.rstrip(b"\r"))
            too_long = False
        if len(rest) > max_line:  # a runaway line: drop what we have, remember it is too long
            rest, too_long = b"", True
    if rest or too_long:
        yield (n + 1, None) if too_long else (n + 1, rest.rstrip(b"\r"))


def _entry(n: int, uri: object, iid: object, labels: object) -> Entry | LineError:
    if not isinstance(uri, str) or not uri.strip():
        return LineError(n, f"no image URI (a field named {' or '.join(URI_FIELDS)})")
    uri = uri.strip()
    if iid is None or iid == "":
        iid = image_id_of(uri)
    if not isinstance(iid, str):
        return LineError(n, "the id must be a string")
    if why := check_id(iid):
        return LineError(n, why)
    if labels is not None and labels != "":
        if isinstance(labels, str):
            labels = [t.strip() for t in labels.replace("|", ";").split(";") if t.strip()]
        if not isinstance(labels, list) or not all(isinstance(t, str | int) and not isinstance(t, bool)
                                                   for t in labels):
            return LineError(n, "labels must be a list of class names or indices")
    else:
        labels = None
    return Entry(n, iid, uri, labels)


def jsonl_entries(chunks: Iterable[bytes]) -> Iterator[Entry | LineError]:
    for n, raw in lines_of(chunks):
        if raw is None:
            yield LineError(n, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield LineError(n, f"not JSON: {str(exc)[:120]}")
            continue
        if not isinstance(obj, dict):
            yield LineError(n, "a JSONL line must be an object")
            continue
        uri = next((obj[k] for k in URI_FIELDS if k in obj), None)
        yield _entry(n, uri, obj.get("id"), obj.get("labels"))


def csv_entries(chunks: Iterable[bytes]) -> Iterator[Entry | LineError]:
    header: list[str] | None = None
    for n, raw in lines_of(chunks):
        if raw is None:
            yield LineError(n, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            row = next(csv.reader(io.StringIO(text)), [])
        except (UnicodeDecodeError, csv.Error) as exc:
            yield LineError(n, f"unreadable CSV line: {exc}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [h.strip().lower() for h in row]
            if not any(f in header for f in URI_FIELDS):
                yield LineError(n, f"the CSV header names no {'/'.join(URI_FIELDS)} column: every line is unreadable")
                return
            continue
        if len(row) > len(header):
            yield LineError(n, f"{len(row)} cells for {len(header)} columns (quote labels that contain commas)")
            continue
        rec = dict(zip(header, row, strict=False))
        uri = next((rec[k] for k in URI_FIELDS if k in rec), None)
        yield _entry(n, uri, rec.get("id"), rec.get("labels"))


def manifest_kind(name: str, head: bytes) -> str:
    """'jsonl' or 'csv', by the name's extension, else by the first byte."""
    low = name.lower().split("?")[0]
    if low.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if low.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip()[:1] in (b"{", b"#") else "csv"


def manifest_entries(kind: str, chunks: Iterable[bytes]) -> Iterator[Entry | LineError]:
    return jsonl_entries(chunks) if kind == "jsonl" else csv_entries(chunks)
