import struct
import zlib
from io import BytesIO

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from pcam_core.errors import ImageRejected
from pcam_core.problems import status_of
from services.preprocess.decode import _TEXT_LIMIT_MARK, PNG_TEXT_MEMORY_BYTES, decode_patch


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rgb_patch(size: tuple[int, int] = (96, 96)) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_patch(data)
    return info.value


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_decode_exactly(fmt: str) -> None:
    image = rgb_patch()
    decoded = decode_patch(encode(image, fmt))
    assert decoded.dtype == np.uint8 and decoded.shape == (96, 96, 3)
    np.testing.assert_array_equal(decoded, np.asarray(image))


def test_jpeg_decodes(patch_paths) -> None:
    image = Image.open(patch_paths[0]).convert("RGB")
    decoded = decode_patch(encode(image, "JPEG", quality=95))
    assert decoded.shape == (96, 96, 3)
    assert np.abs(decoded.astype(int) - np.asarray(image).astype(int)).mean() < 10


def test_real_patch_decodes(patch_paths) -> None:
    assert decode_patch(patch_paths[0].read_bytes()).shape == (96, 96, 3)


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("CMYK", "TIFF")]
)
def test_convertible_modes_become_rgb(mode: str, fmt: str) -> None:
    image = rgb_patch().convert(mode)
    decoded = decode_patch(encode(image, fmt))
    np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_refused_not_composited(mode: str) -> None:
    image = rgb_patch().convert(mode)
    image.putpixel((5, 5), (0,) * (len(mode) - 1) + (128,))
    problem = rejected(encode(image, "PNG"))
    assert status_of(problem) == 422 and problem.kind == "transparent-image" and "1 of 9216" in problem.detail


def test_palette_transparency_is_refused() -> None:
    image = rgb_patch().convert("P")
    data = encode(image, "PNG", transparency=int(np.asarray(image)[0, 0]))
    assert rejected(data).kind == "transparent-image"


def test_wrong_size_names_what_was_received() -> None:
    problem = rejected(encode(rgb_patch((100, 80)), "PNG"))
    assert status_of(problem) == 422 and "100x80" in problem.detail and "96x96" in problem.detail


def test_huge_dimensions_are_refused_from_the_header() -> None:
    # A 20000x20000 PNG header with no pixel data behind it: refused without decoding.
    header = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = header.index(b"IHDR")
    fields = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + fields))
    forged = header[: ihdr + 4] + fields + crc + header[ihdr + 4 + len(fields) + 4 :]
    problem = rejected(forged)
    assert status_of(problem) == 422 and problem.kind == "decompression-bomb"


def test_non_image_is_unsupported_media() -> None:
    problem = rejected(b"%PDF-1.7 definitely not a patch")
    assert status_of(problem) == 415


def test_gif_is_not_a_supported_format() -> None:
    assert status_of(rejected(encode(rgb_patch(), "GIF"))) == 415


def test_empty_body() -> None:
    assert status_of(rejected(b"")) == 400


def test_truncated_png_is_corrupt() -> None:
    data = encode(rgb_patch(), "PNG")
    problem = rejected(data[: len(data) // 2])
    assert status_of(problem) == 422 and problem.kind == "corrupt-image"


def test_sixteen_bit_is_rejected() -> None:
    image = Image.fromarray(np.full((96, 96), 40000, dtype=np.uint16))
    assert image.mode.startswith("I")
    problem = rejected(encode(image, "PNG"))
    assert status_of(problem) == 422 and image.mode in problem.detail


def test_multi_frame_tiff_is_rejected() -> None:
    frames = [rgb_patch(), rgb_patch()]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    problem = rejected(data)
    assert status_of(problem) == 422 and "2 frames" in problem.detail


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt tags it skips
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_files_decode_or_are_rejected_never_crash(fmt: str, data) -> None:
    original = bytearray(encode(rgb_patch(), fmt))
    for _ in range(data.draw(st.integers(1, 8))):
        original[data.draw(st.integers(0, len(original) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(original)))
    try:
        decoded = decode_patch(bytes(original[:cut]))
    except ImageRejected as rejected:
        assert 400 <= status_of(rejected) < 500
    else:
        assert decoded.dtype == np.uint8 and decoded.shape == (96, 96, 3)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_text(data: bytes, chunks: bytes, after_pixels: bool = False) -> bytes:
    """A PNG with `chunks` right after IHDR (read by open) or right before IEND (read by load)."""
    at = data.index(b"IEND") - 4 if after_pixels else 33
    return data[:at] + chunks + data[at:]


def test_pillow_names_its_text_limits_as_decode_expects() -> None:
    assert PngImagePlugin.MAX_TEXT_MEMORY == PNG_TEXT_MEMORY_BYTES
    with pytest.raises(ValueError, match=_TEXT_LIMIT_MARK):
        PngImagePlugin._safe_zlib_decompress(zlib.compress(bytes(PngImagePlugin.MAX_TEXT_CHUNK + 1)))


@pytest.mark.parametrize("after_pixels", [False, True], ids=["before-pixels", "after-pixels"])
def test_many_small_text_chunks_inflating_to_megabytes_are_a_bomb(after_pixels: bool) -> None:
    # 40 chunks of ~1 KB, each inflating to 600 kB: Pillow's default let one image hold 64 MiB of it.
    text = zlib.compress(bytes(600_000), 9)
    chunks = b"".join(png_chunk(b"zTXt", b"k%d\x00\x00" % i + text) for i in range(40))
    problem = rejected(with_text(encode(rgb_patch(), "PNG"), chunks, after_pixels))
    assert status_of(problem) == 422 and problem.kind == "decompression-bomb" and "in all" in problem.detail


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_one_chunk_inflating_past_the_chunk_limit_is_a_bomb(kind: bytes) -> None:
    chunk = png_chunk(kind, b"name\x00\x00" + zlib.compress(bytes(2 << 20), 9))
    problem = rejected(with_text(encode(rgb_patch(), "PNG"), chunk))
    assert status_of(problem) == 422 and problem.kind == "decompression-bomb"


def test_modest_text_chunks_still_decode() -> None:
    image = rgb_patch()
    chunks = png_chunk(b"tEXt", b"Comment\x00scanned") + png_chunk(
        b"zTXt", b"k\x00\x00" + zlib.compress(b"x" * 100_000)
    )
    np.testing.assert_array_equal(decode_patch(with_text(encode(image, "PNG"), chunks)), np.asarray(image))
