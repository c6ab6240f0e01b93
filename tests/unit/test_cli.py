"""The command line itself: exit codes of bad usage, completion, colour, start-up cost, its reference."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployer import cli, clidocs

from . import entrypoint

ROOT = Path(__file__).parents[2]
ANSI = re.compile(r"\x1b\[")


def deploy(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the entry point with *args*: exit code, stdout, stderr."""
    return entrypoint.run(monkeypatch, capsys, *args)


def test_version_names_the_checked_out_commit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    code, out, err = deploy(monkeypatch, capsys, "version")
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"deploy \d+\.\d+\S* \(commit {head}\)\n", out), out


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (["rolout", "--hosts", "prod"], "error: No such command 'rolout'.", "see deploy --help"),
        (["rollout", "--tga", "x"], "error: No such option: --tga", "see deploy rollout --help"),
        (["rollout"], "error: Missing option '--hosts' / '-H'.", "see deploy rollout --help"),
        (
            ["status", "--hosts", "prod", "-i", "prod.yaml"],
            "error: No such option: -i",
            "global options go before the command: deploy -i PATH status --hosts prod",
        ),
    ],
)
def test_bad_usage_is_one_error_with_a_hint_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    error: str,
    hint: str,
) -> None:
    code, out, err = deploy(monkeypatch, capsys, *args)
    assert (code, out) == (2, "")
    first, second = err.splitlines()
    assert first.startswith(error)
    assert second == f"  hint: {hint}"


def test_help_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = deploy(monkeypatch, capsys, "--help")
    assert code == 0
    assert "rollout" in out and "Exit codes: 0 success" in " ".join(out.split())


def test_shell_completion_script_and_completions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = deploy(monkeypatch, capsys, "--show-completion", "bash")
    assert code == 0
    assert (
        "_DEPLOY_COMPLETE=complete_bash" in out and "complete -o default -F _deploy_completion deploy" in out
    )
    monkeypatch.setenv("_DEPLOY_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "deploy roll")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert deploy(monkeypatch, capsys) == (0, "rollout\nrollback\n", "")
    monkeypatch.setenv("COMP_WORDS", "deploy rollback --")
    monkeypatch.setenv("COMP_CWORD", "2")
    options = deploy(monkeypatch, capsys)[1].split()
    assert {"--hosts", "--to", "--break-lock"} <= set(options)


def test_help_has_no_colour_when_not_on_a_terminal_or_with_no_color() -> None:
    runner = CliRunner()
    for env in ({}, {"NO_COLOR": "1"}):
        result = runner.invoke(cli.app, ["rollout", "--help"], env=env)
        assert result.exit_code == 0
        assert "--hosts" in result.output
        assert not ANSI.search(result.output)


def _on_a_terminal(env: dict[str, str]) -> str:
    """What `deploy -i missing.yaml lint` writes to a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        subprocess.run(
            [sys.executable, "-m", "deployer", "-i", "missing.yaml", "lint"],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env=env,
            check=False,
            timeout=60,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)


def test_errors_are_coloured_on_a_terminal_unless_no_color_is_set() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    env |= {"TERM": "xterm-256color", "COLUMNS": "100"}
    coloured = _on_a_terminal(env)
    assert "missing.yaml: no inventory file here" in coloured
    assert ANSI.search(coloured)
    plain = _on_a_terminal(env | {"NO_COLOR": "1"})
    assert "error: missing.yaml: no inventory file here" in plain
    assert not ANSI.search(plain)


def test_errors_have_no_colour_when_piped() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "FORCE_COLOR")}
    done = subprocess.run(
        [sys.executable, "-m", "deployer", "-i", "missing.yaml", "lint"],
        capture_output=True,
        text=True,
        env=env | {"TERM": "xterm-256color"},
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: missing.yaml: no inventory file here\n")
    assert not ANSI.search(done.stderr)


def test_help_imports_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deployer", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "deployer.cli" in imported
    heavy = {name for name in imported
             if name.split(".")[0] in ("docker", "paramiko", "pydantic", "setuptools_scm", "vcs_versioning")}
    assert heavy == set()
    assert "deployer.version" not in imported  # finding the version may run git
    assert not {"deployer.live", "rich.live", "rich.progress", "rich.progress_bar"} & imported, "the live view"


def test_docs_cli_reference_is_generated_from_the_app() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == clidocs.render(), (
        "run: python -m deployer.clidocs > docs/cli.md"
    )


def test_rollback_refuses_plain_hosts_and_a_cluster_in_one_run_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "app: {name: web, image: r/web}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1], cluster: {swarm: {manager: 192.0.2.2}}}\n"
    )
    code, out, err = deploy(monkeypatch, capsys, "-i", str(inventory), "rollback", "--hosts", "all")
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == (
        "error: --hosts selects plain hosts (192.0.2.1) and Swarm clusters (cluster); "
        "a rollout or rollback changes one kind at a time, so nothing was changed"
    )


@pytest.mark.parametrize("tag", ["", "  ", "-1", "v1 v2"])
def test_rollback_to_an_empty_or_invalid_tag_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, tag: str
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "app: {name: web, image: r/web}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1]}\n"
    )
    code, out, err = deploy(monkeypatch, capsys, "-i", str(inventory), "rollback", "--hosts", "prod", "--to", tag)
    assert (code, out) == (2, "")
    first, second = err.splitlines()
    assert first == f"error: --to {tag!r} is not a release tag"
    assert second.startswith("  hint: a tag is 1 to 128 letters, digits")


def test_a_secret_that_is_not_utf8_is_refused_by_name_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "app: {name: web, image: r/web, container: {secrets: [DATABASE_URL]}}\n"
        "ssh: {config_file: /nonexistent, connect_timeout: 0.01}\n"
        "hosts: {prod: [192.0.2.1]}\n"
    )
    monkeypatch.setenv("DATABASE_URL", b"s3cr\xffet-tail".decode("utf-8", "surrogateescape"))
    code, out, err = deploy(monkeypatch, capsys, "-i", str(inventory), "rollout", "--hosts", "prod", "--tag", "v1")
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "error: app.container.secrets names DATABASE_URL, whose value is not UTF-8 text"
    for part in ("s3cr", "et-tail", "xff", "\\udcff", "position"):
        assert part not in err


def test_unknown_hosts_are_refused_before_the_registry_is_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "app: {name: web, image: 127.0.0.1:9/acme/web}\n"  # nothing answers there: asking it would be exit 4
        "ssh: {config_file: /nonexistent}\n"
        "hosts: {prod: [192.0.2.1]}\n"
    )
    code, _, err = deploy(monkeypatch, capsys, "-i", str(inventory), "rollout", "--hosts", "nosuch", "--tag", "v1")
    assert code == 2, err
    assert err.splitlines()[0] == "error: --hosts: 'nosuch' is neither a group nor a host of the inventory"


def test_start_up_collects_garbage_rarely() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import gc, deployer.cli; print(gc.get_threshold()[0])"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert int(done.stdout) >= 10_000, "a collection every few hundred allocations costs a fifth of start-up"
