"""Read MXNet `.params` files (NDArray list format) with numpy alone, and map the
ResNet-38 ImageNet weights (`ilsvrc-cls_rnn-38_1.params`) to the authors' keys.

File layout (little-endian): uint64 magic 0x112, uint64 reserved, uint64 count,
`count` NDArrays, uint64 name count, names as (uint64 length, bytes). An NDArray
is either legacy (uint32 ndim, uint32 dims) or starts with a version magic
(V1: int64 dims; V2/V3: + int32 storage type), then int32 dev_type, int32 dev_id,
int32 dtype flag and the raw data.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


class ParamsFormatError(ValueError):
    pass


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ParamsFormatError("truncated .params file")
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return vals if len(vals) > 1 else vals[0]

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ParamsFormatError("truncated .params file")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def _read_ndarray(r: _Reader) -> np.ndarray | None:
    magic = r.take("I")
    if magic in (V2_MAGIC, V3_MAGIC):
        if r.take("i") != 0:
            raise ParamsFormatError("sparse NDArrays are not supported")
        ndim = r.take("i")
        dim_fmt = "q"
    elif magic == V1_MAGIC:
        ndim, dim_fmt = r.take("I"), "q"
    else:  # legacy files have no magic: the word we read is ndim, dims are uint32
        ndim, dim_fmt = magic, "I"
        if ndim > 32:
            raise ParamsFormatError("not an MXNet NDArray (bad header)")
    if ndim <= 0:
        return None
    shape = tuple(int(r.take(dim_fmt)) for _ in range(ndim))
    r.take("ii")  # context: dev_type, dev_id (everything loads to CPU)
    flag = r.take("i")
    if flag not in DTYPES:
        raise ParamsFormatError(f"unknown dtype flag {flag}")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape))
    return np.frombuffer(r.raw(count * dtype.itemsize), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} of an MXNet `.params` file; `arg:`/`aux:` prefixes are stripped."""
    r = _Reader(Path(path).read_bytes())
    if r.take("Q") != LIST_MAGIC:
        raise ParamsFormatError(f"{path}: not an MXNet .params file (bad magic)")
    r.take("Q")
    arrays = [_read_ndarray(r) for _ in range(r.take("Q"))]
    names = [r.raw(r.take("Q")).decode("utf-8") for _ in range(r.take("Q"))]
    if len(names) != len(arrays):
        raise ParamsFormatError(f"{path}: {len(arrays)} arrays but {len(names)} names")
    return {n.split(":", 1)[-1]: a for n, a in zip(names, arrays) if a is not None}


_BN_SUFFIX = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_BRANCH = re.compile(r"^(res|bn)(\d)([a-z])(\d*)_(branch\w+?)_(weight|gamma|beta|moving_mean|moving_var)$")


def mxnet_to_torch_name(name: str) -> str | None:
    """`res2a_branch1_weight` -> `b2.conv_branch1.weight`; None for the ImageNet classifier."""
    if name.startswith("linear1000"):
        return None
    if name.startswith("conv1a"):
        return "conv1a.weight"
    m = _BRANCH.match(name)
    if m:
        kind, stage, letter, idx, branch, suffix = m.groups()
        block = f"b{stage}" if letter == "a" else f"b{stage}_{idx}"
        if kind == "res":
            return f"{block}.conv_{branch}.weight"
        return f"{block}.bn_{branch}.{_BN_SUFFIX[suffix]}"
    m = re.match(r"^bn7_(gamma|beta|moving_mean|moving_var)$", name)
    if m:
        return f"bn7.{_BN_SUFFIX[m.group(1)]}"
    raise ParamsFormatError(f"unexpected MXNet parameter {name!r}")


def convert_params(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in arrays.items():
        key = mxnet_to_torch_name(name)
        if key is not None:
            out[key] = arr
    return out
