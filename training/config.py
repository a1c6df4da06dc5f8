"""Run configurations: YAML files that name data, members and serving settings, checked by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_serializer,
    model_validator,
)

from pcam_core.conformal import DEFAULT_COVERAGE

BUNDLED_DIR = Path(__file__).parent / "configs"
MEMBER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]*$"
"""As pcam_core.release.Member.name: the name is also the Triton model (directory) name."""
RELEASE_PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


class _Strict(BaseModel):
    # A misspelt key must fail loudly, not fall back to a default silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticData(_Strict):
    """Sizes and seed of a synthetic PCam-like set (training.data.synthetic)."""

    train: int = Field(ge=16)
    valid: int = Field(ge=16)
    test: int = Field(ge=1)
    seed: int = 0

    def sizes(self) -> dict[str, int]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


class DataConfig(_Strict):
    """Either a synthetic set (generated into the work dir) or a directory holding PCam's HDF5 files."""

    synthetic: SyntheticData | None = None
    pcam_dir: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DataConfig:
        if (self.synthetic is None) == (self.pcam_dir is None):
            raise ValueError("data needs exactly one of 'synthetic' or 'pcam_dir'")
        return self

    @property
    def source(self) -> str:
        """The manifest's name for it: 'synthetic' or 'pcam'."""
        return "synthetic" if self.synthetic is not None else "pcam"


class StainConfig(_Strict):
    fit_patches: int = Field(512, ge=1, description="Training patches sampled to fit the Macenko reference.")


class PretrainedConfig(_Strict):
    """Initial weights of a member: a local file with its sha256, or a name in a registry file.

    Either ``{path: FILE, sha256: HEX}`` or ``{registry: REGISTRY.yaml, name: NAME}`` (the registry
    gives the file and its sha256; see training.weights). Nothing is ever downloaded.
    """

    path: Path | None = Field(None, description="A local state_dict file (.safetensors, .pt, .pth, .bin).")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="With path: its expected SHA-256.")
    registry: Path | None = Field(None, description="A weights registry YAML (training.weights).")
    name: str | None = Field(None, min_length=1, description="With registry: the entry's name.")

    @model_validator(mode="after")
    def _one_source(self) -> PretrainedConfig:
        if (self.path is None) == (self.registry is None):
            raise ValueError(
                "pretrained needs exactly one of 'path' (with 'sha256') or 'registry' (with 'name')"
            )
        if self.path is not None and (self.sha256 is None or self.name is not None):
            raise ValueError("pretrained 'path' needs 'sha256' (always verified) and takes no 'name'")
        if self.registry is not None and (self.name is None or self.sha256 is not None):
            raise ValueError("pretrained 'registry' needs 'name'; the sha256 comes from the registry")
        return self


class ImportedInput(_Strict):
    """What an imported graph expects as input, so the platform's uint8 RGB patches can be turned into it:
    float32 pixels divided by `scale`, then (x - mean) / std per channel, in the graph's layout."""

    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="The graph's input layout (96x96 RGB).")
    scale: float = Field(255.0, gt=0, description="Pixels are divided by this first (255: to [0, 1]).")
    mean: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="Per RGB channel, after scaling.")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="Per RGB channel, after scaling.")


class ImportedGraph(_Strict):
    """An ONNX graph trained outside `pcam`: a local file with its sha256, its input and its output."""

    path: Path = Field(description="The .onnx file (relative to where pcam runs).")
    sha256: str = Field(pattern=SHA256_PATTERN, description="Its expected SHA-256 (always verified).")
    input: ImportedInput = Field(ImportedInput(), description="How the graph expects its input.")
    output: Literal["logit", "two_class_logits"] = Field(
        "logit",
        description="logit: one tumor logit per patch ([N] or [N, 1]); two_class_logits: [N, 2] logits of "
        "(normal, tumor), whose difference is the tumor logit.",
    )


class ImportedMemberConfig(_Strict):
    """One ensemble member brought as an ONNX graph: `pcam train` skips it, `pcam export` wraps it into the
    member contract, and calibration fits its temperature like any other's."""

    name: str = Field(pattern=MEMBER_NAME_PATTERN)
    onnx: ImportedGraph
    weight: float = Field(1.0, gt=0, description="Weight of this member in the ensemble mean.")

    @property
    def architecture(self) -> str:
        """What release.json records as the member's architecture."""
        return f"onnx:{self.onnx.path.name}"


class HedJitterConfig(_Strict):
    """Tellez et al. 2018 HED jitter (training.augment.hed_jitter); 0.05/0.05 is their 'HED-light'."""

    scale: float = Field(0.05, ge=0, lt=1, description="alpha ~ U(1 - scale, 1 + scale) per image and stain.")
    shift: float = Field(0.05, ge=0, description="beta ~ U(-shift, shift) per image and stain (OD units).")


class ColorJitterConfig(_Strict):
    """Brightness/contrast/saturation jitter (training.augment.color_jitter): factor ~ U(1 - s, 1 + s)."""

    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    saturation: float = Field(0.1, ge=0, lt=1)


class AugmentConfig(_Strict):
    """Training augmentation of a member (training.augment); the defaults are the 8 dihedral transforms only.

    Blur, elastic deformation and CutMix are left out on purpose: they can change PCam's center label.
    """

    dihedral: bool = Field(True, description="One of the 8 rotations/flips per patch.")
    hed_jitter: HedJitterConfig | None = Field(None, description="HED stain jitter; null: off.")
    color_jitter: ColorJitterConfig | None = Field(None, description="Color jitter; null: off.")


class MemberConfig(_Strict):
    """One ensemble member: a timm architecture trained from scratch, or from verified local weights."""

    name: str = Field(pattern=MEMBER_NAME_PATTERN)
    architecture: str = Field(description="A timm model name, e.g. resnet18, test_vit.")
    epochs: int = Field(ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.05, ge=0)
    weight: float = Field(1.0, gt=0, description="Weight of this member in the ensemble mean.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra timm.create_model args.")
    loss: Literal["bce", "weighted_bce", "focal"] = Field(
        "bce", description="Training loss (training.losses)."
    )
    pos_weight: float | None = Field(
        None,
        gt=0,
        description="weighted_bce only: weight of the positive term; default n_neg / n_pos of train.",
    )
    focal_alpha: float = Field(0.25, description="focal only: weight of positives in [0, 1], or -1 for none.")
    focal_gamma: float = Field(
        2.0, ge=0, description="focal only: focusing exponent; 0 gives (weighted) BCE."
    )
    warmup_steps: int | None = Field(None, ge=0, description="Linear LR warmup in optimizer steps.")
    warmup_epochs: float | None = Field(
        None, ge=0, description="Linear LR warmup in epochs (or warmup_steps)."
    )
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a better validation AUC; none: run all."
    )
    amp: bool = Field(
        True, description="Mixed precision (autocast + GradScaler) when training on CUDA; CPU: off."
    )
    pretrained: PretrainedConfig | None = Field(
        None, description="Initial weights (training.weights); none: random initialisation."
    )
    augment: AugmentConfig = Field(
        AugmentConfig(), description="Training augmentation (training.augment); default: dihedral only."
    )
    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes reading training data; 0: the main process."
    )

    @model_serializer(mode="wrap")
    def _omit_unset_pretrained(self, handler: Any) -> dict[str, Any]:
        # Without pretrained weights (default augmentation, no workers) the dump (saved config, resume
        # fingerprint) is what it was before the key existed, so older resume states still match.
        data = handler(self)
        if isinstance(data, dict):
            if data.get("pretrained") is None:
                data.pop("pretrained", None)
            if self.augment == AugmentConfig():
                data.pop("augment", None)
            if self.num_workers == 0:
                data.pop("num_workers", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MemberConfig:
        if self.warmup_steps is not None and self.warmup_epochs is not None:
            raise ValueError("set at most one of warmup_steps and warmup_epochs")
        if self.pos_weight is not None and self.loss != "weighted_bce":
            raise ValueError("pos_weight applies to loss: weighted_bce only")
        if not (0 <= self.focal_alpha <= 1 or self.focal_alpha == -1):
            raise ValueError("focal_alpha must lie in [0, 1], or be -1 for no class weighting")
        if {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay"} & set(self.model_kwargs):
            raise ValueError(
                "model_kwargs must not ask timm for pretrained weights (it would fetch them from the hub); "
                "use the member's 'pretrained:' key with a local file or a registry entry"
            )
        return self


class TritonConfig(_Strict):
    """Serving settings written into every member's config.pbtxt (cpu and gpu targets, docs/architecture.md#model-repository)."""

    max_batch_size: int = Field(64, ge=1)
    max_queue_delay_microseconds: int = Field(2000, ge=0)
    max_queue_size: int = Field(
        64,
        ge=0,
        description="Requests each member's dynamic batcher holds waiting; one more is rejected at once "
        "(UNAVAILABLE) and the ensemble answers 503 overloaded instead of queueing it. 0: unbounded.",
    )
    queue_timeout_microseconds: int = Field(
        5_000_000,
        ge=0,
        description="A request still queued after this long is rejected rather than run for a caller that "
        "has given up (keep it under the ensemble's triton_timeout_s). 0: never.",
    )
    instance_count: int = Field(1, ge=1, description="cpu target: model instances (KIND_CPU).")
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime intra-op threads; 0 lets it decide.")
    gpu_instance_count: int = Field(1, ge=1, description="gpu target: model instances per GPU (KIND_GPU).")
    trt_precision: Literal["FP16", "FP32"] = Field(
        "FP16", description="gpu target: precision of onnxruntime's TensorRT execution accelerator."
    )
    trt_engine_cache_path: str = Field(
        "/trt_engine_cache",
        pattern=r"^/",
        description="gpu target: absolute path, in the Triton container, of a mounted volume for the TensorRT "
        "engine cache (never inside the model repository: Triton loads every directory there as a model).",
    )


ExportFormat = Literal["onnx", "torchscript", "int8", "tensorrt"]


class ExportConfig(_Strict):
    """What `pcam export` writes besides the served ONNX graph (training.export, .quantize, .trt)."""

    formats: tuple[ExportFormat, ...] = Field(
        ("onnx",),
        description="onnx is always written (the repository serves it); torchscript (model.pt), int8 "
        "(model.int8.onnx, with its validation AUC change), tensorrt (model.plan; needs tensorrt and a GPU).",
    )
    int8_calibration_patches: int = Field(
        256, ge=1, description="Training patches (a seeded sample) that calibrate the INT8 activation ranges."
    )
    feature_patches: int = Field(
        4096,
        ge=16,
        description="Training patches (a seeded sample) the feature density of each member's "
        "feature_distance output is fitted on (training/served.py).",
    )
    tta_patches: int = Field(
        512,
        ge=16,
        description="Validation patches whose 8 dihedral views are scored at export, to fit the "
        "tta_inconsistency flag on.",
    )


class CalibrationConfig(_Strict):
    """`pcam calibrate` options (training.calibrate)."""

    ensemble_temperature: bool = Field(
        True,
        description="Also fit a temperature on the logit of the members' weighted mean (docs/architecture.md#ensemble-temperature-on-by-default).",
    )
    conformal_coverage: float | None = Field(
        DEFAULT_COVERAGE,
        gt=0,
        lt=1,
        description="Coverage of the split-conformal prediction sets fitted on the validation split "
        "(docs/architecture.md#prediction-sets); null: results carry no sets.",
    )
    flag_rate: float = Field(
        0.007,
        gt=0,
        lt=0.05,
        description="Share of validation patches each review flag is fitted to fire on "
        "(docs/architecture.md#review-flags): 6 flags apply without tta, 7 with it, so at most 4.2 % "
        "and 4.9 % of in-distribution patches are flagged.",
    )


class TrackingConfig(_Strict):
    """Optional experiment tracking (training.tracking): MLflow to a local store, or Weights & Biases."""

    backend: Literal["mlflow", "wandb"] = Field(
        "mlflow",
        description="mlflow: a local sqlite store; wandb: Weights & Biases runs (offline by default).",
    )
    dir: Path = Field(
        validation_alias=AliasChoices("dir", "mlflow_dir"),
        description="Where runs are written (MLflow: mlflow.db and artifacts/; W&B: wandb/); relative "
        "paths: from the cwd. `mlflow_dir` is accepted for it too.",
    )
    experiment: str = Field("pcam", min_length=1, description="MLflow experiment, or W&B project.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline",
        description="W&B only. offline: runs stay under dir (`wandb sync` uploads them later), no network; "
        "online: needs the network and WANDB_API_KEY.",
    )


def _member_kind(member: Any) -> str:
    """A member entry (YAML mapping or model) with `onnx:` is imported, any other is trained."""
    onnx = member.get("onnx") if isinstance(member, dict) else getattr(member, "onnx", None)
    return "imported" if onnx else "trained"


AnyMember = Annotated[
    Annotated[MemberConfig, Tag("trained")] | Annotated[ImportedMemberConfig, Tag("imported")],
    Discriminator(_member_kind),
]
"""A member trained by `pcam train` (a timm architecture), or one imported as an ONNX graph (`onnx:`)."""


class RunConfig(_Strict):
    release_prefix: str = Field(pattern=RELEASE_PREFIX_PATTERN)
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch / onnxruntime threads while training and exporting.")
    data: DataConfig
    stain: StainConfig = StainConfig()
    members: tuple[AnyMember, ...] = Field(min_length=1)
    triton: TritonConfig = TritonConfig()
    export: ExportConfig = ExportConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    tracking: TrackingConfig | None = Field(
        None, description="Experiment tracking, MLflow or W&B (training.tracking); null: off."
    )

    @model_validator(mode="after")
    def _unique_members(self) -> RunConfig:
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique: {names}")
        return self

    @property
    def trained_members(self) -> tuple[MemberConfig, ...]:
        """The members `pcam train` trains (imported ones come trained)."""
        return tuple(m for m in self.members if isinstance(m, MemberConfig))

    def member(self, name: str) -> AnyMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"no member {name!r}; members: {[m.name for m in self.members]}")


def bundled_configs() -> list[str]:
    """Names of the configs shipped with the package (training/configs/*.yaml)."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the bundled config of that name (e.g. 'demo')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(f"no config file {path} and no bundled config of that name {bundled_configs()}")


def load_config(name_or_path: str | Path) -> RunConfig:
    """Read and validate a run config (a path, or a bundled config's name)."""
    raw = yaml.safe_load(resolve_config(name_or_path).read_text())
    return RunConfig.model_validate(raw)


def save_config(config: RunConfig, path: Path) -> Path:
    """Write the resolved config (defaults filled in) as YAML, so a run records what it ran with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path
