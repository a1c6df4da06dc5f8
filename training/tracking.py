"""Optional experiment tracking: MLflow runs in a local store, or nothing when the config has none.

The store is `<mlflow_dir>/mlflow.db` (sqlite) with artifacts under `<mlflow_dir>/artifacts`; MLflow 3
refuses its plain file store by default, and sqlite keeps everything in one local directory all the
same. Browse it with `mlflow ui --backend-store-uri sqlite:///<mlflow_dir>/mlflow.db` (full mlflow).
"""

from __future__ import annotations

import logging
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


def store_uri(directory: Path) -> str:
    """The sqlite tracking URI of a local store directory."""
    return f"sqlite:///{directory.resolve() / 'mlflow.db'}"


@contextmanager
def tracked(config: TrackingConfig | None, name: str, enabled: bool = True) -> Iterator[Tracker]:
    """An MLflow run named name for the block when tracking is configured (and enabled), else a no-op."""
    if config is None or not enabled:
        yield NullTracker()
        return
    from mlflow.tracking import MlflowClient

    directory = config.mlflow_dir
    directory.mkdir(parents=True, exist_ok=True)
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
