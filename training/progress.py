"""Progress of the long offline work: a bar per loop (on a terminal only: logs and CI get none) and a
line per pipeline stage with its elapsed time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T", bound=Sized)


def with_progress(batches: Iterable[T], total: int | None, desc: str, unit: str = "patch") -> Iterator[T]:
    """The batches, unchanged, while a bar counts their items (patches, files) towards total."""
    with tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log a stage's start and, when it ends, its elapsed time (`pcam build-repository`'s steps)."""
    log.info("%s ...", name)
    started = time.perf_counter()
    yield
    log.info("%s done in %.0f s", name, time.perf_counter() - started)
