"""Reading request bodies within limits; a violation raises the domain error naming it."""

from contextlib import aclosing

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pcam_core import wire
from pcam_core.errors import InvalidRequest, MalformedRequest, UnsupportedMediaType, UploadTooLarge
from services.common.asgi import HttpMiddleware

MULTIPART_OVERHEAD_BYTES = 16 * 1024
"""Generous allowance per part for boundaries and part headers."""


def media_type(request: Request) -> str:
    """The request's media type, without parameters, lower case ("" when none is declared)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_content_length(request: Request, limit: int) -> None:
    """Refuse a declared body larger than `limit` before reading any of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):
        raise MalformedRequest(f"Received {declared!r}.", kind="invalid-content-length")
    if int(declared) > limit:
        raise _too_large(limit)


async def read_files(request: Request, field: str, max_files: int, max_bytes_each: int) -> list[bytes]:
    """The bytes of every file in multipart field `field`, in order; 1..max_files files required."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"Expected multipart/form-data with field '{field}', received {content_type or 'no content type'}."
        )
    # A declared length no set of max_files files can reach is refused before reading anything.
    check_content_length(request, max_multipart_bytes(max_files, max_bytes_each))
    try:
        form = await _parse_multipart(request, max_files)
    except MultiPartException as exc:
        if exc.message.startswith(("Too many files", "Too many fields")):
            raise UploadTooLarge(f"At most {max_files} files per request.", kind="too-many-files") from exc
        # Starlette says only "Invalid multipart data." for python-multipart's errors: add their reason.
        reason = f" {exc.__cause__}." if exc.__cause__ is not None else ""
        raise MalformedRequest(exc.message + reason, kind="malformed-multipart") from exc
    try:
        uploads = form.getlist(field)
        if not uploads:
            raise InvalidRequest(f"The multipart field '{field}' is required.", kind="missing-file")
        files = []
        for position, upload in enumerate(uploads):
            if not isinstance(upload, UploadFile):
                raise InvalidRequest(
                    f"Part {position} of '{field}' is a text field, not a file.", kind="not-a-file"
                )
            data = await upload.read(max_bytes_each + 1)
            if len(data) > max_bytes_each:
                raise _file_too_large(position, field, max_bytes_each)
            files.append(data)
        return files
    finally:
        await form.close()


async def read_upload_frame(request: Request, field: str, max_files: int, max_bytes_each: int) -> list[bytes]:
    """The images of a body in the internal uploads frame (pcam_core.wire), held to the same limits and
    refused with the same problems as the multipart field `field` they stand for."""
    body = await read_body(request, wire.max_uploads_frame_bytes(max_files, max_bytes_each))
    try:
        uploads = wire.decode_uploads(body)
    except wire.WireFormatError as exc:
        raise MalformedRequest(str(exc), kind="malformed-batch") from exc
    if not uploads:
        raise InvalidRequest(f"The frame holds no files for '{field}'.", kind="missing-file")
    if len(uploads) > max_files:
        raise UploadTooLarge(f"At most {max_files} files per request.", kind="too-many-files")
    for position, data in enumerate(uploads):
        if len(data) > max_bytes_each:
            raise _file_too_large(position, field, max_bytes_each)
    return uploads


async def read_batch_frame(request: Request, max_images: int) -> wire.Batch:
    """The patches of a body in the binary batch frame (pcam_core.wire): 1..max_images of them, else
    MalformedRequest or InvalidRequest."""
    body = await read_body(request, wire.max_frame_bytes(max_images))
    try:
        batch = wire.decode(body)
    except wire.WireFormatError as exc:
        raise MalformedRequest(str(exc), kind="malformed-batch") from exc
    if not 0 < len(batch.images) <= max_images:
        raise InvalidRequest(f"Received {len(batch.images)} patches; 1..{max_images}.", kind="batch-size")
    return batch


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (UploadTooLarge) as soon as it grows past `limit` (never buffered whole)."""
    check_content_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _ClosedMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, noting whether the closing boundary arrived: python-multipart's
    finalize() does not check it, so a body cut short would silently lose its last part (a missing
    file, or a 200 for a body that never ended)."""

    closed = False

    def on_end(self) -> None:
        self.closed = True


async def _parse_multipart(request: Request, max_files: int) -> FormData:
    """The parts of a multipart body, refused unless it ends with its closing boundary."""
    async with aclosing(request.stream()) as stream:
        parser = _ClosedMultiPartParser(request.headers, stream, max_files=max_files, max_fields=max_files)
        form = await parser.parse()
    if not parser.closed:
        await form.close()
        raise MultiPartException("The multipart body ended before its closing boundary.")
    return form


class BodyLimitMiddleware(HttpMiddleware):
    """Caps every request body at `max_bytes`, also chunked ones, before anything buffers or spools it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def max_multipart_bytes(max_files: int, max_bytes_each: int) -> int:
    """The largest multipart body `max_files` files of `max_bytes_each` can make."""
    return max_files * (max_bytes_each + MULTIPART_OVERHEAD_BYTES)


def _file_too_large(position: int, field: str, limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"File {position} of '{field}' exceeds the limit of {limit} bytes.", kind="image-too-large"
    )


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"Body exceeds the limit of {limit} bytes.", kind="payload-too-large")
