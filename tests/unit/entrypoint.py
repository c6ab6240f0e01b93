"""Run the `deploy` entry point in-process, as a user's shell would: exit code and output."""

from __future__ import annotations

import sys

import pytest

from deployer import cli


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`deploy ARGS` through `cli.main`: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["deploy", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, captured.out, captured.err
