"""Decode and validate one uploaded patch: 96x96, RGB, one of the supported formats."""

from io import BytesIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.common.contract import PATCH_SIZE
from services.common.problems import Problem

SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr"})
"""8-bit modes converted to RGB with Pillow's `convert("RGB")` (alpha dropped, palette expanded)."""


class ImageRejected(Problem):
    """An upload that is not a usable patch."""


def decode_patch(data: bytes) -> np.ndarray:
    """Decode bytes to uint8 (96, 96, 3) RGB; raise ImageRejected naming what was wrong."""
    if not data:
        raise ImageRejected(400, "empty-image", "Empty image", "The uploaded image has no bytes.")
    try:
        image = Image.open(BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(422, "image-too-large", "Image too large", str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageRejected(
            415,
            "unsupported-image",
            "Unsupported image",
            f"Not a decodable image in a supported format ({', '.join(SUPPORTED_FORMATS)}).",
        ) from exc
    with image:
        # Dimensions come from the header: checked before any pixel is decoded.
        if image.size != (PATCH_SIZE, PATCH_SIZE):
            width, height = image.size
            raise ImageRejected(
                422,
                "wrong-size",
                "Wrong image size",
                f"Received {width}x{height}; {PATCH_SIZE}x{PATCH_SIZE} is required.",
            )
        if getattr(image, "n_frames", 1) != 1:
            raise ImageRejected(
                422,
                "multi-frame-image",
                "Multi-frame image",
                f"Received {image.n_frames} frames; 1 is required.",
            )
        if image.mode not in CONVERTIBLE_MODES:
            raise ImageRejected(
                422,
                "unsupported-mode",
                "Unsupported pixel mode",
                f"Received mode {image.mode}; 8-bit RGB (or a mode convertible to it) is required.",
            )
        try:
            image.load()
            rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageRejected(
                422, "corrupt-image", "Corrupt image", f"The {image.format} data could not be decoded: {exc}"
            ) from exc
        return np.asarray(rgb, dtype=np.uint8)
