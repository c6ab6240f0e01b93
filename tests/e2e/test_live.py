"""Progress you can watch: `deploy` in a real pseudo-terminal (pexpect) draws live lines, one per
host with its pull's layers and then its health; off a terminal the same run prints plain lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.lab import Lab

from .support import ROOT, deploy, inventory_with, ok, release, serving

pytestmark = pytest.mark.e2e

#: what starts a line anew: a carriage return, a cursor move up, a line erased (a redraw)
NEW_LINE = re.compile(r"\r|\x1b\[\d*[AK]|\x1b\[2K")
#: the other escape sequences: colours, the cursor shown or hidden
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BAR = "━"


def _environment(lab: Lab) -> dict[str, str]:
    """The lab's environment with nothing that turns the live view off."""
    env = {**os.environ, **lab.env(), "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR"):
        env.pop(name, None)
    return env


def on_terminal(lab: Lab, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`deploy ARGS` in a 160-column pseudo-terminal (with *env* added to the lab's environment):
    exit code, raw output, output without escapes."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "deployer", *args],
        cwd=str(lab.app_repo),
        env={**_environment(lab), **(env or {})},
        dimensions=(60, 160),
        encoding="utf-8",
        codec_errors="replace",
        timeout=240,
    )
    child.expect(pexpect.EOF)
    child.close()
    raw = str(child.before)
    return child.exitstatus, raw, CONTROL.sub("", NEW_LINE.sub("\n", raw))


def last_line(text: str, start: str) -> str:
    """The last line drawn that starts with *start* (the live view's final state of that item)."""
    lines = [line.rstrip() for line in text.split("\n") if line.startswith(start)]
    assert lines, f"no line starts with {start!r} in:\n{text}"
    return lines[-1]


def test_live_lines_on_a_terminal_and_plain_lines_off_one(clean_lab: Lab) -> None:
    lab = clean_lab
    hosts = [host.address for host in lab.hosts]  # as the inventory names them
    release(lab)

    code, raw, text = on_terminal(lab, "rollout", "--hosts", "lab")
    assert code == 0, text
    assert "\x1b[" in raw and BAR in text, "drawn with a bar, in colour"
    for host in hosts:
        final = last_line(text, host)
        assert re.fullmatch(rf"{re.escape(host)}\s+{BAR}+\s+(\d+)/\1 layers\s+healthy", final), final
        assert len([line for line in text.split("\n") if line.startswith(host)]) > 1, "redrawn as it goes"
        assert f"{host}  pulled\n" not in text, "no plain line beside the live one"
    assert serving(lab) == ["v1"] * len(hosts)

    lab.commit_app("v2")
    code, _, text = on_terminal(lab, "build")
    assert code == 0, text
    steps = re.search(r"^build\s+" + BAR + r"+\s+step (\d+)/\1\s+\S", text, re.M)
    assert steps, f"the build's line ends on its last step:\n{text}"
    code, _, text = on_terminal(lab, "push")
    assert code == 0, text
    layers = re.findall(rf"^[0-9a-f]{{12}}\s+{BAR}+\s+[\d.]+ k?M?B(?:/[\d.]+ k?M?B)?\s+pushed", text, re.M)
    assert layers, f"a bar per layer, with the bytes it sent:\n{text}"

    # the same rollout off a terminal, nothing else turning the view off: today's plain lines
    done = subprocess.run(
        [sys.executable, "-m", "deployer", "rollout", "--hosts", "lab"],
        cwd=lab.app_repo,
        env=_environment(lab),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(re.fullmatch(r"pulling \S+@sha256:[0-9a-f]{64} on 3 host\(s\)", line) for line in lines), lines
    for host in hosts:
        assert f"{host}  pulled" in lines
        assert f"switching {host}" in lines
    assert "\x1b[" not in done.stderr and BAR not in done.stderr and "layers" not in done.stderr
    assert serving(lab) == ["v2"] * len(hosts)

    code, _, text = on_terminal(lab, "rollback", "--hosts", "lab")
    assert code == 0, text
    for host in hosts:
        assert re.fullmatch(rf"{re.escape(host)}\s+healthy", last_line(text, host)), text
    assert serving(lab) == ["v1"] * len(hosts)


def test_without_a_registry_each_host_shows_its_layers_as_they_arrive(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    lab.stop_registry()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    inventory = inventory_with(lab, tmp_path, image="acme/web", registry=False, rollout={"batch_size": 3})
    ok(deploy(lab, "-i", inventory, "build", env=env))

    code, _, text = on_terminal(lab, "-i", inventory, "rollout", "--hosts", "lab", env=env)
    assert code == 0, text
    for host in (host.address for host in lab.hosts):
        final = last_line(text, host)
        assert re.fullmatch(rf"{re.escape(host)}\s+{BAR}+\s+([1-9]\d*)/\1 layers\s+healthy", final), final
    assert serving(lab) == ["v1"] * len(lab.hosts)

