"""A job's data set as a stream of entries: every image object under an s3:// prefix (sorted by
key, listed page by page), or the lines of a manifest (a stored upload, or a URL)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from seam.service.datasets.entries import Entry, LineError, check_id, manifest_entries
from seam.service.datasets.fetching import DatasetReader

from seam.common.files import IMAGE_EXTENSIONS

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")


def is_manifest_url(url: str) -> bool:
    return url.lower().split("?")[0].endswith(MANIFEST_SUFFIXES)


def prefix_entries(reader: DatasetReader, url: str) -> Iterator[Entry | LineError]:
    """Images under an s3:// prefix: id = key below the prefix without extension."""
    loc = reader.policy.check_s3(url if url.endswith("/") else url + "/")
    store = reader.bucket(loc)
    n = 0
    for info in store.list(loc.prefix):
        rel = info.key[len(loc.prefix):]
        if any(part.startswith(".") for part in rel.split("/")) or PurePosixPath(rel).suffix.lower() not in \
                IMAGE_EXTENSIONS:
            continue
        n += 1
        p = PurePosixPath(rel)
        iid = str(p.with_suffix(""))
        if why := check_id(iid):
            yield LineError(n, f"{rel}: {why}")
            continue
        yield Entry(n, iid, f"s3://{loc.bucket}/{info.key}")


def url_manifest_entries(reader: DatasetReader, url: str, kind: str) -> Iterator[Entry | LineError]:
    return manifest_entries(kind, reader.stream(url))


def stored_manifest_entries(chunks: Iterable[bytes], kind: str) -> Iterator[Entry | LineError]:
    return manifest_entries(kind, chunks)
