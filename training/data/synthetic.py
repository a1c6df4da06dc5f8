"""A synthetic PCam-like data set: H&E patches rendered through Beer-Lambert, labelled by the center rule.

Hematoxylin and eosin concentration maps (stroma texture, nuclei, tumor clusters) become RGB with
I = Io * exp(-C @ S), with stain vectors and intensities jittered per synthetic slide so that stain
normalization matters. Label 1 iff a tumor-nucleus pixel lies in the center 32x32
(docs/architecture.md#data); some negatives carry a tumor cluster only in the periphery (decoys).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from pcam_core.contract import CENTER_SIZE, PATCH_SIZE
from training.data.pcam_h5 import SPLITS, X_KEY, Y_KEY, create_patch_dataset, meta_file, split_files

log = logging.getLogger(__name__)

IO_MEAN = 240.0
BASE_STAINS = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])
"""Ruifrok & Johnston optical-density vectors of hematoxylin and eosin (rows) over R, G, B."""
PATCHES_PER_SLIDE = 64
CHUNK = 512
"""Patches rendered per vectorized step; part of the seed -> data mapping, so keep it fixed."""
CENTER_LO = (PATCH_SIZE - CENTER_SIZE) // 2
CENTER_HI = CENTER_LO + CENTER_SIZE  # exclusive: rows/cols 32..63
KIND_SHARES = (0.5, 0.12, 0.38)
"""Shares of positives, periphery-only decoys, plain negatives: decoys are ~24 % of negatives."""
BACKGROUND_HEAVY_SHARE = 0.12
SHEET_SHARE = 0.25
"""Positives that lie inside a tumor sheet wider than the patch (a slide's lesion interior), not a cluster."""
INFLAMMATION_SHARE = 0.2


class Kind(IntEnum):
    """What the generator meant to draw; the label itself comes from the rendered tumor mask."""

    POSITIVE = 0
    DECOY = 1
    NEGATIVE = 2


@dataclass(frozen=True)
class SlideStains:
    """Per-slide acquisition: stain vectors (S, 2, 3), concentration scales (S, 2), light (S,)."""

    stains: np.ndarray
    scales: np.ndarray
    io: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, n_slides: int) -> SlideStains:
        stains = BASE_STAINS[None] + rng.normal(0.0, 0.07, size=(n_slides, 2, 3))
        stains = np.abs(stains) / np.linalg.norm(stains, axis=-1, keepdims=True)
        scales = rng.uniform(0.65, 1.35, size=(n_slides, 2))
        io = rng.uniform(IO_MEAN - 18, IO_MEAN + 12, size=n_slides)
        return cls(stains, scales, io)


@dataclass(frozen=True)
class SyntheticPatches:
    images: np.ndarray
    """uint8 (N, 96, 96, 3) RGB."""
    labels: np.ndarray
    """uint8 (N,): 1 iff tumor_mask has a pixel in the center 32x32."""
    tumor_mask: np.ndarray
    """bool (N, 96, 96): pixels inside a tumor nucleus."""
    kinds: np.ndarray
    """int (N,) of Kind."""


def center_label(tumor_mask: np.ndarray) -> np.ndarray:
    """PCam's rule on (N, 96, 96) masks: 1 iff any tumor pixel in rows/cols 32..63."""
    return tumor_mask[:, CENTER_LO:CENTER_HI, CENTER_LO:CENTER_HI].any(axis=(1, 2)).astype(np.uint8)


def _upsample_matrix(grid: int, size: int = PATCH_SIZE) -> np.ndarray:
    """(size, grid) bilinear interpolation weights from a coarse grid to pixels."""
    pos = np.linspace(0, grid - 1, size)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - lo
    u = np.zeros((size, grid), dtype=np.float32)
    u[np.arange(size), lo] = 1 - frac
    u[np.arange(size), lo + 1] = frac
    return u


def smooth_noise(rng: np.random.Generator, n: int, grid: int) -> np.ndarray:
    """(n, 96, 96) float32 noise with unit std per patch and features about 96/grid pixels wide."""
    u = _upsample_matrix(grid)
    field = u @ rng.standard_normal((n, grid, grid), dtype=np.float32) @ u.T
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


@dataclass(frozen=True)
class NucleusStyle:
    """Ranges a kind of nucleus is drawn from (pixels, optical-density units)."""

    radius: tuple[float, float]
    roundness: tuple[float, float]
    """Minor / major axis."""
    wobble: tuple[float, float]
    """Amplitude of the boundary's 2nd and 3rd harmonics: irregular outlines."""
    ink: tuple[float, float]
    """Peak hematoxylin concentration."""
    grain: float = 0.05
    """Per-pixel chromatin texture."""


NORMAL = NucleusStyle(radius=(2.0, 3.5), roundness=(0.75, 1.0), wobble=(0.0, 0.04), ink=(0.6, 1.0))
SPINDLE = NucleusStyle(radius=(3.5, 5.0), roundness=(0.3, 0.45), wobble=(0.0, 0.04), ink=(0.6, 1.0))
LYMPHOCYTE = NucleusStyle(radius=(1.8, 2.6), roundness=(0.85, 1.0), wobble=(0.0, 0.03), ink=(1.2, 1.8))
TUMOR = NucleusStyle(
    radius=(3.3, 6.0), roundness=(0.6, 0.95), wobble=(0.04, 0.22), ink=(1.0, 1.8), grain=0.18
)
STAMPS_PER_STYLE = 192


@dataclass(frozen=True)
class StampBank:
    """Pre-drawn nuclei of one style, centered on odd-sized windows; nuclei are stamped from it."""

    ink: np.ndarray  # float32 (B, W, W)
    body: np.ndarray  # bool (B, W, W): the nucleus proper (the soft edge excluded)
    extent: np.ndarray  # int (B,): largest |row or col offset| of any inked pixel

    @classmethod
    def draw(cls, rng: np.random.Generator, style: NucleusStyle, count: int = STAMPS_PER_STYLE) -> StampBank:
        major = rng.uniform(*style.radius, count)
        minor = major * rng.uniform(*style.roundness, count)
        wobble = rng.uniform(*style.wobble, (count, 2))
        phase = rng.uniform(0, 2 * np.pi, (count, 2))
        half = int(np.ceil(major.max() * (1 + wobble.sum(1).max()) * 7 / 6)) + 1
        dy, dx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
        angle = rng.uniform(0, np.pi, count)[:, None, None]
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / major[:, None, None]
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / minor[:, None, None]
        phi = np.arctan2(v, u)
        boundary = 1 + sum(
            wobble[:, k, None, None] * np.cos((k + 2) * phi + phase[:, k, None, None]) for k in range(2)
        )
        r = np.sqrt(u * u + v * v) / boundary
        # Soft edge about 30 % of the radius wide; the body (what the label counts) is r < 1.
        profile = np.clip((1 - r) / 0.3 + 0.5, 0, 1)
        texture = 1 + style.grain * rng.standard_normal(profile.shape)
        ink = profile * texture.clip(0) * rng.uniform(*style.ink, count)[:, None, None]
        inked = np.where(profile > 0, np.maximum(np.abs(dy), np.abs(dx)), 0)
        return cls(ink.astype(np.float32), r < 1, inked.max(axis=(1, 2)).astype(int))


def _splat(
    bank: StampBank,
    n: int,
    patch: np.ndarray,
    center: np.ndarray,
    stamp: np.ndarray,
    image: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE),
) -> tuple[np.ndarray, np.ndarray]:
    """Stamp nuclei into (n, *image) maps (default 96 x 96): hematoxylin density and a bool mask of
    nucleus bodies.

    Scattered with bincount, so the cost grows with the number of nuclei, not nuclei x pixels.
    """
    height, width = image
    size = height * width
    shape = (n, height, width)
    half = bank.ink.shape[1] // 2
    offsets = np.arange(-half, half + 1)
    rows = center[:, 0, None, None] + offsets[None, :, None]
    cols = center[:, 1, None, None] + offsets[None, None, :]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = (patch[:, None, None] * size + rows * width + cols)[inside]
    ink = np.bincount(flat, weights=bank.ink[stamp][inside], minlength=n * size)
    body = np.bincount(flat[bank.body[stamp][inside]], minlength=n * size) > 0
    return ink.reshape(shape).astype(np.float32), body.reshape(shape)


def _stamp(
    rng: np.random.Generator,
    bank: StampBank,
    n: int,
    patch: np.ndarray,
    points: np.ndarray,
    image: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE),
) -> tuple[np.ndarray, np.ndarray]:
    """Stamp a random nucleus of the bank at each (integer-rounded) point."""
    stamp = rng.integers(0, len(bank.ink), len(patch))
    return _splat(bank, n, patch, np.rint(points).astype(int), stamp, image)


def _scatter_in_disks(rng: np.random.Generator, centers: np.ndarray, radii: np.ndarray, counts: np.ndarray):
    """Uniform points in disks: returns (owner index per point, points (P, 2))."""
    owner = np.repeat(np.arange(len(counts)), counts)
    r = radii[owner] * np.sqrt(rng.uniform(0, 1, size=len(owner)))
    theta = rng.uniform(0, 2 * np.pi, size=len(owner))
    return owner, centers[owner] + np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


def _tumor_clusters(rng: np.random.Generator, kinds: np.ndarray, bank: StampBank) -> tuple[np.ndarray, ...]:
    """Tumor nuclei of positives (one anchored in the center) and decoys (kept clear of it). A positive's
    cluster has a radius of 3-30 px, or (SHEET_SHARE of them) is a sheet of radius 48-96 px filling much
    of the patch.

    Returns the nuclei (patch, integer center, stamp) and the tumor patches with their cluster
    disks (row, col, radius).
    """
    has_tumor = np.flatnonzero(kinds != Kind.NEGATIVE)
    positive = kinds[has_tumor] == Kind.POSITIVE
    m = len(has_tumor)
    sheet = positive & (rng.uniform(size=m) < SHEET_SHARE)
    radius = np.where(positive, rng.uniform(3, 30, m), rng.uniform(6, 22, m))
    radius = np.where(sheet, rng.uniform(48, 96, m), radius)
    # Positives: one nucleus sits at an anchor inside the center region, the cluster around it.
    anchor = rng.uniform(CENTER_LO + 2, CENTER_HI - 3, size=(m, 2))
    offset_angle = rng.uniform(0, 2 * np.pi, m)
    offset = radius * rng.uniform(0, 0.8, m)
    pos_center = anchor + offset[:, None] * np.stack([np.sin(offset_angle), np.cos(offset_angle)], 1)
    # Decoys: the cluster center lies in the 32-pixel border band, on a random side.
    along = rng.uniform(0, PATCH_SIZE - 1, m)
    across = rng.uniform(5, CENTER_LO - 12, m)
    side = rng.integers(0, 4, m)
    across = np.where(side % 2 == 1, PATCH_SIZE - 1 - across, across)
    decoy_center = np.where((side < 2)[:, None], np.stack([across, along], 1), np.stack([along, across], 1))
    centers = np.where(positive[:, None], pos_center, decoy_center)
    # Crowded: about one nucleus per 7-pixel-wide cell of the cluster disk, overlapping.
    counts = np.maximum((np.pi * radius**2 / rng.uniform(40, 70, m)).astype(int), 1)
    owner, points = _scatter_in_disks(rng, centers, radius, counts)
    first = np.cumsum(counts) - counts
    points[first[positive]] = anchor[positive]
    points = np.rint(points).astype(int)
    stamp = rng.integers(0, len(bank.ink), len(owner))
    # A decoy keeps only nuclei whose whole inked footprint stays clear of the center region.
    ext = bank.extent[stamp][:, None]
    near = np.all((points + ext >= CENTER_LO) & (points - ext < CENTER_HI), axis=1)
    keep = ~(near & ~positive[owner])
    disks = np.stack([centers[:, 0], centers[:, 1], radius], 1)
    return has_tumor[owner][keep], points[keep], stamp[keep], has_tumor, disks


def render(
    rng: np.random.Generator, kinds: np.ndarray, slides: np.ndarray, stains: SlideStains
) -> SyntheticPatches:
    """Render patches of the given kinds, each on its slide's stains."""
    n = len(kinds)
    shape = (n, PATCH_SIZE, PATCH_SIZE)
    yy, xx = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float32)

    # Tissue vs. background (white glass, fat): most patches full of tissue, some mostly empty.
    heavy = rng.uniform(size=n) < BACKGROUND_HEAVY_SHARE
    threshold = np.where(heavy, rng.uniform(-0.3, 0.9, n), rng.uniform(-4.0, -1.3, n)).astype(np.float32)
    tissue = np.clip((smooth_noise(rng, n, 4) - threshold[:, None, None]) * 3 + 0.5, 0, 1)

    banks = {style: StampBank.draw(rng, style) for style in (NORMAL, SPINDLE, LYMPHOCYTE, TUMOR)}
    tumor_patch, tumor_points, tumor_stamp, cluster_patches, clusters = _tumor_clusters(
        rng, kinds, banks[TUMOR]
    )
    # Tumor is tissue: clear the background under and around each cluster.
    cy, cx, cr = clusters[:, 0, None, None], clusters[:, 1, None, None], clusters[:, 2, None, None]
    cluster_area = np.clip((cr + 8 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) / 4, 0, 1)
    tissue[cluster_patches] = np.maximum(tissue[cluster_patches], cluster_area)

    # Stroma: eosin-rich smooth texture with finer fibres, a little hematoxylin.
    eosin = rng.uniform(0.35, 0.85, (n, 1, 1)).astype(np.float32) * (0.7 + 0.3 * smooth_noise(rng, n, 6))
    eosin += 0.12 * smooth_noise(rng, n, 24)
    hema = 0.08 + 0.03 * smooth_noise(rng, n, 12)

    # Normal nuclei: small, round or spindle-shaped (fibroblasts), sparse.
    normal_ink = np.zeros(shape, np.float32)
    for style, rate in ((NORMAL, (5, 15)), (SPINDLE, (1, 5))):
        patch = np.repeat(np.arange(n), rng.poisson(rng.uniform(*rate, n)))
        normal_ink += _stamp(rng, banks[style], n, patch, rng.uniform(0, PATCH_SIZE - 1, (len(patch), 2)))[0]
    # Inflammation: tight aggregates of small, very dark, round lymphocytes (dense but not tumor).
    inflamed = np.flatnonzero(rng.uniform(size=n) < INFLAMMATION_SHARE)
    owner, points = _scatter_in_disks(
        rng,
        rng.uniform(8, PATCH_SIZE - 8, (len(inflamed), 2)),
        rng.uniform(6, 14, len(inflamed)),
        rng.integers(8, 30, len(inflamed)),
    )
    normal_ink += _stamp(rng, banks[LYMPHOCYTE], n, inflamed[owner], points)[0]
    tumor_ink, tumor_mask = _splat(banks[TUMOR], n, tumor_patch, tumor_points, tumor_stamp)

    nuclear = np.minimum(normal_ink * tissue + tumor_ink, 2.6)
    # Nuclei displace the eosin-stained stroma they sit in.
    eosin = np.clip(eosin, 0.05, None) * tissue * (1 - 0.7 * np.clip(nuclear, 0, 1))
    hema = np.clip(hema, 0.02, None) * tissue + nuclear

    # Beer-Lambert: optical density = concentrations (H, E) @ the slide's stain vectors.
    concentrations = np.stack([hema, eosin], axis=-1) * stains.scales[slides, None, None, :].astype(
        np.float32
    )
    od = concentrations @ stains.stains[slides, None].astype(np.float32)
    light = stains.io[slides].astype(np.float32)[:, None, None, None] * np.exp(-od)
    light += 2.0 * rng.standard_normal(light.shape, dtype=np.float32)  # sensor noise
    images = np.clip(light + 0.5, 0, 255).astype(np.uint8)
    return SyntheticPatches(images, center_label(tumor_mask), tumor_mask, kinds)


def section_noise(rng: np.random.Generator, shape: tuple[int, int], feature: float) -> np.ndarray:
    """(H, W) float32 noise with unit std and features about `feature` pixels wide, at any size."""
    grid = [max(2, round(side / feature) + 1) for side in shape]
    rows, columns = _upsample_matrix(grid[0], shape[0]), _upsample_matrix(grid[1], shape[1])
    field = rows @ rng.standard_normal(grid, dtype=np.float32) @ columns.T
    field -= field.mean()
    return field / (field.std() + 1e-6)


def render_section(
    rng: np.random.Generator, section: np.ndarray, tumor: np.ndarray, stains: SlideStains
) -> tuple[np.ndarray, np.ndarray]:
    """A whole tissue section drawn as the patches are, in one piece (no seams between patches):
    uint8 (H, W, 3) RGB on the first of `stains`' slides, and the bool (H, W) tumor-nucleus mask.

    `section` and `tumor` are bool (H, W) regions: the tissue, and where tumor nuclei crowd it (one
    per 40-70 px², as in the patches' clusters). Other nuclei come at the patches' rates per pixel.
    """
    shape = section.shape
    per_patch = section.size / PATCH_SIZE**2
    span = np.array(shape) - 1
    banks = {style: StampBank.draw(rng, style) for style in (NORMAL, SPINDLE, LYMPHOCYTE, TUMOR)}
    holes = np.clip((section_noise(rng, shape, PATCH_SIZE / 4) + 1.6) * 3 + 0.5, 0, 1)
    tissue = np.maximum(section * holes, tumor).astype(np.float32)  # tumor is tissue

    def stamped(style: NucleusStyle, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ink, body = _stamp(rng, banks[style], 1, np.zeros(len(points), int), points, shape)
        return ink[0], body[0]

    crowd = np.argwhere(tumor)
    count = int(len(crowd) / rng.uniform(40, 70))
    tumor_ink, tumor_mask = stamped(TUMOR, crowd[rng.integers(0, max(len(crowd), 1), count)])

    eosin = rng.uniform(0.35, 0.85) * (0.7 + 0.3 * section_noise(rng, shape, PATCH_SIZE / 6))
    eosin += 0.12 * section_noise(rng, shape, PATCH_SIZE / 24)
    hema = 0.08 + 0.03 * section_noise(rng, shape, PATCH_SIZE / 12)

    normal_ink = np.zeros(shape, np.float32)
    for style, rate in ((NORMAL, (5, 15)), (SPINDLE, (1, 5))):
        points = rng.uniform(0, 1, (rng.poisson(rng.uniform(*rate) * per_patch), 2)) * span
        normal_ink += stamped(style, points)[0]
    aggregates = rng.poisson(INFLAMMATION_SHARE * per_patch)
    _, points = _scatter_in_disks(
        rng,
        rng.uniform(0, 1, (aggregates, 2)) * span,
        rng.uniform(6, 14, aggregates),
        rng.integers(8, 30, aggregates),
    )
    normal_ink += stamped(LYMPHOCYTE, points)[0]

    nuclear = np.minimum(normal_ink * tissue + tumor_ink, 2.6)
    eosin = np.clip(eosin, 0.05, None) * tissue * (1 - 0.7 * np.clip(nuclear, 0, 1))
    hema = np.clip(hema, 0.02, None) * tissue + nuclear
    concentrations = np.stack([hema, eosin], axis=-1) * stains.scales[0].astype(np.float32)
    light = float(stains.io[0]) * np.exp(-(concentrations @ stains.stains[0].astype(np.float32)))
    light += 2.0 * rng.standard_normal(light.shape, dtype=np.float32)  # sensor noise
    return np.clip(light + 0.5, 0, 255).astype(np.uint8), tumor_mask


def generate_split(n: int, seed: int, split_index: int = 0) -> tuple[SyntheticPatches, np.ndarray]:
    """One split held in memory (tests, small sets): patches and slide ids; same seed, same data."""
    parts = list(_chunks(n, seed, split_index))
    slides = np.concatenate([s for _, s in parts])
    fields = SyntheticPatches.__dataclass_fields__
    merged = {f: np.concatenate([getattr(p, f) for p, _ in parts]) for f in fields}
    return SyntheticPatches(**merged), slides


def _chunks(n: int, seed: int, split_index: int):
    """Yield (patches, slide ids) in CHUNK-sized pieces, deterministically from (seed, split)."""
    root = np.random.SeedSequence([seed, split_index])
    plan_seq, *chunk_seqs = root.spawn(1 + max(1, -(-n // CHUNK)))
    plan = np.random.default_rng(plan_seq)
    n_slides = max(1, -(-n // PATCHES_PER_SLIDE))
    stains = SlideStains.sample(plan, n_slides)
    kinds = plan.choice(np.array(list(Kind)), size=n, p=KIND_SHARES)
    slides = plan.permutation(np.arange(n) // PATCHES_PER_SLIDE)
    for i, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        yield (
            render(np.random.default_rng(chunk_seqs[i]), kinds[start:stop], slides[start:stop], stains),
            slides[start:stop],
        )


def write_split(directory: Path, split: str, n: int, seed: int) -> dict[str, int]:
    """Write one split as PCam does (x, y, meta CSV); returns counts of positives and decoys."""
    if n < 1:
        raise ValueError(f"split {split} needs at least one patch, got {n}")
    x_path, y_path = split_files(directory, split)
    counts = {"patches": n, "positives": 0, "decoys": 0}
    with (
        h5py.File(x_path, "w") as fx,
        h5py.File(y_path, "w") as fy,
        meta_file(directory, split).open("w", newline="") as fm,
    ):
        x = create_patch_dataset(fx, X_KEY, n)
        y = fy.create_dataset(Y_KEY, shape=(n, 1, 1, 1), dtype=np.uint8)
        meta = csv.writer(fm)
        meta.writerow(["", "coord_y", "coord_x", "tumor_patch", "center_tumor_patch", "wsi"])
        start, per_slide = 0, Counter()
        chunks = _chunks(n, seed, SPLITS.index(split))
        for patches, slides in tqdm(chunks, total=-(-n // CHUNK), desc=f"synthesize {split}", disable=None):
            stop = start + len(patches.labels)
            x[start:stop] = patches.images
            y[start:stop] = patches.labels.reshape(-1, 1, 1, 1)
            any_tumor = patches.tumor_mask.any(axis=(1, 2))
            for i, slide in enumerate(slides.tolist()):
                # Patches of a slide sit on an 8-wide grid of that synthetic slide.
                row, col = divmod(per_slide[slide], 8)
                per_slide[slide] += 1
                wsi = f"synthetic_{split}_slide_{slide:05d}"  # never shared between splits
                tumor, center = bool(any_tumor[i]), bool(patches.labels[i])
                meta.writerow([start + i, PATCH_SIZE * row, PATCH_SIZE * col, tumor, center, wsi])
            counts["positives"] += int(patches.labels.sum())
            counts["decoys"] += int((any_tumor & (patches.labels == 0)).sum())
            start = stop
    return counts


def synthesize(directory: Path, sizes: dict[str, int], seed: int) -> dict[str, dict[str, int]]:
    """Write a synthetic data set in PCam's file layout; sizes maps split name -> patch count."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = {split: write_split(directory, split, n, seed) for split, n in sizes.items()}
    for split, counts in summary.items():
        log.info("synthetic %s: %s", split, counts)
    return summary
