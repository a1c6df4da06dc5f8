"""The offline pipeline as steps over a work directory; `pcam build-repository` runs them all.

data -> stain reference + normalized splits -> train -> export (+ parity, validation logits through
onnxruntime: the graph that gets served) -> calibrate -> model repository.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from services.common.release import ReleaseManifest, StainReference
from training import stain
from training.calibrate import Calibration, calibrate
from training.config import RunConfig, save_config
from training.data import pcam_h5
from training.data.synthetic import synthesize
from training.export import check_parity, export_onnx, onnx_logits, session
from training.models import check_architecture
from training.repository import (
    MemberArtifact,
    build_manifest,
    check_target,
    data_provenance,
    write_repository,
)
from training.train import TrainResult, load_checkpoint, train_member
from training.workdir import WorkDir, require

log = logging.getLogger(__name__)
FIT_SPLITS = ("train", "valid")
PARITY_PATCHES = 64
SYNTHETIC_SPEC = "synthetic.json"


def data_dir(config: RunConfig, work: WorkDir) -> Path:
    """Where the PCam-layout files of this run live."""
    return work.data if config.data.synthetic is not None else Path(config.data.pcam_dir)


def prepare_data(config: RunConfig, work: WorkDir) -> Path:
    """Synthesize the configured set into the work dir unless an identical one is there already."""
    directory = data_dir(config, work)
    needed = [path for split in FIT_SPLITS for path in pcam_h5.split_files(directory, split)]
    spec = config.data.synthetic
    if spec is not None:
        marker = directory / SYNTHETIC_SPEC
        current = spec.model_dump_json()
        if all(p.exists() for p in needed) and marker.exists() and marker.read_text() == current:
            log.info("synthetic data in %s is up to date", directory)
        else:
            marker.unlink(missing_ok=True)  # written last: its presence means the set is complete
            synthesize(directory, spec.sizes(), spec.seed)
            marker.write_text(current)
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"PCam files missing: {missing}")
    return directory


def fit_stain(config: RunConfig, work: WorkDir) -> StainReference:
    """Fit the stain reference on training patches and cache the normalized train/valid splits."""
    directory = data_dir(config, work)
    train_x, _ = pcam_h5.split_files(directory, "train")
    reference = stain.fit_reference(train_x, config.stain.fit_patches, config.seed)
    stain.save_reference(reference, work.stain_reference)
    for split in FIT_SPLITS:
        x, y = pcam_h5.split_files(directory, split)
        stain.normalize_split(x, y, work.normalized(split), reference)
    return reference


def _normalized(work: WorkDir, split: str) -> pcam_h5.PCamH5Dataset:
    return pcam_h5.PCamH5Dataset(require(work.normalized(split), "stain-reference"))


def _selected(config: RunConfig, names: list[str] | None):
    return [config.member(n) for n in names] if names else list(config.members)


def train(config: RunConfig, work: WorkDir, names: list[str] | None = None) -> dict[str, TrainResult]:
    """Train the named members (all by default) on the normalized splits."""
    torch.set_num_threads(config.threads)
    train_set, valid_set = _normalized(work, "train"), _normalized(work, "valid")
    results = {}
    for member in _selected(config, names):
        # Each member its own seed, stable whether trained alone or with the others.
        seed = config.seed + [m.name for m in config.members].index(member.name)
        results[member.name] = train_member(
            member, train_set, valid_set, valid_set.labels, seed, work.checkpoint(member.name)
        )
    return results


def export(config: RunConfig, work: WorkDir, names: list[str] | None = None) -> dict[str, Path]:
    """Export trained members to ONNX, check parity, save their validation logits from onnxruntime."""
    torch.set_num_threads(config.threads)
    valid_x = require(work.normalized("valid"), "stain-reference")
    sample = next(pcam_h5.iter_images(valid_x, PARITY_PATCHES))
    exported = {}
    for member in _selected(config, names):
        model = load_checkpoint(require(work.checkpoint(member.name), "train"))
        path = export_onnx(model, work.onnx(member.name))
        check_parity(model, path, sample, config.threads)
        logits = onnx_logits(session(path, config.threads), pcam_h5.iter_images(valid_x))
        np.save(work.valid_logits(member.name), logits)
        exported[member.name] = path
    return exported


def calibrate_members(config: RunConfig, work: WorkDir) -> Calibration:
    """Temperatures, ensemble operating points and metrics from the members' validation logits."""
    labels = pcam_h5.read_labels(require(work.normalized("valid"), "stain-reference"))
    logits = {m.name: np.load(require(work.valid_logits(m.name), "export")) for m in config.members}
    slides = pcam_h5.read_slide_ids(pcam_h5.meta_file(data_dir(config, work), "valid"))
    weights = {m.name: m.weight for m in config.members}
    result = calibrate(logits, labels, weights, groups=slides)
    work.calibration.write_text(result.model_dump_json(indent=2) + "\n")
    for name, member in result.members.items():
        log.info("%s: T=%.3f %s", name, member.temperature, _fmt(member.metrics))
    log.info("ensemble: %s", _fmt(result.ensemble.metrics))
    for name, point in result.ensemble.operating_points.items():
        log.info(
            "%s: threshold %.4f, sensitivity %.3f, specificity %.3f",
            name, point.threshold, point.sensitivity, point.specificity,
        )  # fmt: skip
    return result


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_ci_" not in k)


def build_repository(config: RunConfig, output: Path, work: WorkDir, force: bool = False) -> ReleaseManifest:
    """Run every step and write the model repository to output (atomically)."""
    check_target(output, force)  # fail before minutes of training, not after
    for member in config.members:
        check_architecture(member.architecture)
    save_config(config, work.config)
    directory = prepare_data(config, work)
    reference = fit_stain(config, work)
    results = train(config, work)
    export(config, work)
    calibration = calibrate_members(config, work)
    members = [
        MemberArtifact(
            name=m.name,
            architecture=m.architecture,
            onnx=work.onnx(m.name),
            temperature=calibration.members[m.name].temperature,
            weight=m.weight,
            metrics={**calibration.members[m.name].metrics, "best_epoch": float(results[m.name].best_epoch)},
        )
        for m in config.members
    ]
    spec = config.data.synthetic
    description = (
        f"synthetic PCam-like set (training.data.synthetic), seed {spec.seed}, sizes {spec.sizes()}"
        if spec is not None
        else f"PCam (Zenodo 2546921) from {directory}"
    )
    provenance = data_provenance(config.data.source, pcam_h5.data_files(directory), description)
    manifest = build_manifest(config.release_prefix, members, provenance, reference, calibration.ensemble)
    write_repository(output, members, manifest, config.triton, force)
    return manifest
