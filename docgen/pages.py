"""The generated pages, and writing or checking them."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docgen.api import api_markdown
from docgen.chart_values import README, chart_values_markdown, readme_with_values
from docgen.cli import cli_markdown
from docgen.metrics import metrics_markdown
from docgen.release import release_json_markdown
from docgen.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path("docs/reference")


@dataclass(frozen=True)
class Page:
    """A generated file: its path from the repository root and what it should hold, given what it holds
    now (None: absent; only a page that is partly generated, like the chart README, needs it)."""

    path: Path
    render: Callable[[str | None], str]


def _whole(render: Callable[[], str]) -> Callable[[str | None], str]:
    return lambda _current: render()


def _readme(current: str | None) -> str:
    if current is None:
        raise FileNotFoundError(f"{README} is missing: only the table between its markers is generated")
    return readme_with_values(current, ROOT)


PAGES = (
    Page(REFERENCE / "api.md", _whole(api_markdown)),
    Page(REFERENCE / "settings.md", _whole(settings_markdown)),
    Page(REFERENCE / "metrics.md", _whole(metrics_markdown)),
    Page(REFERENCE / "cli.md", _whole(cli_markdown)),
    Page(REFERENCE / "chart-values.md", _whole(lambda: chart_values_markdown(ROOT))),
    Page(REFERENCE / "release-json.md", _whole(release_json_markdown)),
    Page(README, _readme),
)


def _current(root: Path, page: Page) -> str | None:
    path = root / page.path
    return path.read_text() if path.exists() else None


def stale_pages(root: Path = ROOT) -> list[Path]:
    """The pages under `root` that differ from what would be generated (missing ones included)."""
    return [page.path for page in PAGES if (current := _current(root, page)) != page.render(current)]


def write_pages(root: Path = ROOT) -> list[Path]:
    """Write every page under `root` that is not current; returns those written."""
    written = []
    for page in PAGES:
        current = _current(root, page)
        if (text := page.render(current)) != current:
            (root / page.path).parent.mkdir(parents=True, exist_ok=True)
            (root / page.path).write_text(text)
            written.append(page.path)
    return written
