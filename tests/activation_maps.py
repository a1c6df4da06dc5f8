"""Where a release's served activation maps put the evidence for tumor, on fresh synthetic patches.

The patches come from the synthetic generator with their tumor masks, are normalized with the
release's stain reference and go through the members' served ONNX graphs (`OnnxMembers`, the
in-process runner of the serving path); the ensemble's map is `pcam_core.explain.ensemble_map`, as
the ensemble service makes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcam_core.explain import ensemble_map
from pcam_core.release import load_release
from pcam_core.rule import member_rule
from services.preprocess.stain import MacenkoNormalizer
from training.data.synthetic import CENTER_HI, CENTER_LO, Kind, generate_split
from training.predict import OnnxMembers

MAP_PATCHES = 1024
MAP_SEED = 103
CENTER = slice(CENTER_LO, CENTER_HI)


@dataclass(frozen=True)
class ServedMaps:
    ensemble: np.ndarray
    """(N, 96, 96) the ensemble's map."""
    members: dict[str, np.ndarray]
    """Each member's (N, 96, 96) map."""
    center_positives: np.ndarray
    """Positives whose tumor lies mostly (>= 50 %) in the center: their evidence is there to be found."""
    decoys: np.ndarray
    """Negatives with tumor in the periphery only."""


def center_share(heat: np.ndarray) -> np.ndarray:
    """(N,) share of each (N, 96, 96) map's positive mass (the evidence for tumor) in the center 32x32."""
    evidence = np.maximum(heat, 0)
    return evidence[:, CENTER, CENTER].sum(axis=(1, 2)) / np.maximum(evidence.sum(axis=(1, 2)), 1e-12)


def served_maps(repository: Path, patches: int = MAP_PATCHES, seed: int = MAP_SEED) -> ServedMaps:
    """The release's served maps of `patches` fresh synthetic patches from `seed`."""
    synthetic, _ = generate_split(patches, seed=seed)
    manifest = load_release(repository)
    images = MacenkoNormalizer(manifest.stain_reference).normalize(synthetic.images).images
    runner = OnnxMembers(repository, manifest, threads=2)
    answers = asyncio.run(runner.try_logits(manifest.members, images, maps=True))
    names = [m.name for m in manifest.members]
    members = np.stack([answers.activation_maps[name] for name in names], axis=1)
    mask = synthetic.tumor_mask
    inside = mask[:, CENTER, CENTER].sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return ServedMaps(
        ensemble=ensemble_map(members, *member_rule(manifest)),
        members=dict(zip(names, np.moveaxis(members, 1, 0), strict=True)),
        center_positives=(synthetic.kinds == Kind.POSITIVE) & (inside >= 0.5),
        decoys=synthetic.kinds == Kind.DECOY,
    )
