"""Data-parallel training: torchrun with 2 CPU processes on gloo, rank sharding, replica agreement."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from training.cli import app
from training.config import MemberConfig
from training.data.pcam_h5 import PCamH5Dataset, split_files
from training.distributed import Distributed, ReplicaMismatch, check_replicas_agree, parameters_digest
from training.train import _loader, load_checkpoint

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def ddp_work(tmp_path_factory: pytest.TempPathFactory, tiny_config, staged) -> tuple[Path, Path]:
    """(config, work dir) with the normalized splits ready for `pcam train`: 2 epochs, one thread a rank."""
    config = tiny_config("ddp", train=192, threads=1)
    config["members"][0]["epochs"] = 2
    return staged(config, tmp_path_factory.mktemp("ddp"))


def _torchrun(config: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "training", "-v", "train",
               "-c", str(config), "-w", str(work), *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# Two torchrun jobs of two training processes each: 46 s of make test on 2 cores; make test-slow runs them.
@pytest.mark.slow
def test_torchrun_gloo_trains_two_ranks_reproducibly(ddp_work: tuple[Path, Path]):
    config, work = ddp_work
    first = _torchrun(config, work)
    logs = first.stdout + first.stderr
    assert "rank 0 of 2 joined the gloo process group" in " ".join(logs.split())
    assert "rank 1 of 2 joined the gloo process group" in " ".join(logs.split())
    checkpoint = work / "members" / "resnet" / "checkpoint.pt"
    a = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert yaml.safe_load((work / "config.yaml").read_text())["threads"] == 1

    _torchrun(config, work, "--fresh")
    b = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(load_checkpoint(checkpoint).state_dict()) == len(a)


@pytest.mark.slow
def test_a_resume_state_of_a_two_rank_run_is_not_used_by_one_process(
    ddp_work: tuple[Path, Path], caplog: pytest.LogCaptureFixture
):
    config, work = ddp_work
    _torchrun(config, work)
    caplog.set_level(logging.INFO, logger="training")
    result = CliRunner().invoke(app, ["train", "-c", str(config), "-w", str(work)])
    assert result.exit_code == 0, result.output
    assert "ignoring resume state" in caplog.text and "resuming" not in caplog.text
    history = yaml.safe_load((work / "members" / "resnet" / "history.json").read_text())
    assert [row["epoch"] for row in history["history"]] == [1, 2]


def test_each_rank_reads_its_own_shard_of_the_global_batch(tiny_pcam: Path):
    train_set = PCamH5Dataset(*split_files(tiny_pcam, "train"))
    member = MemberConfig(name="r", architecture="test_resnet", epochs=1, batch_size=32, lr=1e-3)
    shards = []
    for rank in (0, 1):
        loader = _loader(member, train_set, 0, torch.Generator().manual_seed(0), Distributed(rank, 2, rank))
        assert loader.batch_size == 16
        shards.append(np.asarray(list(iter(loader.sampler))))
    assert not set(shards[0]) & set(shards[1])
    assert len(shards[0]) + len(shards[1]) == len(train_set)


def test_a_global_batch_that_does_not_split_evenly_is_refused(tiny_pcam: Path):
    train_set = PCamH5Dataset(*split_files(tiny_pcam, "train"))
    member = MemberConfig(name="r", architecture="test_resnet", epochs=1, batch_size=33, lr=1e-3)
    with pytest.raises(ValueError, match="batch_size 33 is the global batch"):
        _loader(member, train_set, 0, torch.Generator(), Distributed(0, 2, 0))


class _TwoRanks(Distributed):
    """Rank 0 of a pretend 2-rank job whose other rank reports the given digest."""

    def __init__(self, other: str) -> None:
        super().__init__(rank=0, world_size=2, local_rank=0)
        object.__setattr__(self, "other", other)

    def gather(self, value):
        return [value, self.other]


def test_replicas_that_disagree_fail_the_run():
    model = torch.nn.Linear(3, 1)
    check_replicas_agree(_TwoRanks(parameters_digest(model)), model)
    with pytest.raises(ReplicaMismatch):
        check_replicas_agree(_TwoRanks("0" * 64), model)
