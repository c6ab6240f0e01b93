"""Every example in the docs runs against the code, so the docs cannot drift from it.

- every ```yaml block is YAML; one that looks like an inventory (top-level keys among app, ssh,
  hosts) validates, merged onto inventory.example.yaml when it shows only part of one;
- every `deploy ...` line of a ```sh block, of a `$ ` line in a ```text block, or of a string in a
  ```yaml block (CI recipes) is parsed by the real command line, required options included;
- every `deploy ...` in inline code names a real command and real options;
- every line of a ```text block in troubleshooting.md is a message the code under deployer/ can
  print (see `_templates`);
- every table with an `exit` column uses the exit codes of deployer.errors.EXIT_CODES, and an
  `| exit | meaning |` table lists all of them, each meaning as EXIT_CODES words it;
- every ```dockerfile block lints as its first comment says: `# good` none, `# bad` some findings;
- the `deploy init` session in getting-started.md is what `deploy init` prints;
- mkdocs.yml lists every page.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from deployer import cli, clidocs, config, lint
from deployer.errors import EXIT_CODES

ROOT = Path(__file__).parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [*PAGES, ROOT / "README.md"]
INVENTORY_KEYS = {"app", "ssh", "hosts", "accessories"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
MIN_LETTERS = 4


@dataclass(frozen=True)
class Block:
    """A fenced code block: the file, the line its content starts on, its language, its text."""

    path: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, dedented to their fence."""
    found: list[Block] = []
    fence: re.Match[str] | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence is None:
            fence = re.match(r"^(\s*)```(\w*)\s*$", line)
            body, start = [], number + 1
        elif line.strip() == "```":
            indent = len(fence.group(1))
            text = "\n".join(row[indent:] for row in body) + "\n"
            found.append(Block(path, start, fence.group(2), text))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{path}: a code block is not closed"
    return found


def all_blocks(language: str) -> list[Block]:
    return [block for path in DOCUMENTS for block in blocks(path) if block.language == language]


def prose(path: Path) -> str:
    """A Markdown file without its fenced code blocks."""
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", path.read_text(), flags=re.S | re.M)


# ---------------------------------------------------------------- inventories


def _merge(base: Any, overrides: Any) -> Any:
    if isinstance(base, dict) and isinstance(overrides, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in overrides.items()}}
    return overrides


def _is_inventory(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and set(data) <= INVENTORY_KEYS


@pytest.mark.parametrize("block", all_blocks("yaml"), ids=str)
def test_yaml_examples_parse_and_inventories_validate(block: Block) -> None:
    data = yaml.safe_load(block.text)
    if not _is_inventory(data):
        return
    app = data.get("app")
    if not (isinstance(app, dict) and {"name", "image"} <= set(app) and "hosts" in data):
        data = _merge(yaml.safe_load((ROOT / "inventory.example.yaml").read_text()), data)
    config.parse(yaml.safe_dump(data), Path(f"{block}"))


def test_some_inventory_examples_exist() -> None:
    assert sum(_is_inventory(yaml.safe_load(block.text)) for block in all_blocks("yaml")) >= 3


# ---------------------------------------------------------------- command lines


def command_lines(script: str) -> Iterator[list[str]]:
    """The `deploy` commands of a shell script: comments, `$ ` prompts and `VAR=value` dropped."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line.strip().removeprefix("$ "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word not in SEPARATORS:
                command.append(word)
                continue
            while command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0]):
                command.pop(0)
            if command[:1] == ["deploy"] and len(command) > 1:  # not a bare word "deploy"
                yield command[1:]
            command = []


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _strings(item)


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCUMENTS:
        for block in blocks(path):
            if block.language == "sh":
                scripts = [block.text]
            elif block.language == "text":
                scripts = [line for line in block.text.splitlines() if line.startswith("$ ")]
            elif block.language == "yaml" and not _is_inventory(yaml.safe_load(block.text)):
                scripts = list(_strings(yaml.safe_load(block.text)))
            else:
                continue
            found += [(str(block), argv) for script in scripts for argv in command_lines(script)]
    return found


def _exit_if_given(ctx: Any, param: Any, value: Any) -> None:
    """Stands in for the shell-completion options: stop as they do, install and print nothing."""
    if value:
        raise typer.Exit()


def parse(argv: list[str]) -> None:
    """Parse `deploy ARGV` with the real command line, running nothing; raise on bad usage."""
    group = clidocs.command_group()
    commands = list(group.commands.values())
    while commands:
        command = commands.pop()
        command.callback = lambda **params: None
        commands += list(getattr(command, "commands", {}).values())
    for param in group.params:
        if param.name in ("install_completion", "show_completion"):
            param.callback = _exit_if_given
    assert group.main(argv, prog_name="deploy", standalone_mode=False) in (None, 0)


@pytest.mark.parametrize(("where", "argv"), documented_commands(), ids=lambda value: str(value))
def test_documented_commands_parse(where: str, argv: list[str]) -> None:
    parse(argv)


def test_the_command_check_catches_bad_usage() -> None:
    assert list(command_lines("X=1 deploy rollout --hosts prod && deploy push # done")) == [
        ["rollout", "--hosts", "prod"],
        ["push"],
    ]
    for argv in (["rolout", "--hosts", "prod"], ["rollout", "--tga", "x", "--hosts", "p"], ["rollout"]):
        with pytest.raises(typer.TyperException, match=r"No such|Missing"):
            parse(argv)


def _options(command: Any) -> dict[str, bool]:
    """Option name -> whether it takes a value."""
    names = {"--help": False}
    for param in command.params:
        for name in [*param.opts, *param.secondary_opts]:
            names[name] = not getattr(param, "is_flag", False)
    return names


def inline_commands() -> list[tuple[str, str]]:
    return [
        (f"{path.relative_to(ROOT)}", span)
        for path in DOCUMENTS
        for span in re.findall(r"`(deploy [^`]+)`", prose(path))
    ]


@pytest.mark.parametrize(("where", "span"), inline_commands(), ids=lambda value: str(value))
def test_inline_commands_name_real_verbs_and_options(where: str, span: str) -> None:
    group = clidocs.command_group()
    words = shlex.split(span)[1:]
    global_options = _options(group)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        assert option in global_options, f"{span}: no global option {option}"
        if global_options[option]:
            words.pop(0)
    if not words:
        return
    verb, *rest = words
    assert verb in group.commands, f"{span}: no command {verb}"
    command = group.commands[verb]
    while rest and not rest[0].startswith("-") and rest[0] in getattr(command, "commands", {}):
        verb = f"{verb} {rest[0]}"
        command = command.commands[rest.pop(0)]
    options = _options(command)
    for word in rest:
        if word == "--":  # the command `deploy run` or `deploy exec` runs, with its own options
            break
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"{span}: {verb} has no option {word}"


# ---------------------------------------------------------------- messages


def _parts(node: ast.AST) -> list[str | None] | None:
    """A string expression as literal parts and None for each value filled in; None if not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [
            value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
            for value in node.values
        ]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _parts(node.left), _parts(node.right)
        if left is None and right is None:
            return None
        return (left or [None]) + (right or [None])
    return None


def _templates() -> list[re.Pattern[str]]:
    """Each line of each string the code under deployer/ builds, as a pattern.

    Filled-in values match anything, and so may a prefix ending in whitespace (a host or file
    name, a key path) that the caller puts before the message. Lines with fewer than
    MIN_LETTERS literal letters would match nearly anything and are left out.
    """
    patterns = []
    for source in sorted((ROOT / "deployer").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            parts = _parts(node)
            if parts is None:
                continue
            lines: list[list[str | None]] = [[]]
            for part in parts:
                if part is None:
                    lines[-1].append(None)
                    continue
                first, *others = part.split("\n")
                lines[-1].append(first)
                lines += [[other] for other in others]
            for line in lines:
                literal = "".join(part for part in line if part is not None)
                if sum(char.isalpha() for char in literal) < MIN_LETTERS:
                    continue
                if isinstance(line[0], str):  # the indentation and trailing blanks of a line
                    line[0] = line[0].lstrip()
                if isinstance(line[-1], str):
                    line[-1] = line[-1].rstrip()
                regex = "".join(".*" if part is None else re.escape(part) for part in line)
                patterns.append(re.compile(r"(?:.*\s)?" + regex))
    return patterns


def quoted_messages() -> list[tuple[str, str]]:
    """Lines of the ```text blocks of troubleshooting.md, without `error:` and `hint:`.

    Lines indented four spaces or more are output of other programs (a build step's) and `$ `
    lines are commands; neither is checked here.
    """
    found = []
    for block in blocks(ROOT / "docs" / "troubleshooting.md"):
        if block.language != "text":
            continue
        for offset, line in enumerate(block.text.splitlines()):
            if not line.strip() or line.startswith(("    ", "$ ")):
                continue
            message = re.sub(r"^(error|warning|hint): ", "", line.strip())
            found.append((f"{block.path.name}:{block.line + offset}", message))
    return found


TEMPLATES = _templates()


@pytest.mark.parametrize(("where", "message"), quoted_messages(), ids=lambda value: str(value))
def test_quoted_messages_are_printed_by_the_code(where: str, message: str) -> None:
    assert any(pattern.fullmatch(message) for pattern in TEMPLATES), f"{where}: not in deployer/: {message}"


def test_the_message_check_tells_real_messages_from_invented_ones() -> None:
    def known(message: str) -> bool:
        return any(pattern.fullmatch(message) for pattern in TEMPLATES)

    assert known("inventory.yaml: no inventory file here")
    assert known("inventory.yaml:31: app.rollout.batchsize: unknown key (did you mean 'batch_size'?)")
    assert not known("inventory.yaml: no inventory found here")
    assert not known("web1: the host is on fire")
    assert len(quoted_messages()) >= 30


# ---------------------------------------------------------------- exit codes


def tables(path: Path) -> list[list[list[str]]]:
    """The Markdown tables of a file outside code blocks: rows of cells, header first."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*prose(path).splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def exit_tables() -> list[tuple[str, list[list[str]]]]:
    return [
        (f"{path.relative_to(ROOT)}:{' | '.join(table[0])}", table)
        for path in DOCUMENTS
        for table in tables(path)
        if "exit" in table[0]
    ]


@pytest.mark.parametrize(("where", "table"), exit_tables(), ids=lambda value: str(value))
def test_exit_code_tables_match_the_code(where: str, table: list[list[str]]) -> None:
    column = table[0].index("exit")
    codes = [int(row[column]) for row in table[1:]]
    assert set(codes) <= set(EXIT_CODES.values())
    if table[0] == ["exit", "meaning"]:
        assert codes == sorted(EXIT_CODES.values())
        for code, meaning in (row for row in table[1:]):
            expected = next(m for m, c in EXIT_CODES.items() if str(c) == code).split(" (")[0]
            assert meaning.startswith(expected), f"exit {code}: {meaning!r} does not start with {expected!r}"


def test_the_exit_tables_are_found() -> None:
    found = {where.split(":")[0] for where, table in exit_tables() if table[0] == ["exit", "meaning"]}
    assert {"README.md", "docs/guarantees.md", "docs/cli.md", "docs/troubleshooting.md"} <= found


# ---------------------------------------------------------------- Dockerfiles, deploy init, site


@pytest.mark.parametrize("block", all_blocks("dockerfile"), ids=str)
def test_dockerfile_examples_lint_as_labelled(block: Block) -> None:
    label = block.text.split()[1].rstrip(":")
    findings = lint.lint_text(block.text)
    assert label in ("good", "bad"), f"{block}: start the block with '# good' or '# bad'"
    assert bool(findings) == (label == "bad"), [str(finding) for finding in findings]


def test_the_init_session_in_getting_started_is_what_init_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session = next(
        block.text.splitlines()
        for block in blocks(ROOT / "docs" / "getting-started.md")
        if block.text.startswith("$ deploy init\n")
    )
    repo = tmp_path / "web"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", "git@github.com:acme/web.git"], check=True
    )
    (repo / "Dockerfile").write_text('FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/web.py"]\n')
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DEPLOY_INVENTORY", raising=False)
    monkeypatch.setattr(sys, "argv", ["deploy", *shlex.split(session[0])[2:]])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    assert exited.value.code == 0
    assert (captured.out + captured.err).splitlines() == session[1:]


def _nav_pages(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_pages(value)
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_pages(item)


def test_mkdocs_lists_every_page() -> None:
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert sorted(_nav_pages(site["nav"])) == sorted(page.name for page in PAGES)
