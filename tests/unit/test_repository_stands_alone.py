"""The repository stands alone: no reference to a file outside it, and its documentation links resolve.

docs/architecture.md is the design of record. Every text file in the checkout (tracked, or new and not
ignored) must cite it, never a design page that lives outside the repository; every relative link in
README.md and docs/*.md must point at a file of the checkout; and every anchor into
docs/architecture.md must name one of its headings (GitHub's anchor rule).
"""

import re
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# Spelled in pieces so that this file does not match itself.
FORBIDDEN = ("DESIGN" + ".md", ".." + "/shared")
LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
ARCHITECTURE_CITATION = re.compile(r"docs/architecture\.md#([\w-]+)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


@cache
def checkout_files() -> tuple[Path, ...]:
    """Tracked files plus new files git does not ignore (a doc written but not yet committed counts)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    names = sorted({name for name in listed.decode().split("\0") if name})
    return tuple(ROOT / name for name in names if (ROOT / name).is_file())


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def without_code_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, line) of a markdown text's lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(markdown.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, drop punctuation but '-' and '_', spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor GitHub gives the headings of a markdown text (repeats get -1, -2, ...)."""
    seen: Counter[str] = Counter()
    result = set()
    for _, line in without_code_blocks(markdown):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_anchor(match.group(2))
        result.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return result


@cache
def architecture_anchors() -> frozenset[str]:
    return frozenset(anchors(ARCHITECTURE.read_text()))


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_design_of_record_exists() -> None:
    assert ARCHITECTURE.is_file(), "docs/architecture.md is the design of record"
    assert "research use only" in ARCHITECTURE.read_text().lower()


def test_no_file_refers_outside_the_repository() -> None:
    offenders = []
    for path in checkout_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            offenders += [
                f"{path.relative_to(ROOT)}:{number}: {needle}" for needle in FORBIDDEN if needle in line
            ]
    assert not offenders, "cite docs/architecture.md instead:\n" + "\n".join(offenders)


def test_architecture_headings_are_unique() -> None:
    slugs = [
        github_anchor(match.group(2))
        for _, line in without_code_blocks(ARCHITECTURE.read_text())
        if (match := HEADING.match(line))
    ]
    repeated = sorted(slug for slug, count in Counter(slugs).items() if count > 1)
    assert not repeated, f"headings of docs/architecture.md share an anchor: {repeated}"


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for number, line in without_code_blocks(document.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("``", line)):
            if not target or EXTERNAL.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (document.parent / path_part).resolve() if path_part else document.resolve()
            where = f"{document.relative_to(ROOT)}:{number}: {target}"
            if not resolved.is_relative_to(ROOT):
                broken.append(f"{where}: outside the repository")
            elif not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved == ARCHITECTURE and anchor not in architecture_anchors():
                broken.append(f"{where}: no such heading in docs/architecture.md")
    assert not broken, "\n".join(broken)


def test_citations_of_the_architecture_name_existing_headings() -> None:
    """Code comments cite sections as docs/architecture.md#<anchor>: each anchor must exist."""
    missing = []
    for path in checkout_files():
        text = text_of(path)
        if text is None or "docs/architecture.md#" not in text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            missing += [
                f"{path.relative_to(ROOT)}:{number}: #{anchor}"
                for anchor in ARCHITECTURE_CITATION.findall(line)
                if anchor not in architecture_anchors()
            ]
    assert not missing, "no such heading in docs/architecture.md:\n" + "\n".join(missing)


def test_github_anchor_rule() -> None:
    assert github_anchor("Model I/O contract") == "model-io-contract"
    assert github_anchor("One Dockerfile, three targets") == "one-dockerfile-three-targets"
    assert github_anchor("httpx over aiohttp's pool") == "httpx-over-aiohttps-pool"
    assert github_anchor("`pcam predict`") == "pcam-predict"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def folder_map() -> dict[str, set[str]]:
    """The folder map of docs/architecture.md: each top-level name with the names listed under it."""
    text = ARCHITECTURE.read_text()
    block = text[text.index("## Folder map") :].split("```")[1]
    listed: dict[str, set[str]] = {}
    last = ""
    for line in block.splitlines()[1:]:
        name = line.split()[0].rstrip("/") if line.strip() else ""
        if not name:
            continue
        if line.startswith(" "):
            listed[last].add(name)
        else:
            last = name
            listed[last] = set()
    return listed


def test_the_folder_map_matches_the_tree() -> None:
    """Every top-level entry of the checkout is in the map and no other; so is every entry one level
    below the folders the map opens."""
    listed = folder_map()
    tree: dict[str, set[str]] = {}
    for path in checkout_files():
        parts = path.relative_to(ROOT).parts
        tree.setdefault(parts[0], set()).update(parts[1:2] if len(parts) > 1 else ())
    assert set(listed) == set(tree), "the folder map and the tree differ at the top level"
    for folder, children in listed.items():
        if children:
            assert children == tree[folder], f"the folder map and the tree differ in {folder}/"
