"""Training one member: BCE-with-logits, AdamW, dihedral augmentation, validation AUC per epoch, best kept."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm.optim
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.config import MemberConfig
from training.models import ContractModel, build_model

log = logging.getLogger(__name__)
EVAL_BATCH = 256
WARMUP_SHARE = 0.1


@contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed every generator and make torch pick deterministic kernels; restore the global flag after."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(previous)


def dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 rotations/flips, drawn per patch, to uint8 NHWC images.

    The center-32 label is invariant under all of them (the center square maps onto itself).
    """
    choice = torch.randint(0, 8, (len(images),), generator=generator)
    out = torch.empty_like(images)
    for t in range(8):
        idx = torch.nonzero(choice == t).squeeze(1)
        if len(idx):
            x = images[idx].flip(2) if t >= 4 else images[idx]
            out[idx] = torch.rot90(x, t % 4, dims=(1, 2))
    return out


def _cosine_with_warmup(total_steps: int):
    warmup = max(1, int(WARMUP_SHARE * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return factor


@torch.no_grad()
def predict_logits(model: ContractModel, dataset: Dataset) -> np.ndarray:
    """Logits (N,) of a dataset of (image, label) pairs, in order."""
    model.eval()
    loader = DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False)
    return np.concatenate([model(images).squeeze(1).numpy() for images, _ in loader])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN where the labels hold one class only (tiny validation sets)."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


@dataclass
class TrainResult:
    best_epoch: int
    best_auc: float
    history: list[dict[str, float]] = field(default_factory=list)


def _train_epoch(
    model: ContractModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    desc: str,
) -> float:
    """One pass over the training data with random dihedral augmentation; returns the mean loss."""
    model.train()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, disable=None, leave=False)
    for images, labels in bar:
        loss = loss_fn(model(dihedral(images, generator)).squeeze(1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


def train_member(
    member: MemberConfig,
    train_set: Dataset,
    valid_set: Dataset,
    valid_labels: np.ndarray,
    seed: int,
    checkpoint: Path,
) -> TrainResult:
    """Train from scratch, evaluate AUC each epoch, save the best epoch's weights to checkpoint."""
    with deterministic(seed) as generator:
        model = build_model(member.architecture, **member.model_kwargs)
        # A last batch of one sample would break batch norm; skip the ragged tail instead.
        drop_last = len(train_set) > member.batch_size
        loader = DataLoader(
            train_set, batch_size=member.batch_size, shuffle=True, generator=generator, drop_last=drop_last
        )
        # timm's factory leaves biases and norm weights out of weight decay.
        optimizer = timm.optim.create_optimizer_v2(
            model, opt="adamw", lr=member.lr, weight_decay=member.weight_decay
        )
        steps = member.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(steps))
        result, best_state = TrainResult(best_epoch=0, best_auc=-math.inf), None
        for epoch in range(1, member.epochs + 1):
            started = time.perf_counter()
            desc = f"{member.name} epoch {epoch}/{member.epochs}"
            train_loss = _train_epoch(model, loader, optimizer, scheduler, generator, desc)
            valid_auc = auc(valid_labels, predict_logits(model, valid_set))
            seconds = time.perf_counter() - started
            result.history.append(
                {"epoch": epoch, "train_loss": train_loss, "valid_auc": valid_auc, "seconds": seconds}
            )
            log.info("%s: train loss %.4f, valid AUC %.4f (%.0f s)", desc, train_loss, valid_auc, seconds)
            # NaN AUC (one-class validation set) never beats a number; then the last epoch is kept.
            if best_state is None or valid_auc > result.best_auc or math.isnan(result.best_auc):
                result.best_epoch, result.best_auc = epoch, valid_auc
                best_state = copy.deepcopy(model.state_dict())
    save_checkpoint(checkpoint, member, best_state, result)
    return result


def save_checkpoint(path: Path, member: MemberConfig, state: dict, result: TrainResult) -> None:
    """Weights plus what is needed to rebuild the model; history next to it as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"architecture": member.architecture, "model_kwargs": member.model_kwargs, "state_dict": state}, path
    )
    path.with_name("history.json").write_text(json.dumps(asdict(result), indent=2))


def load_checkpoint(path: Path) -> ContractModel:
    """Rebuild a trained ContractModel from a checkpoint (eval mode)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(saved["architecture"], **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()
