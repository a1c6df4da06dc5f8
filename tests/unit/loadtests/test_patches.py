"""Upload bodies of the load tests: unique variants of real patches, the hot set, multipart bodies."""

import hashlib
from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from loadtests.patches import (
    NONCE_BITS,
    SALT_PIXELS,
    Patch,
    UniquePatches,
    load_files,
    load_sources,
    multipart,
    stamp,
)


@pytest.fixture(scope="module")
def sources() -> list[tuple[str, np.ndarray]]:
    return load_sources()


def decode(data: bytes) -> np.ndarray:
    image = Image.open(BytesIO(data))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (96, 96)
    return np.asarray(image)


def test_sources_are_the_real_96x96_rgb_patches(sources: list[tuple[str, np.ndarray]]) -> None:
    assert len(sources) >= 50
    assert all(p.shape == (96, 96, 3) and p.dtype == np.uint8 for _, p in sources)


def test_variants_are_unique_decode_to_96x96_rgb_and_differ_by_few_pixels(
    sources: list[tuple[str, np.ndarray]],
) -> None:
    pool = UniquePatches(sources)
    variants = pool.take(2 * len(sources) + 3)  # every source at least twice
    assert len({hashlib.sha256(v.data).digest() for v in variants}) == len(variants)
    assert len({v.name for v in variants}) == len(variants)
    for i, variant in enumerate(variants):
        pixels = decode(variant.data)
        source = sources[i % len(sources)][1]
        changed = np.argwhere((pixels != source).any(axis=2))
        assert 1 <= len(changed) <= SALT_PIXELS
        assert all(row == 0 and col < SALT_PIXELS for row, col in changed)


def test_pools_with_other_nonces_never_collide(sources: list[tuple[str, np.ndarray]]) -> None:
    a, b = UniquePatches(sources, nonce=1), UniquePatches(sources, nonce=2)
    assert {v.data for v in a.take(20)}.isdisjoint(v.data for v in b.take(20))
    assert UniquePatches(sources).nonce != UniquePatches(sources).nonce  # random per pool
    with pytest.raises(ValueError):
        UniquePatches(sources, nonce=1 << NONCE_BITS)


def test_stamp_writes_the_salt_little_endian_and_leaves_the_source_alone() -> None:
    pixels = np.zeros((96, 96, 3), np.uint8)
    out = stamp(pixels, 0x030201)
    assert out[0, 0].tolist() == [1, 2, 3] and not out[1:].any() and not pixels.any()
    with pytest.raises(ValueError):
        stamp(pixels, 1 << (24 * SALT_PIXELS))


def test_hot_set_is_the_files_unchanged() -> None:
    hot = load_files(count=3)
    assert [p.name for p in hot] == [p.name for p in load_files(count=3)]
    assert len(hot) == 3 and all(decode(p.data).shape == (96, 96, 3) for p in hot)


def test_multipart_body_parses_back_to_the_files() -> None:
    files = [Patch("a.png", b"\x89PNG first\r\n--x"), Patch("b.png", b"second")]
    body, content_type = multipart("files", files)
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = list(message.iter_parts())
    assert [p.get_filename() for p in parts] == ["a.png", "b.png"]
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["files", "files"]
    assert [p.get_content() for p in parts] == [f.data for f in files]


def test_pixel_variants_are_what_the_png_variants_decode_to(sources: list[tuple[str, np.ndarray]]) -> None:
    encoded, raw = UniquePatches(sources, nonce=7), UniquePatches(sources, nonce=7)
    first = encoded.take(len(sources) + 2)
    pixels = raw.pixels(len(sources) + 2)
    assert pixels.shape == (len(sources) + 2, 96, 96, 3) and pixels.dtype == np.uint8
    for variant, patch in zip(first, pixels, strict=True):
        np.testing.assert_array_equal(decode(variant.data), patch)
    assert len(
        {patch.tobytes() for patch in raw.pixels(len(sources) + 2)} | {p.tobytes() for p in pixels}
    ) == 2 * (len(sources) + 2)
