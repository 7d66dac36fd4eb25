"""Keeping server internals out of what clients read: error bodies and `/readyz`
(public) must not carry absolute data-directory paths, heap addresses or the
broker's host:port."""
from __future__ import annotations

import re
from collections.abc import Iterable

_URL = re.compile(r"\b(?:rediss?|amqps?|unix|sqla?\w*|https?)://[^\s'\"]+", re.I)
_HOST_PORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{2,5}\b",
                        re.I)
_CONNECTING = re.compile(r"(connecting to|connect to|host) \S+", re.I)
_HEAP = re.compile(r"\b0x[0-9a-f]{5,}\b", re.I)
_ABS_PATH = re.compile(r"(?<![\w.~/-])/(?:home|root|tmp|var|srv|data|mnt|opt|usr|etc|run|media|Users|private|proc)"
                       r"(?:/[^\s'\"]*)?")


def _root_pattern(path: str) -> re.Pattern[str]:
    """Where `path` appears as a path, never inside a word or a longer path: an absolute root
    ends at a separator or a non-path character; a relative one (`models`) only counts with a
    separator after it (`models/x.onnx`), since alone it is also a plain word ("the loaded
    models")."""
    path = path.rstrip("/")
    end = r"(?=/)" if not path.startswith("/") else r"(?![\w.~-])"
    return re.compile(r"(?<![\w.~/-])" + re.escape(path) + end)


def redact(text: str, roots: Iterable[tuple[str, str]] = ()) -> str:
    """`text` without what it should not tell a client: absolute paths (the configured
    `roots`, (path, placeholder) pairs, first, then any under the usual top-level folders),
    URLs and host:port pairs, and heap addresses. Also made valid UTF-8."""
    out = text.encode("utf-8", "backslashreplace").decode("utf-8")
    for path, placeholder in sorted(roots, key=lambda r: -len(r[0])):
        if path and path != "/":
            out = _root_pattern(path).sub(placeholder, out)
    out = _URL.sub("<url>", out)
    out = _CONNECTING.sub(lambda m: f"{m.group(1)} <host>", out)
    out = _HOST_PORT.sub("<host>", out)
    out = _HEAP.sub("0x…", out)
    return _ABS_PATH.sub("<path>", out)
