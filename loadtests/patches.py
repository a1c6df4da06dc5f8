"""Upload bodies for the load tests: real H&E patches, unique variants of them, multipart bodies.

Plain functions and classes without Locust, so they are unit-tested in the pytest process.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

PATCHES_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "he" / "patches"
SALT_PIXELS = 4
"""Pixels of the first row that carry a variant's salt: 3 bytes each, 96 bits in all."""
NONCE_BITS = 48
"""Random bits per `UniquePatches` pool: pools of other users, workers and earlier runs (whose
answers may still be in the result cache) never produce the same bytes."""
COUNTER_BITS = SALT_PIXELS * 24 - NONCE_BITS


@dataclass(frozen=True)
class Patch:
    """One upload: a file name for the multipart part and the encoded image."""

    name: str
    data: bytes


def load_sources(directory: Path = PATCHES_DIR) -> list[tuple[str, np.ndarray]]:
    """The patches of `directory` (sorted by name) as (stem, uint8 H x W x 3 RGB)."""
    paths = sorted(directory.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no PNG patches in {directory}")
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def load_files(directory: Path = PATCHES_DIR, count: int | None = None) -> list[Patch]:
    """The first `count` patches of `directory` (sorted by name) as their files' bytes, unchanged."""
    paths = sorted(directory.glob("*.png"))[:count]
    if not paths:
        raise FileNotFoundError(f"no PNG patches in {directory}")
    return [Patch(p.name, p.read_bytes()) for p in paths]


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB array; level 1 costs about 1 ms for a 96x96 patch on this kind of machine."""
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def stamp(pixels: np.ndarray, salt: int) -> np.ndarray:
    """A copy of `pixels` whose first `SALT_PIXELS` pixels of row 0 hold `salt` (little-endian bytes)."""
    if not 0 <= salt < 1 << (24 * SALT_PIXELS):
        raise ValueError(f"salt must fit in {24 * SALT_PIXELS} bits")
    out = pixels.copy()
    raw = np.frombuffer(salt.to_bytes(3 * SALT_PIXELS, "little"), dtype=np.uint8)
    out[0, :SALT_PIXELS] = raw.reshape(SALT_PIXELS, 3)
    return out


class UniquePatches(Iterator[Patch]):
    """Endless variants of the source patches, never the same bytes twice (not even across pools).

    Each variant is a source (round-robin) with its first pixels set from a random per-pool nonce and
    a counter, so every upload hashes differently and the gateway's result cache cannot answer it.
    """

    def __init__(self, sources: Sequence[tuple[str, np.ndarray]], nonce: int | None = None) -> None:
        if not sources:
            raise ValueError("no source patches")
        self.sources = list(sources)
        self.nonce = secrets.randbits(NONCE_BITS) if nonce is None else nonce
        if not 0 <= self.nonce < 1 << NONCE_BITS:
            raise ValueError(f"nonce must fit in {NONCE_BITS} bits")
        self.count = 0

    def __next__(self) -> Patch:
        name, pixels = self._next_variant()
        return Patch(f"{name}.png", encode_png(pixels))

    def _next_variant(self) -> tuple[str, np.ndarray]:
        if self.count >= 1 << COUNTER_BITS:
            raise StopIteration
        stem, pixels = self.sources[self.count % len(self.sources)]
        salt = (self.nonce << COUNTER_BITS) | self.count
        self.count += 1
        return f"{stem}-{salt:024x}", stamp(pixels, salt)

    def take(self, n: int) -> list[Patch]:
        """The next `n` variants."""
        return [next(self) for _ in range(n)]

    def pixels(self, n: int) -> np.ndarray:
        """The next `n` variants as uint8 (n, H, W, 3) pixels (the tensor input), without a PNG round trip."""
        return np.stack([self._next_variant()[1] for _ in range(n)])


def multipart(field: str, patches: Sequence[Patch], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body with one `image/png` part per patch under `field`, and its content type."""
    boundary = boundary or f"pcam-loadtest-{secrets.token_hex(12)}"
    parts = []
    for patch in patches:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{patch.name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts += [head.encode(), patch.data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
