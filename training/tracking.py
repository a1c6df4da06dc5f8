"""Optional experiment tracking: MLflow runs in a local store, Weights & Biases runs, or nothing.

The config's `tracking.backend` chooses; both record the same parameters, metrics and files.
- mlflow: `<dir>/mlflow.db` (sqlite) with artifacts under `<dir>/artifacts`; MLflow 3 refuses its plain
  file store by default, and sqlite keeps everything in one local directory all the same. Browse it
  with `mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db` (full mlflow).
- wandb: runs under `<dir>/wandb/`, offline unless `wandb_mode: online` (then WANDB_API_KEY and the
  network); `wandb sync <dir>/wandb/offline-run-*` uploads offline runs later. W&B has no nested runs: a
  step's members are runs of the step's group.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from training.config import TrackingConfig

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value


class Tracker(Protocol):
    """What the pipeline records: parameters, metrics (per step), files and nested runs."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path) -> None: ...
    def child(self, name: str) -> Any: ...  # a context manager yielding a nested Tracker


class NullTracker:
    """Tracking off: every call does nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    @contextmanager
    def child(self, name: str) -> Iterator[NullTracker]:
        yield self


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as MLflow parameters: {'a': {'b': 1}} -> {'a.b': '1'}."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


class MlflowTracker:
    """One MLflow run; children are nested runs of the same experiment."""

    def __init__(self, client: Any, experiment_id: str, run_id: str) -> None:
        self._client, self._experiment_id, self.run_id = client, experiment_id, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            if value is not None:
                self._client.log_metric(self.run_id, key, float(value), step=step or 0)

    def log_artifact(self, path: Path) -> None:
        if path.exists():
            self._client.log_artifact(self.run_id, str(path))

    @contextmanager
    def child(self, name: str) -> Iterator[MlflowTracker]:
        with _run(self._client, self._experiment_id, name, {PARENT_TAG: self.run_id}) as tracker:
            yield tracker


@contextmanager
def _run(client: Any, experiment_id: str, name: str, tags: Mapping[str, str]) -> Iterator[MlflowTracker]:
    """A run that ends FINISHED, or FAILED when the block raises."""
    run = client.create_run(experiment_id, run_name=name, tags=dict(tags))
    status = "FAILED"
    try:
        yield MlflowTracker(client, experiment_id, run.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status=status)


class WandbTracker:
    """One W&B run; children are runs of the same group."""

    def __init__(self, run: Any, options: Mapping[str, Any]) -> None:
        self._run, self._options = run, options

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._run.config.update(flatten(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {key: float(value) for key, value in metrics.items() if value is not None}
        if step is None:  # a run's final figures: W&B keeps them in the summary
            self._run.summary.update(values)
        else:
            self._run.log(values, step=step)

    def log_artifact(self, path: Path) -> None:
        import wandb

        if path.exists():
            artifact = wandb.Artifact(_artifact_name(f"{self._run.name}-{path.name}"), type="file")
            artifact.add_file(str(path))
            self._run.log_artifact(artifact)

    @contextmanager
    def child(self, name: str) -> Iterator[WandbTracker]:
        with _wandb_run(name, self._options) as tracker:
            yield tracker


def _artifact_name(text: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


@contextmanager
def _wandb_run(name: str, options: Mapping[str, Any]) -> Iterator[WandbTracker]:
    """A W&B run that finishes with exit code 0, or 1 when the block raises."""
    import wandb

    run = wandb.init(name=name, reinit="create_new", **options)
    code = 1
    try:
        yield WandbTracker(run, options)
        code = 0
    finally:
        run.finish(exit_code=code)


def store_uri(directory: Path) -> str:
    """The sqlite tracking URI of a local store directory."""
    return f"sqlite:///{directory.resolve() / 'mlflow.db'}"


@contextmanager
def tracked(config: TrackingConfig | None, name: str, enabled: bool = True) -> Iterator[Tracker]:
    """A run named name for the block in the configured backend (when enabled), else a no-op."""
    if config is None or not enabled:
        yield NullTracker()
        return
    config.dir.mkdir(parents=True, exist_ok=True)
    if config.backend == "wandb":
        with _wandb_tracked(config, name) as tracker:
            yield tracker
        return
    from mlflow.tracking import MlflowClient

    directory = config.dir
    client = MlflowClient(tracking_uri=store_uri(directory))
    experiment = client.get_experiment_by_name(config.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            config.experiment, artifact_location=(directory.resolve() / "artifacts").as_uri()
        )
    )
    log.info("tracking run %r in %s (experiment %r)", name, store_uri(directory), config.experiment)
    with _run(client, experiment_id, name, {}) as tracker:
        yield tracker


@contextmanager
def _wandb_tracked(config: TrackingConfig, name: str) -> Iterator[WandbTracker]:
    import wandb

    options = {
        "project": config.experiment,
        "dir": str(config.dir.resolve()),
        "mode": config.wandb_mode,
        "group": f"{name}-{uuid.uuid4().hex[:8]}",  # the step's run and its members' runs
        "job_type": name.rsplit("/", 1)[-1],
        "settings": wandb.Settings(silent=True, console="off", save_code=False),
    }
    log.info("tracking W&B run %r in %s (%s, project %r)", name, config.dir / "wandb", config.wandb_mode, config.experiment)  # fmt: skip
    with _wandb_run(name, options) as tracker:
        yield tracker
