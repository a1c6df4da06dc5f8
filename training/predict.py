"""`pcam predict`: score image files with a release, in-process or through a gateway (research use only).

In-process, every step is the serving code's own: the preprocess service's decode/validate and Macenko
normalization (`preprocess_uploads`, with the release's stain reference), then the ensemble service's
own inference path (`pcam_core.serving.EnsembleModel`: TTA views, the serving rule, the operating
point) with each member's ONNX graph in onnxruntime (the graph Triton serves) as its member runner.
Through a gateway URL, the same rows come from the public batch API, through the `pcam_client` package.
Errors are reported by their kind (`wrong-size: Received 64x64; ...`), without HTTP vocabulary.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
from pydantic import BaseModel

from pcam_core.errors import UploadTooLarge
from pcam_core.flags import ordered
from pcam_core.limits import MAX_IMAGE_BYTES
from pcam_core.problems import INPUT_FAULT_STATUSES
from pcam_core.release import DEFAULT_OPERATING_POINT, Member, ReleaseManifest, load_release
from pcam_core.schemas import InferResponse, ItemError, Prediction
from pcam_core.serving import EnsembleModel, MemberLogits, member_logits, requested_outputs
from pcam_core.wire import AcceptedItem
from services.preprocess.pipeline import Serving, preprocess_uploads
from training import RESEARCH_USE
from training.progress import with_progress
from training.validate import operating_point_name

if TYPE_CHECKING:
    import httpx
    import onnxruntime as ort
    from rich.table import Table

    from pcam_client import PCamAPIError, PCamClient

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
"""What a directory contributes: the formats the preprocess service decodes (PNG, JPEG, TIFF, BMP)."""
MAX_FILE_BYTES: int = MAX_IMAGE_BYTES
"""The services' default per-image limit, applied in-process too, so both modes refuse the same files
(and a stray slide-sized TIFF is never read whole)."""
FILE_CHUNK = 64
"""Files decoded, normalized and scored together (and per gateway batch request)."""
SCORE_BATCH = 64
"""Images per onnxruntime call: bounds activation memory for the large members (x 8 views with TTA)."""
REMOTE_TTA_IGNORED = (
    "--tta: the gateway at {url} answered without TTA (it predates TTA serving); use --repository "
    "for TTA in-process."
)
MAX_RETRIES = 3
"""Retries of a 429/503 answer (honouring Retry-After) before a run ends."""
MAX_RETRY_WAIT_S = 30.0
"""The longest Retry-After waited out; a gateway asking for longer ends the run at once."""


class PredictionRow(BaseModel):
    """One input file's result or its error: the CSV's columns, in order."""

    file: str
    sha256: str | None = None
    probability: float | None = None
    label: int | None = None
    operating_point: str
    threshold: float | None = None
    release_id: str | None = None
    stain_normalized: bool | None = None
    stain_skip_reason: str | None = None
    tissue_fraction: float | None = None
    tta: bool = False
    uncertainty: float | None = None
    prediction_set: list[int] | None = None
    """The labels the release's conformal rule cannot rule out (none with tta)."""
    needs_review: bool | None = None
    flags: str | None = None
    """The review flags that fired, joined by ';' (empty: none)."""
    error: str | None = None


COLUMNS: tuple[str, ...] = tuple(PredictionRow.model_fields)


@dataclass(frozen=True)
class Inputs:
    files: list[Path]
    """What gets a row: files named explicitly (whatever their suffix) and image files of directories."""
    skipped: list[Path]
    """Directory entries that are not image files (other suffixes, subdirectories): no row."""


def collect_inputs(paths: Sequence[Path]) -> Inputs:
    """Expand directories to their image files (sorted, not recursive); keep explicit paths as given."""
    files: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                is_image = entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
                (files if is_image else skipped).append(entry)
        else:
            # Explicit paths always get a row, so a typo or a non-image shows up as an error row.
            files.append(path)
    return Inputs(files, skipped)


def skipped_message(skipped: Sequence[Path], shown: int = 10) -> str:
    """What collect_inputs left out, for the user: a count and the first names."""
    names = ", ".join(p.name for p in skipped[:shown]) + (", ..." if len(skipped) > shown else "")
    return f"skipped {len(skipped)} directory entries that are not image files: {names}"


def problem_text(problem: ItemError) -> str:
    """'wrong-size: Received 64x64; ...': a problem in the platform's words, as both modes report it."""
    return f"{problem.kind}: {problem.detail or problem.title}"


def _read(path: Path) -> bytes | str:
    """The file's bytes, or the error text for its row (missing, unreadable, over the size limit)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if len(data) > MAX_FILE_BYTES:
        error = UploadTooLarge(
            f"the file exceeds the limit of {MAX_FILE_BYTES} bytes.", kind="image-too-large"
        )
        return str(error)
    return data


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class OnnxMembers:
    """A release's members as ONNX graphs in onnxruntime: the MemberRunner of in-process scoring."""

    def __init__(self, repository: Path, manifest: ReleaseManifest, threads: int = 1) -> None:
        from training.graphs import member_onnx, session

        self.sessions: dict[str, ort.InferenceSession] = {
            m.name: session(member_onnx(repository, m.name, m.version), threads) for m in manifest.members
        }

    async def try_logits(
        self,
        members: Sequence[Member],
        images: np.ndarray,
        required: int | None = None,
        features: bool = False,
        maps: bool = False,
    ) -> MemberLogits:
        """(B,) logits (with features, and feature distances; with maps, and activation maps) of every
        member for normalized uint8 (B, 96, 96, 3); a failure here is a bug."""
        from training.graphs import onnx_outputs

        names = requested_outputs(features, maps)
        batches = [images[i : i + SCORE_BATCH] for i in range(0, len(images), SCORE_BATCH)]
        outputs = {m.name: onnx_outputs(self.sessions[m.name], batches, names) for m in members}
        return member_logits([m.name for m in members], outputs, {})


class LocalPredictor:
    """A release's serving path in this process: Macenko with its reference, then the ensemble's own
    inference path with the members' ONNX graphs."""

    def __init__(self, repository: Path, threads: int = 1) -> None:
        self.manifest: ReleaseManifest = load_release(repository)
        self.preprocessing = Serving.of(self.manifest)
        self.model = EnsembleModel(self.manifest)
        self.members = OnnxMembers(repository, self.manifest, threads)
        self._runner = asyncio.Runner()  # one event loop for every call, not a new one each time

    def score(self, images: np.ndarray, operating_point: str, tta: bool = False) -> InferResponse:
        """The ensemble's answer for normalized patches (with tta, all 8 dihedral views per member)."""
        # The views are of the normalized patch, as serving sends them to Triton after preprocess;
        # Macenko's estimates depend on the set of pixels only, so normalizing each view would agree.
        return self._runner.run(self.model.predict(self.members, images, operating_point, tta=tta))


def predict_local(
    files: Sequence[Path],
    repository: Path,
    operating_point: str | None = None,
    tta: bool = False,
    threads: int = 1,
    predictor: LocalPredictor | None = None,
) -> list[PredictionRow]:
    """One row per file, in order, scored in-process; a bad file becomes an error row."""
    point_name = operating_point_name(operating_point or DEFAULT_OPERATING_POINT)
    predictor = predictor or LocalPredictor(repository, threads)
    manifest = predictor.manifest
    threshold = manifest.ensemble.operating_points[point_name].threshold
    common = {"operating_point": point_name, "tta": tta}
    rows: list[PredictionRow] = []
    for chunk in with_progress(_chunks(files, FILE_CHUNK), len(files), "predict", unit="file"):
        read = [_read(path) for path in chunk]
        uploads = [data for data in read if isinstance(data, bytes)]
        if not uploads:
            rows += [
                PredictionRow(file=str(p), error=str(e), **common) for p, e in zip(chunk, read, strict=True)
            ]
            continue
        # The preprocess service's own function: decode + validate each, normalize the valid ones.
        batch = preprocess_uploads(uploads, predictor.preprocessing)
        answer = predictor.score(batch.images, point_name, tta) if batch.accepted() else None
        results = iter(answer.results if answer else ())
        items = iter(batch.items)
        for path, data in zip(chunk, read, strict=True):
            if isinstance(data, str):
                rows.append(PredictionRow(file=str(path), error=data, **common))
                continue
            item = next(items)
            digest = hashlib.sha256(data).hexdigest()
            if not isinstance(item, AcceptedItem):
                rows.append(
                    PredictionRow(file=str(path), sha256=digest, error=problem_text(item.error), **common)
                )
                continue
            result = next(results)
            rows.append(
                PredictionRow(
                    file=str(path),
                    sha256=digest,
                    probability=result.probability,
                    label=result.label,
                    threshold=threshold,
                    release_id=manifest.release_id,
                    stain_normalized=item.stain_normalized,
                    stain_skip_reason=item.stain_skip_reason,
                    tissue_fraction=item.tissue_fraction,
                    uncertainty=result.uncertainty,
                    prediction_set=result.prediction_set,
                    **_review(ordered([*item.flags, *result.flags])),
                    **common,
                )
            )
    return rows


def predict_remote(
    files: Sequence[Path],
    url: str,
    operating_point: str | None = None,
    tta: bool = False,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
    api_key: str | None = None,
) -> list[PredictionRow]:
    """One row per file, in order, from the gateway's batch API (per file where a batch is refused)."""
    from pcam_client import PCamClient

    point_name = operating_point_name(operating_point or DEFAULT_OPERATING_POINT)
    rows: list[PredictionRow] = []
    client = PCamClient(
        url,
        api_key,
        timeout=timeout_s,
        transport=transport,
        max_retries=MAX_RETRIES,
        max_retry_wait_s=MAX_RETRY_WAIT_S,
        max_batch=FILE_CHUNK,
    )
    with gateway_errors(url), client:
        for chunk in with_progress(_chunks(files, FILE_CHUNK), len(files), "predict", unit="file"):
            read = [_read(path) for path in chunk]
            sendable = [data for data in read if isinstance(data, bytes)]
            answers = _remote_chunk(client, sendable, point_name, tta) if sendable else []
            # A gateway older than TTA serving ignores the parameter and answers tta=false.
            if tta and any(isinstance(a, Prediction) and not a.tta for a in answers):
                raise RuntimeError(REMOTE_TTA_IGNORED.format(url=url))
            remaining = iter(answers)
            for path, data in zip(chunk, read, strict=True):
                if isinstance(data, str):
                    rows.append(
                        PredictionRow(file=str(path), operating_point=point_name, tta=tta, error=data)
                    )
                else:
                    rows.append(_remote_row(path, data, next(remaining), point_name, tta))
    return rows


@contextmanager
def gateway_errors(url: str) -> Iterator[None]:
    """What is left of a gateway failure after the client's retries (the gateway or a dependency is
    down, or it refused the call) ends the run as one RuntimeError naming the problem."""
    from pcam_client import PCamAPIError, PCamError

    try:
        yield
    except PCamAPIError as exc:
        problem = ItemError.model_validate(exc.to_problem())
        raise RuntimeError(f"gateway {url} answered with {problem_text(problem)}") from exc
    except PCamError as exc:
        raise RuntimeError(str(exc)) from exc


def _refused(exc: PCamAPIError) -> bool:
    """A refusal one file can cause (bad image, too large): the others can still be scored apart."""
    # Not authentication, rate limits or an outage: those fail every file alike.
    return exc.status in INPUT_FAULT_STATUSES


def _remote_chunk(
    client: PCamClient, sendable: list[bytes], point: str, tta: bool
) -> list[Prediction | ItemError]:
    """The gateway's result (or problem) per file; a batch refused as a whole is sent file by file."""
    from pcam_client import PCamAPIError

    try:
        return client.predict_batch(sendable, operating_point=point, tta=tta)
    except PCamAPIError as exc:
        if not _refused(exc):
            raise
        # A client error for the whole batch (e.g. one file over the size limit) must not cost the
        # other files their results: each file alone gets its own result or its own problem.
        log.info("batch refused (%s): sending its %d files one by one", exc.status, len(sendable))
    answers: list[Prediction | ItemError] = []
    for data in sendable:
        try:
            answers.append(client.predict(data, operating_point=point, tta=tta))
        except PCamAPIError as exc:
            if not _refused(exc):
                raise
            answers.append(ItemError.model_validate(exc.to_problem()))
    return answers


def _remote_row(
    path: Path, data: bytes, answer: Prediction | ItemError, point: str, tta: bool
) -> PredictionRow:
    if isinstance(answer, ItemError):
        digest = hashlib.sha256(data).hexdigest()
        error = problem_text(answer)
        return PredictionRow(file=str(path), sha256=digest, operating_point=point, tta=tta, error=error)
    quality = answer.quality
    return PredictionRow(
        file=str(path),
        sha256=answer.sha256,
        probability=answer.probability,
        label=answer.label,
        operating_point=answer.operating_point,
        threshold=answer.threshold,
        release_id=answer.release,
        stain_normalized=quality.stain_normalized,
        stain_skip_reason=quality.stain_skip_reason,
        tissue_fraction=quality.tissue_fraction,
        tta=answer.tta,
        uncertainty=answer.uncertainty,
        prediction_set=answer.prediction_set,
        **_review(answer.flags),
    )


def _review(flags: Sequence[str]) -> dict[str, object]:
    return {"needs_review": bool(flags), "flags": ";".join(flags)}


def write_csv(rows: Sequence[PredictionRow], stream: TextIO) -> None:
    """The rows as CSV with a header of COLUMNS; empty cells for what a row lacks."""
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.model_dump().items()})


def rows_table(rows: Sequence[PredictionRow]) -> Table:
    """A rich table: one image as field/value lines, several as one line each."""
    from rich.table import Table

    ok = [r for r in rows if r.error is None]
    first = ok[0] if ok else rows[0]
    caption = f"{RESEARCH_USE} operating point {first.operating_point}"
    if first.threshold is not None:
        caption += f" (threshold {first.threshold:.4f}), release {first.release_id}"
    table = Table(caption=caption)
    if len(rows) == 1:
        table.add_column("field")
        table.add_column("value", overflow="fold")
        for key, value in rows[0].model_dump().items():
            table.add_row(key, "" if value is None else _cell(value))
        return table
    for column in ("file", "probability", "label", "uncertainty", "stain", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.file, _cell(r.probability), _cell(r.label), _cell(r.uncertainty), _stain(r), r.error or ""
        )
    return table


def _stain(row: PredictionRow) -> str:
    if row.stain_normalized is None:
        return ""
    return "normalized" if row.stain_normalized else f"skipped: {row.stain_skip_reason}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
