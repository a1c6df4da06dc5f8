import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcam_core import wire


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


@given(n=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_round_trip_keeps_pixels_items_and_meta(n: int, seed: int) -> None:
    items = [
        wire.AcceptedItem(index=i, tissue_fraction=0.5, stain_normalized=True, stain_skip_reason=None)
        for i in range(n)
    ]
    batch = wire.Batch(_images(n, seed), items=items, release="r1")
    decoded = wire.decode(wire.encode(batch))
    np.testing.assert_array_equal(decoded.images, batch.images)
    assert decoded.items == batch.items
    assert decoded.release == "r1"


def test_payload_is_raw_bytes_not_json_floats() -> None:
    body = wire.encode(wire.Batch(_images(2)))
    assert len(body) - 2 * 96 * 96 * 3 < 200


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:3],
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: (10**9).to_bytes(4, "big") + b[4:],
        lambda b: b[:4] + b"{" * (int.from_bytes(b[:4], "big")) + b[4 + int.from_bytes(b[:4], "big") :],
    ],
    ids=["no-prefix", "short-payload", "long-payload", "huge-header", "bad-json"],
)
def test_corrupt_frames_are_rejected(mutate) -> None:
    with pytest.raises(wire.WireFormatError):
        wire.decode(mutate(wire.encode(wire.Batch(_images(1)))))


@pytest.mark.parametrize("images", [np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 96, 96, 3), np.float32)])
def test_only_contract_shaped_uint8_is_encoded(images: np.ndarray) -> None:
    with pytest.raises(wire.WireFormatError):
        wire.encode(wire.Batch(images))


@pytest.mark.parametrize("n", [-1, 2**54 + 1, 10**6])
def test_hostile_shapes_are_rejected_not_overflowed(n: int) -> None:
    header = json.dumps({"dtype": "uint8", "shape": [n, 96, 96, 3]}).encode()
    body = len(header).to_bytes(4, "big") + header + bytes(96 * 96 * 3)
    with pytest.raises(wire.WireFormatError):
        wire.decode(body)


@given(uploads=st.lists(st.binary(max_size=64), max_size=5))
@settings(max_examples=50, deadline=None)
def test_uploads_frame_round_trips_in_order(uploads: list[bytes]) -> None:
    assert wire.decode_uploads(wire.encode_uploads(uploads)) == uploads


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no count
        b"\x00\x00",  # a count cut short
        (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"abc",  # the second upload is missing
        (1).to_bytes(4, "big") + (9).to_bytes(4, "big") + b"abc",  # longer than what is left
        (1).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"abcd",  # trailing bytes
        (10**9).to_bytes(4, "big") + b"\x00" * 8,  # a count no body this size can hold
    ],
    ids=["empty", "short-count", "missing-upload", "overlong-upload", "trailing-bytes", "huge-count"],
)
def test_a_malformed_uploads_frame_is_refused(body: bytes) -> None:
    with pytest.raises(wire.WireFormatError):
        wire.decode_uploads(body)


def test_the_uploads_frame_limit_holds_the_largest_frame() -> None:
    uploads = [b"x" * 100] * 3
    assert len(wire.encode_uploads(uploads)) == wire.max_uploads_frame_bytes(3, 100)
