"""Ensemble settings (`PCAM_ENSEMBLE_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from pcam_core.serving import Occlusion
from services.common import ports
from services.common.settings import ExplainsImages, ReadsRelease, ServiceSettings
from services.ensemble.retry import RetryPolicy


class EnsembleSettings(ReadsRelease, ExplainsImages, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PCAM_ENSEMBLE_", frozen=True)

    port: int = Field(ports.ENSEMBLE, description="Port the server listens on.")
    triton_grpc_url: str = Field(
        f"127.0.0.1:{ports.TRITON_GRPC}", description="Triton's gRPC endpoint, host:port (no scheme)."
    )
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of each Triton call attempt.")
    max_images: int = Field(1024, ge=1, description="Patches per request.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent when Triton is unavailable.")

    retry_attempts: int = Field(
        3, ge=1, description="Tries per Triton call, the first included (1: never retry)."
    )
    retry_backoff_s: float = Field(
        0.1, ge=0, description="Backoff before retry k is uniform in [0, min(max, this * 2**(k-1)))."
    )
    retry_backoff_max_s: float = Field(2.0, ge=0, description="Cap of one backoff.")
    retry_budget_s: float = Field(
        15.0,
        gt=0,
        description="Wall time of one Triton call with its retries; attempts are cut to what is left. "
        "Keep it below the gateway's downstream timeout.",
    )
    retry_deadline_exceeded: bool = Field(
        False,
        description="Also retry calls that ran out their deadline (off: a timed-out call may still be "
        "running on an overloaded server; only UNAVAILABLE is retried).",
    )
    max_concurrent_chunks: int = Field(
        4, ge=1, description="Chunks of one member in flight at once (the rest wait, not on their deadline)."
    )
    triton_shared_memory: bool = Field(
        False,
        description="Hand patches to Triton in system shared memory instead of inside each gRPC message. "
        "Only where this process shares /dev/shm with Triton: the same host, or a sidecar in Triton's pod.",
    )
    triton_shared_memory_slots: int = Field(
        8, ge=1, description="Shared memory regions: calls to Triton that can hold one at once."
    )
    triton_shared_memory_slot_patches: int = Field(
        64, ge=1, description="Patches per region; a larger chunk goes inside its gRPC message."
    )
    min_members: int | None = Field(
        None,
        ge=1,
        description="None: every member must answer (else 503). k: answer from any k members that did, "
        "marked degraded, weights renormalized over them (k above the release's member count: all).",
    )
    release_ready_timeout_s: float = Field(
        20.0, gt=0, description="How long a new release's models may take to become ready on Triton."
    )
    occlusion_window: int = Field(16, ge=1, le=96, description="Side of the occluding square (pixels).")
    occlusion_stride: int = Field(8, ge=1, le=96, description="Step between occluding squares (pixels).")

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            backoff_s=self.retry_backoff_s,
            max_backoff_s=self.retry_backoff_max_s,
            budget_s=self.retry_budget_s,
            retry_deadline_exceeded=self.retry_deadline_exceeded,
        )

    def occlusion(self) -> Occlusion:
        """The occluding window of explanations."""
        return Occlusion(self.occlusion_window, self.occlusion_stride)
