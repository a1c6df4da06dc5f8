"""Decode and validate one uploaded patch: 96x96, RGB, one of the supported formats."""

from io import BytesIO

import numpy as np
from PIL import Image, PngImagePlugin

from pcam_core.contract import PATCH_SIZE
from pcam_core.errors import ImageRejected

SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr"})
"""8-bit modes converted to RGB with Pillow's `convert("RGB")`: grey replicated, palette expanded.
An alpha channel is accepted only when fully opaque: a transparent pixel has no defined color, and
compositing it on some background would silently alter what the user sent."""

PNG_TEXT_MEMORY_BYTES = 1 << 20
"""Inflated PNG text (tEXt, zTXt, iTXt) Pillow may hold per image. Its default, 64 MiB, let a 93 KB
upload of 70 small zTXt chunks, each inflating to just under the 1 MiB per-chunk limit, take 67 MB
and 0.1 s of CPU per decode, and a few concurrent ones left preprocess 200 MiB larger for good. A
patch needs no text. Set for the whole process on import (Pillow reads it while decoding): only
preprocess imports this module."""
PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_MEMORY_BYTES
_TEXT_LIMIT_MARK = "MAX_TEXT_"
"""What Pillow's errors for text over MAX_TEXT_CHUNK or MAX_TEXT_MEMORY say (a unit test pins it)."""


def decode_patch(data: bytes) -> np.ndarray:
    """Decode bytes to uint8 (96, 96, 3) RGB; raise ImageRejected naming what was wrong."""
    if not data:
        raise ImageRejected("The uploaded image has no bytes.", kind="empty-image")
    try:
        image = Image.open(BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(str(exc), kind="decompression-bomb") from exc
    except Exception as exc:  # Pillow raises many types on hostile headers: all mean "not decodable"
        raise _text_bomb(exc) or ImageRejected(
            f"Not a decodable image in a supported format ({', '.join(SUPPORTED_FORMATS)}).",
            kind="unsupported-image",
        ) from exc
    with image:
        try:
            _check_header(image)
            image.load()
            _check_opaque(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except ImageRejected:
            raise
        except Exception as exc:  # truncated or corrupt pixel data, whatever Pillow raises for it
            raise _text_bomb(exc) or ImageRejected(
                f"The {image.format} data could not be decoded.", kind="corrupt-image"
            ) from exc


def _text_bomb(exc: Exception) -> ImageRejected | None:
    """The problem for PNG text over Pillow's limits (read by open(), or by load() after the pixels)."""
    if not (isinstance(exc, ValueError) and _TEXT_LIMIT_MARK in str(exc)):
        return None
    return ImageRejected(
        f"PNG text or ICC profile chunks inflate past {PngImagePlugin.MAX_TEXT_CHUNK} bytes in one chunk "
        f"or {PNG_TEXT_MEMORY_BYTES} bytes in all; a patch needs none.",
        kind="decompression-bomb",
    )


def _check_header(image: Image.Image) -> None:
    """Size, frame count and mode, all from the header: checked before any pixel is decoded."""
    if image.size != (PATCH_SIZE, PATCH_SIZE):
        width, height = image.size
        raise ImageRejected(
            f"Received {width}x{height}; {PATCH_SIZE}x{PATCH_SIZE} is required.", kind="wrong-size"
        )
    frames = getattr(image, "n_frames", 1)
    if frames != 1:
        raise ImageRejected(f"Received {frames} frames; 1 is required.", kind="multi-frame-image")
    if image.mode not in CONVERTIBLE_MODES:
        raise ImageRejected(
            f"Received mode {image.mode}; 8-bit RGB (or a mode convertible to it) is required.",
            kind="unsupported-mode",
        )


def _check_opaque(image: Image.Image) -> None:
    """Refuse any pixel that is not fully opaque (alpha channel or palette transparency)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    transparent = int((alpha < 255).sum())
    if transparent:
        raise ImageRejected(
            f"{transparent} of {alpha.size} pixels are not fully opaque; send an opaque RGB image.",
            kind="transparent-image",
        )
