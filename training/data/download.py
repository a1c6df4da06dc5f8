"""Download and verify PCam from Zenodo (docs/architecture.md#data): resumable, checksummed, gunzipped.

Which file each MD5 is of: PCam's official README lists every checksum next to the file *as served*,
`..._x.h5.gz` and `..._meta.csv`, and that is what torchvision checks too. So `MD5` below holds the
digests of the downloaded `.h5.gz` (not of the gunzipped `.h5`) and of the CSVs. The `.gz` is
verified before it is gunzipped; the gunzip step hashes the `.h5` as it writes it and records that
digest next to it in `<name>.h5.md5` (md5sum format, `md5sum -c` reads it). `verify` then checks a
`.h5` against that record, and a kept `.h5.gz` or a CSV against `MD5`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from training.data.pcam_h5 import SPLITS

log = logging.getLogger(__name__)

BASE_URL = "https://zenodo.org/records/2546921/files/"
CHUNK = 1 << 20

# MD5 of each file as served by Zenodo (the .h5.gz, not the .h5; see the module docstring).
# The valid/test digests are the corrected ones (docs/architecture.md#data): PCam's README swaps them.
MD5: dict[str, str] = {
    "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_valid_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
    "camelyonpatch_level_2_split_test_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_test_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
    "camelyonpatch_level_2_split_train_meta.csv": "5a3dd671e465cfd74b5b822125e65b0a",
    "camelyonpatch_level_2_split_valid_meta.csv": "67589e00a4a37ec317f2d1932c7502ca",
    "camelyonpatch_level_2_split_test_meta.csv": "3455fd69135b66734e1008f3af684566",
}


class DownloadError(RuntimeError):
    """A file could not be fetched (HTTP error, or connection errors past the retries)."""


class ChecksumError(RuntimeError):
    """A file's MD5 is not the expected one; the bad file has been removed."""


def remote_files(splits: Iterable[str] = SPLITS) -> list[str]:
    """The Zenodo file names of the given splits: x and y (.h5.gz) and meta (.csv) of each."""
    names = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
        stem = f"camelyonpatch_level_2_split_{split}"
        names += [f"{stem}_x.h5.gz", f"{stem}_y.h5.gz", f"{stem}_meta.csv"]
    return names


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def _record_path(h5: Path) -> Path:
    return h5.with_name(h5.name + ".md5")


def _recorded_md5(h5: Path) -> str | None:
    """The digest written next to a gunzipped .h5 when it was made, or None without a record."""
    record = _record_path(h5)
    if not record.exists():
        return None
    fields = record.read_text().split()
    return fields[0] if fields else None


@dataclass(frozen=True)
class FileCheck:
    """One file's verification: status is 'ok', 'missing', 'mismatch' or 'unrecorded' (a .h5 without its .md5)."""

    name: str
    status: str
    expected: str | None = None
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _check(path: Path, expected: str | None) -> FileCheck:
    if not path.exists():
        return FileCheck(path.name, "missing", expected)
    if expected is None:
        return FileCheck(path.name, "unrecorded")
    actual = md5sum(path)
    return FileCheck(path.name, "ok" if actual == expected else "mismatch", expected, actual)


def verify(
    directory: Path, splits: Iterable[str] = SPLITS, md5: Mapping[str, str] | None = None
) -> list[FileCheck]:
    """Presence and MD5 of every file of the splits: each .h5 (against its record), CSV and kept .h5.gz."""
    table = MD5 if md5 is None else md5
    directory = Path(directory)
    checks = []
    for name in remote_files(splits):
        if name.endswith(".gz"):
            h5 = directory / name.removesuffix(".gz")
            checks.append(_check(h5, _recorded_md5(h5)))
            if (directory / name).exists():
                checks.append(_check(directory / name, table[name]))
        else:
            checks.append(_check(directory / name, table[name]))
    return checks


def _fetch_once(client: httpx.Client, url: str, part: Path, progress: bool) -> None:
    """Append the rest of `url` to `part` (a Range request from its size); restart if Range is ignored."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets must count the file as stored, not a re-encoded transfer
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    with client.stream("GET", url, headers=headers) as response:
        if (
            response.status_code == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE
        ):  # nothing left after offset: complete, unless the part is too long
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total == str(offset):
                return
            log.warning("%s: partial file does not fit the remote one, restarting", part.name)
            part.unlink()
            raise httpx.TransportError("range not satisfiable")  # retried from zero
        if response.is_server_error:
            raise httpx.TransportError(f"HTTP {response.status_code}")
        if response.is_client_error:
            raise DownloadError(f"{url}: HTTP {response.status_code}")
        if offset and response.status_code == httpx.codes.OK:
            log.info("%s: server ignored the range request, restarting from zero", part.name)
            offset = 0
        elif offset:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
            if start != str(offset):
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, got {response.headers.get('Content-Range')!r}"
                )
            log.info("%s: resuming at byte %d", part.name, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        name = part.name.removesuffix(".part")
        with (
            part.open("ab" if offset else "wb") as f,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=name, disable=not progress
            ) as bar,
        ):
            for chunk in response.iter_raw():
                f.write(chunk)
                bar.update(len(chunk))


def fetch(
    client: httpx.Client, url: str, dest: Path, retries: int = 3, backoff: float = 1.0, progress: bool = True
) -> Path:
    """Download `url` to `dest` through `<dest>.part` (resumed across attempts and runs), then rename.

    Connection errors, timeouts, cut transfers and 5xx answers are retried `retries` times, waiting
    backoff, 2 x backoff, 4 x backoff ... seconds; other HTTP errors fail at once.
    """
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(client, url, part, progress)
            break
        except httpx.TransportError as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: {exc} (gave up after {retries + 1} attempts)") from exc
            delay = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.1f s", dest.name, exc or type(exc).__name__, delay)
            time.sleep(delay)
    os.replace(part, dest)
    return dest


def gunzip(src: Path, dest: Path) -> str:
    """Stream-decompress `src` into `dest` (via `<dest>.part`, then rename); returns the MD5 of `dest`."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    with gzip.open(src, "rb") as fin, part.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    os.replace(part, dest)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        path.unlink()
        raise ChecksumError(f"{path.name}: MD5 mismatch, expected {expected}, got {actual}; file removed")
    log.debug("%s: MD5 ok", path.name)


def download(
    output: Path,
    splits: Iterable[str] = SPLITS,
    base_url: str = BASE_URL,
    keep_gz: bool = False,
    md5: Mapping[str, str] | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool = True,
) -> list[Path]:
    """Fetch the splits' files into `output`, verify their MD5s, gunzip the .h5.gz; returns the final paths.

    Files already present and verified are skipped (a .h5 counts as verified when its `.h5.md5`
    record matches it). A bad MD5 removes the file and raises `ChecksumError`.
    """
    table = MD5 if md5 is None else md5
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    paths = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for name in remote_files(splits):
            remote = output / name
            if not name.endswith(".gz"):
                if remote.exists() and md5sum(remote) == table[name]:
                    log.info("%s: present and verified, skipped", name)
                else:
                    fetch(client, base + name, remote, retries, backoff, progress)
                    _verified(remote, table[name])
                paths.append(remote)
                continue
            h5 = output / name.removesuffix(".gz")
            recorded = _recorded_md5(h5)
            if h5.exists() and recorded is not None and md5sum(h5) == recorded:
                log.info("%s: present and verified, skipped", h5.name)
            else:
                if not (remote.exists() and md5sum(remote) == table[name]):
                    fetch(client, base + name, remote, retries, backoff, progress)
                    _verified(remote, table[name])
                log.info("%s: gunzipping", name)
                digest = gunzip(remote, h5)
                record = _record_path(h5)
                record.with_name(record.name + ".part").write_text(f"{digest}  {h5.name}\n")
                os.replace(record.with_name(record.name + ".part"), record)
            if remote.exists() and not keep_gz:
                remote.unlink()
            paths.append(h5)
    return paths
