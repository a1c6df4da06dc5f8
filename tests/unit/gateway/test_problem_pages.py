"""Problem type pages: every kind of the table explained, reachable at the URI its problems carry."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pcam_core.problems import PROBLEM_TYPES, problem_kind
from services.gateway.app import create_app
from services.gateway.problem_pages import prefers_html, problem_page, render_html
from tests.unit.gateway.fakes import unreachable_settings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(unreachable_settings())) as client:
        yield client


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.2, application/problem+json;q=0.1", True),
        ("text/html;q=oops", False),
    ],
)
def test_html_only_when_the_client_ranks_it_above_json(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def test_every_kind_has_words_about_it_and_what_to_do() -> None:
    for kind, spec in PROBLEM_TYPES.items():
        assert len(spec.about) > 20 and len(spec.action) > 20, kind
        assert spec.about.endswith(".") and spec.action.endswith("."), kind


def test_the_index_lists_every_kind_in_json(client: TestClient) -> None:
    answer = client.get("/problems")
    assert answer.status_code == 200 and answer.headers["vary"] == "Accept"
    assert [page["kind"] for page in answer.json()] == list(PROBLEM_TYPES)
    assert all(page["type"] == "/problems/" + page["kind"] for page in answer.json())


def test_a_problems_type_uri_leads_to_its_page(client: TestClient) -> None:
    problem = client.post(
        "/v1/predict", params={"operating_point": "lenient"}, files={"file": ("a.png", b"x")}
    )
    assert problem.headers["content-type"] == PROBLEM
    kind = problem_kind(problem.json()["type"])
    page = client.get(problem.json()["type"])  # relative: resolves against the gateway
    assert page.status_code == 200 and page.json()["kind"] == kind
    assert page.json()["status"] == problem.status_code


def test_a_browser_gets_html_with_every_value_escaped(client: TestClient) -> None:
    answer = client.get("/problems/wrong-size", headers={"accept": "text/html"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "What to do" in answer.text and "Research use only" in answer.text
    page = problem_page("wrong-size", "/problems/").model_copy(update={"title": "<script>x</script>"})
    assert "<script>" not in render_html([page], "t") and "&lt;script&gt;" in render_html([page], "t")


def test_an_unknown_kind_is_a_404_problem(client: TestClient) -> None:
    answer = client.get("/problems/teapot")
    assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM
    assert "GET /problems lists them" in answer.json()["detail"]


def test_a_configured_base_names_every_type_and_page() -> None:
    base = "https://docs.lab.example/pcam/problems/"
    with TestClient(create_app(unreachable_settings(problem_type_base=base))) as client:
        problem = client.get("/nowhere")
        assert problem.json()["type"] == base + "not-found"
        assert client.get("/problems/not-found").json()["type"] == base + "not-found"
