"""A fake tritonclient gRPC aio client: members are functions of the pixels Triton would receive."""

from collections.abc import Callable

import numpy as np
from tritonclient.utils import InferenceServerException

from pcam_core.release import Member, ReleaseManifest
from tests.unit.common.release_fixture import write_test_release

LogitFn = Callable[[np.ndarray], np.ndarray]
"""uint8 (B, 96, 96, 3) -> float (B,) logits."""
MapFn = Callable[[np.ndarray], np.ndarray]
"""uint8 (B, 96, 96, 3) -> float (B, 96, 96) activation maps."""


def mean_pixel(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).mean(axis=1) / 255.0


class FakeResult:
    def __init__(self, logits: np.ndarray, outputs: dict[str, np.ndarray] | None = None) -> None:
        self.logits, self.outputs = logits, outputs or {}

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs.get(name, self.logits)


class FakeTriton:
    """Answers each member with its logit function; `failures[name] = (status, times[, message])` fails
    that member's first `times` infer calls with that gRPC status (times < 0: always), the message
    appended to "<name> failed". Records every infer call."""

    def __init__(
        self,
        members: dict[str, LogitFn],
        max_batch_size: int = 256,
        failures: dict[str, tuple] | None = None,
        bad_output: set[str] = frozenset(),
        maps: dict[str, MapFn] | None = None,
    ) -> None:
        self.members, self.max_batch_size = members, max_batch_size
        self.maps = maps or {}
        self.outputs: list[list[str]] = []
        """The output names every infer call asked for."""
        self.failures = dict(failures or {})
        self.bad_output = bad_output
        self.calls: list[tuple[str, int]] = []
        self.timeouts: list[float] = []
        self.headers: list[dict[str, str] | None] = []
        """The gRPC metadata of every infer call (the trace context, when tracing is on)."""

    def requests(self, name: str) -> list[int]:
        """Batch sizes of the infer calls made to one member (failed ones included)."""
        return [size for member, size in self.calls if member == name]

    async def get_model_config(self, name, version, as_json, client_timeout):
        return {"config": {"max_batch_size": self.max_batch_size}}

    async def infer(self, name, inputs, model_version, outputs, client_timeout, headers=None):
        shape = inputs[0].shape()
        self.calls.append((name, shape[0]))
        self.timeouts.append(client_timeout)
        self.headers.append(headers)
        self.outputs.append([output.name() for output in outputs])
        status, times, *message = self.failures.get(name, (None, 0))
        if times != 0:
            self.failures[name] = (status, times - 1, *message)
            raise InferenceServerException(f"{name} failed{''.join(message)}", status=status)
        # Exactly the bytes Triton would receive.
        images = np.frombuffer(inputs[0]._raw_content, np.uint8).reshape(shape)
        logits = np.asarray(self.members[name](images), dtype=np.float32).reshape(-1, 1)
        outputs = {"activation_map": self.maps[name](images).astype(np.float32)} if name in self.maps else {}
        if name in self.bad_output:
            logits, outputs = logits[:-1], {k: v[:-1] for k, v in outputs.items()}
        return FakeResult(logits, outputs)

    async def is_model_ready(self, name, version, client_timeout):
        return name in self.members

    async def close(self) -> None:
        pass


def release_with(
    tmp_path, *members: tuple[str, float, float], temperature: float = 1.0, activation_map: str | None = None
) -> ReleaseManifest:
    """The unit test release with members (name, temperature, weight), an ensemble temperature, and
    the kind of activation map every member's graph carries."""
    release = write_test_release(tmp_path, "rel-e")
    return release.model_copy(
        update={
            "members": tuple(
                Member(
                    name=n,
                    architecture="x",
                    sha256="0" * 64,
                    temperature=t,
                    weight=w,
                    activation_map=activation_map,
                )
                for n, t, w in members
            ),
            "ensemble": release.ensemble.model_copy(update={"temperature": temperature}),
        }
    )
