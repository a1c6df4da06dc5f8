"""Reading uploaded images from multipart forms within limits, as problem+json on any violation."""

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from services.common.problems import Problem

MULTIPART_OVERHEAD_BYTES = 16 * 1024
"""Generous allowance per part for boundaries and part headers."""


def check_content_length(request: Request, limit: int) -> None:
    """Refuse a declared body larger than `limit` before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise Problem(400, "invalid-content-length", "Invalid Content-Length", f"Received {declared!r}.")
    if int(declared) > limit:
        raise Problem(
            413,
            "payload-too-large",
            "Payload too large",
            f"Body of {declared} bytes exceeds the limit of {limit}.",
        )


async def read_files(request: Request, field: str, max_files: int, max_bytes_each: int) -> list[bytes]:
    """The bytes of every file in multipart field `field`, in order; 1..max_files files required."""
    check_content_length(request, max_files * (max_bytes_each + MULTIPART_OVERHEAD_BYTES))
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Expected multipart/form-data with field '{field}', received {content_type or 'no content type'}.",
        )
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except MultiPartException as exc:
        raise Problem(400, "malformed-multipart", "Malformed multipart body", exc.message) from exc
    try:
        uploads = form.getlist(field)
        if not uploads:
            raise Problem(422, "missing-file", "Missing file", f"The multipart field '{field}' is required.")
        files = []
        for position, upload in enumerate(uploads):
            if not isinstance(upload, UploadFile):
                raise Problem(
                    422,
                    "not-a-file",
                    "Not a file",
                    f"Part {position} of '{field}' is a text field, not a file.",
                )
            data = await upload.read(max_bytes_each + 1)
            if len(data) > max_bytes_each:
                raise Problem(
                    413,
                    "image-too-large",
                    "Image too large",
                    f"File {position} of '{field}' exceeds the limit of {max_bytes_each} bytes.",
                )
            files.append(data)
        return files
    finally:
        await form.close()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it grows past `limit` (never buffered whole)."""
    check_content_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(
                413, "payload-too-large", "Payload too large", f"Body exceeds the limit of {limit} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)
