"""The binary batch format of internal hops: uint8 patches plus per-item metadata, no JSON floats.

Layout: 4-byte big-endian header length, a JSON header
`{"dtype": "uint8", "shape": [N, 96, 96, 3], "items": [...], "meta": {"release": ...}}`, then the N
patches as C-ordered raw bytes. `items` holds one typed entry per *submitted* item (errors included):
an `AcceptedItem` with its quality figures, or a `RejectedItem` with its problem, so a batch can
carry per-item failures while the tensor holds only the items that succeeded.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pcam_core.contract import INPUT_SHAPE, PATCH_BYTES
from pcam_core.problems import ItemError
from pcam_core.schemas import Quality

MEDIA_TYPE = "application/vnd.pcam.batch"
UPLOADS_MEDIA_TYPE = "application/vnd.pcam.uploads"
"""Encoded images on the gateway -> preprocess hop: their count, then each one's length and bytes
(4-byte big-endian integers), so neither side builds or parses a multipart body per image."""
_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_PATCHES = 65536


class WireFormatError(ValueError):
    """The bytes are not a valid batch frame."""


class AcceptedItem(Quality):
    """An upload that decoded and was normalized: its row in the tensor comes in submission order."""

    index: int = Field(ge=0, description="Position of the upload in the request.")
    ok: Literal[True] = True
    flags: list[str] = Field(default_factory=list, description="The input review flags that fired.")

    def quality(self) -> Quality:
        """The quality figures the public result carries."""
        return Quality.model_construct(**{name: getattr(self, name) for name in _QUALITY_FIELDS})


class RejectedItem(BaseModel):
    """An upload refused on its own (not decodable, wrong size, ...): no row in the tensor."""

    index: int = Field(ge=0, description="Position of the upload in the request.")
    ok: Literal[False] = False
    error: ItemError


FrameItem = Annotated[AcceptedItem | RejectedItem, Field(discriminator="ok")]
"""Told apart by `ok`: a header's items are validated as the one type they say they are."""
_QUALITY_FIELDS = tuple(Quality.model_fields)


class FrameMeta(BaseModel):
    release: str | None = Field(None, description="The release whose stain reference normalized the batch.")


class _Header(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dtype: str
    shape: tuple[int, ...]
    items: list[FrameItem] = Field(default_factory=list)
    meta: FrameMeta = Field(default_factory=FrameMeta)


@dataclass(frozen=True)
class Batch:
    images: np.ndarray
    """uint8 (N, 96, 96, 3)."""
    items: list[FrameItem] = field(default_factory=list)
    release: str | None = None
    """The release whose stain reference normalized the images."""

    def accepted(self) -> list[AcceptedItem]:
        """The items with a row in `images`, in row order."""
        return [item for item in self.items if isinstance(item, AcceptedItem)]


def encode(batch: Batch) -> bytes:
    """Serialize a batch; the image array must follow the model input contract."""
    images = np.ascontiguousarray(batch.images)
    _check_images(images.dtype, images.shape)
    header = (
        _Header(dtype="uint8", shape=images.shape, items=batch.items, meta=FrameMeta(release=batch.release))
        .model_dump_json()
        .encode()
    )
    return b"".join((_LENGTH.pack(len(header)), header, images.tobytes()))


def decode(body: bytes) -> Batch:
    """Parse a frame, checking every length; raise WireFormatError on any mismatch."""
    if len(body) < _LENGTH.size:
        raise WireFormatError("body shorter than the frame length prefix")
    (header_len,) = _LENGTH.unpack_from(body)
    if header_len > MAX_HEADER_BYTES or _LENGTH.size + header_len > len(body):
        raise WireFormatError(f"header length {header_len} does not fit a body of {len(body)} bytes")
    try:
        header = _Header.model_validate_json(body[_LENGTH.size : _LENGTH.size + header_len])
        shape, dtype = header.shape, np.dtype(header.dtype)
    except (ValidationError, ValueError, TypeError) as exc:
        raise WireFormatError(f"malformed frame header: {exc}") from exc
    _check_images(dtype, shape)
    payload = memoryview(body)[_LENGTH.size + header_len :]
    expected = math.prod(shape)  # Python ints: no overflow from a hostile shape
    if len(payload) != expected:
        raise WireFormatError(f"tensor of shape {list(shape)} needs {expected} bytes, got {len(payload)}")
    images = np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    return Batch(images=images, items=header.items, release=header.meta.release)


def encode_uploads(uploads: Sequence[bytes]) -> bytes:
    """Frame encoded images, in order, for preprocess."""
    parts = [_LENGTH.pack(len(uploads))]
    for upload in uploads:
        parts += (_LENGTH.pack(len(upload)), upload)
    return b"".join(parts)


def decode_uploads(body: bytes) -> list[bytes]:
    """The images of an uploads frame, in order; WireFormatError unless every length adds up exactly."""
    if len(body) < _LENGTH.size:
        raise WireFormatError("body shorter than the upload count")
    (count,) = _LENGTH.unpack_from(body)
    # Each upload takes at least its length prefix: a count the body cannot hold is refused up front.
    if count * _LENGTH.size > len(body) - _LENGTH.size:
        raise WireFormatError(f"{count} uploads cannot fit a body of {len(body)} bytes")
    view, offset, uploads = memoryview(body), _LENGTH.size, []
    for index in range(count):
        if offset + _LENGTH.size > len(body):
            raise WireFormatError(f"upload {index}: the body ends before its length")
        (size,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if offset + size > len(body):
            raise WireFormatError(f"upload {index}: {size} bytes announced, {len(body) - offset} left")
        uploads.append(bytes(view[offset : offset + size]))
        offset += size
    if offset != len(body):
        raise WireFormatError(f"{len(body) - offset} bytes after the last upload")
    return uploads


def max_uploads_frame_bytes(max_uploads: int, max_bytes_each: int) -> int:
    """The largest uploads frame `max_uploads` images of `max_bytes_each` can make."""
    return _LENGTH.size + max_uploads * (_LENGTH.size + max_bytes_each)


def max_frame_bytes(max_images: int) -> int:
    """The largest frame a batch of `max_images` patches (with generous metadata) can need."""
    return _LENGTH.size + MAX_HEADER_BYTES + max_images * PATCH_BYTES


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
