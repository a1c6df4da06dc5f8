"""Coverage per package at the end of a run with --cov: the services' own processes included.

pytest-cov combines the data files of every measured process (coverage's subprocess patch starts
measurement in each `python -m services...` the tests launch) before the terminal summary; this adds a
line per package of the project, so a package the suite barely touches shows, whatever the total.
"""

from __future__ import annotations

import io
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]


def measured_packages(root: Path = ROOT) -> list[str]:
    """The packages coverage measures (its `source` setting, pyproject.toml), each service on its own."""
    sources = coverage.Coverage(config_file=str(root / "pyproject.toml")).config.source or []
    packages = []
    for source in sorted(sources):
        if source == "services":
            packages += sorted(
                f"services/{p.name}" for p in (root / "services").iterdir() if (p / "__init__.py").exists()
            )
        else:
            packages.append(source)
    return packages


def package_percentages(data_file: Path, packages: list[str], root: Path = ROOT) -> dict[str, float | None]:
    """Percent covered per package folder (None: nothing of it measured)."""
    cov = coverage.Coverage(data_file=str(data_file))
    cov.load()
    results: dict[str, float | None] = {}
    for package in packages:
        try:
            results[package] = cov.report(include=[str(root / package / "*")], file=io.StringIO())
        except coverage.exceptions.NoDataError:
            results[package] = None
    return results


def summary_lines(percentages: dict[str, float | None]) -> list[str]:
    """A line per package, worst first."""
    ordered = sorted(percentages.items(), key=lambda item: -1 if item[1] is None else item[1])
    return [f"  {name:<22} {'not measured' if p is None else f'{p:5.1f} %'}" for name, p in ordered]
