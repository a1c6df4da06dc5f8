"""A small Dockerfile reader and the policy checks the deployment tests apply to docker/*.Dockerfile.

No Docker engine runs here (docs/architecture.md#offline-checks): the Dockerfiles are read, not built. The reader knows
what the checks need: stages (FROM ... AS name), instructions with line continuations joined and comment
lines dropped, the exec-form (JSON) arguments of CMD/ENTRYPOINT/HEALTHCHECK, ENV pairs, and what a
stage inherits from the stage it is built FROM. Every check returns a list of problems (empty: fine), so
a test can run it on a bad Dockerfile text and see it fail.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Packages that compile things: none may be installed in a final image.
BUILD_TOOLS = frozenset(
    {"gcc", "g++", "cc", "clang", "make", "cmake", "build-essential", "build-base", "autoconf", "automake",
     "libtool", "pkg-config", "cargo", "rustc", "gfortran", "ninja-build", "musl-dev", "libc6-dev",
     "linux-headers"}
)  # fmt: skip
_INSTALLERS = re.compile(r"\b(?:apt-get|apt|apk|yum|dnf|microdnf)\s+(?:install|add)\b([^;&|]*)")
_PIP_INSTALL = re.compile(r"\bpip3?\s+install\b([^;&|]*)")
_ROOT_USERS = {"root", "0"}


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON-array arguments (CMD, ENTRYPOINT, HEALTHCHECK ... CMD); ValueError if shell form."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            match = re.search(r"(?:^|\s)CMD\s+(.*)$", text, re.S)
            if not match:
                raise ValueError(f"line {self.line}: HEALTHCHECK without CMD")
            text = match.group(1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {self.line}: {self.keyword} is not in exec (JSON) form: {text}") from exc
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"line {self.line}: {self.keyword} is not a list of strings")
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: str
    stages: list[Stage]
    parser_directives: dict[str, str]
    comments: list[tuple[int, str]]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.path}: no stage {name!r}")

    def parent(self, stage: Stage) -> Stage | None:
        """The earlier stage this one is built FROM, if any."""
        return next((s for s in self.stages[: stage.index] if s.name == stage.base), None)

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it inherits from, base first."""
        chain = [stage]
        while (parent := self.parent(chain[0])) is not None:
            chain.insert(0, parent)
        return chain

    def final_stages(self) -> list[Stage]:
        """Stages nothing else uses (as a base or in COPY --from): the images this file builds."""
        used = {s.base for s in self.stages}
        for stage in self.stages:
            for copy in stage.all("COPY"):
                used.update(re.findall(r"--from=(\S+)", copy.args))
        return [s for s in self.stages if s.name not in used and str(s.index) not in used]

    def effective(self, stage: Stage, keyword: str) -> Instruction | None:
        """The instruction in force in `stage` (the last one in its chain), e.g. USER, CMD, HEALTHCHECK."""
        found = [i for s in self.chain(stage) for i in s.all(keyword)]
        return found[-1] if found else None

    def env(self, stage: Stage) -> dict[str, str]:
        """ENV in force in `stage` (inherited ones first; values unexpanded, e.g. `/opt/venv/bin:$PATH`)."""
        env: dict[str, str] = {}
        for s in self.chain(stage):
            for instruction in s.all("ENV"):
                env.update(parse_env(instruction.args))
        return env


def parse_env(args: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` (or the legacy `ENV A 1`)."""
    words = shlex.split(args, posix=True)
    if words and "=" not in words[0]:
        return {words[0]: args.split(None, 1)[1].strip() if len(words) > 1 else ""}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"ENV {args!r}: {word!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def parse(text: str, path: str = "<text>") -> Dockerfile:
    """Stages and instructions of a Dockerfile (continuations joined, comment lines dropped)."""
    stages: list[Stage] = []
    directives: dict[str, str] = {}
    comments: list[tuple[int, str]] = []
    lines = text.splitlines()
    in_header = True
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        i += 1
        stripped = line.strip()
        if not stripped:
            in_header = False
            continue
        if stripped.startswith("#"):
            directive = re.match(r"#\s*(syntax|escape|check)\s*=\s*(\S+)\s*$", stripped)
            if in_header and directive:
                directives[directive.group(1).lower()] = directive.group(2)
            else:
                in_header = False
                comments.append((start, stripped))
            continue
        in_header = False
        logical = stripped
        while logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                if lines[i].strip():
                    comments.append((i + 1, lines[i].strip()))
                i += 1
            if i >= len(lines):
                break
            logical += " " + lines[i].strip()
            i += 1
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name, index=len(stages)))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"{path}:{start}: {instruction.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, stages, directives, comments)


def load(path: Path) -> Dockerfile:
    return parse(path.read_text(), str(path))


# --- checks -------------------------------------------------------------------------------------------


def unpinned_bases(dockerfile: Dockerfile) -> list[str]:
    """FROM images without a tag or digest, with `latest`, or with a variable (unverifiable here)."""
    problems = []
    for stage in dockerfile.stages:
        base = stage.base
        if any(s.name == base for s in dockerfile.stages[: stage.index]):
            continue  # an earlier stage of this file
        if "$" in base:
            problems.append(f"{dockerfile.path}: FROM {base}: a variable, not a pinned image")
            continue
        name, _, digest = base.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if digest:
            continue
        if not tag:
            problems.append(f"{dockerfile.path}: FROM {base}: no tag")
        elif tag == "latest":
            problems.append(f"{dockerfile.path}: FROM {base}: `latest`")
    return problems


def final_stage_problems(dockerfile: Dockerfile) -> list[str]:
    """Each final stage: a non-root USER, a HEALTHCHECK (a real one where ports are EXPOSEd), no build tools."""
    problems = []
    for stage in dockerfile.final_stages():
        where = f"{dockerfile.path} stage {stage.name or stage.index}"
        user = dockerfile.effective(stage, "USER")
        if user is None:
            problems.append(f"{where}: no USER (runs as root)")
        elif user.args.split(":")[0].strip() in _ROOT_USERS:
            problems.append(f"{where}: USER {user.args} is root")
        healthcheck = dockerfile.effective(stage, "HEALTHCHECK")
        serves = dockerfile.effective(stage, "EXPOSE") is not None
        if healthcheck is None:
            problems.append(f"{where}: no HEALTHCHECK")
        elif healthcheck.args.strip().upper() == "NONE":
            if serves:
                problems.append(f"{where}: EXPOSEs a port but has HEALTHCHECK NONE")
        else:
            try:
                healthcheck.exec_form()
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        for s in dockerfile.chain(stage):
            for run in s.all("RUN"):
                packages = installed_packages(run.args)
                tools = packages & BUILD_TOOLS | {p for p in packages if p.endswith(("-dev", "-devel"))}
                problems.extend(f"{where}: line {run.line} installs build tool {t}" for t in sorted(tools))
    return problems


def installed_packages(run: str) -> set[str]:
    """System packages a RUN installs (apt-get/apk/yum/dnf), versions stripped."""
    packages = set()
    for match in _INSTALLERS.finditer(run):
        for word in match.group(1).split():
            if not word.startswith("-"):
                packages.add(re.split(r"[=<>]", word)[0])
    return packages


def pip_installs(dockerfile: Dockerfile) -> list[tuple[Instruction, list[str], list[str]]]:
    """(RUN, pip's arguments, its -c/-r files) of every `pip install` in the file."""
    found = []
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            for match in _PIP_INSTALL.finditer(run.args):
                words = match.group(1).split()
                files = [
                    words[k + 1]
                    for k, w in enumerate(words[:-1])
                    if w in ("-c", "--constraint", "-r", "--requirement")
                ] + [w.split("=", 1)[1] for w in words if w.startswith(("--constraint=", "--requirement="))]
                found.append((run, words, files))
    return found


def pip_problems(dockerfile: Dockerfile) -> list[str]:
    """Every `pip install` is constrained by a file under requirements/ and keeps no cache."""
    problems = []
    for run, words, files in pip_installs(dockerfile):
        where = f"{dockerfile.path}:{run.line}: pip install {' '.join(words)}"
        if not any(f.startswith("requirements/") for f in files):
            problems.append(f"{where}: no -c requirements/<pins>.txt")
        if "--no-cache-dir" not in words:
            problems.append(f"{where}: no --no-cache-dir")
    return problems


def ignore_pragma_problems(dockerfile: Dockerfile) -> list[str]:
    """`# hadolint ignore=DLxxxx` must say why, in the same comment."""
    problems = []
    for line, comment in dockerfile.comments:
        match = re.match(r"#\s*hadolint\s+ignore=([A-Z0-9,]+)(.*)$", comment)
        if match and len(match.group(2).strip(" -:()")) < 10:
            problems.append(f"{dockerfile.path}:{line}: {comment!r} gives no reason")
    return problems


def copy_sources(dockerfile: Dockerfile) -> list[str]:
    """Paths COPY/ADD take from the build context (not from other stages)."""
    sources = []
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "--from=" in instruction.args:
                continue
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


# --- .dockerignore --------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> str:
    """Docker's .dockerignore matching: `*` and `?` stay within a path element, `**` spans elements."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append(pattern[i : end + 1].replace("[!", "[^"))
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) per pattern, in order (`!` re-includes; the last match wins)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = (line[1:] if include else line).strip().strip("/")
        patterns.append((not include, re.compile(_pattern_regex(pattern))))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` (relative, `/`-separated) is left out of the build context."""
    parts = path.strip("/").split("/")
    excluded = False
    for prefix in ("/".join(parts[: k + 1]) for k in range(len(parts))):
        for excludes, regex in patterns:
            if regex.fullmatch(prefix):
                excluded = excludes
        if excluded:
            return True  # a directory left out takes its contents with it
    return excluded
