"""Every block the docs mark as a walk-through (`<!-- walkthrough: NAME -->`) is named by a test, so a
marked block no test runs, or a test whose block was renamed away, fails here."""

from pathlib import Path

from tests.unit.deploy.walkthrough import blocks

ROOT = Path(__file__).resolve().parents[3]
DOCUMENTS = [ROOT / "README.md", ROOT / "k8s" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_marked_block_is_named_by_a_test() -> None:
    tests = "\n".join(
        path.read_text()
        for path in (ROOT / "tests").rglob("test_*.py")
        if path.resolve() != Path(__file__).resolve()
    )
    marked = {(doc.relative_to(ROOT), b.name) for doc in DOCUMENTS for b in blocks(doc)}
    assert marked, "no walk-through is marked in the docs"
    unrun = sorted(f"{doc}: {name}" for doc, name in marked if f'"{name}"' not in tests)
    assert not unrun, "marked but named by no test:\n" + "\n".join(unrun)
