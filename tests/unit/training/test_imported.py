"""An ONNX graph trained elsewhere, wrapped into the member contract: on uint8 patches the wrapped graph
answers exactly what the original answers on the patches preprocessed as its config says."""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pcam_core.contract import ACTIVATION_MAP_NAME, FEATURE_DISTANCE_NAME, OUTPUT_NAME
from training.config import ImportedGraph, ImportedInput
from training.graphs import onnx_outputs, session
from training.imported import ImportedGraphError, preprocess, wrap

MEAN, STD = (0.70, 0.55, 0.72), (0.15, 0.2, 0.12)


class TinyClassifier(torch.nn.Module):
    """A stand-in for someone's model: float NCHW (or NHWC) normalized input, logits out."""

    def __init__(self, outputs: int, layout: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layout, self.conv = layout, torch.nn.Conv2d(3, 4, 5, stride=4)
        self.head = torch.nn.Linear(4, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2) if self.layout == "NHWC" else x
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def exported(
    tmp_path: Path,
    outputs: int = 1,
    layout: str = "NCHW",
    opset: int = 17,
    names: tuple[str, str] = ("pixels", "scores"),
) -> tuple[Path, str]:
    """The tiny classifier as an ONNX file of its own (input and output named `names`), and its sha256."""
    path = tmp_path / f"theirs-{outputs}-{layout}-{'-'.join(names)}.onnx"
    shape = (2, 3, 96, 96) if layout == "NCHW" else (2, 96, 96, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TinyClassifier(outputs, layout).eval(), (torch.zeros(shape),), str(path), input_names=[names[0]],
            output_names=[names[1]], dynamic_axes={names[0]: {0: "n"}, names[1]: {0: "n"}},
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def patches(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_wrapped_graph_answers_the_original_on_preprocessed_patches(tmp_path: Path, layout: str):
    source, digest = exported(tmp_path, layout=layout)
    spec = ImportedGraph(path=source, sha256=digest, input=ImportedInput(layout=layout, mean=MEAN, std=STD))
    wrapped = wrap(spec, tmp_path / "model.onnx")
    images = patches()
    theirs = session(source).run(None, {"pixels": preprocess(images, spec.input)})[0]
    ours = onnx_outputs(session(wrapped), [images], (OUTPUT_NAME, FEATURE_DISTANCE_NAME, ACTIVATION_MAP_NAME))
    np.testing.assert_allclose(ours[OUTPUT_NAME], theirs.reshape(-1), rtol=1e-5, atol=1e-5)
    assert np.isnan(ours[FEATURE_DISTANCE_NAME]).all() and ours[FEATURE_DISTANCE_NAME].shape == (5,)
    assert ours[ACTIVATION_MAP_NAME].shape == (5, 96, 96) and not ours[ACTIVATION_MAP_NAME].any()


def test_a_graph_using_the_contract_names_itself_is_wrapped(tmp_path: Path):
    source, digest = exported(tmp_path, names=("image", "logit"))  # as many exports name them
    spec = ImportedGraph(path=source, sha256=digest, input=ImportedInput(mean=MEAN, std=STD))
    images = patches()
    theirs = session(source).run(None, {"image": preprocess(images, spec.input)})[0]
    ours = onnx_outputs(session(wrap(spec, tmp_path / "model.onnx")), [images], (OUTPUT_NAME,))[OUTPUT_NAME]
    np.testing.assert_allclose(ours, theirs.reshape(-1), rtol=1e-5, atol=1e-5)


def test_two_class_logits_become_the_tumor_logit(tmp_path: Path):
    source, digest = exported(tmp_path, outputs=2)
    spec = ImportedGraph(
        path=source, sha256=digest, input=ImportedInput(mean=MEAN, std=STD), output="two_class_logits"
    )
    images = patches()
    theirs = session(source).run(None, {"pixels": preprocess(images, spec.input)})[0]
    ours = onnx_outputs(session(wrap(spec, tmp_path / "model.onnx")), [images], (OUTPUT_NAME,))[OUTPUT_NAME]
    np.testing.assert_allclose(ours, theirs[:, 1] - theirs[:, 0], rtol=1e-5, atol=1e-5)


def test_a_wrong_digest_a_missing_file_and_an_old_opset_are_refused(tmp_path: Path):
    source, digest = exported(tmp_path)
    with pytest.raises(ImportedGraphError, match="sha256"):
        wrap(ImportedGraph(path=source, sha256="0" * 64), tmp_path / "a.onnx")
    with pytest.raises(ImportedGraphError, match="no such file"):
        wrap(ImportedGraph(path=tmp_path / "none.onnx", sha256=digest), tmp_path / "b.onnx")
    (tmp_path / "old").mkdir()
    old, old_digest = exported(tmp_path / "old", opset=11)
    with pytest.raises(ImportedGraphError, match="opset 11"):
        wrap(ImportedGraph(path=old, sha256=old_digest), tmp_path / "c.onnx")
    assert not (tmp_path / "a.onnx").exists()


def test_a_graph_with_two_outputs_is_refused(tmp_path: Path):
    source, _ = exported(tmp_path)
    model = onnx.load(str(source))
    model.graph.output.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, None))
    model.graph.node.append(onnx.helper.make_node("Identity", ["scores"], ["extra"]))
    two = tmp_path / "two.onnx"
    onnx.save(model, str(two))
    with pytest.raises(ImportedGraphError, match="one input and one output"):
        wrap(
            ImportedGraph(path=two, sha256=hashlib.sha256(two.read_bytes()).hexdigest()), tmp_path / "d.onnx"
        )


def test_a_release_with_an_imported_member_is_built_and_scored(tmp_path: Path, tiny_config, patch_paths):
    """`pcam build-repository` over a trained member and an imported one: the release serves both, with
    the imported graph's temperature fitted like any other's, no activation map and no feature flag."""
    import yaml
    from typer.testing import CliRunner

    from pcam_core.errors import InvalidRequest
    from pcam_core.flags import FEATURE_OUTLIER
    from pcam_core.release import load_release
    from pcam_core.serving import check_maps
    from training.cli import app
    from training.predict import predict_local

    source, digest = exported(tmp_path)
    theirs = {
        "path": str(source),
        "sha256": digest,
        "input": {"layout": "NCHW", "mean": list(MEAN), "std": list(STD)},
    }
    config = tiny_config("byo", 96)
    config["members"].append({"name": "theirs", "onnx": theirs, "weight": 0.5})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    repository = tmp_path / "repository"
    args = [
        "build-repository",
        "-c",
        str(tmp_path / "config.yaml"),
        "-o",
        str(repository),
        "-w",
        str(tmp_path / "work"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    release = load_release(repository)
    members = {m.name: m for m in release.members}
    assert list(members) == ["resnet", "theirs"]
    assert (
        members["theirs"].architecture == f"onnx:{source.name}" and members["theirs"].activation_map is None
    )
    assert members["theirs"].weight == 0.5 and members["theirs"].temperature > 0
    assert release.review is not None and FEATURE_OUTLIER not in release.review.flags
    assert set(release.review.feature_scales) == {"resnet"}
    with pytest.raises(InvalidRequest, match="theirs"):
        check_maps(release)  # explain=cam refused by name; occlusion still answers

    rows = predict_local(patch_paths[:4], repository, "balanced", False, 1)
    assert [row.error for row in rows] == [None] * 4 and all(0 <= row.probability <= 1 for row in rows)
