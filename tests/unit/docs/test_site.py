"""The documentation site builds from docs/ with MkDocs in strict mode: a link to a missing page or
anchor, a page left out of the nav or a missing include fails the build, and so this test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build` of `project`'s mkdocs.yml (strict in the file; never -q, which hides warnings)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_without_a_warning(tmp_path: Path):
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    for page in ("index", "quickstart", "reference/cli", "reference/settings", "client"):
        assert (tmp_path / "site" / f"{page}.html").is_file(), page


def test_a_broken_anchor_fails_the_build(tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project)
    shutil.copytree(
        ROOT / "pcam_client", project / "pcam_client", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    quickstart = project / "docs" / "quickstart.md"
    quickstart.write_text(quickstart.read_text() + "\nSee [nothing](architecture.md#no-such-heading).\n")
    done = build(project, tmp_path / "site")
    assert done.returncode != 0
    assert "quickstart.md" in done.stderr and "#no-such-heading" in done.stderr
