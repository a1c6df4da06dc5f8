"""pcam_client's predict_pixels through the real stack: the answers predict_batch gives for the same
patches uploaded as PNG files, whether the pixels go in one request or in chunks."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from devstack.stack import LocalStack
from pcam_client import PCamClient, Prediction

pytestmark = pytest.mark.integration
PATCHES = 10
CHUNK = 3
PROBABILITY_ATOL = 1e-6


class CountingTransport(httpx.HTTPTransport):
    """The real transport, noting the path of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def files(patch_paths: list[Path]) -> list[Path]:
    """Patches from each source (src, st, tgt), so the labels are not all alike."""
    return patch_paths[:: len(patch_paths) // PATCHES][:PATCHES]


@pytest.fixture(scope="module")
def pixels(files: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files])


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[PCamClient]:
    with PCamClient(stack.config.url("gateway")) as client:
        yield client


def test_pixels_are_answered_as_their_png_uploads(
    client: PCamClient, files: list[Path], pixels: np.ndarray
) -> None:
    uploaded = client.predict_batch(files, operating_point="screening", cache=False)
    result = client.predict_pixels(pixels, operating_point="screening", cache=False)
    assert all(isinstance(entry, Prediction) for entry in uploaded)
    reference = [entry for entry in uploaded if isinstance(entry, Prediction)]
    assert len(result) == PATCHES and result.cached == 0
    assert result.probability.tolist() == pytest.approx(
        [r.probability for r in reference], abs=PROBABILITY_ATOL
    )
    assert result.label.tolist() == [r.label for r in reference]
    assert result.uncertainty.tolist() == pytest.approx([r.uncertainty for r in reference], abs=1e-5)
    assert (result.operating_point, result.release, result.releases) == (
        reference[0].operating_point, reference[0].release, (reference[0].release,)
    )  # fmt: skip
    assert result.threshold == pytest.approx(reference[0].threshold)
    assert result.degraded == any(r.degraded for r in reference)


def test_a_chunked_call_gives_the_same_answers(
    stack: LocalStack, client: PCamClient, pixels: np.ndarray
) -> None:
    whole = client.predict_pixels(pixels, cache=False)
    transport = CountingTransport()
    with PCamClient(stack.config.url("gateway"), transport=transport, max_batch=CHUNK) as chunked_client:
        chunked = chunked_client.predict_pixels(pixels, cache=False)
    assert transport.paths == ["/v2/models/pcam/infer"] * -(-PATCHES // CHUNK)
    assert chunked.cached == 0  # computed again, not read back from the first call's answers
    assert chunked.probability.tolist() == pytest.approx(whole.probability.tolist(), abs=PROBABILITY_ATOL)
    assert chunked.label.tolist() == whole.label.tolist()
    assert chunked.uncertainty.tolist() == pytest.approx(whole.uncertainty.tolist(), abs=1e-5)
    assert (chunked.operating_point, chunked.threshold, chunked.releases) == (
        whole.operating_point, whole.threshold, whole.releases
    )  # fmt: skip
    # A repeat is served from the cache, keyed by each patch's pixels whatever the chunk it came in.
    again = client.predict_pixels(pixels)
    assert again.cached == PATCHES
    np.testing.assert_array_equal(again.label, whole.label)
