"""The binary batch format of internal hops: uint8 patches plus per-item metadata, no JSON floats.

Layout: 4-byte big-endian header length, a JSON header
`{"dtype": "uint8", "shape": [N, 96, 96, 3], "items": [...], "meta": {...}}`, then the N patches
as C-ordered raw bytes. `items` holds one JSON object per *submitted* item (errors included), so a
batch can carry per-item failures while the tensor holds only the items that succeeded.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.contract import INPUT_SHAPE

MEDIA_TYPE = "application/vnd.pcam.batch"
_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_PATCHES = 65536


class WireFormatError(ValueError):
    """The bytes are not a valid batch frame."""


@dataclass(frozen=True)
class Batch:
    images: np.ndarray
    """uint8 (N, 96, 96, 3)."""
    items: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def encode(batch: Batch) -> bytes:
    """Serialize a batch; the image array must follow the model input contract."""
    images = np.ascontiguousarray(batch.images)
    _check_images(images.dtype, images.shape)
    header = json.dumps(
        {"dtype": "uint8", "shape": list(images.shape), "items": batch.items, "meta": batch.meta},
        separators=(",", ":"),
    ).encode()
    return b"".join((_LENGTH.pack(len(header)), header, images.tobytes()))


def decode(body: bytes) -> Batch:
    """Parse a frame, checking every length; raise WireFormatError on any mismatch."""
    if len(body) < _LENGTH.size:
        raise WireFormatError("body shorter than the frame length prefix")
    (header_len,) = _LENGTH.unpack_from(body)
    if header_len > MAX_HEADER_BYTES or _LENGTH.size + header_len > len(body):
        raise WireFormatError(f"header length {header_len} does not fit a body of {len(body)} bytes")
    try:
        header = json.loads(body[_LENGTH.size : _LENGTH.size + header_len])
        shape = tuple(int(d) for d in header["shape"])
        dtype = np.dtype(header["dtype"])
        items = list(header.get("items", []))
        meta = dict(header.get("meta", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise WireFormatError(f"malformed frame header: {exc}") from exc
    _check_images(dtype, shape)
    payload = memoryview(body)[_LENGTH.size + header_len :]
    expected = math.prod(shape)  # Python ints: no overflow from a hostile shape
    if len(payload) != expected:
        raise WireFormatError(f"tensor of shape {list(shape)} needs {expected} bytes, got {len(payload)}")
    images = np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    return Batch(images=images, items=items, meta=meta)


def max_frame_bytes(max_images: int) -> int:
    """The largest frame a batch of `max_images` patches (with generous metadata) can need."""
    return _LENGTH.size + MAX_HEADER_BYTES + max_images * math.prod(INPUT_SHAPE)


def _check_images(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if (
        dtype != np.uint8
        or len(shape) != 4
        or tuple(shape[1:]) != INPUT_SHAPE
        or not 0 <= shape[0] <= MAX_PATCHES
    ):
        raise WireFormatError(
            f"expected uint8 (N, {', '.join(map(str, INPUT_SHAPE))}), got {dtype} {list(shape)}"
        )
