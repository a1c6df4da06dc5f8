"""The page of every problem type: what happened and what to do about it, as JSON or HTML.

Problem `type` URIs point here (`/problems/{kind}` under the configured base), so a client that meets
a problem can look it up. The words come from the one table, `pcam_core.problems.PROBLEM_TYPES`.
"""

from __future__ import annotations

from html import escape

from pydantic import BaseModel

from pcam_core.problems import PROBLEM_TYPES
from services.common.app import RESEARCH_USE_NOTICE


class ProblemPage(BaseModel):
    """One problem type, explained."""

    type: str
    kind: str
    status: int
    title: str
    about: str
    action: str


def problem_page(kind: str, base: str) -> ProblemPage:
    """The page of a kind in the table (KeyError for any other)."""
    spec = PROBLEM_TYPES[kind]
    return ProblemPage(
        type=base + kind,
        kind=kind,
        status=spec.status,
        title=spec.title,
        about=spec.about,
        action=spec.action,
    )


def problem_pages(base: str) -> list[ProblemPage]:
    """Every kind's page, in the table's order (the caller's input first, then the platform's side)."""
    return [problem_page(kind, base) for kind in PROBLEM_TYPES]


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html above JSON (a browser); JSON when it does not say."""
    html = json = 0.0
    for media_range in (accept or "").split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media == "text/html":
            html = max(html, quality)
        elif media in ("application/json", "application/problem+json", "application/*", "*/*"):
            json = max(json, quality)
    return html > json


def render_html(pages: list[ProblemPage], heading: str) -> str:
    """A plain HTML page of one or more problem types (every value escaped)."""
    sections = "\n".join(
        f'<section id="{escape(p.kind)}"><h2>{escape(p.title)} <small>{p.status} · '
        f"<code>{escape(p.kind)}</code></small></h2>"
        f"<p>{escape(p.about)}</p><p><strong>What to do:</strong> {escape(p.action)}</p></section>"
        for p in pages
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(heading)}</title></head><body><h1>{escape(heading)}</h1>"
        f"<p>{escape(RESEARCH_USE_NOTICE.replace('**', ''))}</p>{sections}</body></html>"
    )
