"""Dockerfile checks: what breaks the layer cache or leaks into the image, with the line and the fix.

Pure text analysis: the Dockerfile is split into instructions (continuations joined, comments
dropped, keywords case-insensitive) and into stages at each ``FROM``; the rules run per stage.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.config import read_text

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Finding:
    """One problem in a Dockerfile: where, which rule, what goes wrong, and how to fix it."""

    line: int
    rule: str
    message: str
    fix: str
    file: str = "Dockerfile"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message} Fix: {self.fix}"


@dataclass(frozen=True)
class _Instruction:
    line: int
    keyword: str
    args: str


_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_FLAG = re.compile(r"^--[a-z-]+(=\S*)?$")
_URL = re.compile(r"^(?:https?|ftp)://|^git@", re.I)
_ARCHIVE = re.compile(r"\.(?:tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$", re.I)
_APT_UPDATE = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*update\b")
_APT_INSTALL = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b")
_SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "SECRET", "SECRETS", "TOKEN", "KEY", "APIKEY", "CREDENTIALS"}
)

# A dependency install, by package manager: (pattern, the manifests to copy before it).
_SYSTEM = "system"
_INSTALLS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\bpip[0-9.]*\s+install\b|\bpoetry\s+install\b|\bpipenv\s+(?:install|sync)\b|\buv\s+sync\b"
        ),
        "requirements.txt (or pyproject.toml and its lock file)",
    ),
    (re.compile(r"\bnpm\s+(?:ci|install|i)\b"), "package.json and package-lock.json"),
    (re.compile(r"\byarn(?:\s+install\b|\s+--|\s*(?:$|&&|;|\|))"), "package.json and yarn.lock"),
    (re.compile(r"\bpnpm\s+(?:install|i)\b"), "package.json and pnpm-lock.yaml"),
    (re.compile(r"\bgo\s+mod\s+download\b"), "go.mod and go.sum"),
    (re.compile(r"\bbundle\s+install\b"), "Gemfile and Gemfile.lock"),
    (re.compile(r"\bcomposer\s+install\b"), "composer.json and composer.lock"),
    (re.compile(r"\bcargo\s+(?:build|fetch)\b"), "Cargo.toml and Cargo.lock"),
    (_APT_INSTALL, _SYSTEM),
    (re.compile(r"\bapk\s+(?:-\S+\s+)*add\b|\b(?:yum|dnf|microdnf)\s+(?:-\S+\s+)*install\b"), _SYSTEM),
)


def lint_file(path: Path) -> list[Finding]:
    """Findings for the Dockerfile at *path*; ConfigError when it cannot be read."""
    text = read_text(
        path,
        missing="no Dockerfile here",
        unreadable="cannot read the Dockerfile",
        hint="check app.build.context and app.build.dockerfile in the inventory",
    )
    return lint_text(text, file=_display(path))


def lint_text(text: str, *, file: str = "Dockerfile") -> list[Finding]:
    """Findings for Dockerfile *text*, ordered by line; *file* names it in each finding."""
    findings: list[Finding] = []
    stage_names: set[str] = set()
    for stage in _stages(_instructions(text)):
        findings += _check_stage(stage, stage_names)
    return sorted((_in_file(finding, file) for finding in findings), key=lambda f: (f.line, f.rule))


def _in_file(finding: Finding, file: str) -> Finding:
    return Finding(finding.line, finding.rule, finding.message, finding.fix, file)


def _display(path: Path) -> str:
    """*path* relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- parsing


def _instructions(text: str) -> list[_Instruction]:
    """The instructions of *text*: continuation lines joined, comments and blank lines dropped."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:
        directive = _DIRECTIVE.match(raw.strip())
        if not directive:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
    found: list[_Instruction] = []
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continuation
        if not parts:
            start = number
        content = raw.rstrip()
        if content.endswith(escape):
            parts.append(content[: -len(escape)])
            continue
        parts.append(content)
        found.append(_split(start, "".join(parts)))
        parts = []
    if parts:
        found.append(_split(start, "".join(parts)))
    return found


def _split(line: int, text: str) -> _Instruction:
    keyword, *args = text.split(None, 1)
    return _Instruction(line, keyword.upper(), args[0].strip() if args else "")


def _stages(instructions: list[_Instruction]) -> Iterator[list[_Instruction]]:
    """Instructions grouped by build stage; each stage starts with its FROM."""
    stage: list[_Instruction] = []
    for instruction in instructions:
        if instruction.keyword == "FROM" and stage:
            yield stage
            stage = []
        stage.append(instruction)
    if stage:
        yield stage


def _words(args: str) -> list[str]:
    """Arguments of an instruction, from its JSON (exec) form or its shell form."""
    if args.startswith("["):
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(word, str) for word in parsed):
            return parsed
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _operands(args: str) -> tuple[list[str], list[str]]:
    """Flags (``--chown=...``) and the remaining operands of COPY, ADD or FROM."""
    words = _words(args)
    flags = [word for word in words if _FLAG.match(word)]
    return flags, [word for word in words if not _FLAG.match(word)]


# ---------------------------------------------------------------- rules


def _check_stage(stage: list[_Instruction], stage_names: set[str]) -> list[Finding]:
    """Run every rule over one stage; *stage_names* (earlier stages) gains this stage's name."""
    findings: list[Finding] = []
    whole_copy: _Instruction | None = None
    installed = False
    for instruction in stage:
        keyword = instruction.keyword
        if keyword == "FROM":
            findings += _check_from(instruction, stage_names)
        elif keyword in ("COPY", "ADD"):
            flags, operands = _operands(instruction.args)
            if keyword == "ADD":
                findings += _check_add(instruction, flags, operands[:-1])
            from_stage = any(flag.startswith("--from") for flag in flags)
            if not installed and whole_copy is None and not from_stage and _copies_everything(operands):
                whole_copy = instruction
        elif keyword == "RUN":
            command = (
                " ".join(_words(instruction.args)) if instruction.args.startswith("[") else instruction.args
            )
            findings += _check_apt(instruction, command)
            manifests = _installs(command)
            if manifests is not None:
                if whole_copy is not None:
                    findings.append(_copy_before_install(whole_copy, instruction, manifests))
                    whole_copy = None
                installed = True
        elif keyword in ("ARG", "ENV"):
            findings += _check_secrets(instruction)
    return findings


def _copies_everything(operands: list[str]) -> bool:
    return any(source in (".", "./") for source in operands[:-1])


def _installs(command: str) -> str | None:
    """The manifests to copy before *command*'s dependency install; None if it installs nothing."""
    for pattern, manifests in _INSTALLS:
        if pattern.search(command):
            return manifests
    return None


def _copy_before_install(copy: _Instruction, install: _Instruction, manifests: str) -> Finding:
    source = f"{copy.keyword} {next(w for w in _operands(copy.args)[1] if w in ('.', './'))}"
    if manifests == _SYSTEM:
        return Finding(
            copy.line,
            "copy-before-install",
            f"{source} copies the whole source before the package install on line {install.line}, "
            "so every code change reinstalls the system packages.",
            f"install system packages before {source}: they do not depend on your code.",
        )
    return Finding(
        copy.line,
        "copy-before-install",
        f"{source} copies the whole source before the dependency install on line {install.line}, "
        "so every code change reinstalls dependencies.",
        f"copy only {manifests} first, install, then {source} for the rest.",
    )


def _check_apt(run: _Instruction, command: str) -> list[Finding]:
    if not _APT_UPDATE.search(command) or _APT_INSTALL.search(command):
        return []
    return [
        Finding(
            run.line,
            "apt-update-alone",
            "apt-get update runs in a RUN of its own: that layer stays cached, "
            "so a later install reads stale package lists and can fail when they expire.",
            "update and install in one RUN "
            "(RUN apt-get update && apt-get install -y ... && rm -rf /var/lib/apt/lists/*).",
        )
    ]


def _check_from(instruction: _Instruction, stage_names: set[str]) -> list[Finding]:
    operands = _operands(instruction.args)[1]
    if not operands:
        return []
    image = operands[0]
    if len(operands) >= 3 and operands[1].upper() == "AS":
        stage_names.add(operands[2].lower())
    if image.lower() == "scratch" or image.lower() in stage_names or "@" in image or "$" in image:
        return []
    tag = image.rpartition("/")[2].partition(":")[2]
    if tag and tag != "latest":
        return []
    repository = image.rsplit(":", 1)[0] if tag else image
    what = f"FROM {image} has no tag, so it means {repository}:latest, which" if not tag else f"FROM {image}"
    return [
        Finding(
            instruction.line,
            "from-latest",
            f"{what} moves: the same commit can build a different image, "
            "and a new base silently invalidates every cached layer.",
            f"pin a version: FROM {repository}:<version>, or a digest: FROM {repository}@sha256:<digest>.",
        )
    ]


def _check_add(instruction: _Instruction, flags: list[str], sources: list[str]) -> list[Finding]:
    urls = [source for source in sources if _URL.match(source)]
    if urls:
        if any(flag.startswith("--checksum") for flag in flags):
            return []
        return [
            Finding(
                instruction.line,
                "add-url",
                f"ADD downloads {urls[0]} during the build without checking it against a checksum.",
                "download it in a RUN that verifies it "
                "(curl -fsSLo FILE URL && echo 'SHA256  FILE' | sha256sum -c -), or COPY a vendored copy.",
            )
        ]
    if any(_ARCHIVE.search(source) for source in sources):
        return []  # unpacking a local archive is what ADD is for
    return [
        Finding(
            instruction.line,
            "add-local",
            f"ADD {' '.join(sources)} copies local files, which COPY does without ADD's "
            "implicit archive unpacking and URL fetching.",
            f"use COPY {instruction.args}.",
        )
    ]


def _check_secrets(instruction: _Instruction) -> list[Finding]:
    words = _words(instruction.args)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        words = words[:1]  # the legacy form: ENV NAME value
    names = [word.split("=", 1)[0] for word in words]
    findings = []
    for name in names:
        if not _looks_secret(name):
            continue
        if instruction.keyword == "ARG":
            findings.append(
                Finding(
                    instruction.line,
                    "secret-arg",
                    f"ARG {name} looks like a secret: build arguments are recorded in the image "
                    "history, where anyone who can pull the image reads them (docker history).",
                    "keep secrets out of the build: fetch private dependencies before it, and give "
                    "run-time secrets to the container through app.container.secrets.",
                )
            )
        else:
            findings.append(
                Finding(
                    instruction.line,
                    "secret-env",
                    f"ENV {name} looks like a secret: ENV values are stored in the image config, "
                    "where anyone who can pull the image reads them (docker inspect).",
                    f"remove it from the Dockerfile and list {name} in app.container.secrets, "
                    "so it is set only when the container runs.",
                )
            )
    return findings


def _looks_secret(name: str) -> bool:
    """Whether an ARG or ENV name reads like a credential (API_TOKEN, DB_PASSWORD, SECRET_KEY)."""
    words = {word for word in re.split(r"[^A-Z0-9]+", name.upper()) if word}
    if "PUBLIC" in words:
        return False
    return bool(words & _SECRET_WORDS) or any(
        word.endswith(("PASSWORD", "TOKEN", "SECRET")) for word in words
    )
