"""Experiment tracking, MLflow to a local store and W&B offline: what `pcam train` records matches what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.unit.training.wandb_records import payloads
from training.cli import app
from training.config import TrackingConfig
from training.tracking import NullTracker, flatten, store_uri, tracked


def _runs(directory: Path, experiment: str = "pcam") -> tuple[MlflowClient, dict]:
    client = MlflowClient(tracking_uri=store_uri(directory))
    found = client.get_experiment_by_name(experiment)
    return client, {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def test_pcam_train_records_params_epoch_metrics_and_artifacts(tmp_path: Path, tiny_config, staged):
    store = tmp_path / "mlruns"
    config = tiny_config(
        "tracked", train=96, seed=4, tracking={"mlflow_dir": str(store), "experiment": "unit"}
    )
    config["members"][0].update(epochs=2, lr=0.002)
    path, work = staged(config, tmp_path)
    result = CliRunner().invoke(app, ["train", "-c", str(path), "-w", str(work)])
    assert result.exit_code == 0, result.output

    client, runs = _runs(store, "unit")
    parent, child = runs["tracked/train"], runs["resnet"]
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["lr"] == "0.002" and child.data.params["world_size"] == "1"
    assert parent.data.params["config.data.synthetic.train"] == "96"
    history = json.loads((work / "members" / "resnet" / "history.json").read_text())
    logged = client.get_metric_history(child.info.run_id, "valid_auc")
    assert [(m.step, m.value) for m in logged] == [(r["epoch"], r["valid_auc"]) for r in history["history"]]
    assert child.data.metrics["best_valid_auc"] == history["best_auc"]
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["history.json"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["config.yaml"]


def test_a_failing_step_marks_its_run_failed(tmp_path: Path):
    config = TrackingConfig(mlflow_dir=tmp_path / "store")
    with pytest.raises(RuntimeError), tracked(config, "boom") as tracker:
        tracker.log_metrics({"x": 1.0})
        raise RuntimeError("step failed")
    _, runs = _runs(tmp_path / "store")
    assert runs["boom"].info.status == "FAILED" and runs["boom"].data.metrics["x"] == 1.0


def test_without_tracking_nothing_is_written(tmp_path: Path):
    with tracked(None, "off") as tracker:
        assert isinstance(tracker, NullTracker)
    with tracked(TrackingConfig(mlflow_dir=tmp_path / "store"), "rank 1", enabled=False) as tracker:
        assert isinstance(tracker, NullTracker)
    assert not (tmp_path / "store").exists()


def test_nested_params_flatten_to_dotted_names():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {
        "a.b": "1",
        "a.c.d": "None",
        "e": "[1, 2]",
    }


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _wandb_runs(directory: Path) -> dict[str, dict]:
    """The offline W&B runs under a tracking dir: name -> {group, config, summary, history rows}."""
    import wandb
    from wandb.proto import wandb_internal_pb2

    # The runs finished in this process, so W&B's service outlives them and its writer may still be
    # flushing a run file after `finish` returned (a loaded machine read one with no records): shut it
    # down as the process's exit would, so every file is complete before it is read.
    wandb.teardown()
    runs = {}
    for run_file in sorted((directory / "wandb").glob("offline-run-*/run-*.wandb")):
        run, history, summary, config, artifacts, exit_code = None, [], {}, {}, [], None
        for payload in payloads(run_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config.update({_key(item): json.loads(item.value_json) for item in run.config.update})
            elif kind == "config":
                config.update({_key(item): json.loads(item.value_json) for item in record.config.update})
            elif kind == "history":
                history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
            elif kind == "summary":
                summary.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
            elif kind == "artifact":
                artifacts += [entry.path for entry in record.artifact.manifest.contents]
            elif kind == "exit":
                exit_code = record.exit.exit_code
        runs[run.display_name] = {
            "group": run.run_group, "config": config, "summary": summary, "history": history,
            "artifacts": artifacts, "exit_code": exit_code,
        }  # fmt: skip
    return runs


def test_wandb_offline_records_what_mlflow_records(tmp_path: Path, tiny_config, staged, monkeypatch):
    """The same `pcam train` with `backend: wandb`: params, per-epoch metrics and summaries, offline."""
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: the config says offline already
    store = tmp_path / "wandb-runs"
    config = tiny_config(
        "tracked", train=96, seed=4, tracking={"backend": "wandb", "dir": str(store), "experiment": "unit"}
    )
    config["members"][0].update(epochs=2, lr=0.002)
    path, work = staged(config, tmp_path)
    result = CliRunner().invoke(app, ["train", "-c", str(path), "-w", str(work)])
    assert result.exit_code == 0, result.output
    runs = _wandb_runs(store)
    parent, child = runs["tracked/train"], runs["resnet"]
    assert parent["group"] == child["group"] and parent["group"].startswith("tracked/train-")
    assert child["config"]["lr"] == "0.002" and child["config"]["world_size"] == "1"
    assert parent["config"]["config.data.synthetic.train"] == "96"
    history = json.loads((work / "members" / "resnet" / "history.json").read_text())
    logged = [(row["_step"], row["valid_auc"]) for row in child["history"] if "valid_auc" in row]
    assert logged == [(r["epoch"], r["valid_auc"]) for r in history["history"]]
    assert child["summary"]["best_valid_auc"] == pytest.approx(history["best_auc"])
    assert child["artifacts"] == ["history.json"] and parent["artifacts"] == ["config.yaml"]
    assert parent["exit_code"] == child["exit_code"] == 0


def test_a_failing_step_finishes_its_wandb_run_with_exit_code_1(tmp_path: Path):
    config = TrackingConfig(backend="wandb", dir=tmp_path / "store")
    with pytest.raises(RuntimeError), tracked(config, "boom") as tracker:
        tracker.log_metrics({"x": 1.0}, step=1)
        raise RuntimeError("step failed")
    (run,) = _wandb_runs(tmp_path / "store").values()
    assert run["exit_code"] == 1 and run["history"][0]["x"] == 1.0
