"""`pcam data download` / `verify` against a real HTTP server on 127.0.0.1 (never the network)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.http_server import local_server, serving, url_of
from training.cli import app
from training.data import download as dl

runner = CliRunner()
STEM = "camelyonpatch_level_2_split_valid"
X_GZ, Y_GZ, META = f"{STEM}_x.h5.gz", f"{STEM}_y.h5.gz", f"{STEM}_meta.csv"


@dataclass
class ServerState:
    root: Path
    ignore_range: bool = False
    cut_after: dict[str, int] = field(default_factory=dict)  # name -> bytes sent before closing, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range header)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files of `state.root` by name, honoring `Range: bytes=N-` unless told to ignore it."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1]
        range_header = self.headers.get("Range")
        state.requests.append((name, range_header))
        path = state.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if range_header and not state.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = state.cut_after.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])  # HTTP/1.0: the connection closes after

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The valid split as served (tiny real HDF5 files gzipped, a small CSV) and their MD5 table."""
    root = tmp_path / "served"
    root.mkdir()
    rng = np.random.default_rng(0)
    for key, name, array in (
        ("x", X_GZ, rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8)),
        ("y", Y_GZ, rng.integers(0, 2, (8, 1, 1, 1), dtype=np.uint8)),
    ):
        h5 = tmp_path / name.removesuffix(".gz")
        with h5py.File(h5, "w") as f:
            f.create_dataset(key, data=array)
        (root / name).write_bytes(gzip.compress(h5.read_bytes()))
    (root / META).write_text("wsi,coord_y,coord_x\n" + "".join(f"slide_{i},0,0\n" for i in range(8)))
    table = {name: dl.md5sum(root / name) for name in (X_GZ, Y_GZ, META)}
    return root, table


@pytest.fixture
def server(files: tuple[Path, dict[str, str]]) -> Iterator[tuple[str, ServerState]]:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) serving the files; always shut down."""
    root, _ = files
    httpd = local_server(RangeHandler)
    httpd.state = ServerState(root)  # type: ignore[attr-defined]
    with serving(httpd):
        yield f"{url_of(httpd)}/records/2546921/files/", httpd.state  # type: ignore[attr-defined]


@pytest.fixture
def md5_table(files, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The module's MD5 table replaced by the digests of the generated files (what the CLI uses)."""
    _, table = files
    monkeypatch.setattr(dl, "MD5", table)
    return table


def _download(base_url: str, output: Path, *extra: str):
    return runner.invoke(
        app, ["data", "download", "--output", str(output), "--base-url", base_url, "--split", "valid", *extra]
    )


def _verify(directory: Path):
    return runner.invoke(app, ["data", "verify", str(directory), "--split", "valid"])


def test_download_gunzips_and_verifies(server, files, md5_table, tmp_path):
    base_url, state = server
    root, _ = files
    output = tmp_path / "out"
    result = _download(base_url, output)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [f"{STEM}_x.h5", f"{STEM}_x.h5.md5", f"{STEM}_y.h5", f"{STEM}_y.h5.md5", META]
    )
    assert (output / f"{STEM}_x.h5").read_bytes() == gzip.decompress((root / X_GZ).read_bytes())
    with h5py.File(output / f"{STEM}_y.h5", "r") as f:
        assert f["y"].shape == (8, 1, 1, 1)
    assert sorted(name for name, _ in state.requests) == sorted([X_GZ, Y_GZ, META])
    assert _verify(output).exit_code == 0


def test_keep_gz_keeps_and_verifies_the_archives(server, md5_table, tmp_path):
    base_url, _ = server
    output = tmp_path / "out"
    assert _download(base_url, output, "--keep-gz").exit_code == 0
    assert (output / X_GZ).exists() and (output / Y_GZ).exists()
    result = _verify(output)
    assert result.exit_code == 0, result.output
    checks = {c.name: c.status for c in dl.verify(output, ["valid"])}
    assert checks[X_GZ] == checks[Y_GZ] == "ok" and len(checks) == 5


def test_present_files_are_not_downloaded_again(server, md5_table, tmp_path):
    base_url, state = server
    output = tmp_path / "out"
    assert _download(base_url, output).exit_code == 0
    assert len(state.requests) == 3
    result = _download(base_url, output)
    assert result.exit_code == 0, result.output
    assert len(state.requests) == 3


def test_interrupted_transfer_resumes_with_a_range_request(server, files, md5_table, tmp_path):
    base_url, state = server
    root, _ = files
    state.cut_after[X_GZ] = 1000
    output = tmp_path / "out"
    dl.download(output, ["valid"], base_url, backoff=0, progress=False)
    assert [r for name, r in state.requests if name == X_GZ] == [None, "bytes=1000-"]
    assert (output / f"{STEM}_x.h5").read_bytes() == gzip.decompress((root / X_GZ).read_bytes())
    assert not list(output.glob("*.part"))


def test_partial_file_from_an_earlier_run_is_resumed(server, files, md5_table, tmp_path):
    base_url, state = server
    root, _ = files
    output = tmp_path / "out"
    output.mkdir()
    (output / f"{X_GZ}.part").write_bytes((root / X_GZ).read_bytes()[:500])
    dl.download(output, ["valid"], base_url, progress=False)
    assert [r for name, r in state.requests if name == X_GZ] == ["bytes=500-"]
    assert _verify(output).exit_code == 0


def test_server_ignoring_range_restarts_from_zero(server, files, md5_table, tmp_path):
    base_url, state = server
    root, _ = files
    state.ignore_range = True
    state.cut_after[X_GZ] = 1000
    output = tmp_path / "out"
    dl.download(output, ["valid"], base_url, backoff=0, progress=False)
    assert [r for name, r in state.requests if name == X_GZ] == [None, "bytes=1000-"]  # answered 200
    assert (output / f"{STEM}_x.h5").read_bytes() == gzip.decompress((root / X_GZ).read_bytes())


def test_connection_errors_give_up_after_the_retries(tmp_path):
    # a port nobody listens on: bind one, close it, connect to it
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(dl.DownloadError, match="gave up after 3 attempts"):
        dl.download(tmp_path, ["valid"], f"http://127.0.0.1:{port}/", retries=2, backoff=0, progress=False)


def test_wrong_md5_is_reported_removed_and_fails(server, files, md5_table, tmp_path, monkeypatch):
    base_url, _ = server
    root, table = files
    wrong = "0" * 32
    monkeypatch.setitem(md5_table, Y_GZ, wrong)
    output = tmp_path / "out"
    result = _download(base_url, output)
    assert result.exit_code == 1
    message = " ".join(result.output.split())  # rich may wrap the line
    assert Y_GZ in message and wrong in message and table[Y_GZ] in message
    assert not (output / Y_GZ).exists() and not (output / f"{STEM}_y.h5").exists()
    assert not list(output.glob(f"{STEM}_y*"))


def test_verify_reports_missing_and_corrupted_files(server, md5_table, tmp_path):
    base_url, _ = server
    output = tmp_path / "out"
    assert _download(base_url, output).exit_code == 0
    (output / META).write_text("tampered\n")
    (output / f"{STEM}_y.h5").unlink()
    result = _verify(output)
    assert result.exit_code == 1
    assert "mismatch" in result.output and "missing" in result.output
    checks = {c.name: c.status for c in dl.verify(output, ["valid"])}
    assert checks == {f"{STEM}_x.h5": "ok", f"{STEM}_y.h5": "missing", META: "mismatch"}


def test_unknown_split_is_refused(tmp_path):
    result = runner.invoke(app, ["data", "verify", str(tmp_path), "--split", "dev"])
    assert result.exit_code == 1
    assert "unknown split" in result.output
