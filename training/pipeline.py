"""The offline pipeline as steps over a work directory; `pcam build-repository` runs them all.

data -> stain reference + normalized splits -> train -> export (+ parity, validation logits through
onnxruntime: the graph that gets served) -> calibrate -> model repository.

With precision int8 (cpu target only) the graph that gets served is each member's static-QDQ INT8
copy: calibration fits that graph's validation logits and the repository serves its file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import torch

if TYPE_CHECKING:
    import onnxruntime as ort

from pcam_core.contract import FEATURE_DISTANCE_NAME, OUTPUT_NAME, TTA_VIEWS
from pcam_core.release import (
    PRECISIONS,
    ActivationMapKind,
    Precision,
    ReleaseManifest,
    StainDistribution,
    StainReference,
)
from pcam_core.tta import dihedral_views
from training import distributed, imported, quantize, stain, trt
from training.calibrate import Calibration, calibrate
from training.config import ExportFormat, ImportedMemberConfig, MemberConfig, RunConfig, save_config
from training.cv import CVReport, cross_validate_member, fold_indices
from training.data import pcam_h5
from training.data.synthetic import synthesize
from training.export import (
    OPSET,
    check_close,
    check_parity,
    check_torchscript_parity,
    export_onnx,
    export_torchscript,
)
from training.graphs import onnx_logits, onnx_outputs, session
from training.models import check_architecture
from training.progress import stage, with_progress
from training.repository.layout import next_versions
from training.repository.manifest import MemberArtifact, build_manifest, data_provenance, sha256_file
from training.repository.publishing import check_target, roll_release, write_repository
from training.repository.triton_config import ServingTarget, check_serving
from training.review import fit_review, measure_split
from training.served import ServedModel, fit_feature_density
from training.tracking import NullTracker, Tracker
from training.train import TrainResult, load_checkpoint, train_member
from training.workdir import WorkDir, require

log = logging.getLogger(__name__)
FIT_SPLITS = ("train", "valid")
PARITY_PATCHES = 64
VALID_BATCH = 256
"""Patches per onnxruntime call when scoring validation views (bounds the large members' memory)."""
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
    patches = pcam_h5.sample_patches(train_x, config.stain.fit_patches, config.seed)
    reference = stain.fit_reference(patches)
    stain.save_reference(reference, work.stain_reference)
    distribution = stain.fit_distribution(patches, reference)
    work.stain_distribution.write_text(distribution.model_dump_json(indent=2) + "\n")
    for split in FIT_SPLITS:
        x, y = pcam_h5.split_files(directory, split)
        stain.normalize_split(x, y, work.normalized(split), reference)
    return reference


def _normalized(work: WorkDir, split: str) -> pcam_h5.PCamH5Dataset:
    return pcam_h5.PCamH5Dataset(require(work.normalized(split), "stain-reference"))


def _selected(config: RunConfig, names: list[str] | None):
    return [config.member(n) for n in names] if names else list(config.members)


def _trained(config: RunConfig, names: list[str] | None) -> list[MemberConfig]:
    """The selected members that `pcam train` trains; an imported one is said to come trained."""
    selected = _selected(config, names)
    for member in selected:
        if isinstance(member, ImportedMemberConfig):
            log.info("%s: imported as an ONNX graph (%s), nothing to train", member.name, member.onnx.path)
    return [m for m in selected if isinstance(m, MemberConfig)]


def member_seed(config: RunConfig, name: str) -> int:
    """Each member its own seed, stable whether trained alone or with the others."""
    return config.seed + [m.name for m in config.members].index(name)


def train(
    config: RunConfig,
    work: WorkDir,
    names: list[str] | None = None,
    tracker: Tracker | None = None,
    resume: bool = True,
) -> dict[str, TrainResult]:
    """Train the named members (all by default) on the normalized splits; data-parallel under torchrun.

    With resume, a member's interrupted run continues from its last finished epoch.
    """
    torch.set_num_threads(config.threads)
    tracker = tracker or NullTracker()
    train_set, valid_set = _normalized(work, "train"), _normalized(work, "valid")
    results = {}
    with distributed.process_group() as job:
        for member in _trained(config, names):
            seed = member_seed(config, member.name)
            with tracker.child(member.name) as run:
                run.log_params({**member.model_dump(mode="json"), "seed": seed, "world_size": job.world_size})
                result = train_member(
                    member, train_set, valid_set, valid_set.labels, seed, work.checkpoint(member.name),
                    resume=resume, job=job, on_epoch=lambda row, run=run: run.log_metrics(_epoch_metrics(row), row["epoch"]),
                )  # fmt: skip
                run.log_metrics({"best_valid_auc": result.best_auc, "best_epoch": result.best_epoch})
                run.log_artifact(work.checkpoint(member.name).with_name("history.json"))
            results[member.name] = result
    return results


def cross_validate(
    config: RunConfig, work: WorkDir, k: int, names: list[str] | None = None, tracker: Tracker | None = None
) -> CVReport:
    """k-fold cross-validation of the named members (all by default) on the normalized training split."""
    torch.set_num_threads(config.threads)
    train_set, valid_set = _normalized(work, "train"), _normalized(work, "valid")
    groups = pcam_h5.slide_ids(data_dir(config, work), "train", len(train_set))
    folds = fold_indices(train_set.labels, k, config.seed, groups)
    with distributed.process_group() as job:
        members = {
            m.name: cross_validate_member(
                m, train_set, valid_set, folds, member_seed(config, m.name), work.cv(m.name), tracker, job
            )
            for m in _trained(config, names)
        }
    report = CVReport(
        data_source=config.data.source,
        k=k,
        grouped_by="slide" if groups is not None else "patch",
        members=members,
    )
    if job.is_main:
        work.cv_report.parent.mkdir(parents=True, exist_ok=True)
        work.cv_report.write_text(report.model_dump_json(indent=2) + "\n")
    for name, result in members.items():
        (tracker or NullTracker()).log_metrics(
            {f"{name}.mean_auc": result.mean_auc, f"{name}.std_auc": result.std_auc}
        )
    return report


def _epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in row.items() if key != "epoch"}


def _artifact(path: Path, **facts: Any) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, **facts}


def _check_formats(formats: Sequence[str]) -> set[str]:
    known = get_args(ExportFormat)
    unknown = set(formats) - set(known)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose from {list(known)}")
    return set(formats)


def export(
    config: RunConfig, work: WorkDir, names: list[str] | None = None, formats: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Export trained members: ONNX (parity-checked; its validation logits saved) plus the requested formats.

    formats defaults to the config's export.formats. Writes members/<name>/export.json (returned too):
    per format its file, sha256 and parity, for int8 the validation AUC change and the speedup over fp32
    (its validation logits saved for `pcam calibrate --precision int8`), for tensorrt a skip reason when
    tensorrt or a GPU is missing. Files of formats not requested this time are removed (stale).
    """
    wanted = _check_formats(config.export.formats if formats is None else formats)
    torch.set_num_threads(config.threads)
    valid_x = require(work.normalized("valid"), "stain-reference")
    sample = next(pcam_h5.iter_images(valid_x, PARITY_PATCHES))
    labels = pcam_h5.read_labels(valid_x)
    train_x = require(work.normalized("train"), "stain-reference")
    calibration = None
    if "int8" in wanted:
        calibration = pcam_h5.sample_patches(train_x, config.export.int8_calibration_patches, config.seed)
    # The same seeded indices for patches and labels: the feature densities' training sample.
    density_sample = tuple(
        pcam_h5.sample_patches(train_x, config.export.feature_patches, config.seed, key)
        for key in (pcam_h5.X_KEY, pcam_h5.Y_KEY)
    )
    tta_sample = next(pcam_h5.iter_images(valid_x, config.export.tta_patches))
    trt_skip = trt.unavailable() if "tensorrt" in wanted else None
    if trt_skip:
        log.warning(trt_skip)
    reports = {}
    for member in _selected(config, names):
        name = member.name
        if isinstance(member, ImportedMemberConfig):
            reports[name] = _export_imported(config, work, member, valid_x, sample, tta_sample, wanted)
            continue
        optional = {
            "torchscript": work.torchscript(name),
            "int8": work.int8(name),
            "tensorrt": work.plan(name),
        }
        for fmt, stale in optional.items():
            if fmt not in wanted:
                stale.unlink(missing_ok=True)  # an artifact of earlier weights must not sit next to new ones
        if "int8" not in wanted:
            for output in (
                "logits",
                "feature_distance",
                "tta_logits",
            ):  # calibrating on them would be stale too
                work.valid_output(name, output, "int8").unlink(missing_ok=True)
        trained = load_checkpoint(require(work.checkpoint(name), "train"))
        density = fit_feature_density(trained, *density_sample)
        model = ServedModel(trained, density)
        path = export_onnx(model, work.onnx(name))
        done = {"onnx": _artifact(
            path, opset=OPSET, parity_max_abs_diff=check_parity(model, path, sample, config.threads),
            feature_density={"patches": density.patches, "dimension": density.means.shape[1], "shrinkage": density.shrinkage},
            activation_map=model.map_kind,
        )}  # fmt: skip
        logits = _save_valid_outputs(work, name, "fp32", session(path, config.threads), valid_x, tta_sample)
        if "torchscript" in wanted:
            ts = export_torchscript(model, optional["torchscript"])
            done["torchscript"] = _artifact(ts, parity_max_abs_diff=check_torchscript_parity(model, ts, sample))  # fmt: skip
        if calibration is not None:
            done["int8"] = _int8(config, work, name, path, calibration, labels, logits, sample, tta_sample)
        if "tensorrt" in wanted:
            done["tensorrt"] = (
                {"skipped": trt_skip} if trt_skip else _plan(config, path, optional["tensorrt"])
            )
        reports[name] = {"member": name, "architecture": member.architecture, "formats": done}
        work.export_report(name).write_text(json.dumps(reports[name], indent=2) + "\n")
    return reports


def _export_imported(
    config: RunConfig,
    work: WorkDir,
    member: ImportedMemberConfig,
    valid_x: Path,
    sample: np.ndarray,
    tta_sample: np.ndarray,
    wanted: set[str],
) -> dict[str, Any]:
    """An imported member's graph wrapped into the contract (training.imported), checked against the
    original on the same patches, and its validation outputs saved as an exported member's are."""
    name, source = member.name, member.onnx
    for fmt in wanted - {"onnx"}:
        log.warning("%s: imported as ONNX, so no %s export", name, fmt)
    for stale in (work.torchscript(name), work.int8(name), work.plan(name)):
        stale.unlink(missing_ok=True)
    path = imported.wrap(source, work.onnx(name))
    graph = session(path, config.threads)
    difference = check_close(
        OUTPUT_NAME, onnx_logits(graph, [sample]), imported.original_logits(source, sample, config.threads),
        f"{name}: the wrapped {source.path}",
    )  # fmt: skip
    _save_valid_outputs(work, name, "fp32", graph, valid_x, tta_sample)
    onnx_entry = _artifact(path, opset=OPSET, parity_max_abs_diff=difference, activation_map=None)
    report = {"member": name, "architecture": member.architecture, "imported_from": _artifact(source.path),
              "formats": {"onnx": onnx_entry}}  # fmt: skip
    work.export_report(name).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _save_valid_outputs(
    work: WorkDir,
    name: str,
    precision: Precision,
    graph: ort.InferenceSession,
    valid_x: Path,
    tta_sample: np.ndarray,
) -> np.ndarray:
    """Save what calibration fits on: a served graph's validation logits and feature distances, and
    the logits of the 8 views of the first validation patches; return the logits."""
    batches = with_progress(pcam_h5.iter_images(valid_x), pcam_h5.count(valid_x), f"validation ({name})")
    outputs = onnx_outputs(graph, batches, (OUTPUT_NAME, FEATURE_DISTANCE_NAME))
    np.save(work.valid_logits(name, precision), outputs[OUTPUT_NAME])
    np.save(work.valid_output(name, "feature_distance", precision), outputs[FEATURE_DISTANCE_NAME])
    views = dihedral_views(tta_sample).reshape(-1, *tta_sample.shape[1:])  # view-major: (V * n, ...)
    batches = (views[i : i + VALID_BATCH] for i in range(0, len(views), VALID_BATCH))
    tta = onnx_logits(graph, batches).reshape(TTA_VIEWS, len(tta_sample))
    np.save(work.valid_output(name, "tta_logits", precision), tta)
    return outputs[OUTPUT_NAME]


def _int8(
    config: RunConfig,
    work: WorkDir,
    name: str,
    onnx: Path,
    calibration: np.ndarray,
    labels: np.ndarray,
    fp32_logits: np.ndarray,
    sample: np.ndarray,
    tta_sample: np.ndarray,
) -> dict[str, Any]:
    """The INT8 copy of a member's graph, its validation outputs (saved), AUC change and speedup over fp32."""
    valid_x = work.normalized("valid")
    int8, float_nodes = quantize.quantize_int8(onnx, work.int8(name), calibration)
    logits = _save_valid_outputs(work, name, "int8", session(int8, config.threads), valid_x, tta_sample)
    change = quantize.auc_change(labels, fp32_logits, logits)
    if change["auc_delta"] is not None:
        log.info("%s: INT8 validation AUC %.4f -> %.4f (%+.4f)", name, change["auc_fp32"], change["auc_int8"], change["auc_delta"])  # fmt: skip
    # Timed with the threads Triton's cpu target gives a member instance (triton.intra_op_threads).
    threads = config.triton.intra_op_threads
    timing = quantize.speedup(session(onnx, threads), session(int8, threads), sample)
    log.info(
        "%s: INT8 speedup x%.2f at batch 32 (%.1f -> %.1f ms), x%.2f at batch 1 (%.2f -> %.2f ms)",
        name, timing["speedup_batch32"], timing["fp32_ms_batch32"], timing["int8_ms_batch32"],
        timing["speedup_batch1"], timing["fp32_ms_batch1"], timing["int8_ms_batch1"],
    )  # fmt: skip
    entry = _artifact(
        int8,
        method=quantize.METHOD,
        calibration_patches=len(calibration),
        float_nodes=float_nodes,
        **change,
        timing_threads=threads,
        **timing,
    )
    _warn_int8(name, entry)
    return entry


def _export_step(precision: Precision) -> str:
    """The `pcam` step that writes a precision's graphs and validation logits."""
    return "export" if precision == "fp32" else f"export --format {precision}"


def _activation_map(work: WorkDir, name: str) -> ActivationMapKind | None:
    """The kind of activation map the member's exported graph carries (none: exported without one)."""
    return json.loads(require(work.export_report(name), "export").read_text())["formats"]["onnx"].get(
        "activation_map"
    )


def _warn_int8(name: str, entry: dict[str, Any]) -> None:
    """Log (not refuse) an int8 graph that is slower than fp32 or loses over 1 % of the AUC."""
    for concern in quantize.int8_concerns(entry):
        log.warning("%s: %s; judge it before serving it in int8", name, concern)


def _plan(config: RunConfig, onnx: Path, plan: Path) -> dict[str, Any]:
    triton = config.triton
    trt.build_plan(onnx, plan, triton.max_batch_size, fp16=triton.trt_precision == "FP16")
    return _artifact(plan, precision=triton.trt_precision, max_batch_size=triton.max_batch_size)


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{key}": value for key, value in metrics.items()}


def calibrate_members(
    config: RunConfig, work: WorkDir, tracker: Tracker | None = None, precision: Precision = "fp32"
) -> Calibration:
    """Temperatures, ensemble operating points and metrics from the validation logits of the graphs that
    will be served: the fp32 export's, or with precision int8 its INT8 copy's."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    labels = pcam_h5.read_labels(require(work.normalized("valid"), "stain-reference"))
    step = _export_step(precision)
    logits = {m.name: np.load(require(work.valid_logits(m.name, precision), step)) for m in config.members}
    slides = pcam_h5.slide_ids(data_dir(config, work), "valid", len(labels))
    weights = {m.name: m.weight for m in config.members}
    result = calibrate(
        logits,
        labels,
        weights,
        slides,
        config.calibration.ensemble_temperature,
        config.calibration.conformal_coverage,
    )
    reference = StainReference.model_validate_json(
        require(work.stain_reference, "stain-reference").read_text()
    )
    distribution = StainDistribution.model_validate_json(
        require(work.stain_distribution, "stain-reference").read_text()
    )
    outputs = {
        output: {
            m.name: np.load(require(work.valid_output(m.name, output, precision), step))
            for m in config.members
        }
        for output in ("feature_distance", "tta_logits")
    }
    review = fit_review(
        measure_split(pcam_h5.split_files(data_dir(config, work), "valid")[0], reference, distribution),
        distribution,
        logits,
        outputs["feature_distance"],
        outputs["tta_logits"],
        {name: member.temperature for name, member in result.members.items()},
        weights,
        result.ensemble.temperature,
        config.calibration.flag_rate,
    )
    result = result.model_copy(update={"precision": precision, "review": review})
    work.calibration.write_text(result.model_dump_json(indent=2) + "\n")
    tracker = tracker or NullTracker()
    for name, member in result.members.items():
        tracker.log_metrics({f"{name}.temperature": member.temperature, **_prefixed(name, member.metrics)})
    tracker.log_metrics(_prefixed("ensemble", result.ensemble.metrics))
    for name, point in result.ensemble.operating_points.items():
        tracker.log_metrics(
            _prefixed(name, point.model_dump(include={"threshold", "sensitivity", "specificity"}))
        )
    tracker.log_artifact(work.calibration)
    for name, member in result.members.items():
        log.info("%s: T=%.3f %s", name, member.temperature, _fmt(member.metrics))
    log.info("ensemble (%s graphs): %s", precision, _fmt(result.ensemble.metrics))
    for name, point in result.ensemble.operating_points.items():
        log.info(
            "%s: threshold %.4f, sensitivity %.3f, specificity %.3f",
            name, point.threshold, point.sensitivity, point.specificity,
        )  # fmt: skip
    return result


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_ci_" not in k)


def build_repository(
    config: RunConfig,
    output: Path,
    work: WorkDir,
    force: bool = False,
    target: ServingTarget = "cpu",
    precision: Precision = "fp32",
) -> ReleaseManifest:
    """Run every step and write the model repository for the cpu or gpu serving target to output (atomically).

    Steps whose results are in the work dir already (synthetic data, normalized splits, finished training)
    are not redone, so a second run over the same work dir only re-exports, calibrates and writes. With
    precision int8 the export adds the int8 format and the release serves it (cpu target only).
    """
    check_serving(target, precision)
    check_target(output, force)  # fail before minutes of training, not after
    for member in config.trained_members:
        check_architecture(member.architecture)
    save_config(config, work.config)
    formats = config.export.formats
    if precision == "int8" and "int8" not in formats:
        formats = (*formats, "int8")
    with stage("[1/6] data"):
        prepare_data(config, work)
    with stage("[2/6] stain reference"):
        fit_stain(config, work)
    with stage("[3/6] training"):
        train(config, work)
    with stage("[4/6] export"):
        export(config, work, formats=formats)
    with stage("[5/6] calibration"):
        calibrate_members(config, work, precision=precision)
    with stage("[6/6] model repository"):
        return package(config, work, output, force, target, precision=precision)


def package(
    config: RunConfig,
    work: WorkDir,
    output: Path,
    force: bool = False,
    target: ServingTarget = "cpu",
    rolling: bool = False,
    precision: Precision = "fp32",
) -> ReleaseManifest:
    """Write the model repository from a work dir whose steps have all run (no step is redone).

    With rolling, the release goes into the existing (serving) repository as new model versions
    next to the previous release's, and release.json switches last (repository.roll_release). With
    precision int8 each member serves its INT8 export (cpu target only), calibrated on its own logits.
    """
    check_serving(target, precision)
    if not rolling:
        check_target(output, force)
    directory = data_dir(config, work)
    reference = StainReference.model_validate_json(
        require(work.stain_reference, "stain-reference").read_text()
    )
    calibration = Calibration.model_validate_json(require(work.calibration, "calibrate").read_text())
    configured, calibrated = [m.name for m in config.members], list(calibration.members)
    if configured != calibrated:
        raise ValueError(
            f"{work.calibration} was fitted for members {calibrated}, the config has {configured}: "
            "run `pcam calibrate` again"
        )
    # The served graphs first: without them, calibrating for them is not the step to run next.
    served = {m.name: require(work.graph(m.name, precision), _export_step(precision)) for m in config.members}
    if calibration.precision != precision:
        # Temperatures and thresholds fitted on one graph's logits do not hold for the other's.
        raise ValueError(
            f"{work.calibration} was fitted on the {calibration.precision} graphs' validation logits, "
            f"the release would serve the {precision} graphs: run `pcam calibrate --precision {precision}`"
        )
    if precision == "int8":
        for m in config.members:  # what the export measured, said again where it is packaged
            report = work.export_report(m.name)
            entry = json.loads(report.read_text())["formats"].get("int8") if report.exists() else None
            if entry is not None:
                _warn_int8(m.name, entry)
    members = []
    for m in config.members:
        trained = {}
        if isinstance(m, MemberConfig):
            history = json.loads(
                require(work.checkpoint(m.name).with_name("history.json"), "train").read_text()
            )
            trained = {"best_epoch": float(history["best_epoch"])}
        members.append(
            MemberArtifact(
                name=m.name,
                architecture=m.architecture,
                onnx=served[m.name],
                temperature=calibration.members[m.name].temperature,
                weight=calibration.members[m.name].weight,  # the operating points were chosen with it
                metrics={**calibration.members[m.name].metrics, **trained},
                precision=precision,
                activation_map=_activation_map(work, m.name),
            )
        )
    spec = config.data.synthetic
    description = (
        f"synthetic PCam-like set (training.data.synthetic), seed {spec.seed}, sizes {spec.sizes()}"
        if spec is not None
        else f"PCam (Zenodo 2546921) from {directory}"
    )
    provenance = data_provenance(config.data.source, pcam_h5.data_files(directory), description)
    versions = next_versions(output, [m.name for m in members]) if rolling else None
    manifest = build_manifest(
        config.release_prefix,
        members,
        provenance,
        reference,
        calibration.ensemble,
        versions=versions,
        review=calibration.review,
    )
    if rolling:
        roll_release(output, members, manifest, config.triton, target)
    else:
        write_repository(output, members, manifest, config.triton, force, target)
    return manifest
