"""Training one member: configured loss, AdamW with warmup + cosine, augmentation, AMP on CUDA,
validation AUC per epoch with the best epoch kept and optional early stopping, and a resume state after
every epoch from which an interrupted run continues to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm.optim
import torch
from sklearn.metrics import roc_auc_score
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from training.augment import augment, dihedral  # noqa: F401 - dihedral re-exported for callers
from training.config import AugmentConfig, MemberConfig
from training.distributed import SINGLE, Distributed, check_replicas_agree
from training.losses import LossFn, build_loss
from training.models import ContractModel, build_member_model, build_model
from training.schedule import warmup_cosine, warmup_steps

log = logging.getLogger(__name__)
EVAL_BATCH = 256
LOSS_SHOWN_EVERY = 20
"""Steps between two updates of the progress bar's running loss (each update waits for the device)."""
RESUME_SUFFIX = ".resume.pt"
RESUME_FORMAT = 2


def training_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def deterministic(seed: int, device: torch.device | None = None) -> Iterator[torch.Generator]:
    """Seed every generator and make torch pick deterministic kernels; restore the global flag after.

    On CUDA the flag only warns where an op has no deterministic kernel (and cuBLAS gets the workspace
    setting it needs); on the CPU it is strict.
    """
    cuda = device is not None and device.type == "cuda"
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    previous, previous_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from its torch seed (base seed from the loader's
    generator + worker id), so anything random in a dataset is reproducible too; one torch thread each."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


@torch.no_grad()
def predict_logits(model: ContractModel, dataset: Dataset) -> np.ndarray:
    """Logits (N,) of a dataset of (image, label) pairs, in order (on the model's device, in float32)."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False)
    return np.concatenate([model(images.to(device)).squeeze(1).cpu().numpy() for images, _ in loader])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, or NaN where the labels hold one class only (tiny validation sets)."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


@dataclass
class TrainResult:
    best_epoch: int
    best_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def _train_epoch(
    model: ContractModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    desc: str,
    loss_fn: LossFn,
    scaler: torch.amp.GradScaler | None = None,
    augmentation: AugmentConfig | None = None,
    progress: bool = True,
) -> float:
    """One pass over the training data with the configured augmentation (default: dihedral only);
    returns the mean loss.

    With a scaler (CUDA + amp) the forward pass runs under float16 autocast and the loss is scaled;
    without one (the CPU) it is plain float32.
    """
    model.train()
    device = next(model.parameters()).device
    augmentation = augmentation or AugmentConfig()
    # The loss stays on the device: reading it each step would make the CPU wait for the GPU every step.
    total, seen = torch.zeros((), dtype=torch.float32, device=device), 0
    bar = tqdm(loader, desc=desc, disable=None if progress else True, leave=False)
    for step, (batch, targets) in enumerate(bar, start=1):
        # uint8 patches cross to the device (pinned, asynchronous) and are augmented there.
        images = augment(batch.to(device, non_blocking=True), generator, augmentation)
        labels = targets.to(device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if scaler is not None else nullcontext()
        with autocast:
            logits = model(images).squeeze(1)
        loss = loss_fn(logits.float(), labels)  # the loss itself in float32
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total += loss.detach().float() * len(labels)
        seen += len(labels)
        if step % LOSS_SHOWN_EVERY == 0:
            bar.set_postfix(loss=f"{total.item() / seen:.4f}")
    return total.item() / max(seen, 1)


def resume_path(checkpoint: Path) -> Path:
    """Where training keeps its resume state: next to the checkpoint, e.g. checkpoint.resume.pt."""
    return checkpoint.with_name(checkpoint.stem + RESUME_SUFFIX)


def run_fingerprint(
    member: MemberConfig, seed: int, train_set: Dataset, valid_labels: np.ndarray, world_size: int = 1
) -> str:
    """What a resume state must match: the member config, the seed, the data (sampled) and the world size."""
    digest = hashlib.sha256()
    digest.update(member.model_dump_json().encode())
    digest.update(f"seed={seed} n={len(train_set)}".encode())
    if world_size > 1:
        digest.update(f"world_size={world_size}".encode())
    labels = getattr(train_set, "labels", None)
    if labels is not None:
        digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(valid_labels).tobytes())
    for index in sorted({0, len(train_set) - 1}):
        digest.update(np.asarray(train_set[index][0]).tobytes())
    return digest.hexdigest()


def _rng_states(generator: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def _restore_rng_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


def _save_resume(path: Path, state: dict) -> None:
    """Write atomically: a run killed while saving leaves the previous epoch's state intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    torch.save(state, partial)
    os.replace(partial, path)


def _load_resume(path: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The resume state at path if it belongs to this run, else None (and the run starts afresh)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - an unreadable state is a reason to start over, not to fail
        log.warning("ignoring unreadable resume state %s: %s", path, error)
        return None
    if state.get("format") != RESUME_FORMAT or state.get("fingerprint") != fingerprint:
        log.info(
            "ignoring resume state %s: it belongs to another config, seed, data set or number of processes",
            path,
        )
        return None
    return state


def _loader(
    member: MemberConfig,
    train_set: Dataset,
    seed: int,
    generator: torch.Generator,
    job: Distributed,
    pin_memory: bool = False,
) -> DataLoader:
    """The training DataLoader; under DDP each rank reads its own shard and member.batch_size is global.
    pin_memory: batches in page-locked memory, for asynchronous copies to a CUDA device."""
    workers = {
        "num_workers": member.num_workers,
        "worker_init_fn": _seed_worker if member.num_workers else None,
        "pin_memory": pin_memory,
    }
    if not job.enabled:
        # A last batch of one sample would break batch norm; skip the ragged tail instead.
        drop_last = len(train_set) > member.batch_size
        # Workers only read; augmentation runs on the device from the one generator, which also draws the shuffle
        # order and the workers' base seed. With workers the sampler draws earlier (prefetching), so the
        # weights depend on num_workers, but one seed and one worker count always give the same weights.
        return DataLoader(
            train_set,
            batch_size=member.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=drop_last,
            **workers,
        )
    if member.batch_size % job.world_size:
        raise ValueError(
            f"{member.name}: batch_size {member.batch_size} is the global batch and must divide by the "
            f"{job.world_size} processes"
        )
    sampler = DistributedSampler(
        train_set, num_replicas=job.world_size, rank=job.rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(
        train_set,
        batch_size=member.batch_size // job.world_size,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_set) // job.world_size > member.batch_size // job.world_size,
        **workers,
    )


def train_member(
    member: MemberConfig,
    train_set: Dataset,
    valid_set: Dataset,
    valid_labels: np.ndarray,
    seed: int,
    checkpoint: Path,
    resume: bool = True,
    job: Distributed = SINGLE,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train from scratch or resume, evaluate AUC each epoch, save the best epoch's weights to checkpoint.

    After every epoch the whole training state (model, optimizer, scheduler, grad scaler, epoch, best
    weights and AUC, early-stopping count, history, every RNG state) goes to resume_path(checkpoint).
    With resume, a state there whose fingerprint matches this run (same member config, seed, data and
    world size) is continued from the epoch after it, giving the weights an uninterrupted run gives; a
    state of another run is ignored and overwritten.

    Under torchrun (job.enabled) the model is wrapped in DistributedDataParallel, every rank trains on
    its shard with its own augmentation stream, rank 0 validates and writes the files, and all ranks
    take rank 0's early-stopping decision. on_epoch gets each epoch's history row (rank 0 only).
    """
    device = job.device() if job.enabled else training_device()
    use_amp = member.amp and device.type == "cuda"
    with deterministic(seed, device) as generator:
        # The graph's input is NHWC uint8 permuted to NCHW, channels-last in memory already; weights in
        # the same layout spare a conversion per convolution (a step of the demo's resnet: 1.37 s -> 1.22 s).
        model = build_member_model(member).to(
            device, memory_format=torch.channels_last
        )  # same initial weights on every rank
        if job.enabled:
            generator.manual_seed(seed + 7919 * job.rank)  # a distinct augmentation stream per rank
        loader = _loader(member, train_set, seed, generator, job, pin_memory=device.type == "cuda")
        # timm's factory leaves biases and norm weights out of weight decay.
        optimizer = timm.optim.create_optimizer_v2(
            model, opt="adamw", lr=member.lr, weight_decay=member.weight_decay
        )
        trained = (
            DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            if job.enabled
            else model
        )
        steps = member.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(steps, warmup_steps(member, len(loader)))
        )
        scaler = torch.amp.GradScaler("cuda") if use_amp else None
        loss_fn = build_loss(member, getattr(train_set, "labels", None))
        result, best_state = TrainResult(best_epoch=0, best_auc=-math.inf), None
        first_epoch, stale = 1, 0
        state_path = resume_path(checkpoint)
        fingerprint = run_fingerprint(member, seed, train_set, valid_labels, job.world_size)
        saved = _load_resume(state_path, fingerprint, device) if resume else None
        # Every rank must continue from the same epoch, or the collectives would wait forever.
        resumed_after = job.gather(saved["epoch"] if saved is not None else None)
        if len(set(resumed_after)) > 1:
            raise RuntimeError(
                f"{member.name}: the ranks found different resume states in {state_path} "
                f"(epochs {resumed_after}); every rank needs the same work dir (a shared filesystem)"
            )
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if scaler is not None and saved["scaler"]:
                scaler.load_state_dict(saved["scaler"])
            _restore_rng_states(saved["rng"][job.rank], generator)
            result = TrainResult(**saved["result"])
            best_state, stale = saved["best_state"], saved["stale_epochs"]
            first_epoch = saved["epoch"] + 1
            log.info("%s: resuming after epoch %d from %s", member.name, saved["epoch"], state_path)
        for epoch in range(first_epoch, member.epochs + 1):
            if result.stopped_early:
                break
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)
            started = time.perf_counter()
            desc = f"{member.name} epoch {epoch}/{member.epochs}"
            train_loss = _train_epoch(
                trained, loader, optimizer, scheduler, generator, desc, loss_fn, scaler, member.augment,
                progress=job.is_main,
            )  # fmt: skip
            train_loss = float(np.mean(job.gather(train_loss)))
            valid_auc = job.broadcast(
                auc(valid_labels, predict_logits(model, valid_set)) if job.is_main else None
            )
            seconds = time.perf_counter() - started
            row = {"epoch": epoch, "train_loss": train_loss, "valid_auc": valid_auc, "seconds": seconds}
            result.history.append(row)
            if job.is_main:
                log.info("%s: train loss %.4f, valid AUC %.4f (%.0f s)", desc, train_loss, valid_auc, seconds)
                if on_epoch is not None:
                    on_epoch(row)
            # NaN AUC (one-class validation set) never beats a number; then the last epoch is kept.
            if best_state is None or valid_auc > result.best_auc or math.isnan(result.best_auc):
                result.best_epoch, result.best_auc = epoch, valid_auc
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
            if member.patience is not None and stale >= member.patience and epoch < member.epochs:
                result.stopped_early = True
                log.info("%s: no better validation AUC for %d epochs, stopping", member.name, stale)
            rng = job.gather(_rng_states(generator))
            if job.is_main:
                _save_resume(
                    state_path,
                    {
                        "format": RESUME_FORMAT,
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "rng": rng,
                        "result": asdict(result),
                        "best_state": best_state,
                        "stale_epochs": stale,
                    },
                )
        check_replicas_agree(job, model)
    if job.is_main:
        save_checkpoint(checkpoint, member, best_state, result)
    job.barrier()  # the checkpoint exists before any rank moves on
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
