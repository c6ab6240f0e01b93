"""Run the real `deploy` command against the lab, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.lab import Lab

#: the checkout under test: `deploy` runs from it, whichever copy pip installed
ROOT = Path(__file__).parents[2]


@dataclass(frozen=True)
class Result:
    """Exit code and output of one `deploy` run."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Everything the user saw."""
        return self.stdout + self.stderr


def _environment(lab: Lab, extra: dict[str, str] | None) -> dict[str, str]:
    """The lab's environment for `deploy`, plain output, and this checkout's code."""
    return {**os.environ, **lab.env(), "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT), **(extra or {})}


def deploy(lab: Lab, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    """Run `deploy ARGS` in the sample app's repository with the lab's environment."""
    full_env = _environment(lab, env)
    done = subprocess.run(
        [sys.executable, "-m", "deployer", *args],
        cwd=lab.app_repo,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def popen(lab: Lab, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `deploy ARGS` in the background (for locks, signals and kills)."""
    full_env = _environment(lab, env)
    return subprocess.Popen(
        [sys.executable, "-m", "deployer", *args],
        cwd=lab.app_repo,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ok(result: Result) -> Result:
    """Fail the test with the command's output unless it exited 0."""
    assert result.code == 0, result.output
    return result


def release(lab: Lab, *inventory_args: str, env: dict[str, str] | None = None) -> str:
    """Build and push HEAD of the sample app; return its tag."""
    built = ok(deploy(lab, *inventory_args, "build", env=env)).stdout.strip().splitlines()[-1]
    ok(deploy(lab, *inventory_args, "push", env=env))
    return built.rsplit(":", 1)[1]


def serving(lab: Lab) -> list[str]:
    """What every lab host answers on /version (or the HTTP status when it does not)."""
    answers = []
    for host in lab.hosts:
        status, body = lab.http_get(host, "/version")
        answers.append(body.strip() if status == 200 else f"HTTP {status}")
    return answers


def inventory_with(lab: Lab, tmp_path: Path, **app: object) -> str:
    """Write an inventory variant with *app* overrides; return the -i argument."""
    return str(lab.write_inventory(tmp_path / "inventory.yaml", app_overrides=dict(app)))
