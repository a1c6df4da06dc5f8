"""The hostile input corpus (issue 9, item 2): every input is generated here, sent to the real
session stack, and must get its documented answer, never a 5xx and never a hang; every service stays
alive, and the resident memory of the gateway and preprocess stays bounded.

Two kinds of case:

- `UPLOADS`: bytes where an image is expected. Each goes to `POST /v1/predict` as the multipart field
  `file` and (when an image content type makes sense) as a raw body, inside a `POST /v1/predict/batch`
  between two good patches, and straight to preprocess (`POST /v1/preprocess`, field `files`). A
  refused upload is the problem services/preprocess/decode.py names, the same at every door:
  400 `empty-image`; 415 `unsupported-image` (not a PNG, JPEG, TIFF or BMP Pillow can open: WebP,
  GIF, non-images, broken headers); 422 `corrupt-image` (the header opens, the pixel data does not
  decode), `decompression-bomb` (from the header, or PNG text chunks inflating past their limits),
  `wrong-size`, `multi-frame-image`, `unsupported-mode`, `transparent-image`. In a batch that is the
  entry of that file and the good files still get predictions. Uploads decode.py accepts (a mode it
  converts, a polyglot whose image part is a valid PNG) answer 200 with exactly the pixels of the
  documented conversion: preprocess's normalized tensor equals that of a plain RGB PNG of the
  expected pixels, and the batch gives both the same probabilities.
- `EXCHANGES`: what goes wrong around the image (content types, multipart framing, sizes, slow
  clients, filenames, query parameters), each one request with its expected status, problem type and
  a word of its detail. Filenames are never used by the services: a valid patch with any filename is
  a 200 with unchanged pixels. Four answers come from uvicorn, before the app runs, and are plain
  text 400s rather than problem+json (an invalid Content-Length, Content-Length with chunked
  encoding, a malformed chunk, a request line over 64 KiB); `server_level` marks them.

Slow clients and whole-body caps use a second gateway with small limits and a 2 s request deadline
(the session gateway's are 60 s and 260 MiB); the rest use the session gateway. A slow body gets a
408 `request-timeout` when the deadline passes while the upload is still arriving (docs/gateway.md,
Limits and deadline): within the deadline, long before the body is complete.
Run with `-s` to see the memory figures.
"""

import hashlib
import http.client
import json
import select
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image, PngImagePlugin

from devstack.processes import ManagedProcess, http_ok
from devstack.stack import LocalStack
from pcam_core import wire
from services.common.uploads import max_multipart_bytes
from services.gateway.settings import GatewaySettings
from tests.integration.test_gateway_errors import launch_gateway
from tests.integration.test_predict import PROBLEM, png, unique_png

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("rss_before")]

CLIENT_TIMEOUT_S = 20.0
"""Every request of this module gives up after this long: a hang fails the test, never the suite."""
SERVICES = ("gateway", "preprocess", "ensemble")
DEFAULTS = GatewaySettings()  # the session gateway runs with default settings
MAX_RSS_GROWTH_MIB = 150
BOMB_ROUNDS = 4
SMALL_MAX_IMAGES, SMALL_MAX_IMAGE_BYTES, SMALL_DEADLINE_S = 3, 64 * 1024, 2.0
SMALL_CAP = max_multipart_bytes(SMALL_MAX_IMAGES, SMALL_MAX_IMAGE_BYTES)
SALT = 47_000
"""Salts for unique_png that no other module uses: the good patches here are computed, not cached."""


# Building the inputs


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(
    width: int, height: int, depth: int, color: int, idat: bytes | None, extra: bytes = b""
) -> bytes:
    """A PNG from its parts: IHDR as given (nothing checked), `extra` chunks, IDAT unless None, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + extra + (png_chunk(b"IDAT", idat) if idat is not None else b"")
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def deflate_zeros(size: int, prefix: bytes = b"") -> bytes:
    """zlib of `prefix` then `size` zero bytes, compressed block by block (never `size` in memory)."""
    stream, block, parts = zlib.compressobj(9), bytes(1 << 20), []
    parts.append(stream.compress(prefix))
    while size > 0:
        parts.append(stream.compress(block[: min(size, len(block))]))
        size -= len(block)
    parts.append(stream.flush())
    return b"".join(parts)


def with_chunks(data: bytes, chunks: bytes) -> bytes:
    """A PNG with `chunks` inserted right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return data[:33] + chunks + data[33:]


def patch_tiff_size(data: bytes, width: int, height: int) -> bytes:
    """A little-endian TIFF with ImageWidth/ImageLength rewritten as LONGs."""
    out = bytearray(data)
    (offset,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, offset)
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        tag = struct.unpack_from("<H", out, entry)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", out, entry, tag, 4, 1, width if tag == 256 else height)
    return bytes(out)


def set_tiff_tag(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF with `tag` rewritten as one SHORT."""
    out = bytearray(data)
    (offset,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, offset)
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        if struct.unpack_from("<H", out, entry)[0] == tag:
            struct.pack_into("<HHIHH", out, entry, tag, 3, 1, value, 0)
    return bytes(out)


class Corpus:
    """The real patch every input derives from, and the good patches the batches carry."""

    def __init__(self, patch_paths: list[Path]) -> None:
        self.paths = patch_paths[-8:]
        self.pixels = np.asarray(Image.open(self.paths[0]).convert("RGB")).copy()
        self.pixels[0, 0] = [SALT & 0xFF, 7, 11]  # bytes only this module sends
        self.image = Image.fromarray(self.pixels)
        self._salt = SALT

    def good(self) -> bytes:
        """A good patch never sent before (a fresh computation, not a cache hit)."""
        self._salt += 1
        return unique_png(self.paths[self._salt % len(self.paths)], self._salt)

    @cached_property
    def png(self) -> bytes:
        return encode(self.image, "PNG")

    @cached_property
    def jpeg(self) -> bytes:
        return encode(self.image, "JPEG", quality=95)

    @cached_property
    def tiff(self) -> bytes:
        return encode(self.image, "TIFF")

    @cached_property
    def bmp(self) -> bytes:
        return encode(self.image, "BMP")

    @cached_property
    def rgb16(self) -> np.ndarray:
        """16-bit samples whose high bytes are the patch and whose low bytes are noise."""
        noise = np.random.default_rng(9).integers(0, 256, self.pixels.shape, dtype=np.uint16)
        return (self.pixels.astype(np.uint16) << 8) | noise

    def transparent_rgba(self) -> Image.Image:
        image = self.image.convert("RGBA")
        image.putpixel((3, 4), (1, 2, 3, 0))
        return image


def pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow's own decode and convert("RGB") give: the conversion decode.py documents."""
    return np.asarray(Image.open(BytesIO(data)).convert("RGB"))


def grey(corpus: Corpus) -> np.ndarray:
    luma = np.asarray(corpus.image.convert("L"))
    return np.repeat(luma[..., None], 3, axis=2)


def palette_expanded(corpus: Corpus) -> np.ndarray:
    image = corpus.image.convert("P")
    palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


def multi_chunk_text_bomb(corpus: Corpus) -> bytes:
    """70 zTXt chunks of ~1 KB, each inflating to just under Pillow's 1 MiB per-chunk limit."""
    inflated = zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK - 1), 9)
    chunks = b"".join(png_chunk(b"zTXt", b"k%d\x00\x00" % i + inflated) for i in range(70))
    return with_chunks(corpus.png, chunks)


def zip_of(corpus: Corpus) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("patch.png", corpus.png)
    return buffer.getvalue()


# Uploads: bytes where an image is expected


@dataclass(frozen=True)
class Upload:
    id: str
    build: Callable[[Corpus], bytes]
    status: int
    kind: str = ""
    detail: str = ""
    """A word the problem's detail must contain."""
    raw_type: str | None = "image/png"
    """Content type for the raw-body upload; None: not sent as a raw body."""
    expected: Callable[[Corpus, bytes], np.ndarray] | None = None
    """200 only: the RGB pixels the documented conversion yields."""
    bomb: bool = False
    """Sent again, several times, in the memory test."""


def refused(
    id: str,
    build: Callable[[Corpus], bytes],
    status: int,
    kind: str,
    detail: str,
    raw_type: str | None = "image/png",
    bomb: bool = False,
) -> Upload:
    return Upload(id, build, status, kind, detail, raw_type=raw_type, bomb=bomb)


def accepted(
    id: str,
    build: Callable[[Corpus], bytes],
    expected: Callable[[Corpus, bytes], np.ndarray],
    raw_type: str | None = "image/png",
    bomb: bool = False,
) -> Upload:
    """A 200: decode.py accepts it, and its pixels are `expected`."""
    return Upload(id, build, 200, raw_type=raw_type, expected=expected, bomb=bomb)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


UNDECODABLE = "Not a decodable image"


def unchanged(corpus: Corpus, data: bytes) -> np.ndarray:
    """The patch's own pixels, unchanged."""
    return corpus.pixels


def as_pillow_decodes(corpus: Corpus, data: bytes) -> np.ndarray:
    """Pillow's decode of the upload, converted to RGB."""
    return pillow_rgb(data)


UPLOADS = [
    # Truncated and corrupt files of every accepted format.
    refused("png-truncated-half", lambda c: half(c.png), 422, "corrupt-image", "PNG"),
    refused("png-truncated-in-header", lambda c: c.png[:20], 415, "unsupported-image", UNDECODABLE),
    refused(
        "png-idat-byte-flipped",
        lambda c: flip_byte(c.png, c.png.index(b"IDAT") + 40),
        422,
        "corrupt-image",
        "PNG",
    ),
    refused(
        "png-zero-dimensions", lambda c: png_file(0, 0, 8, 2, None), 415, "unsupported-image", UNDECODABLE
    ),
    refused(
        "jpeg-truncated-half", lambda c: half(c.jpeg), 422, "corrupt-image", "JPEG", raw_type="image/jpeg"
    ),
    refused(
        "jpeg-no-frame-header",
        lambda c: c.jpeg[:2] + b"\xff\xfe\x00\x04ab" + bytes(100),
        415,
        "unsupported-image",
        UNDECODABLE,
        raw_type="image/jpeg",
    ),
    # libjpeg conceals damaged entropy-coded data and Pillow reports nothing: decode.py cannot tell,
    # so this is a 200 with the pixels Pillow decodes (documented here, not an endorsement).
    accepted(
        "jpeg-garbage-scan-data",
        lambda c: c.jpeg[:-200] + bytes(range(198)) + b"\xff\xd9",
        as_pillow_decodes,
        raw_type="image/jpeg",
    ),
    refused(
        "tiff-truncated-half", lambda c: half(c.tiff), 422, "corrupt-image", "TIFF", raw_type="image/tiff"
    ),
    refused(
        "tiff-ifd-offset-out-of-file",
        lambda c: c.tiff[:4] + struct.pack("<I", 0xFFFFFF00) + c.tiff[8:],
        415,
        "unsupported-image",
        UNDECODABLE,
        raw_type="image/tiff",
    ),
    refused(
        "tiff-unknown-compression",
        lambda c: set_tiff_tag(c.tiff, 259, 60_000),
        415,
        "unsupported-image",
        UNDECODABLE,
        raw_type="image/tiff",
    ),
    refused("bmp-truncated-half", lambda c: half(c.bmp), 422, "corrupt-image", "BMP", raw_type="image/bmp"),
    refused(
        "bmp-bad-info-header-size",
        lambda c: c.bmp[:14] + struct.pack("<I", 7) + c.bmp[18:],
        415,
        "unsupported-image",
        UNDECODABLE,
        raw_type="image/bmp",
    ),
    # Formats Pillow writes but decode.py does not accept.
    refused("webp", lambda c: encode(c.image, "WEBP"), 415, "unsupported-image", UNDECODABLE, raw_type=None),
    refused("gif", lambda c: encode(c.image, "GIF"), 415, "unsupported-image", UNDECODABLE, raw_type=None),
    # Decompression bombs and huge dimensions: refused from the header, before any pixel is decoded.
    refused(
        "png-bomb-30000x30000-zeros",
        lambda c: png_file(30_000, 30_000, 1, 0, deflate_zeros(30_000 * 3751)),  # 107 KiB
        422,
        "decompression-bomb",
        "900000000 pixels",
        bomb=True,
    ),
    refused(
        "png-huge-ihdr-no-data",
        lambda c: png_file(30_000, 30_000, 8, 2, None),
        422,
        "decompression-bomb",
        "900000000 pixels",
        bomb=True,
    ),
    refused(
        "png-ihdr-2**31-1-square",
        lambda c: png_file(2**31 - 1, 2**31 - 1, 8, 2, None),
        422,
        "decompression-bomb",
        "exceeds limit",
        bomb=True,
    ),
    refused(
        "jpeg-frame-header-65000x65000",
        lambda c: (lambda i: c.jpeg[: i + 5] + struct.pack(">HH", 65000, 65000) + c.jpeg[i + 9 :])(
            c.jpeg.index(b"\xff\xc0")
        ),
        422,
        "decompression-bomb",
        "exceeds limit",
        raw_type="image/jpeg",
        bomb=True,
    ),
    refused(
        "tiff-100000x100000",
        lambda c: patch_tiff_size(encode(Image.new("L", (1, 1)), "TIFF"), 100_000, 100_000),
        422,
        "decompression-bomb",
        "exceeds limit",
        raw_type="image/tiff",
        bomb=True,
    ),
    refused(
        "bmp-100000x100000",
        lambda c: (lambda b: b[:18] + struct.pack("<ii", 100_000, 100_000) + b[26:])(
            encode(Image.new("RGB", (1, 1)), "BMP")
        ),
        422,
        "decompression-bomb",
        "exceeds limit",
        raw_type="image/bmp",
        bomb=True,
    ),
    # Over Pillow's warning threshold (89 Mpx) but under its error threshold: size check refuses it.
    refused(
        "png-12000x12000-1bit",
        lambda c: png_file(12_000, 12_000, 1, 0, deflate_zeros(12_000 * 1501)),
        422,
        "wrong-size",
        "12000x12000",
        bomb=True,
    ),
    refused(
        "png-4000x4000",
        lambda c: encode(Image.new("RGB", (4000, 4000)), "PNG"),
        422,
        "wrong-size",
        "4000x4000",
        bomb=True,
    ),
    refused(
        "png-ztxt-inflating-to-50mib",
        lambda c: with_chunks(c.png, png_chunk(b"zTXt", b"Comment\x00\x00" + deflate_zeros(50 << 20))),
        422,
        "decompression-bomb",
        "PNG text",
        bomb=True,
    ),
    refused(
        "png-iccp-inflating-to-50mib",
        lambda c: with_chunks(c.png, png_chunk(b"iCCP", b"icc\x00\x00" + deflate_zeros(50 << 20))),
        422,
        "decompression-bomb",
        "PNG text",
        bomb=True,
    ),
    refused(
        "png-70-ztxt-chunks-of-1mib",
        multi_chunk_text_bomb,
        422,
        "decompression-bomb",
        "PNG text",
        bomb=True,
    ),
    # A 96x96 PNG whose IDAT stream goes on for 200 MiB of zeros after the pixels: Pillow stops at
    # the last row, so this decodes (200, pixels unchanged) without inflating the rest.
    accepted(
        "png-idat-inflating-past-the-pixels",
        lambda c: png_file(
            96, 96, 8, 2, deflate_zeros(200 << 20, b"".join(b"\x00" + row.tobytes() for row in c.pixels))
        ),
        unchanged,
        bomb=True,
    ),
    # Sizes.
    refused("empty", lambda c: b"", 400, "empty-image", "no bytes"),
    refused("png-1x1", lambda c: encode(c.image.crop((0, 0, 1, 1)), "PNG"), 422, "wrong-size", "1x1"),
    refused("png-95x96", lambda c: encode(c.image.crop((0, 0, 95, 96)), "PNG"), 422, "wrong-size", "95x96"),
    refused(
        "png-96x97",
        lambda c: encode(Image.new("RGB", (96, 97)), "PNG"),
        422,
        "wrong-size",
        "96x97",
    ),
    # Modes and bit depths.
    refused("png-1-bit", lambda c: encode(c.image.convert("1"), "PNG"), 422, "unsupported-mode", "mode 1"),
    accepted("png-L", lambda c: encode(c.image.convert("L"), "PNG"), lambda c, d: grey(c)),
    accepted("png-LA-opaque", lambda c: encode(c.image.convert("LA"), "PNG"), lambda c, d: grey(c)),
    accepted(
        "png-P-palette", lambda c: encode(c.image.convert("P"), "PNG"), lambda c, d: palette_expanded(c)
    ),
    accepted("png-RGBA-opaque", lambda c: encode(c.image.convert("RGBA"), "PNG"), unchanged),
    refused(
        "png-RGBA-one-transparent-pixel",
        lambda c: encode(c.transparent_rgba(), "PNG"),
        422,
        "transparent-image",
        "1 of 9216",
    ),
    accepted(
        "jpeg-CMYK",
        lambda c: encode(c.image.convert("CMYK"), "JPEG", quality=95),
        as_pillow_decodes,
        raw_type="image/jpeg",
    ),
    refused(
        "png-I;16-grey",
        lambda c: encode(Image.fromarray(c.rgb16[..., 0]), "PNG"),
        422,
        "unsupported-mode",
        "mode I;16",
    ),
    # 16-bit RGB: Pillow reads it as 8-bit RGB keeping each sample's high byte (its documented
    # behaviour for 16-bit RGB PNGs; 16-bit grey, above, is refused instead).
    accepted(
        "png-16-bit-RGB",
        lambda c: png_file(
            96, 96, 16, 2, zlib.compress(b"".join(b"\x00" + row.astype(">u2").tobytes() for row in c.rgb16))
        ),
        lambda c, d: (c.rgb16 >> 8).astype(np.uint8),
    ),
    refused(
        "tiff-F-float",
        lambda c: encode(Image.fromarray(c.pixels[..., 0].astype(np.float32)), "TIFF"),
        422,
        "unsupported-mode",
        "mode F",
        raw_type="image/tiff",
    ),
    refused(
        "tiff-I-int32",
        lambda c: encode(Image.fromarray(c.pixels[..., 0].astype(np.int32)), "TIFF"),
        422,
        "unsupported-mode",
        "mode I",
        raw_type="image/tiff",
    ),
    # Multi-frame.
    refused(
        "apng-2-frames",
        lambda c: encode(c.image, "PNG", save_all=True, append_images=[c.image.rotate(90)]),
        422,
        "multi-frame-image",
        "2 frames",
    ),
    refused(
        "gif-animated",
        lambda c: encode(c.image, "GIF", save_all=True, append_images=[c.image.rotate(90)]),
        415,
        "unsupported-image",
        UNDECODABLE,
        raw_type=None,
    ),
    refused(
        "tiff-2-pages",
        lambda c: encode(c.image, "TIFF", save_all=True, append_images=[c.image.rotate(90)]),
        422,
        "multi-frame-image",
        "2 frames",
        raw_type="image/tiff",
    ),
    # Polyglots: a valid PNG is read up to IEND and what follows is ignored (200, pixels unchanged).
    accepted("png-with-zip-appended", lambda c: c.png + zip_of(c), unchanged),
    accepted(
        "png-with-html-appended", lambda c: c.png + b"<html><script>alert(1)</script></html>", unchanged
    ),
    refused(
        "gif-js-polyglot",
        lambda c: b"GIF89a/*\x60\x00\x60\x00\x00\x00\x00;*/=1;alert(document.domain);",
        415,
        "unsupported-image",
        UNDECODABLE,
    ),
    # Not images at all.
    refused("text", lambda c: b"hello, this is not a patch\n", 415, "unsupported-image", UNDECODABLE),
    refused("json", lambda c: b'{"image": "aGVsbG8=", "label": 1}', 415, "unsupported-image", UNDECODABLE),
    refused(
        "elf-header", lambda c: b"\x7fELF\x02\x01\x01" + bytes(57), 415, "unsupported-image", UNDECODABLE
    ),
    refused("zip-holding-a-png", zip_of, 415, "unsupported-image", UNDECODABLE),
    refused(
        "svg-with-script",
        lambda c: (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96"><script>alert(1)</script></svg>'
        ),
        415,
        "unsupported-image",
        UNDECODABLE,
    ),
    refused(
        "pdf-header",
        lambda c: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        415,
        "unsupported-image",
        UNDECODABLE,
    ),
    refused(
        "gzip-of-a-png",
        lambda c: zlib.compress(c.png),
        415,
        "unsupported-image",
        UNDECODABLE,
    ),
]


# Exchanges: everything around the image


@dataclass
class Reply:
    """An HTTP answer, from httpx or from a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float = 0.0
    notes: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, response: httpx.Response) -> "Reply":
        return cls(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
            response.elapsed.total_seconds(),
        )

    def json(self) -> dict:
        return json.loads(self.body)


def raw_exchange(
    url: str,
    head: bytes,
    body: bytes = b"",
    step: int = 0,
    interval_s: float = 0.0,
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> Reply:
    """Send `head`, then `body` (whole, or `step` bytes every `interval_s` until the server answers),
    and read the answer; the socket timeout bounds every wait."""
    parts = urlsplit(url)
    start = time.monotonic()
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head)
            if not step:
                sock.sendall(body)
                sent = len(body)
            while step and sent < len(body) and time.monotonic() - start < timeout_s:
                readable, _, _ = select.select([sock], [], [], interval_s)
                if readable:
                    break  # the server answered (or closed) before the body was complete
                sock.sendall(body[sent : sent + step])
                sent += step
        except OSError:
            pass  # the server stopped reading: its answer, if any, is still there to read
        response = http.client.HTTPResponse(sock)
        response.begin()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    return Reply(response.status, headers, data, time.monotonic() - start, {"sent": sent})


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def multipart(parts: list[tuple[str, bytes]], boundary: str = "hostile", close: bool = True) -> bytes:
    """A multipart body from (part header block, data) pairs, closed with `--boundary--` if `close`."""
    body = b"".join(
        f"--{boundary}\r\n{headers}\r\n\r\n".encode("latin-1") + data + b"\r\n" for headers, data in parts
    )
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def file_part(data: bytes, name: str = "file", filename: str = "p.png", extra: str = "") -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"; filename="{filename}"{extra}', data


MULTIPART = "multipart/form-data; boundary=hostile"


@dataclass
class Context:
    gateway: httpx.Client
    small: httpx.Client
    corpus: Corpus

    def post(self, path: str, **kwargs: Any) -> Reply:
        return Reply.of(self.gateway.post(path, **kwargs))


@dataclass(frozen=True)
class Exchange:
    id: str
    send: Callable[[Context], Reply]
    status: int
    kind: str = ""
    detail: str = ""
    expected: Callable[[Corpus], np.ndarray] | None = None
    """200 only: the pixels the answer was computed from (checked through preprocess)."""
    upload: Callable[[Corpus], bytes] | None = None
    """200 only: the image bytes that were sent (the answer's sha256 must be theirs)."""
    server_level: bool = False
    """Answered by uvicorn before the app runs: a plain-text 400, not problem+json (see module doc)."""
    within_s: float | None = None
    """The answer must come at most this long after the request started."""


def filename_case(id: str, filename: str) -> Exchange:
    """A valid patch under a hostile filename, in a hand-made part (httpx would escape it): 200."""

    def send(ctx: Context) -> Reply:
        disposition = f'form-data; name="file"; filename="{filename}"'.encode()
        body = (
            b"--hostile\r\nContent-Disposition: "
            + disposition
            + b"\r\nContent-Type: image/png\r\n\r\n"
            + ctx.corpus.png
            + b"\r\n--hostile--\r\n"
        )
        return ctx.post("/v1/predict", content=body, headers={"content-type": MULTIPART})

    return Exchange(f"filename-{id}", send, 200, expected=lambda c: c.pixels, upload=lambda c: c.png)


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def slow_raw_body(ctx: Context) -> Reply:
    body = ctx.corpus.png
    head = request_head("/v1/predict", {"Content-Type": "image/png", "Content-Length": str(len(body))})
    return raw_exchange(str(ctx.small.base_url), head, body, step=4, interval_s=0.25)


def slow_multipart_batch(ctx: Context) -> Reply:
    body = multipart([file_part(ctx.corpus.png, "files")])
    head = request_head("/v1/predict/batch", {"Content-Type": MULTIPART, "Content-Length": str(len(body))})
    return raw_exchange(str(ctx.small.base_url), head, body, step=4, interval_s=0.25)


def over_cap(ctx: Context) -> bytes:
    return multipart([file_part(bytes(SMALL_CAP), "files")])


def server_level(id: str, head: Callable[[Context], bytes], body: bytes = b"") -> Exchange:
    def send(ctx: Context) -> Reply:
        return raw_exchange(str(ctx.gateway.base_url), head(ctx), body, timeout_s=CLIENT_TIMEOUT_S)

    return Exchange(id, send, 400, detail="Invalid HTTP request", server_level=True)


LIMIT = DEFAULTS.max_image_bytes
OVERSIZED = b"\x89PNG\r\n\x1a\n" + bytes(LIMIT)

EXCHANGES = [
    # Content types.
    Exchange(
        "json-body",
        lambda ctx: ctx.post("/v1/predict", json={"file": "aGVsbG8="}),
        415,
        "unsupported-media-type",
        "application/json",
    ),
    Exchange(
        "urlencoded-form",
        lambda ctx: ctx.post("/v1/predict", data={"file": '{"image": 1}'}),
        415,
        "unsupported-media-type",
        "x-www-form-urlencoded",
    ),
    Exchange(
        "text-plain-holding-a-png",
        lambda ctx: ctx.post("/v1/predict", content=ctx.corpus.png, headers={"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
        "text/plain",
    ),
    Exchange(
        "no-content-type",
        lambda ctx: ctx.post("/v1/predict", content=ctx.corpus.png, headers={"content-type": ""}),
        415,
        "unsupported-media-type",
        "no content type",
    ),
    Exchange(
        "image-gif-content-type",
        lambda ctx: ctx.post("/v1/predict", content=ctx.corpus.png, headers={"content-type": "image/gif"}),
        415,
        "unsupported-media-type",
        "image/gif",
    ),
    Exchange(
        "multipart-mixed",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png)]),
            headers={"content-type": "multipart/mixed; boundary=hostile"},
        ),
        415,
        "unsupported-media-type",
        "multipart/mixed",
    ),
    # The declared image type only selects the raw-body upload; the format comes from the bytes.
    Exchange(
        "image-png-content-type-holding-a-jpeg",
        lambda ctx: ctx.post("/v1/predict", content=ctx.corpus.jpeg, headers={"content-type": "image/png"}),
        200,
        expected=lambda c: pillow_rgb(c.jpeg),
        upload=lambda c: c.jpeg,
    ),
    # Part content types are not used either.
    Exchange(
        "multipart-part-declared-text-html",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png, extra="\r\nContent-Type: text/html")]),
            headers={"content-type": MULTIPART},
        ),
        200,
        expected=lambda c: c.pixels,
        upload=lambda c: c.png,
    ),
    # Content-Encoding is not decoded: a gzip body is its compressed bytes, not an image.
    Exchange(
        "gzip-content-encoding",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=zlib.compress(ctx.corpus.png),
            headers={"content-type": "image/png", "content-encoding": "gzip"},
        ),
        415,
        "unsupported-image",
        UNDECODABLE,
    ),
    # Malformed multipart.
    Exchange(
        "multipart-without-boundary",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png)]),
            headers={"content-type": "multipart/form-data"},
        ),
        400,
        "malformed-multipart",
        "boundary",
    ),
    Exchange(
        "multipart-body-cut-inside-the-part",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png)], close=False)[:-200],
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        "closing boundary",
    ),
    Exchange(
        "multipart-missing-closing-boundary",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png)], close=False) + b"--hostile\r\n",
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        "closing boundary",
    ),
    Exchange(
        "multipart-batch-missing-closing-boundary",
        lambda ctx: ctx.post(
            "/v1/predict/batch",
            content=multipart([file_part(ctx.corpus.good(), "files")], close=False),
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        "closing boundary",
    ),
    Exchange(
        "multipart-garbage-before-boundary",
        lambda ctx: ctx.post(
            "/v1/predict", content=b"garbage\r\n--nope\r\n", headers={"content-type": MULTIPART}
        ),
        400,
        "malformed-multipart",
        "boundary",
    ),
    Exchange(
        "multipart-200-kib-part-header",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([file_part(ctx.corpus.png, extra="\r\nX-Junk: " + "a" * 200_000)]),
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        "header size",
    ),
    Exchange(
        "multipart-500-part-headers",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart(
                [file_part(ctx.corpus.png, extra="".join(f"\r\nX-{i}: v" for i in range(500)))]
            ),
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        "header count",
    ),
    Exchange(
        "multipart-part-without-name",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([("Content-Disposition: form-data", ctx.corpus.png)]),
            headers={"content-type": MULTIPART},
        ),
        400,
        "malformed-multipart",
        '"name"',
    ),
    Exchange(
        "batch-257-tiny-parts",
        lambda ctx: ctx.post(
            "/v1/predict/batch", files=[("files", (f"{i}.png", b"x")) for i in range(DEFAULTS.max_images + 1)]
        ),
        413,
        "too-many-files",
        f"At most {DEFAULTS.max_images}",
    ),
    Exchange(
        "batch-300-text-fields",
        lambda ctx: ctx.post(
            "/v1/predict/batch",
            content=multipart([(f'Content-Disposition: form-data; name="f{i}"', b"x") for i in range(300)]),
            headers={"content-type": MULTIPART},
        ),
        413,
        "too-many-files",
        f"At most {DEFAULTS.max_images}",
    ),
    Exchange(
        "predict-two-files",
        lambda ctx: ctx.post(
            "/v1/predict", files=[("file", ("a.png", ctx.corpus.png)), ("file", ("b.png", b"x"))]
        ),
        413,
        "too-many-files",
        "At most 1",
    ),
    Exchange(
        "wrong-field-name",
        lambda ctx: ctx.post("/v1/predict", files={"image": ("p.png", ctx.corpus.png)}),
        422,
        "missing-file",
        "'file'",
    ),
    Exchange(
        "multipart-field-holding-json",
        lambda ctx: ctx.post(
            "/v1/predict",
            content=multipart([('Content-Disposition: form-data; name="file"', b'{"image": "aGVsbG8="}')]),
            headers={"content-type": MULTIPART},
        ),
        422,
        "not-a-file",
        "text field",
    ),
    Exchange(
        "batch-field-holding-json",
        lambda ctx: ctx.post(
            "/v1/predict/batch",
            content=multipart(
                [
                    file_part(ctx.corpus.good(), "files"),
                    ('Content-Disposition: form-data; name="files"', b"{}"),
                ]
            ),
            headers={"content-type": MULTIPART},
        ),
        422,
        "not-a-file",
        "Part 1",
    ),
    # Oversized bodies.
    Exchange(
        "image-over-the-limit-multipart",
        lambda ctx: ctx.post("/v1/predict", files={"file": ("big.png", OVERSIZED)}),
        413,
        "image-too-large",
        str(LIMIT),
    ),
    Exchange(
        "image-over-the-limit-raw-with-content-length",
        lambda ctx: ctx.post("/v1/predict", content=OVERSIZED, headers={"content-type": "image/png"}),
        413,
        "payload-too-large",
        str(LIMIT),
    ),
    Exchange(
        "image-over-the-limit-raw-chunked",
        lambda ctx: ctx.post(
            "/v1/predict", content=chunked(OVERSIZED), headers={"content-type": "image/png"}
        ),
        413,
        "payload-too-large",
        str(LIMIT),
    ),
    Exchange(
        "image-over-the-limit-in-a-batch",
        lambda ctx: ctx.post(
            "/v1/predict/batch",
            files=[("files", ("a.png", ctx.corpus.good())), ("files", ("b.png", OVERSIZED))],
        ),
        413,
        "image-too-large",
        "File 1 of 'files'",
    ),
    Exchange(
        "body-over-the-cap-with-content-length",
        lambda ctx: Reply.of(
            ctx.small.post("/v1/predict/batch", content=over_cap(ctx), headers={"content-type": MULTIPART})
        ),
        413,
        "payload-too-large",
        str(SMALL_CAP),
    ),
    Exchange(
        "body-over-the-cap-chunked",
        lambda ctx: Reply.of(
            ctx.small.post(
                "/v1/predict/batch", content=chunked(over_cap(ctx)), headers={"content-type": MULTIPART}
            )
        ),
        413,
        "payload-too-large",
        str(SMALL_CAP),
    ),
    # Slow bodies: 4 bytes every 0.25 s; the deadline (2 s) answers long before the body is complete.
    Exchange("slow-raw-body", slow_raw_body, 408, "request-timeout", "2 s", within_s=SMALL_DEADLINE_S + 3),
    Exchange(
        "slow-multipart-batch",
        slow_multipart_batch,
        408,
        "request-timeout",
        "2 s",
        within_s=SMALL_DEADLINE_S + 3,
    ),
    # Refused by uvicorn before the app runs.
    server_level(
        "content-length-not-a-number",
        lambda ctx: request_head("/v1/predict", {"Content-Type": "image/png", "Content-Length": "12abc"}),
        b"12abc",
    ),
    server_level(
        "content-length-and-chunked",
        lambda ctx: request_head(
            "/v1/predict",
            {"Content-Type": "image/png", "Content-Length": "5", "Transfer-Encoding": "chunked"},
        ),
        b"0\r\n\r\n",
    ),
    server_level(
        "malformed-chunk-size",
        lambda ctx: request_head(
            "/v1/predict", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}
        ),
        b"zz\r\nabc\r\n0\r\n\r\n",
    ),
    server_level(
        "query-string-of-100-kib",
        lambda ctx: request_head("/v1/predict?junk=" + "x" * 100_000, {"Content-Length": "0"}),
    ),
    # Query parameters.
    Exchange(
        "unknown-operating-point",
        lambda ctx: ctx.post(
            "/v1/predict", params={"operating_point": "yolo"}, files={"file": ("p.png", ctx.corpus.png)}
        ),
        422,
        "unknown-operating-point",
        "'yolo'",
    ),
    Exchange(
        "operating-point-of-10-kib-with-nul-and-rtl",
        lambda ctx: ctx.post(
            "/v1/predict",
            params={"operating_point": "\u202ebalanced\x00" + "x" * 10_000},
            files={"file": ("p.png", ctx.corpus.png)},
        ),
        422,
        "unknown-operating-point",
        "expected one of",
    ),
    Exchange(
        "tta-maybe",
        lambda ctx: ctx.post(
            "/v1/predict", params={"tta": "maybe"}, files={"file": ("p.png", ctx.corpus.png)}
        ),
        422,
        "invalid-request",
        "tta",
    ),
    Exchange(
        "explain-2-in-a-batch",
        lambda ctx: ctx.post(
            "/v1/predict/batch", params={"explain": "2"}, files=[("files", ("p.png", ctx.corpus.png))]
        ),
        422,
        "invalid-request",
        "explain",
    ),
    Exchange(
        "cache-perhaps",
        lambda ctx: ctx.post("/v1/predict", params={"cache": "perhaps"}, content=b"never read"),
        422,
        "invalid-request",
        "cache",
    ),
    # Unknown parameters are ignored, however many: a valid patch is a 200 (60 KiB of query string).
    Exchange(
        "3000-unknown-query-parameters",
        lambda ctx: ctx.post(
            "/v1/predict?" + "&".join(f"p{i}=vvvvvvvvvvvvvv" for i in range(3000)),
            files={"file": ("p.png", ctx.corpus.png)},
        ),
        200,
        expected=lambda c: c.pixels,
        upload=lambda c: c.png,
    ),
    Exchange(
        "get-on-predict",
        lambda ctx: Reply.of(ctx.gateway.get("/v1/predict")),
        405,
        "method-not-allowed",
        "Method Not Allowed",
    ),
    # Filenames are never used: any of them is a 200 with the patch's pixels.
    filename_case("dot-dot-slash-etc-passwd", "../../etc/passwd"),
    filename_case("backslash-traversal", "..\\..\\x.png"),
    filename_case("nul-byte", "a\x00b.png"),
    filename_case("300-characters", "x" * 296 + ".png"),
    filename_case("rtl-override", "patch\u202egnp.exe"),
    filename_case("quote-and-field-injection", 'a.png\\"; name=\\"files'),
    filename_case("absolute-dev-zero", "/dev/zero"),
]


# Fixtures and checks


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def measured(stack: LocalStack) -> dict[str, float]:
    return {name: rss_mib(stack.processes[name].popen.pid) for name in ("gateway", "preprocess")}


@pytest.fixture(scope="module")
def corpus(patch_paths: list[Path]) -> Corpus:
    return Corpus(patch_paths)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as session:
        yield session


@pytest.fixture(scope="module")
def hostile_gateway(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.config.url("gateway"), timeout=CLIENT_TIMEOUT_S) as session:
        yield session


@pytest.fixture(scope="module")
def rss_before(stack: LocalStack, hostile_gateway: httpx.Client, corpus: Corpus) -> dict[str, float]:
    """RSS of gateway and preprocess before the corpus, after a warm-up (first requests load code)."""
    for _ in range(3):
        assert (
            hostile_gateway.post("/v1/predict", files={"file": ("p.png", corpus.good())}).status_code == 200
        )
    files = [("files", (f"{i}.png", corpus.good())) for i in range(4)]
    assert hostile_gateway.post("/v1/predict/batch", files=files).status_code == 200
    return measured(stack)


@pytest.fixture(scope="module")
def small_gateway(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway with the session's dependencies, small upload limits and a 2 s request deadline."""
    process: ManagedProcess
    process, url = launch_gateway(
        stack,
        tmp_path_factory.mktemp("hostile-gateway"),
        "gateway-hostile",
        stack.config.url("ensemble"),
        MAX_IMAGES=str(SMALL_MAX_IMAGES),
        MAX_IMAGE_BYTES=str(SMALL_MAX_IMAGE_BYTES),
        REQUEST_TIMEOUT_S=str(SMALL_DEADLINE_S),
    )
    try:
        process.wait_until(http_ok(f"{url}/readyz"), 60, "ready")
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as session:
            yield session
        assert process.alive(), process.log_tail()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def context(hostile_gateway: httpx.Client, small_gateway: httpx.Client, corpus: Corpus) -> Context:
    return Context(hostile_gateway, small_gateway, corpus)


def assert_problem(reply: Reply, status: int, kind: str, detail: str) -> dict:
    """A problem+json of `status` and `kind` whose detail contains `detail`, with the request id."""
    assert reply.status == status, reply.body[:500]
    assert reply.headers["content-type"] == PROBLEM, reply.headers
    body = reply.json()
    assert body["status"] == status and body["type"].endswith(f"/{kind}"), body
    assert body["title"] and detail in body["detail"], body
    assert body["request_id"] == reply.headers["x-request-id"]
    return body


def assert_entry(entry: dict, status: int, kind: str, detail: str) -> None:
    assert entry["status"] == status and entry["type"].endswith(f"/{kind}"), entry
    assert detail in entry["detail"], entry


def assert_prediction(result: dict, data: bytes) -> None:
    assert 0.0 <= result["probability"] <= 1.0, result
    assert result["sha256"] == hashlib.sha256(data).hexdigest()  # the upload reached the model unaltered


def assert_alive(stack: LocalStack, client: httpx.Client) -> None:
    """Every service process still runs and answers /healthz."""
    for name in SERVICES:
        process = stack.processes[name]
        assert process.alive(), f"{name} died:\n{process.log_tail()}"
        assert client.get(f"{stack.config.url(name)}/healthz").status_code == 200, name


def preprocess_direct(stack: LocalStack, client: httpx.Client, uploads: list[bytes]) -> wire.Batch:
    response = client.post(
        f"{stack.config.url('preprocess')}/v1/preprocess",
        files=[("files", (f"{i}.bin", data)) for i, data in enumerate(uploads)],
    )
    assert response.status_code == 200, response.text
    return wire.decode(response.content)


def assert_same_pixels_as(stack: LocalStack, client: httpx.Client, data: bytes, pixels: np.ndarray) -> None:
    """Preprocess turns `data` into exactly the tensor it makes of a plain RGB PNG of `pixels`."""
    batch = preprocess_direct(stack, client, [data, png(pixels)])
    assert [item.ok for item in batch.items] == [True, True], batch.items
    np.testing.assert_array_equal(batch.images[0], batch.images[1])


# The corpus


@pytest.mark.parametrize("case", UPLOADS, ids=[case.id for case in UPLOADS])
def test_upload(
    case: Upload, hostile_gateway: httpx.Client, client: httpx.Client, stack: LocalStack, corpus: Corpus
) -> None:
    data = case.build(corpus)
    assert len(data) <= DEFAULTS.max_image_bytes, "an upload case must fit the size limit"
    answers = [Reply.of(hostile_gateway.post("/v1/predict", files={"file": (f"{case.id}.bin", data)}))]
    if case.raw_type:
        answers.append(
            Reply.of(
                hostile_gateway.post("/v1/predict", content=data, headers={"content-type": case.raw_type})
            )
        )
    if case.expected is None:
        for reply in answers:
            assert_problem(reply, case.status, case.kind, case.detail)
        neighbours = [corpus.good(), corpus.good()]
    else:
        expected = case.expected(corpus, data)
        for reply in answers:
            assert reply.status == 200, reply.body[:500]
            assert_prediction(reply.json(), data)
        neighbours = [corpus.good(), png(expected)]  # the second: the documented conversion, as RGB
    batch = hostile_gateway.post(
        "/v1/predict/batch",
        files=[
            ("files", ("before.png", neighbours[0])),
            ("files", (case.id, data)),
            ("files", ("after", neighbours[1])),
        ],
    )
    assert batch.status_code == 200, batch.text
    before, entry, after = batch.json()["results"]
    assert_prediction(before, neighbours[0])
    assert_prediction(after, neighbours[1])
    if case.expected is None:
        assert_entry(entry, case.status, case.kind, case.detail)
        (item,) = preprocess_direct(stack, client, [data]).items
        assert not item.ok
        assert_entry(item.error.model_dump(), case.status, case.kind, case.detail)
    else:
        assert_prediction(entry, data)
        assert entry["probability"] == pytest.approx(after["probability"], abs=1e-6)
        assert entry["members"] == pytest.approx(after["members"], abs=1e-6)
        assert_same_pixels_as(stack, client, data, expected)
    assert_alive(stack, client)


@pytest.mark.parametrize("case", EXCHANGES, ids=[case.id for case in EXCHANGES])
def test_exchange(case: Exchange, context: Context, client: httpx.Client, stack: LocalStack) -> None:
    reply = case.send(context)
    assert reply.status < 500 or case.status >= 500, reply.body[:500]
    if case.server_level:
        assert reply.status == case.status, reply.body
        assert reply.headers["content-type"].startswith("text/plain") and case.detail.encode() in reply.body
    elif case.status == 200:
        assert reply.status == 200, reply.body[:500]
        assert case.expected is not None and case.upload is not None
        assert_prediction(reply.json(), case.upload(context.corpus))
        assert_same_pixels_as(stack, client, case.upload(context.corpus), case.expected(context.corpus))
    else:
        assert_problem(reply, case.status, case.kind, case.detail)
    if case.within_s is not None:
        assert reply.elapsed_s <= case.within_s, reply
        assert reply.notes["sent"] < len(context.corpus.png), "the server waited for the whole slow body"
    assert_alive(stack, client)


def test_the_corpus_has_at_least_40_cases() -> None:
    ids = [case.id for case in UPLOADS] + [case.id for case in EXCHANGES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


# After the corpus: memory, health, a real prediction


def test_memory_growth_is_bounded_after_the_bombs_again(
    stack: LocalStack, hostile_gateway: httpx.Client, corpus: Corpus, rss_before: dict[str, float]
) -> None:
    bombs = [(case, case.build(corpus)) for case in UPLOADS if case.bomb]

    def send(job: tuple[Upload, bytes]) -> None:
        case, data = job
        single = hostile_gateway.post("/v1/predict", files={"file": (case.id, data)})
        if case.expected is None:
            assert single.status_code == case.status, single.text
        else:
            assert single.status_code == 200, single.text

    # Several rounds, 4 at a time (preprocess decodes in threads), and every bomb in one batch too.
    with ThreadPoolExecutor(4) as pool:
        for _ in range(BOMB_ROUNDS):
            list(pool.map(send, bombs))
            batch = hostile_gateway.post("/v1/predict/batch", files=[("files", (c.id, d)) for c, d in bombs])
            assert batch.status_code == 200, batch.text
    after = measured(stack)
    growth = {name: after[name] - rss_before[name] for name in after}
    report = ", ".join(
        f"{name} {rss_before[name]:.1f} -> {after[name]:.1f} MiB ({growth[name]:+.1f})" for name in after
    )
    print(f"\nRSS over the hostile corpus and {BOMB_ROUNDS} more rounds of {len(bombs)} bombs: {report}")
    assert all(value < MAX_RSS_GROWTH_MIB for value in growth.values()), report


def test_every_service_is_healthy_and_predicts_after_the_corpus(
    stack: LocalStack, hostile_gateway: httpx.Client, client: httpx.Client, corpus: Corpus
) -> None:
    assert_alive(stack, client)
    for name in SERVICES:
        assert client.get(f"{stack.config.url(name)}/readyz").status_code == 200, name
    data = corpus.good()
    response = hostile_gateway.post("/v1/predict", files={"file": ("p.png", data)})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), data)
    assert response.json()["cached"] is False
