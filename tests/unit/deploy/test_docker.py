"""docker/*.Dockerfile and .dockerignore, checked without a Docker engine (docs/architecture.md#offline-checks).

hadolint must report nothing at warning level or above; the policy checks (tests/unit/deploy/dockerfile.py)
run on the real files and, to show that each of them can fail, on a bad Dockerfile text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from services.common import ports
from tests.unit.deploy import dockerfile as df
from tests.unit.deploy.conftest import ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
SERVICES = {"gateway": ports.GATEWAY, "preprocess": ports.PREPROCESS, "ensemble": ports.ENSEMBLE}

BAD = """\
FROM python:latest AS builder
RUN apt-get update && apt-get install -y build-essential gcc libpq-dev
RUN pip install fastapi
FROM ubuntu
# hadolint ignore=DL3008
RUN apt-get install -y curl
COPY --from=builder /opt /opt
EXPOSE 8080
HEALTHCHECK NONE
CMD python -m app
FROM debian:12.8-slim AS other
USER root
"""


def test_there_are_the_three_dockerfiles():
    assert [p.name for p in DOCKERFILES] == [
        "services.Dockerfile",
        "training.Dockerfile",
        "triton-cpu.Dockerfile",
    ]


# --- hadolint -------------------------------------------------------------------------------------------


def _hadolint(hadolint: str, *paths: Path) -> list[dict]:
    config = ROOT / ".hadolint.yaml"
    argv = [hadolint, "--format", "json", "--no-fail"]
    if config.exists():
        argv += ["--config", str(config)]
    done = subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "[]")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_no_errors_or_warnings(hadolint: str, path: Path):
    findings = [f for f in _hadolint(hadolint, path) if f["level"] in ("error", "warning")]
    assert findings == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings)


def test_hadolint_does_flag_a_bad_dockerfile(hadolint: str, tmp_path: Path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(BAD)
    codes = {f["code"] for f in _hadolint(hadolint, bad) if f["level"] in ("error", "warning")}
    assert {"DL3007", "DL3006", "DL3013", "DL3042"} <= codes, (
        codes
    )  # latest, untagged, unpinned pip, pip cache


# --- policy checks on the real Dockerfiles ------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_image_is_pinned(path: Path):
    assert df.unpinned_bases(df.load(path)) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stages_run_non_root_with_a_healthcheck_and_no_build_tools(path: Path):
    dockerfile = df.load(path)
    assert dockerfile.final_stages()
    assert df.final_stage_problems(dockerfile) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_pip_install_uses_the_pinned_constraints(path: Path):
    dockerfile = df.load(path)
    assert df.pip_problems(dockerfile) == []
    for _, _, files in df.pip_installs(dockerfile):
        for file in files:
            assert (ROOT / file).is_file(), f"{path.name}: constraints file {file} does not exist"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_ignored_rules_say_why(path: Path):
    assert df.ignore_pragma_problems(df.load(path)) == []


# --- the checks fail on a bad Dockerfile ----------------------------------------------------------------


def test_the_checks_catch_a_bad_dockerfile():
    bad = df.parse(BAD, "bad")
    assert [s.name for s in bad.final_stages()] == [None, "other"]
    assert df.unpinned_bases(bad) == ["bad: FROM python:latest: `latest`", "bad: FROM ubuntu: no tag"]
    problems = df.final_stage_problems(bad)
    assert any("stage 1: no USER" in p for p in problems), problems
    assert any("EXPOSEs a port but has HEALTHCHECK NONE" in p for p in problems), problems
    assert any("USER root is root" in p for p in problems), problems
    assert any("stage other: no HEALTHCHECK" in p for p in problems), problems
    pip = df.pip_problems(bad)
    assert any("no -c requirements/" in p for p in pip) and any("--no-cache-dir" in p for p in pip), pip
    assert df.ignore_pragma_problems(bad) == ["bad:5: '# hadolint ignore=DL3008' gives no reason"]
    with pytest.raises(ValueError, match="exec"):
        bad.effective(bad.final_stages()[0], "CMD").exec_form()


def test_build_tools_in_a_final_stage_are_caught_and_in_a_builder_are_not():
    text = """\
FROM python:3.11.14-slim-bookworm AS builder
RUN apt-get install -y --no-install-recommends gcc=12.2.0-14 libffi-dev
FROM python:3.11.14-slim-bookworm AS base
RUN apk add --no-cache build-base
FROM base AS app
COPY --from=builder /opt /opt
USER 10001
HEALTHCHECK CMD ["true"]
"""
    problems = df.final_stage_problems(df.parse(text, "t"))
    assert problems == ["t stage app: line 4 installs build tool build-base"]


def test_digest_pins_and_earlier_stages_count_as_pinned():
    text = "FROM python@sha256:abc AS a\nFROM a AS b\nFROM ghcr.io/x/y:1.2\nFROM ${BASE}\n"
    assert df.unpinned_bases(df.parse(text, "t")) == ["t: FROM ${BASE}: a variable, not a pinned image"]


# --- docker/services.Dockerfile ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services_dockerfile() -> df.Dockerfile:
    return df.load(ROOT / "docker" / "services.Dockerfile")


def test_one_image_per_service_sharing_the_dependency_layer(services_dockerfile: df.Dockerfile):
    finals = services_dockerfile.final_stages()
    assert sorted(s.name for s in finals) == sorted(SERVICES)
    shared = {services_dockerfile.chain(s)[0].name for s in finals}
    assert shared == {"runtime"}, "every target builds FROM the same runtime stage"
    runtime = services_dockerfile.stage("runtime")
    assert any("--from=builder /opt/venv /opt/venv" in c.args for c in runtime.all("COPY"))
    for stage in finals:  # nothing but metadata on top of the shared layers
        assert {i.keyword for i in stage.instructions} <= {"ENV", "EXPOSE", "HEALTHCHECK", "CMD", "LABEL"}


def test_the_builder_installs_the_serve_extra_non_editable(services_dockerfile: df.Dockerfile):
    runs = " ".join(r.args for r in services_dockerfile.stage("builder").all("RUN"))
    assert '".[serve]"' in runs and "-e " not in runs and "--editable" not in runs
    assert "[train" not in runs and ",train" not in runs, "the services need no torch"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.startswith("torch") for dep in extras["serve"])


def test_the_runtime_is_non_root_read_only_friendly_and_byte_compiled(services_dockerfile: df.Dockerfile):
    runtime = services_dockerfile.stage("runtime")
    env = services_dockerfile.env(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")  # the only writable path at run time
    assert services_dockerfile.effective(runtime, "USER").args == "10001:10001"
    runs = " ".join(r.args for r in runtime.all("RUN"))
    assert "--uid 10001" in runs and "--gid 10001" in runs
    assert "compileall" in runs


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_each_target_serves_its_service(services_dockerfile: df.Dockerfile, service: str, port: int):
    stage = services_dockerfile.stage(service)
    env, prefix = services_dockerfile.env(stage), f"PCAM_{service.upper()}_"
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert env[f"{prefix}PORT"] == str(port)
    assert services_dockerfile.effective(stage, "EXPOSE").args == str(port)
    assert services_dockerfile.effective(stage, "CMD").exec_form() == ["python", "-m", f"services.{service}"]
    healthcheck = services_dockerfile.effective(stage, "HEALTHCHECK").exec_form()
    assert healthcheck == ["python", "-m", "services.common.healthcheck", service]
    if service != "gateway":
        assert env[f"{prefix}MODEL_REPOSITORY"] == "/models"


def test_base_images_match_the_project_python():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    for path in DOCKERFILES:
        for stage in df.load(path).stages:
            if stage.base.startswith("python:"):
                assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", stage.base), (path.name, stage.base)


# --- docker/triton-cpu.Dockerfile and docker/training.Dockerfile ---------------------------------------


def test_triton_cpu_image_runs_triton_from_the_triton_pins():
    dockerfile = df.load(ROOT / "docker" / "triton-cpu.Dockerfile")
    (final,) = dockerfile.final_stages()
    runs = " ".join(r.args for s in dockerfile.stages for r in s.all("RUN"))
    assert "-c requirements/triton.txt" in runs
    pins = (ROOT / "requirements" / "triton.txt").read_text()
    assert re.search(r"^numpy==1\.", pins, re.M), "Triton 2.51's python backend stub needs numpy<2"
    assert re.search(r"^nvidia-pytriton==", pins, re.M) and re.search(r"^onnxruntime==", pins, re.M)
    assert dockerfile.effective(final, "USER").args == "1000:1000"  # triton-server, as in the NGC images
    command = dockerfile.effective(final, "CMD").exec_form()
    assert command[0] == "tritonserver"
    for flag in ("--model-repository=/models", "--model-control-mode=poll", "--strict-readiness=true"):
        assert flag in command
    healthcheck = " ".join(dockerfile.effective(final, "HEALTHCHECK").exec_form())
    assert "/v2/health/ready" in healthcheck
    assert dockerfile.effective(final, "EXPOSE").args.split() == ["8000", "8001", "8002"]


def test_training_image_runs_the_pcam_cli():
    dockerfile = df.load(ROOT / "docker" / "training.Dockerfile")
    (final,) = dockerfile.final_stages()
    assert dockerfile.effective(final, "ENTRYPOINT").exec_form() == ["pcam"]
    assert dockerfile.effective(final, "WORKDIR").args == "/work"
    assert dockerfile.effective(final, "USER").args == "10001:10001"
    runs = " ".join(r.args for s in dockerfile.stages for r in s.all("RUN"))
    assert '".[train,serve]"' in runs and "-c requirements/constraints.txt" in runs
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pcam"] == "training.cli:main"


# --- .dockerignore ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerignore() -> list:
    return df.dockerignore_patterns((ROOT / ".dockerignore").read_text())


@pytest.mark.parametrize(
    "path",
    [".git", ".git/HEAD", ".venv/bin/python", ".venv-triton/bin/python", "build/bench/x.json", "mlruns/0/m",
     "model_repository/release.json", "model_repository/m/1/model.onnx", "model_repository_gpu/release.json",
     "data/camelyonpatch_level_2_split_train_x.h5", "services/preprocess/__pycache__/stain.cpython-311.pyc",
     "tests/data/he/patches/src_r0c0.png", ".env", "docker/redis/dev-password", "helm/pcam/values.yaml"],
)  # fmt: skip
def test_the_build_context_leaves_out(dockerignore: list, path: str):
    assert df.ignored(path, dockerignore)


def _tracked(source: str) -> list[str]:
    """The repository's files under `source` (what a fresh clone's build context holds)."""
    done = subprocess.run(
        ["git", "ls-files", "--", source], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_every_copy_source_is_in_the_build_context(dockerignore: list):
    for path in DOCKERFILES:
        for source in df.copy_sources(df.load(path)):
            files = _tracked(source)
            assert files, f"{path.name}: COPY {source}: no such file in the repository"
            left_out = [f for f in files if df.ignored(f, dockerignore)]
            assert left_out == [], f"{path.name}: COPY {source}: .dockerignore leaves out {left_out}"


def test_the_dockerignore_matcher_can_fail():
    patterns = df.dockerignore_patterns("# nothing about .git\n*.md\n!README.md\n**/*.pyc\nbuild/\n")
    assert not df.ignored(".git/HEAD", patterns) and not df.ignored(".venv/bin/python", patterns)
    assert df.ignored("docs/x.md", patterns) is False  # `*` does not cross directories
    assert df.ignored("CHANGES.md", patterns) and not df.ignored("README.md", patterns)
    assert (
        df.ignored("a/b/c.pyc", patterns)
        and df.ignored("c.pyc", patterns)
        and df.ignored("build/x", patterns)
    )


# Packages the service images do not have: they hold services/ and the `serve` extra only.
NOT_IN_SERVICE_IMAGES = {
    "training",
    "devstack",
    "pcam_client",
    "tests",
    "torch",
    "timm",
    "onnx",
    "sklearn",
    "h5py",
}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_nothing_its_image_lacks(service: str) -> None:
    """This checkout has every package installed; the image does not, so an import of one would crash there."""
    code = (
        f"import sys\nfrom services.{service}.app import create_app\ncreate_app()\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert not set(done.stdout.split()) & NOT_IN_SERVICE_IMAGES


@pytest.mark.parametrize(
    "path", [ROOT / "docker" / "services.Dockerfile", ROOT / "docker" / "training.Dockerfile"]
)
def test_the_project_is_built_with_the_pinned_build_backend(path: Path) -> None:
    """pip's isolated build environment would fetch the newest setuptools: the images use the pins."""
    text = path.read_text()
    installs = [line for line in text.splitlines() if "pip install" in line and '".[' in line]
    assert installs and all("--no-build-isolation" in line for line in installs)
    assert "-c requirements/build.txt setuptools wheel" in text
    pins = (ROOT / "requirements" / "build.txt").read_text()
    assert re.search(r"^setuptools==\S+$", pins, re.M) and re.search(r"^wheel==\S+$", pins, re.M)
