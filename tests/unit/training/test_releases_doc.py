"""docs/releases.md's Python example runs as written on logits of two members and gives the release's
rule: a temperature per member, an ensemble temperature and the three ordered operating points."""

from pathlib import Path

import numpy as np

from tests.unit.deploy.walkthrough import block, run_block

ROOT = Path(__file__).resolve().parents[3]


def test_fitting_on_your_own_logits_runs_as_written(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    for name, scale in (("resnet", 2.0), ("vit", 3.0)):
        np.save(tmp_path / f"{name}_valid_logits.npy", scale * (labels - 0.5) * 3 + rng.normal(0, 2, 2000))
    np.save(tmp_path / "valid_labels.npy", labels)
    np.save(tmp_path / "valid_slides.npy", np.arange(2000) // 40)
    example = block(ROOT / "docs" / "releases.md", "releases-calibrate")
    lines = run_block(example, tmp_path).stdout.splitlines()
    assert lines[0].startswith("{'resnet': ") and "'vit': " in lines[0]
    thresholds = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    assert list(thresholds) == ["screening", "balanced", "high_specificity"]
    assert thresholds["screening"] <= thresholds["balanced"] <= thresholds["high_specificity"]
