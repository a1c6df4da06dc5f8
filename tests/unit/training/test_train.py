"""Training: reproducible from its seed, label-preserving augmentation, lazy data access."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import MemberConfig
from training.data.pcam_h5 import PCamH5Dataset, split_files
from training.data.synthetic import center_label, generate_split
from training.train import dihedral, load_checkpoint, train_member


def _datasets(directory: Path) -> tuple[PCamH5Dataset, PCamH5Dataset]:
    return PCamH5Dataset(*split_files(directory, "train")), PCamH5Dataset(*split_files(directory, "valid"))


def _train(directory: Path, checkpoint: Path, seed: int):
    member = MemberConfig(name="r", architecture="test_resnet", epochs=1, batch_size=32, lr=1e-3)
    train_set, valid_set = _datasets(directory)
    result = train_member(member, train_set, valid_set, valid_set.labels, seed, checkpoint)
    return result, torch.load(checkpoint, weights_only=True)["state_dict"]


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
