"""Reading multipart uploads: every malformed body is a 400 problem that says what was wrong."""

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from services.common.problems import install_problem_handlers
from services.common.uploads import read_files

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/files")
    async def files(request: Request) -> dict[str, list[int]]:
        return {"sizes": [len(data) for data in await read_files(request, "files", 2, 1024)]}

    with TestClient(app) as client:
        yield client


def part(
    data: bytes, headers: str = 'Content-Disposition: form-data; name="files"; filename="p.png"'
) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"


CLOSE = f"--{BOUNDARY}--\r\n".encode()


def post(client: TestClient, body: bytes):
    return client.post("/files", content=body, headers={"content-type": MULTIPART})


def test_a_closed_body_is_read_and_its_epilogue_ignored(client) -> None:
    response = post(client, part(b"abc") + part(b"de") + CLOSE + b"epilogue")
    assert response.status_code == 200 and response.json() == {"sizes": [3, 2]}


@pytest.mark.parametrize(
    "body",
    [
        part(b"abc"),  # every part complete, no closing boundary
        part(b"abc") + f"--{BOUNDARY}\r\n".encode(),  # a delimiter, then nothing
        part(b"abc")[:-10],  # cut inside the part: it used to vanish, leaving "field required"
    ],
    ids=["no-closing-boundary", "dangling-delimiter", "cut-inside-a-part"],
)
def test_a_body_without_its_closing_boundary_is_400(client, body: bytes) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"].endswith("/malformed-multipart")
    assert "closing boundary" in problem["detail"]


def test_parser_errors_say_why(client) -> None:
    huge_header = part(
        b"abc", 'Content-Disposition: form-data; name="files"; filename="p"\r\nX: ' + "a" * 10_000
    )
    response = post(client, huge_header + CLOSE)
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid multipart data. Maximum header size exceeded."


def test_missing_boundary_and_too_many_files_keep_their_answers(client) -> None:
    response = client.post(
        "/files", content=part(b"x") + CLOSE, headers={"content-type": "multipart/form-data"}
    )
    assert response.status_code == 400 and "boundary" in response.json()["detail"]
    response = post(client, part(b"x") * 3 + CLOSE)
    assert response.status_code == 413 and response.json()["type"].endswith("/too-many-files")


def test_a_declared_length_no_allowed_body_can_reach_is_413_before_reading(client) -> None:
    """2 files of 1 KiB cannot make a body of 1 MiB: refused on the header, the body never read."""
    body = part(b"x" * 10) + CLOSE
    response = client.post(
        "/files", content=body, headers={"content-type": MULTIPART, "content-length": str(1 << 20)}
    )
    assert response.status_code == 413 and response.json()["type"].endswith("/payload-too-large")
