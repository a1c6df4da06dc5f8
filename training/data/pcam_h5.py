"""PCam's HDF5 layout (file names, keys) and a lazy torch dataset over it (docs/architecture.md#data)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pcam_core.contract import INPUT_SHAPE

log = logging.getLogger(__name__)
SLIDE_COLUMN = "wsi"

SPLITS = ("train", "valid", "test")
X_KEY, Y_KEY = "x", "y"


def split_files(directory: Path, split: str) -> tuple[Path, Path]:
    """The (x, y) HDF5 files of one split, named as PCam names them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    stem = f"camelyonpatch_level_2_split_{split}"
    return directory / f"{stem}_x.h5", directory / f"{stem}_y.h5"


def meta_file(directory: Path, split: str) -> Path:
    """PCam's per-split metadata CSV (slide id per patch)."""
    return directory / f"camelyonpatch_level_2_split_{split}_meta.csv"


def data_files(directory: Path) -> list[Path]:
    """Every PCam file present in a directory: the x/y HDF5 of each split, plus meta CSVs if any."""
    files = [path for split in SPLITS for path in split_files(directory, split)]
    files += [meta_file(directory, split) for split in SPLITS]
    return [path for path in files if path.exists()]


def create_patch_dataset(file: h5py.File, key: str, n: int) -> h5py.Dataset:
    """An uint8 (n, 96, 96, 3) dataset chunked per patch, as PCam's, so one patch reads one chunk."""
    return file.create_dataset(key, shape=(n, *INPUT_SHAPE), dtype=np.uint8, chunks=(1, *INPUT_SHAPE))


def read_labels(y_path: Path, key: str = Y_KEY) -> np.ndarray:
    """All labels of a split as uint8 (N,); labels are small, unlike the images."""
    with h5py.File(y_path, "r") as f:
        return np.asarray(f[key][:]).reshape(-1).astype(np.uint8)


def read_rows(dataset: h5py.Dataset, indices: np.ndarray) -> np.ndarray:
    """Entries at increasing indices, one read each: h5py's fancy indexing (`dataset[list]`) took
    0.29 s for 64 random patches on a 2-core machine, 70x as long as this loop."""
    if len(indices) == 0:
        return np.empty((0, *dataset.shape[1:]), dataset.dtype)
    return np.stack([dataset[int(i)] for i in indices])


def sample_patches(x_path: Path, n: int, seed: int, key: str = X_KEY) -> np.ndarray:
    """A seeded random sample of n entries (all, if the split has fewer) of a PCam-layout file; the same
    seed picks the same indices in every key, so patches and their labels can be sampled alike."""
    with h5py.File(x_path, "r") as f:
        values = f[key]
        count = len(values)
        # Sorted: h5py reads increasing indices only, and the order does not matter for ranges.
        chosen = np.sort(np.random.default_rng(seed).choice(count, size=min(n, count), replace=False))
        return read_rows(values, chosen)


def count(path: Path, key: str = X_KEY) -> int:
    """Entries (patches, labels) of a PCam-layout file, without reading them."""
    with h5py.File(path, "r") as f:
        return len(f[key])


def iter_images(x_path: Path, batch: int = 256, key: str = X_KEY) -> Iterator[np.ndarray]:
    """The images of a split in order, batch by batch (never the whole split in memory)."""
    with h5py.File(x_path, "r") as f:
        images = f[key]
        for start in range(0, len(images), batch):
            yield np.asarray(images[start : start + batch])


def slide_ids(directory: Path, split: str, n: int) -> np.ndarray | None:
    """The slide ('wsi' column of PCam's meta CSV) of each of a split's n patches; None without one.

    Slides are what bootstrap intervals and cross-validation folds group by; without them they fall
    back to patches, with a warning where a CSV exists but lacks the column.
    """
    path = meta_file(directory, split)
    if not path.exists():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if SLIDE_COLUMN not in (reader.fieldnames or []):
            log.warning("%s has no %r column: resampling patches, not slides", path, SLIDE_COLUMN)
            return None
        slides = np.asarray([row[SLIDE_COLUMN] for row in reader])
    if len(slides) != n:
        raise ValueError(f"{path}: {len(slides)} rows but the split has {n} patches")
    return slides


class PCamH5Dataset(Dataset):
    """Lazy (image uint8 (96, 96, 3), label float32) pairs; each worker opens the files itself.

    x and y may live in one file (the normalized cache) or two (PCam's own layout).
    """

    def __init__(self, x_path: Path, y_path: Path | None = None, x_key: str = X_KEY, y_key: str = Y_KEY):
        self.x_path, self.x_key, self.y_key = Path(x_path), x_key, y_key
        self.labels = read_labels(Path(y_path or x_path), y_key)
        with h5py.File(self.x_path, "r") as f:
            n = len(f[x_key])
        if n != len(self.labels):
            raise ValueError(f"{self.x_path}: {n} images but {len(self.labels)} labels")
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _images(self) -> h5py.Dataset:
        # An h5py handle must not cross a fork: reopen in each DataLoader worker process.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.x_path, "r")
            self._pid = os.getpid()
        return self._file[self.x_key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.asarray(self._images()[index]))
        return image, torch.tensor(float(self.labels[index]))

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Read a whole batch (any order, repeats allowed) with `read_rows`."""
        order = np.asarray(indices)
        unique, inverse = np.unique(order, return_inverse=True)
        images = read_rows(self._images(), unique)[inverse]
        return [
            (torch.from_numpy(img), torch.tensor(float(self.labels[i])))
            for img, i in zip(images, order, strict=True)
        ]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state
