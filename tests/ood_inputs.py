"""Out-of-distribution inputs built for the tests, none of them by the training generator.

Sources: the real H&E patches of tests/data/he (corrupted by blur and pen marks, or restained as
IHC), scikit-image's bundled photographs and its real IHC image (skimage/data/README.txt for their
licenses), and noise. Every builder returns uint8 (N, 96, 96, 3) and is seeded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import color, data

from pcam_core.contract import PATCH_SIZE

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
               "brick", "grass", "gravel", "colorwheel", "logo", "camera", "text", "page", "coins", "moon")  # fmt: skip
"""scikit-image's bundled pictures: natural photographs, textures, a document, drawings."""
PEN_COLOURS = ((20, 60, 190), (25, 140, 60), (25, 25, 30), (10, 110, 150))
"""Marker inks seen on glass slides: blue, green, black, teal."""


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3]


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random 96x96 crops of the image shrunk so its short side is 2-4 patches long."""
    scale = rng.uniform(2, 4) * PATCH_SIZE / min(image.shape[:2])
    shrunk = np.asarray(
        Image.fromarray(image).resize((round(image.shape[1] * scale), round(image.shape[0] * scale)))
    )
    out = []
    for _ in range(count):
        top = rng.integers(0, shrunk.shape[0] - PATCH_SIZE + 1)
        left = rng.integers(0, shrunk.shape[1] - PATCH_SIZE + 1)
        out.append(shrunk[top : top + PATCH_SIZE, left : left + PATCH_SIZE])
    return out


def photographs(rng: np.random.Generator, crops_each: int = 3) -> np.ndarray:
    """Each bundled picture resized whole to 96x96, and random crops of it."""
    out = []
    for name in PHOTOGRAPHS:
        image = _rgb(getattr(data, name)())
        out.append(_resized(image, PATCH_SIZE))
        out.extend(_crops(image, crops_each, rng))
    return np.stack(out)


def ihc(rng: np.random.Generator, he_patches: np.ndarray, crops: int = 24) -> np.ndarray:
    """Real IHC (hematoxylin and DAB, scikit-image's `immunohistochemistry`) crops, and H&E patches
    restained as IHC: colour deconvolution, eosin dropped, its pattern drawn in DAB instead."""
    real = _crops(_rgb(data.immunohistochemistry()), crops, rng)
    hed = color.rgb2hed(he_patches.astype(np.float64) / 255.0)
    # DAB as dense as in the real IHC image (its 99th percentile about 0.19 in rgb2hed's units).
    eosin = hed[..., 1] / np.percentile(hed[..., 1], 99, axis=(1, 2), keepdims=True).clip(1e-6)
    dab = eosin * rng.uniform(0.15, 0.3, size=(len(hed), 1, 1))
    restained = np.stack([hed[..., 0] * 0.5, np.zeros_like(dab), dab], axis=-1)
    return np.concatenate([np.stack(real), _rgb(color.hed2rgb(restained))])


def non_he(rng: np.random.Generator, he_patches: np.ndarray) -> np.ndarray:
    """Images that are no H&E stain: grayscale and colour-inverted tissue, fluorescence-like dark
    fields, flat colours, and a chessboard."""
    gray = np.repeat(color.rgb2gray(he_patches)[..., None] * 255, 3, axis=-1).astype(np.uint8)
    inverted = 255 - he_patches
    fluorescence = np.zeros_like(he_patches)
    channel = rng.integers(0, 3, size=len(he_patches))
    for i, patch in enumerate(he_patches):  # nuclei bright on black, in one channel, as DAPI or FITC
        fluorescence[i, ..., channel[i]] = 255 - patch.min(axis=-1)
    flat = np.broadcast_to(
        rng.integers(0, 256, size=(12, 1, 1, 3), dtype=np.uint8), (12, PATCH_SIZE, PATCH_SIZE, 3)
    )
    board = _resized(_rgb(data.checkerboard()), PATCH_SIZE)[None]
    return np.concatenate([gray, inverted, fluorescence, flat, board])


def noise(rng: np.random.Generator, count: int = 32) -> np.ndarray:
    """Uniform, Gaussian, salt-and-pepper and smooth coloured noise."""
    shape = (count, PATCH_SIZE, PATCH_SIZE, 3)
    uniform = rng.integers(0, 256, size=shape, dtype=np.uint8)
    gaussian = np.clip(rng.normal(128, 50, size=shape), 0, 255).astype(np.uint8)
    salt = np.where(rng.random(shape[:3])[..., None] < 0.5, 0, 255).astype(np.uint8).repeat(3, axis=-1)
    coarse = rng.integers(0, 256, size=(count, 12, 12, 3), dtype=np.uint8)
    smooth = np.stack([_resized(c, PATCH_SIZE) for c in coarse])
    return np.concatenate([uniform, gaussian, salt, smooth])


def blurred(rng: np.random.Generator, he_patches: np.ndarray) -> np.ndarray:
    """Heavy Gaussian blur (radius 3 to 6 px): an out-of-focus scan."""
    return np.stack(
        [
            np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(rng.uniform(3, 6))))
            for p in he_patches
        ]
    )


def pen_marked(rng: np.random.Generator, he_patches: np.ndarray) -> np.ndarray:
    """Marker strokes across the patch: two to four thick lines of one ink, semi-opaque as on glass."""
    out = []
    for patch in he_patches:
        image = Image.fromarray(patch)
        ink = Image.new("RGB", image.size, PEN_COLOURS[rng.integers(len(PEN_COLOURS))])
        mask = Image.new("L", image.size, 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(rng.integers(2, 5)):
            points = [tuple(rng.integers(-10, PATCH_SIZE + 10, size=2).tolist()) for _ in range(3)]
            draw.line(points, fill=int(rng.integers(200, 256)), width=int(rng.integers(10, 20)))
        out.append(np.asarray(Image.composite(ink, image, mask)))
    return np.stack(out)


def ood_sets(he_patches: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Every category of out-of-distribution input, by name."""
    builders: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "photograph": photographs,
        "ihc": lambda rng: ihc(rng, he_patches),
        "non_he": lambda rng: non_he(rng, he_patches),
        "noise": noise,
        "blur": lambda rng: blurred(rng, he_patches),
        "pen": lambda rng: pen_marked(rng, he_patches),
    }
    return {name: build(np.random.default_rng([seed, i])) for i, (name, build) in enumerate(builders.items())}
