"""dvc.yaml stays runnable: every stage is a `pcam` command the CLI parses, paths are the work-dir layout,
and DVC itself (the pipeline extra) reads it into the stage graph those paths imply."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from training.cli import app
from training.config import load_config
from training.workdir import WorkDir

ROOT = Path(__file__).parents[3]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
VARS = {k: v for block in DVC["vars"] for k, v in block.items()}


def _resolve(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: str(VARS[m.group(1)]), value)


def _paths(entries: list) -> list[str]:
    return [_resolve(next(iter(e)) if isinstance(e, dict) else e) for e in entries]


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_each_stage_is_a_pcam_command_with_valid_options(stage: str):
    args = shlex.split(_resolve(DVC["stages"][stage]["cmd"]))
    assert args[0] == "pcam"
    command, rest = typer.main.get_command(app), args[1:]
    while hasattr(command, "list_commands"):  # a group: pcam [data] <command>
        name, *rest = rest
        command = command.get_command(command.context_class(command), name)
        assert command is not None, f"{stage}: no pcam command {name!r}"
    command.make_context(name, rest)  # raises on unknown or missing options


def test_stages_only_depend_on_earlier_outputs():
    produced: set[str] = set()
    all_outs = {p for s in DVC["stages"].values() for p in _paths(s.get("outs", []))}
    for name, stage in DVC["stages"].items():
        for dep in _paths(stage.get("deps", [])):
            assert dep not in all_outs or dep in produced, f"{name} needs {dep} before it is made"
        produced.update(_paths(stage.get("outs", [])))


def test_work_dir_paths_are_the_pcam_layout_of_the_configured_members():
    config = load_config(ROOT / VARS["config"])
    work = WorkDir.__new__(WorkDir)  # the layout only: do not create directories in the repository
    object.__setattr__(work, "root", Path(VARS["work"]))
    expected = {str(work.stain_reference), str(work.normalized("train").parent), str(work.calibration)}
    for m in config.members:
        member = work.root / "members" / m.name
        expected |= {
            str(member / p.name)
            for p in (Path("checkpoint.pt"), Path("model.onnx"), Path("valid_logits.npy"))
        }
    mentioned = {
        p
        for s in DVC["stages"].values()
        for p in _paths(s.get("deps", []) + s.get("outs", []))
        if p.startswith(VARS["work"])
    }
    assert mentioned == expected


def _dvc(cwd: Path, *args: str) -> str:
    """Run the DVC of this virtualenv (the pipeline extra) in cwd; its output."""
    dvc = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(cwd / ".dvc-site")}
    done = subprocess.run([str(dvc), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dvc_itself_reads_the_pipeline_and_draws_the_stages_in_dependency_order(tmp_path: Path):
    """`dvc dag` on dvc.yaml: DVC's own parser and graph, edges where a stage needs another's output."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    _dvc(tmp_path, "init", "--no-scm", "--quiet")
    edges = set(re.findall(r'"([\w-]+)" -> "([\w-]+)"', _dvc(tmp_path, "dag", "--dot")))
    producers = {out: name for name, s in DVC["stages"].items() for out in _paths(s.get("outs", []))}
    expected = {
        (producers[dep], name)
        for name, stage in DVC["stages"].items()
        for dep in _paths(stage.get("deps", []))
        if dep in producers
    }
    assert expected and edges == expected
