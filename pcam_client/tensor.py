"""Patches as pixels through the gateway's tensor input (KServe v2): requests out, arrays back.

The protocol's bodies and names are pcam_core.oip's, which needs numpy: it is imported on first use,
so the client installs and imports without numpy (the `tensor` extra adds it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pcam_client.errors import PCamError

if TYPE_CHECKING:
    import numpy as np

INSTALL_HINT = "pip install 'pcam-platform-client[tensor]'"


@dataclass(frozen=True)
class PixelPredictions:
    """The answers to a batch of pixels: arrays over the patches in input order, and the call's
    parameters. `releases` lists every release that answered (two if one rolled out during the call);
    `release` and `threshold` are the first one's."""

    probability: np.ndarray
    """float32 (N,): calibrated ensemble probability of tumor in the center 32x32."""
    label: np.ndarray
    """int32 (N,): 1 where the probability reaches the operating point's threshold (-1: withheld, with
    abstain, for a patch with a review flag)."""
    uncertainty: np.ndarray
    """float32 (N,): std of the member probabilities (across TTA views too)."""
    needs_review: np.ndarray
    """bool (N,): a review flag fired (the /v1 results name them)."""
    operating_point: str
    threshold: float
    release: str
    releases: tuple[str, ...]
    degraded: bool
    """Some patch was answered by fewer members than the release has."""
    cached: int
    """How many patches were answered from the result cache."""

    def __len__(self) -> int:
        return len(self.probability)


@dataclass(frozen=True)
class TensorRequest:
    """One request of a call: the body, its headers, and how many patches it carries."""

    path: str
    content: bytes
    headers: dict[str, str]
    count: int


def load_oip() -> ModuleType:
    """pcam_core.oip, or an ImportError saying how to install numpy if it is missing."""
    try:
        from pcam_core import oip
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise ModuleNotFoundError(
            f"predict_pixels needs numpy, which this installation lacks: {INSTALL_HINT}", name="numpy"
        ) from exc
    return oip


def tensor_parameters(
    operating_point: str | None, tta: bool, cache: bool, abstain: bool = False
) -> dict[str, Any]:
    """Request parameters of the tensor input; defaults are left out so the gateway's own apply."""
    parameters: dict[str, Any] = {}
    if operating_point is not None:
        parameters["operating_point"] = operating_point
    if tta:
        parameters["tta"] = True
    if not cache:
        parameters["cache"] = False
    if abstain:
        parameters["abstain"] = True
    return parameters


class PixelCall:
    """One predict_pixels call, without I/O: the requests to send (one per chunk of at most
    max_batch patches, encoded as they are sent) and the answers, added up in order."""

    def __init__(self, images: np.ndarray, max_batch: int, parameters: dict[str, Any]) -> None:
        self._oip = load_oip()
        self._images = self._oip.check_images(images)  # ValueError before anything is sent
        self._max_batch, self._parameters = max_batch, parameters
        self._outputs: list[dict[str, np.ndarray]] = []
        self._answers: list[Any] = []  # oip.AnswerParameters, one per chunk

    @property
    def path(self) -> str:
        return f"/v2/models/{self._oip.MODEL_NAME}/infer"

    def requests(self) -> Iterator[TensorRequest]:
        """The requests in input order; each chunk's body is built only when it is its turn."""
        for start in range(0, len(self._images), self._max_batch):
            chunk = self._images[start : start + self._max_batch]
            body, header_length = self._oip.encode_request(chunk, self._parameters)
            headers = {
                self._oip.HEADER_LENGTH: str(header_length),
                "Content-Type": "application/octet-stream",
            }
            yield TensorRequest(self.path, body, headers, len(chunk))

    def add(self, content: bytes, headers: Mapping[str, str], sent: int) -> None:
        """Read one answer (its body and headers) to a request of `sent` patches."""
        header_length = headers.get(self._oip.HEADER_LENGTH)
        try:
            length = None if header_length is None else int(header_length)
            outputs, parameters = self._oip.read_response(content, length)
            answer = self._oip.AnswerParameters.model_validate(parameters)
        except ValueError as exc:  # pydantic's ValidationError included
            reason = (
                f"{exc.error_count()} validation errors (first: {exc.errors()[0]['msg']})"
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            raise PCamError(
                f"POST {self.path} answered a body that is not an inference answer: {reason}"
            ) from exc
        shapes = {name: getattr(outputs.get(name), "shape", None) for name in self._oip.OUTPUTS}
        if any(shape != (sent,) for shape in shapes.values()):
            raise PCamError(f"POST {self.path} answered outputs of shapes {shapes} for {sent} patches")
        self._outputs.append(outputs)
        self._answers.append(answer)

    def result(self) -> PixelPredictions:
        """The answers added so far as one result, arrays concatenated in input order."""
        import numpy as np

        first = self._answers[0]
        arrays = {name: np.concatenate([o[name] for o in self._outputs]) for name in self._oip.OUTPUTS}
        return PixelPredictions(
            probability=arrays["probability"],
            label=arrays["label"],
            uncertainty=arrays["uncertainty"],
            needs_review=arrays["needs_review"],
            operating_point=first.operating_point,
            threshold=first.threshold,
            release=first.release,
            releases=tuple(dict.fromkeys(a.release for a in self._answers)),
            degraded=any(a.degraded for a in self._answers),
            cached=sum(a.cached for a in self._answers),
        )
