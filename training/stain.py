"""Stain reference fitting and normalized split caches, through the serving code's MacenkoNormalizer.

Normalizing is a per-patch loop (milliseconds each), so every split is normalized once into an
HDF5 cache in the work dir and reused while its source and reference are unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from pcam_core.release import StainDistribution, StainReference
from services.preprocess.quality import fit_stain_distribution
from services.preprocess.stain import MacenkoNormalizer
from training.data.pcam_h5 import X_KEY, Y_KEY, create_patch_dataset, read_labels

log = logging.getLogger(__name__)
BATCH = 256


def fit_reference(patches: np.ndarray) -> StainReference:
    """Fit a Macenko reference to uint8 training patches pooled (background pixels are masked by the fit)."""
    reference = MacenkoNormalizer().fit(patches).reference
    log.info("stain reference from %d patches: %s", len(patches), reference.model_dump())
    return reference


def fit_distribution(patches: np.ndarray, reference: StainReference) -> StainDistribution:
    """Where training patches' own Macenko estimates lie: the stain_outlier flag's yardstick."""
    result = MacenkoNormalizer(reference).normalize(patches)
    distribution = fit_stain_distribution(result.stains, result.max_concentrations)
    log.info("stain distribution from %d estimated patches", distribution.patches)
    return distribution


def save_reference(reference: StainReference, path: Path) -> Path:
    path.write_text(reference.model_dump_json(indent=2) + "\n")
    return path


def _fingerprint(path: Path) -> str:
    # Name, size and mtime: enough to notice a regenerated file without hashing gigabytes.
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


@dataclass(frozen=True)
class NormalizedSplit:
    path: Path
    patches: int
    applied: float
    """Share of patches that were normalized (the rest had too little tissue, as served)."""
    reused: bool


def normalize_split(x_path: Path, y_path: Path, out: Path, reference: StainReference) -> NormalizedSplit:
    """Write x (normalized), y, applied and tissue_fraction for one split into out, unless cached."""
    source = json.dumps({"x": _fingerprint(x_path), "y": _fingerprint(y_path)})
    ref_json = reference.model_dump_json()
    if out.exists():
        with h5py.File(out, "r") as f:
            if f.attrs.get("source") == source and f.attrs.get("reference") == ref_json:
                return NormalizedSplit(out, len(f[Y_KEY]), float(np.mean(f["applied"][:])), reused=True)
    labels = read_labels(y_path)
    normalizer = MacenkoNormalizer(reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.h5")
    with h5py.File(x_path, "r") as src, h5py.File(tmp, "w") as dst:
        images = src[X_KEY]
        n = len(images)
        x = create_patch_dataset(dst, X_KEY, n)
        dst.create_dataset(Y_KEY, data=labels)
        applied = dst.create_dataset("applied", shape=(n,), dtype=bool)
        tissue = dst.create_dataset("tissue_fraction", shape=(n,), dtype=np.float32)
        for start in tqdm(range(0, n, BATCH), desc=f"normalize {out.stem}", disable=None):
            result = normalizer.normalize(np.asarray(images[start : start + BATCH]))
            stop = start + len(result.images)
            x[start:stop] = result.images
            applied[start:stop] = result.applied
            tissue[start:stop] = result.tissue_fraction
        share = float(np.mean(applied[:]))
        dst.attrs["source"], dst.attrs["reference"] = source, ref_json
    tmp.replace(out)  # a crash mid-way never leaves a cache that looks complete
    log.info("normalized %s: %d patches, %.1f %% normalized", out.stem, n, 100 * share)
    return NormalizedSplit(out, n, share, reused=False)
