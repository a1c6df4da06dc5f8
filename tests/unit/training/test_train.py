"""Training: reproducible from its seed, resumable to the same weights, early stopping, label-preserving
augmentation, lazy data access."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from training import train as train_module
from training.config import MemberConfig
from training.data.pcam_h5 import PCamH5Dataset, split_files
from training.data.synthetic import center_label, generate_split
from training.train import dihedral, load_checkpoint, resume_path, run_fingerprint, train_member


def _datasets(directory: Path) -> tuple[PCamH5Dataset, PCamH5Dataset]:
    return PCamH5Dataset(*split_files(directory, "train")), PCamH5Dataset(*split_files(directory, "valid"))


def _member(**changes) -> MemberConfig:
    return MemberConfig(
        name="r", architecture="test_resnet", **{"epochs": 1, "batch_size": 32, "lr": 1e-3, **changes}
    )


def _train(directory: Path, checkpoint: Path, seed: int, **changes):
    train_set, valid_set = _datasets(directory)
    result = train_member(_member(**changes), train_set, valid_set, valid_set.labels, seed, checkpoint)
    return result, torch.load(checkpoint, weights_only=True)["state_dict"]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(tiny_pcam: Path, tmp_path: Path):
    result_a, a = _train(tiny_pcam, tmp_path / "a.pt", seed=3)
    _, b = _train(tiny_pcam, tmp_path / "b.pt", seed=3)
    _, c = _train(tiny_pcam, tmp_path / "c.pt", seed=4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert result_a.best_epoch == 1 and 0 <= result_a.best_auc <= 1
    assert not torch.are_deterministic_algorithms_enabled()  # the global flag is restored


def test_checkpoint_rebuilds_the_trained_model(tiny_pcam: Path, tmp_path: Path):
    _, state = _train(tiny_pcam, tmp_path / "m.pt", seed=0)
    model = load_checkpoint(tmp_path / "m.pt")
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert (tmp_path / "history.json").exists()


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(
    tiny_pcam: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = {"epochs": 2, "loss": "focal", "warmup_steps": 2}
    whole, whole_state = _train(tiny_pcam, tmp_path / "whole" / "checkpoint.pt", seed=5, **settings)

    # A run killed during its second epoch: the first epoch's resume state is on disk, nothing more.
    real_epoch, calls = train_module._train_epoch, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    checkpoint = tmp_path / "resumed" / "checkpoint.pt"
    monkeypatch.setattr(train_module, "_train_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_pcam, checkpoint, seed=5, **settings)
    assert torch.load(resume_path(checkpoint), weights_only=True)["epoch"] == 1
    assert not checkpoint.exists()
    calls.clear()

    def counts(*args, **kwargs):
        calls.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", counts)
    resumed, resumed_state = _train(tiny_pcam, checkpoint, seed=5, **settings)
    assert len(calls) == 1  # only the second epoch was trained again
    assert _equal(resumed_state, whole_state)  # the best epoch's weights
    last = [
        torch.load(resume_path(c), weights_only=True)
        for c in (tmp_path / "whole" / "checkpoint.pt", checkpoint)
    ]
    assert _equal(last[0]["model"], last[1]["model"])  # and the last epoch's
    assert last[1]["epoch"] == 2
    assert [h["valid_auc"] for h in resumed.history] == [h["valid_auc"] for h in whole.history]
    assert (resumed.best_epoch, resumed.best_auc) == (whole.best_epoch, whole.best_auc)


def test_resume_state_of_another_run_is_not_used():
    train_set = [(torch.zeros(96, 96, 3, dtype=torch.uint8), torch.tensor(0.0))] * 4
    labels = np.array([0, 1, 0, 1])
    base = run_fingerprint(_member(), 0, train_set, labels)
    assert base == run_fingerprint(_member(), 0, train_set, labels)
    assert base != run_fingerprint(_member(), 1, train_set, labels)  # seed
    assert base != run_fingerprint(_member(lr=2e-3), 0, train_set, labels)  # config
    assert base != run_fingerprint(_member(), 0, train_set[:3], labels)  # data
    assert base != run_fingerprint(_member(), 0, train_set, labels[::-1].copy())


def test_early_stopping_keeps_the_best_epoch(
    tiny_pcam: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    aucs, seen = iter([0.7, 0.9, 0.8, 0.85, 0.95, 0.99]), []
    real_predict = train_module.predict_logits

    def recording_predict(model, dataset):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_predict(model, dataset)

    monkeypatch.setattr(train_module, "predict_logits", recording_predict)
    monkeypatch.setattr(train_module, "auc", lambda labels, scores: next(aucs))
    result, state = _train(tiny_pcam, tmp_path / "m.pt", seed=0, epochs=6, patience=2)
    assert result.stopped_early and len(result.history) == 4  # 0.8 and 0.85 do not beat 0.9
    assert (result.best_epoch, result.best_auc) == (2, 0.9)
    assert _equal(state, seen[1])
    assert not _equal(state, seen[-1])
    # Resuming a stopped run trains nothing more.
    monkeypatch.setattr(train_module, "_train_epoch", lambda *a, **k: pytest.fail("trained after stopping"))
    again, state_again = _train(tiny_pcam, tmp_path / "m.pt", seed=0, epochs=6, patience=2)
    assert again == result and _equal(state_again, state)


def test_weighted_bce_member_trains_reproducibly(tiny_pcam: Path, tmp_path: Path):
    result, a = _train(tiny_pcam, tmp_path / "a.pt", seed=1, loss="weighted_bce")
    _, b = _train(tiny_pcam, tmp_path / "b.pt", seed=1, loss="weighted_bce")
    assert _equal(a, b) and np.isfinite(result.history[0]["train_loss"])


def test_dihedral_transforms_keep_the_center_label():
    patches = generate_split(64, seed=9)[0]
    masks = torch.from_numpy(np.repeat(patches.tumor_mask[..., None], 3, axis=-1).astype(np.uint8))
    generator = torch.Generator().manual_seed(0)
    moved = dihedral(masks, generator)[..., 0].numpy().astype(bool)
    assert np.array_equal(center_label(moved), patches.labels)
    assert not np.array_equal(moved, patches.tumor_mask)  # something did move


def test_dihedral_draws_all_eight_transforms():
    image = torch.arange(96 * 96 * 3, dtype=torch.int64).reshape(1, 96, 96, 3) % 251
    batch = image.repeat(400, 1, 1, 1).to(torch.uint8)
    out = dihedral(batch, torch.Generator().manual_seed(1))
    assert len({bytes(o.numpy()) for o in out}) == 8


def test_dataset_reads_batches_in_requested_order(tiny_pcam: Path):
    dataset = PCamH5Dataset(*split_files(tiny_pcam, "valid"))
    expected = generate_split(64, seed=7, split_index=1)[0]
    items = dataset.__getitems__([5, 2, 5, 0])
    for (image, label), i in zip(items, [5, 2, 5, 0], strict=True):
        assert image.dtype == torch.uint8 and image.shape == (96, 96, 3)
        assert np.array_equal(image.numpy(), expected.images[i])
        assert label.item() == expected.labels[i]
    assert np.array_equal(dataset[7][0].numpy(), expected.images[7])


def test_dataset_pickles_without_its_open_file(tiny_pcam: Path):
    dataset = PCamH5Dataset(*split_files(tiny_pcam, "valid"))
    dataset[0]  # opens the HDF5 file
    clone = pickle.loads(pickle.dumps(dataset))  # as DataLoader workers receive it
    assert clone._file is None
    assert np.array_equal(clone[3][0].numpy(), dataset[3][0].numpy())


def test_dataset_refuses_mismatched_files(tiny_pcam: Path):
    x, _ = split_files(tiny_pcam, "valid")
    _, y = split_files(tiny_pcam, "train")
    with pytest.raises(ValueError, match="labels"):
        PCamH5Dataset(x, y)
