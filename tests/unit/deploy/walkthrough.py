"""Run the docs' deployment walk-throughs offline: their marked code blocks, as written, against stand-ins.

A block is marked by an HTML comment before its fence, blank lines between allowed (invisible in the
rendered page; in a list item, a blank line after the comment keeps the list whole):

    <!-- walkthrough: helm-gpu-install -->

    ```bash
    helm install pcam helm/pcam -n pcam -f my-values.yaml
    ```

A `file=PATH` in the marker (`<!-- walkthrough: k8s-loader file=pcam-models-loader.yaml -->`) marks a
block that a step saves as that file.

`Walkthrough.run` runs bash blocks with `bash -euo pipefail` in a scratch directory that looks like the
repository root (its deployment folders linked in), with stand-ins for the tools that would need a
cluster, a Docker engine or a GPU first on PATH. Each stand-in is this file run as a script: it records
the call and does the offline equivalent, with the real offline tools where there is one:

- `kubectl create secret ...` -> the same with `--dry-run=client -o yaml` (the Secret object);
  `kubectl apply -k DIR` -> `kubectl kustomize DIR`; `kubectl apply -f FILE|-` -> the file's objects;
  `exec`, `wait`, `delete`, `get`, `rollout`, `port-forward`, `logs` are recorded only (`exec -i` reads
  its input away).
- `helm install|upgrade` -> `helm template` with the same arguments; `test`, `history`, `rollback`,
  `status`, `uninstall` are recorded only.
- `docker build` checks the Dockerfile and its target; `docker push` is recorded; `docker compose ... up`
  (or any other compose command) -> `docker-compose ... config --format json`, with the bind-mount sources
  missing at that moment recorded.
- `pcam` parses its arguments with the real CLI; `pcam retarget` writes the output directory (a copy of
  the release.json stand-in). `make repository` writes `model_repository/release.json` (a stand-in).
- `python -m services.gateway.keys` runs for real; `openssl rand -hex N` prints random hex; `aws s3 sync`
  and `curl` are recorded.

Anything else a stand-in is asked to do fails the block, so a misspelt command or flag fails the test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MARKER = re.compile(r"^\s*<!-- walkthrough: (?P<name>[\w.-]+)(?: file=(?P<file>\S+))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")
TOOLS = ("kubectl", "helm", "docker", "make", "pcam", "python", "aws", "openssl", "curl")
LINKED = ("helm", "k8s", "docker", "deploy", "docker-compose.yml", ".env")
"""What the scratch directory links from the repository (read by the blocks, never written)."""
RECORDED = {
    "kubectl": {"wait", "delete", "get", "rollout", "port-forward", "logs"},
    "helm": {"test", "history", "rollback", "status", "uninstall"},
}
STAND_IN_RELEASE = {"release_id": "walkthrough-stand-in"}

Obj = dict[str, Any]


@dataclass(frozen=True)
class Block:
    """A marked fenced block of a Markdown file."""

    name: str
    lang: str
    code: str
    doc: Path
    line: int
    file: str | None = None

    def where(self) -> str:
        return f"{self.doc.name}:{self.line} ({self.name})"


def blocks(doc: Path) -> list[Block]:
    """Every marked block of `doc`, in order. A marker not followed by a fence is an error."""
    lines = doc.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        start = number + 1
        while start < len(lines) and not lines[start].strip():  # blank lines keep Markdown lists whole
            start += 1
        fence = FENCE.match(lines[start]) if start < len(lines) else None
        assert fence and fence["lang"], f"{doc.name}:{number + 1}: a walkthrough marker must precede a fence"
        indent, body = fence["indent"], []
        for inner in lines[start + 1 :]:
            if inner.strip() == "```":
                break
            assert not inner.strip() or inner.startswith(indent), f"{doc.name}:{number + 1}: bad indentation"
            body.append(inner[len(indent) :])
        else:
            raise AssertionError(f"{doc.name}:{number + 1}: unclosed fence")
        found.append(
            Block(marker["name"], fence["lang"], "\n".join(body) + "\n", doc, number + 1, marker["file"])
        )
    return found


def block(doc: Path, name: str) -> Block:
    matches = [b for b in blocks(doc) if b.name == name]
    assert len(matches) == 1, f"{doc.name}: {len(matches)} blocks marked `walkthrough: {name}`"
    return matches[0]


DOCUMENTED_URL = "http://127.0.0.1:8080"
"""The gateway's address as the pages write it (`make run`'s); tests put their stack's in its place."""


def user_workdir(directory: Path, **links: Path) -> Path:
    """A working directory as a page's reader has one: `.venv` (this interpreter's virtualenv) and the
    named paths (`tests=...`, `model_repository=...`) linked in."""
    (directory / ".venv").symlink_to(Path(sys.executable).parents[1])
    for name, target in links.items():
        (directory / name).symlink_to(target)
    return directory


def run_block(
    step: Block,
    cwd: Path,
    url: str | None = None,
    extra_env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """A bash or python block run as written from `cwd`, `url` in place of the documented gateway
    address; nothing of the test run's PCAM_* settings reaches it, `extra_env` does. With check, it must
    succeed."""
    code = step.code
    if url is not None:
        code = code.replace(DOCUMENTED_URL, url.rstrip("/"))
        assert code != step.code, f"{step.where()}: no {DOCUMENTED_URL} to replace"
    assert step.lang in ("bash", "python"), f"{step.where()}: a {step.lang} block"
    command = (
        [sys.executable, "-c", code] if step.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCAM_")} | (extra_env or {})
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert not check or done.returncode == 0, (
        f"{step.where()} ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done


def parse_pcam(line: str) -> dict[str, Any]:
    """A `.venv/bin/pcam ...` line's parameters, as the real CLI parses them (nothing runs); a misspelt
    command or option raises."""
    import shlex

    import typer.main

    from training.cli import app

    words = shlex.split(line, comments=True)
    assert words and words[0] == ".venv/bin/pcam", line
    cli, args = typer.main.get_command(app), words[1:]
    while hasattr(cli, "get_command"):  # a group (typer's own click: not a click.Group)
        cli, args = cli.get_command(cli.context_class(cli), args[0]), args[1:]
        assert cli is not None, f"no such command: {line}"
    return cli.make_context("pcam", args).params


@dataclass
class Call:
    """One call of a stand-in: the tool, its arguments, and what the stand-in made of it."""

    tool: str
    args: list[str]
    cwd: str
    namespace: str | None = None
    result: Obj = field(default_factory=dict)

    def command(self) -> str:
        return " ".join([self.tool, *self.args])


class Walkthrough:
    """A scratch repository root with the stand-ins; `run` executes blocks there in order."""

    def __init__(self, root: Path, workdir: Path, tools: dict[str, str]) -> None:
        self.root, self.workdir = root, workdir
        self.log = workdir.parent / f"{workdir.name}.calls.jsonl"
        bin_dir = workdir.parent / f"{workdir.name}.bin"
        bin_dir.mkdir()
        for name in LINKED:
            (workdir / name).symlink_to(root / name)
        venv_bin = workdir / ".venv" / "bin"  # `.venv/bin/pcam`, `.venv/bin/python` as the docs say
        venv_bin.mkdir(parents=True)
        for directory in (bin_dir, venv_bin):
            for tool in TOOLS:
                shim = directory / tool
                shim.write_text(
                    f'#!/bin/sh\nexec "$WALKTHROUGH_PYTHON" "$WALKTHROUGH_STAND_IN" {tool} "$@"\n'
                )
                shim.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "PCAM_", "DOCKER_"))},
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": os.devnull,  # nothing may reach a cluster
            "WALKTHROUGH_PYTHON": sys.executable,
            "WALKTHROUGH_STAND_IN": str(Path(__file__).resolve()),
            "WALKTHROUGH_LOG": str(self.log),
            "WALKTHROUGH_ROOT": str(root),
            **{f"WALKTHROUGH_REAL_{k.upper().replace('-', '_')}": v for k, v in tools.items()},
        }
        self.calls: list[Call] = []

    def save(self, file_block: Block) -> Path:
        """Write a `file=` block where the docs' steps expect it."""
        assert file_block.file, f"{file_block.where()}: no file= in its marker"
        path = self.workdir / file_block.file
        path.write_text(file_block.code)
        return path

    def run(self, *steps: Block) -> list[Call]:
        """Run bash blocks in order; the calls of the stand-ins they made."""
        done_before = len(self.calls)
        for step in steps:
            assert step.lang in ("bash", "sh"), f"{step.where()}: not a shell block"
            script = self.workdir.parent / f"{self.workdir.name}.{step.name}.sh"
            script.write_text(step.code)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert done.returncode == 0, (
                f"{step.where()} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
            self.calls = read_log(self.log)
        return self.calls[done_before:]


def read_log(log: Path) -> list[Call]:
    if not log.exists():
        return []
    return [Call(**json.loads(line)) for line in log.read_text().splitlines()]


def parse_objects(text: str) -> list[Obj]:
    return [o for o in yaml.safe_load_all(text) if o]


# The stand-ins (this file run as a script)


class Refused(Exception):
    """A command the stand-in does not simulate: the block fails with this message."""


def _take_namespace(args: list[str]) -> tuple[str | None, list[str]]:
    """kubectl's and helm's -n/--namespace, wherever it stands, and the other arguments."""
    namespace, rest, index = None, [], 0
    while index < len(args):
        arg = args[index]
        if arg == "--":  # the rest is a command run in a container
            rest += args[index:]
            break
        if arg in ("-n", "--namespace"):
            namespace, index = args[index + 1], index + 2
            continue
        if arg.startswith("--namespace="):
            namespace = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        index += 1
    return namespace, rest


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, **kwargs)
    if done.returncode != 0:
        raise Refused(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done


def _real(tool: str) -> str:
    return os.environ[f"WALKTHROUGH_REAL_{tool.upper().replace('-', '_')}"]


def _kubectl(namespace: str | None, args: list[str]) -> Obj:
    verb = args[0] if args else ""
    if verb == "create" and args[1:2] == ["namespace"]:
        return {"created_namespace": args[2]}
    if verb == "create" and args[1:2] == ["secret"]:
        done = _run(
            [
                _real("kubectl"),
                *(["-n", namespace] if namespace else []),
                *args,
                "--dry-run=client",
                "-o",
                "yaml",
            ]
        )
        return {"objects": parse_objects(done.stdout)}
    if verb == "apply" and args[1:2] == ["-k"] and len(args) == 3:
        done = _run([_real("kubectl"), "kustomize", args[2]])
        return {"objects": parse_objects(done.stdout), "kustomization": args[2]}
    if verb == "apply" and args[1:2] == ["-f"] and len(args) == 3:
        text = sys.stdin.read() if args[2] == "-" else Path(args[2]).read_text()
        return {"objects": parse_objects(text)}
    if verb == "kustomize":  # read-only: the real one, its output passed on
        done = _run([_real("kubectl"), *args])
        sys.stdout.write(done.stdout)
        return {"objects": parse_objects(done.stdout)}
    if verb == "exec":
        if "-i" in args[1:] or "--stdin" in args[1:]:
            sys.stdin.read()
        separator = args.index("--")
        pod = [a for a in args[1:separator] if not a.startswith("-")]
        return {"pod": pod[0] if pod else None, "exec": args[separator + 1 :]}
    if verb in RECORDED["kubectl"]:
        return {}
    raise Refused(f"kubectl {verb}: not simulated")


def _helm(namespace: str | None, args: list[str]) -> Obj:
    verb = args[0] if args else ""
    if verb in ("install", "upgrade"):
        rest = [a for a in args[1:] if a != "--install"]
        command = [_real("helm"), "template", *rest, *(["--namespace", namespace] if namespace else [])]
        done = _run(command)
        return {"objects": parse_objects(done.stdout), "template_args": rest}
    if verb in RECORDED["helm"]:
        return {}
    raise Refused(f"helm {verb}: not simulated")


def _option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in names:
            return args[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _docker(args: list[str]) -> Obj:
    verb = args[0] if args else ""
    if verb == "build":
        dockerfile, target, tag = (
            _option(args, "-f", "--file"),
            _option(args, "--target"),
            _option(args, "-t", "--tag"),
        )
        if not (dockerfile and tag and args[-1] == "."):
            raise Refused(f"docker build {args[1:]}: -f, -t and the context `.` expected")
        text = Path(dockerfile).read_text()
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
        if target and target not in stages:
            raise Refused(f"{dockerfile} has no stage {target!r} (stages: {stages})")
        return {"built": tag, "dockerfile": dockerfile, "target": target or stages[-1]}
    if verb == "push" and len(args) == 2:
        return {"pushed": args[1]}
    if verb == "compose":
        return _compose(args[1:])
    raise Refused(f"docker {verb}: not simulated")


def _compose(args: list[str]) -> Obj:
    global_args, index = [], 0
    while index < len(args) and args[index].startswith("-"):
        takes_value = args[index] in ("--profile", "-f", "--file", "-p", "--project-name", "--env-file")
        global_args += args[index : index + (2 if takes_value else 1)]
        index += 2 if takes_value else 1
    subcommand = args[index] if index < len(args) else ""
    if subcommand not in ("up", "down", "config", "ps", "logs", "pull", "build"):
        raise Refused(f"docker compose {subcommand}: not simulated")
    done = _run([_real("docker-compose"), *global_args, "config", "--format", "json"])
    model = json.loads(done.stdout)
    missing = sorted(
        {
            volume["source"]
            for service in model["services"].values()
            for volume in service.get("volumes") or []
            if volume.get("type") == "bind" and not Path(volume["source"]).exists()
        }
    )
    return {
        "compose": subcommand,
        "global_args": global_args,
        "model": model,
        "missing_bind_sources": missing,
    }


def _pcam(args: list[str]) -> Obj:
    import click
    import typer.main

    from training.cli import app

    command = typer.main.get_command(app)
    name = args[0] if args else ""
    sub = command.get_command(click.Context(command), name)
    if sub is None:
        raise Refused(f"pcam {name}: no such command")
    try:
        params = sub.make_context(f"pcam {name}", list(args[1:])).params
    except click.ClickException as error:
        raise Refused(f"pcam {name}: {error.format_message()}") from error
    if name != "retarget":
        raise Refused(f"pcam {name}: not simulated")
    source = Path(params["repository"]) / "release.json"
    if not source.exists():
        raise Refused(f"pcam retarget: {source} does not exist (build the repository first)")
    output = Path(params["output"])
    if output.exists() and not params["force"]:
        raise Refused(f"pcam retarget: {output} exists (--force replaces it)")
    output.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, output / "release.json")
    (output / "target").write_text(params["target"])
    return {"params": {k: str(v) for k, v in params.items()}}


def _make(args: list[str]) -> Obj:
    if args != ["repository"]:
        raise Refused(f"make {' '.join(args)}: not simulated")
    repository = Path("model_repository")
    if not (repository / "release.json").exists():
        repository.mkdir(exist_ok=True)
        (repository / "release.json").write_text(json.dumps(STAND_IN_RELEASE))
        (repository / "target").write_text("cpu")
    return {"repository": str(repository.resolve())}


def _python(args: list[str]) -> Obj:
    if args[:2] != ["-m", "services.gateway.keys"]:
        raise Refused(f"python {' '.join(args)}: only `-m services.gateway.keys` is simulated")
    env = {**os.environ, "PYTHONPATH": os.environ["WALKTHROUGH_ROOT"]}
    done = _run([sys.executable, *args], env=env)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return {}


def _simple(tool: str, args: list[str]) -> Obj:
    if tool == "openssl" and len(args) == 3 and args[:2] == ["rand", "-hex"]:
        print(secrets.token_hex(int(args[2])))
        return {}
    if tool == "aws" and args[:2] == ["s3", "sync"] and len(args) == 4:
        if not Path(args[2]).is_dir():
            raise Refused(f"aws s3 sync: {args[2]} is not a directory")
        return {"source": str(Path(args[2]).resolve()), "destination": args[3]}
    if tool == "curl":
        return {}
    raise Refused(f"{tool} {' '.join(args)}: not simulated")


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    namespace = None
    try:
        if tool == "kubectl":
            namespace, args = _take_namespace(args)
            result = _kubectl(namespace, args)
        elif tool == "helm":
            namespace, args = _take_namespace(args)
            result = _helm(namespace, args)
        elif tool == "docker":
            result = _docker(args)
        elif tool == "pcam":
            result = _pcam(args)
        elif tool == "make":
            result = _make(args)
        elif tool == "python":
            result = _python(args)
        else:
            result = _simple(tool, args)
    except (Refused, OSError, KeyError, IndexError, ValueError) as error:
        print(f"walk-through stand-in for {tool}: {error}", file=sys.stderr)
        return 2
    call = Call(tool, args, os.getcwd(), namespace, result)
    with open(os.environ["WALKTHROUGH_LOG"], "a") as log:
        log.write(json.dumps(call.__dict__) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.environ["WALKTHROUGH_ROOT"])
    sys.exit(main(sys.argv[1:]))
