"""Shared helpers of the docgen tests: the checked-in pages and their Markdown structure."""

import re

from docgen.chart_values import MARKERS, README
from docgen.pages import ROOT

REFERENCE = ROOT / "docs" / "reference"


def page(name: str) -> str:
    """A checked-in page of docs/reference/."""
    return (REFERENCE / name).read_text()


def readme_table() -> str:
    """What lies between the chart README's values markers."""
    start, end = MARKERS
    return (ROOT / README).read_text().split(start, 1)[1].split(end, 1)[0]


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the section's body, for the headings of one level."""
    parts = re.split(rf"^{'#' * level} (.+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def first_column(text: str) -> set[str]:
    """The first cell of every table row (header and rule rows included)."""
    return {line.split(" | ")[0].removeprefix("| ") for line in text.splitlines() if line.startswith("| ")}


def headings(text: str) -> list[str]:
    """The Markdown headings outside fenced code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.append(line)
    return found
