"""The pipeline's commands over a work dir: config, work dir, torchrun's main process and tracking around
training.pipeline's steps. Imports torch and timm: training.cli imports this module on use."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pcam_core.release import Precision, ReleaseManifest, StainReference
from training import pipeline
from training.calibrate import Calibration
from training.config import RunConfig, load_config, save_config
from training.cv import CVReport
from training.distributed import from_env
from training.repository.triton_config import ServingTarget
from training.tracking import tracked
from training.train import TrainResult
from training.workdir import WorkDir


def start(config: str, workdir: Path) -> tuple[RunConfig, WorkDir]:
    """Load a run config and open its work dir, saving the config there (one writer under torchrun)."""
    cfg = load_config(config)
    work = WorkDir(workdir)
    if from_env().is_main:
        save_config(cfg, work.config)
    return cfg, work


def stain_reference(config: str, workdir: Path) -> StainReference:
    """Prepare the data and fit the stain reference (`pcam stain-reference`)."""
    cfg, work = start(config, workdir)
    pipeline.prepare_data(cfg, work)
    return pipeline.fit_stain(cfg, work)


def train(
    config: str, workdir: Path, members: list[str] | None, fresh: bool
) -> dict[str, TrainResult] | None:
    """Train members, tracked (`pcam train`); None on a torchrun process other than the main one."""
    cfg, work = start(config, workdir)
    main_process = from_env().is_main
    with tracked(cfg.tracking, f"{cfg.release_prefix}/train", enabled=main_process) as tracker:
        tracker.log_params({"config": cfg.model_dump(mode="json", exclude={"members"})})
        tracker.log_artifact(work.config)
        results = pipeline.train(cfg, work, members, tracker, resume=not fresh)
    return results if main_process else None


def cross_validate(
    config: str, workdir: Path, members: list[str] | None, folds: int
) -> tuple[CVReport, WorkDir] | None:
    """k-fold cross-validation, tracked (`pcam cv`); None on a torchrun process other than the main one."""
    cfg, work = start(config, workdir)
    main_process = from_env().is_main
    with tracked(cfg.tracking, f"{cfg.release_prefix}/cv", enabled=main_process) as tracker:
        tracker.log_params({"folds": folds})
        report = pipeline.cross_validate(cfg, work, folds, members, tracker)
        tracker.log_artifact(work.cv_report)
    return (report, work) if main_process else None


def export(
    config: str, workdir: Path, members: list[str] | None, formats: list[str] | None
) -> tuple[dict[str, dict[str, Any]], WorkDir]:
    """Export members (`pcam export`): the reports per member, and the work dir they are in."""
    cfg, work = start(config, workdir)
    return pipeline.export(cfg, work, members, formats), work


def calibrate(config: str, workdir: Path, precision: Precision = "fp32") -> Calibration:
    """Fit temperatures and operating points on the fp32 or int8 graphs' logits, tracked (`pcam calibrate`)."""
    cfg, work = start(config, workdir)
    with tracked(cfg.tracking, f"{cfg.release_prefix}/calibrate") as tracker:
        tracker.log_params({"precision": precision})
        return pipeline.calibrate_members(cfg, work, tracker, precision)


def build_repository(
    config: str,
    output: Path,
    workdir: Path | None,
    force: bool,
    target: ServingTarget,
    precision: Precision = "fp32",
) -> ReleaseManifest:
    """The whole pipeline into a model repository (`pcam build-repository`); a temporary work dir if none."""
    cfg = load_config(config)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="pcam-work-") as tmp:
            return pipeline.build_repository(cfg, output, WorkDir(Path(tmp)), force, target, precision)
    return pipeline.build_repository(cfg, output, WorkDir(workdir), force, target, precision)


def package(
    config: str,
    workdir: Path,
    output: Path,
    force: bool,
    target: ServingTarget,
    rolling: bool,
    precision: Precision = "fp32",
) -> ReleaseManifest:
    """The model repository from a finished work dir (`pcam package`)."""
    cfg, work = start(config, workdir)
    return pipeline.package(cfg, work, output, force, target, rolling, precision)
