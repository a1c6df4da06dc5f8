"""What an inference request must satisfy before any member runs: a readable frame within limits."""

from pcam_core import wire
from pcam_core.errors import InvalidRequest, MalformedRequest


def read_frame(body: bytes, max_images: int) -> wire.Batch:
    """The batch in a binary frame of 1..max_images patches; MalformedRequest or InvalidRequest otherwise."""
    try:
        batch = wire.decode(body)
    except wire.WireFormatError as exc:
        raise MalformedRequest(str(exc), kind="malformed-batch") from exc
    if not 0 < len(batch.images) <= max_images:
        raise InvalidRequest(f"Received {len(batch.images)} patches; 1..{max_images}.", kind="batch-size")
    return batch
