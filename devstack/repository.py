"""Building a model repository with the real `pcam` CLI, as a user would."""

import subprocess
import sys
from pathlib import Path

from pcam_core.release import RELEASE_FILENAME


def build_repository(config: Path | str, output: Path, workdir: Path | None = None) -> None:
    """Run `pcam build-repository` in a child process; raise CalledProcessError if it fails."""
    argv = [
        sys.executable,
        "-m",
        "training",
        "build-repository",
        "--config",
        str(config),
        "--output",
        str(output),
    ]
    if workdir is not None:
        argv += ["--workdir", str(workdir)]
    subprocess.run(argv, check=True)


def ensure_repository(config: Path | str, output: Path, workdir: Path | None = None) -> Path:
    """`output`, built with `config` unless it already holds a release; return it."""
    if not (output / RELEASE_FILENAME).is_file():
        build_repository(config, output, workdir)
    return output
