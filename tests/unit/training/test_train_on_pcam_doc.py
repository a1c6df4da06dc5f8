"""docs/tutorials/train-on-pcam.md's steps are commands the real CLI accepts, on the config they name,
each step reading what the one before wrote (the steps need PCam's 8 GB and a GPU, so they are parsed
here, not run; tests/unit/training covers each command on a small set)."""

import re
import shlex
from pathlib import Path

from tests.unit.deploy.walkthrough import block, parse_pcam
from training.config import load_config

ROOT = Path(__file__).resolve().parents[3]
STEPS = block(ROOT / "docs" / "tutorials" / "train-on-pcam.md", "train-on-pcam-steps")


def test_every_step_parses_on_the_named_config() -> None:
    lines = [line.split("#", 1)[0].strip() for line in STEPS.code.splitlines()]
    lines = [line for line in lines if line]
    assert lines[0] == "make venv" and re.search(r"^venv:", (ROOT / "Makefile").read_text(), re.M)
    variables = dict(word.split("=", 1) for word in shlex.split(lines[1]))
    config = load_config(ROOT / variables["CONFIG"])
    assert [m.architecture for m in config.members] == [
        "seresnet50",
        "efficientnet_b3",
        "vit_base_patch16_224",
    ]
    steps = []
    for line in lines[2:]:
        expanded = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line)
        words = shlex.split(expanded)
        steps.append((" ".join(words[1:3]) if words[1] == "data" else words[1], parse_pcam(expanded)))
    names = [name for name, _ in steps]
    assert names == [
        "data download",
        "data verify",
        "stain-reference",
        "cv",
        "train",
        "export",
        "calibrate",
        "package",
        "validate",
    ]
    params = dict(steps)
    work = {str(p["workdir"]) for name, p in steps if "workdir" in p and name != "validate"}
    assert work == {variables["WORK"]}, "every step on the one work directory"
    downloaded = params["data download"]["output"]
    assert params["data verify"]["directory"] == downloaded == params["validate"]["data"]
    assert Path(downloaded) == Path(config.data.pcam_dir), "the config reads PCam where the download put it"
    assert params["package"]["target"] == "gpu"
    assert params["validate"]["repository"] == params["package"]["output"]
