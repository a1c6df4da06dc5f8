"""Where each pipeline step reads and writes inside a work directory (one place, so steps agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkDir:
    """Layout of a work directory:

    config.yaml  data/ (synthetic PCam files)  stain_reference.json  normalized/<split>.h5
    members/<name>/{checkpoint.pt, history.json, model.onnx, valid_logits.npy, export.json}  calibration.json
    members/<name>/{model.pt, model.int8.onnx, model.plan}: the optional export formats
    members/<name>/valid_logits.int8.npy: the INT8 graph's validation logits (with model.int8.onnx)
    """

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def stain_reference(self) -> Path:
        return self.root / "stain_reference.json"

    @property
    def stain_distribution(self) -> Path:
        return self.root / "stain_distribution.json"

    def normalized(self, split: str) -> Path:
        return self.root / "normalized" / f"{split}.h5"

    def member(self, name: str) -> Path:
        path = self.root / "members" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint(self, name: str) -> Path:
        return self.member(name) / "checkpoint.pt"

    def onnx(self, name: str) -> Path:
        return self.member(name) / "model.onnx"

    def torchscript(self, name: str) -> Path:
        return self.member(name) / "model.pt"

    def int8(self, name: str) -> Path:
        return self.member(name) / "model.int8.onnx"

    def graph(self, name: str, precision: str = "fp32") -> Path:
        """The graph a release serves: the exported one (fp32) or its INT8 copy (int8)."""
        return self.onnx(name) if precision == "fp32" else self.int8(name)

    def plan(self, name: str) -> Path:
        return self.member(name) / "model.plan"

    def export_report(self, name: str) -> Path:
        return self.member(name) / "export.json"

    def valid_logits(self, name: str, precision: str = "fp32") -> Path:
        """Validation logits of the exported graph (fp32) or of its INT8 copy (int8)."""
        return self.valid_output(name, "logits", precision)

    def valid_output(self, name: str, output: str, precision: str = "fp32") -> Path:
        """An output of the exported graph (fp32) or its INT8 copy on the validation split: logits,
        feature_distance, or tta_logits (the 8 views of the first validation patches)."""
        return self.member(name) / (
            f"valid_{output}.npy" if precision == "fp32" else f"valid_{output}.{precision}.npy"
        )

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    def cv(self, member: str) -> Path:
        """Cross-validation folds of a member: cv/<member>/fold-<k>/checkpoint.pt."""
        return self.root / "cv" / member

    @property
    def cv_report(self) -> Path:
        return self.root / "cv" / "report.json"


def require(path: Path, step: str) -> Path:
    """Return path if it exists, else say which step makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `pcam {step}` first")
    return path
