"""Manifest lines -> entries: JSONL and CSV, labels, ids from URIs, and every malformed line a
LineError with its number (never an exception), read from streams chunked anywhere."""
import json

import pytest
from seam.service.datasets.entries import (
    MAX_LINE_BYTES,
    Entry,
    LineError,
    csv_entries,
    image_id_of,
    jsonl_entries,
    lines_of,
    manifest_kind,
)


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 5, 64, 1 << 20])
def test_lines_of_any_chunking(size):
    data = b"a\r\nbb\n\nccc"
    assert list(lines_of(_chunked(data, size))) == [(1, b"a"), (2, b"bb"), (3, b""), (4, b"ccc")]


def test_a_runaway_line_is_an_error_not_held():
    data = b"ok\n" + b"x" * (3 * MAX_LINE_BYTES) + b"\nafter\n"
    got = list(lines_of(_chunked(data, 4096)))
    assert got == [(1, b"ok"), (2, None), (3, b"after")]


@pytest.mark.parametrize(("uri", "iid"), [
    ("s3://bucket/a/x.jpg", "a/x"), ("https://host:8443/p/q.png?sig=1", "p/q"), ("s3://b/.hidden", ".hidden"),
    ("s3://b/dir.v2/img", "dir.v2/img"), ("s3://b/a%20b.png", "a b"),
])
def test_image_ids_from_uris(uri, iid):
    assert image_id_of(uri) == iid


def test_jsonl_entries_and_line_errors():
    lines = [
        json.dumps({"uri": "s3://b/a/x.jpg", "labels": ["cat", 2]}),
        json.dumps({"url": "https://h/y.png", "id": "why"}),
        "# a comment",
        "",
        "{broken",
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "no-uri"}),
        json.dumps({"uri": "s3://b/z.jpg", "id": "../escape"}),
        json.dumps({"uri": "s3://b/z.jpg", "labels": "cat"}),
        json.dumps({"uri": "s3://b/z.jpg", "id": "z2", "labels": {"no": 1}}),
    ]
    got = list(jsonl_entries(_chunked("\n".join(lines).encode(), 7)))
    assert got[0] == Entry(1, "a/x", "s3://b/a/x.jpg", ["cat", 2])
    assert got[1] == Entry(2, "why", "https://h/y.png", None)
    errors = {e.n: e.error for e in got if isinstance(e, LineError)}
    assert sorted(errors) == [5, 6, 7, 8, 10]
    assert "not JSON" in errors[5] and "object" in errors[6] and "URI" in errors[7] and "'..'" in errors[8]
    assert got[-2] == Entry(9, "z", "s3://b/z.jpg", ["cat"])  # a string of labels: ;-separated names


def test_csv_entries_with_labels_and_errors():
    text = ("\ufeffURI,id,labels\n"
            "s3://b/a.jpg,,cat;dog\n"
            "s3://b/b.jpg,bee,\n"
            "\n"
            "s3://b/c.jpg,c,cat,extra\n"
            '"s3://b/d.jpg",d,"cat|dog"\n'
            ",e,\n")
    got = list(csv_entries(_chunked(text.encode(), 3)))
    assert got[0] == Entry(2, "a", "s3://b/a.jpg", ["cat", "dog"])
    assert got[1] == Entry(3, "bee", "s3://b/b.jpg", None)
    assert isinstance(got[2], LineError) and got[2].n == 5 and "cells" in got[2].error
    assert got[3] == Entry(6, "d", "s3://b/d.jpg", ["cat", "dog"])
    assert isinstance(got[4], LineError) and got[4].n == 7


def test_csv_without_a_uri_column_is_one_error():
    got = list(csv_entries([b"name,labels\nx.jpg,cat\n"]))
    assert len(got) == 1 and isinstance(got[0], LineError) and "header" in got[0].error


@pytest.mark.parametrize(("name", "head", "kind"), [
    ("m.jsonl", b"", "jsonl"), ("x.CSV", b"", "csv"), ("upload", b'  {"uri"', "jsonl"), ("upload", b"uri,id", "csv"),
    ("s3://b/m.ndjson?x", b"", "jsonl"),
])
def test_manifest_kind(name, head, kind):
    assert manifest_kind(name, head) == kind
