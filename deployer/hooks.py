"""The ``after`` hooks: commands on the operator's machine once a rollout or rollback has ended.

They are told what happened in ``DEPLOY_*`` environment variables and never see a secret: the
variables the inventory names as the app's secrets and registry password are left out of their
environment, and so is any other variable that holds one of those values. A hook that fails,
cannot start or runs past ``app.hooks.after_timeout`` gets a warning; the run's exit code stays.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from deployer.commands import hook_argv
from deployer.config import Inventory
from deployer.errors import DeployError, Interrupted
from deployer.output import Output


@dataclass
class Ended:
    """What a run tells its hooks; the verb fills in the release and whether every host went well."""

    action: str
    hosts: list[str]
    release: str = ""
    #: False when hosts failed within `app.rollout.max_failures` (the run itself succeeded)
    every_host_ok: bool = True
    outcome: str = field(default="ok", init=False)
    exit_code: int = field(default=0, init=False)
    message: str = field(default="", init=False)


def environment(inventory: Inventory, ended: Ended, environ: Mapping[str, str]) -> dict[str, str]:
    """The hooks' environment: *environ* without any secret of the app, and the DEPLOY_* variables."""
    app = inventory.app
    names = set(app.container.secrets)
    registry = app.registry_settings
    if registry is not None and registry.password_env is not None:
        names.add(registry.password_env)
    values = {environ[name] for name in names if environ.get(name)}
    env = {key: value for key, value in environ.items() if key not in names and value not in values}
    env.update(
        DEPLOY_APP=app.name,
        DEPLOY_ACTION=ended.action,
        DEPLOY_RELEASE=ended.release,
        DEPLOY_OUTCOME=ended.outcome,
        DEPLOY_EXIT_CODE=str(ended.exit_code),
        DEPLOY_HOSTS=",".join(ended.hosts),
        DEPLOY_MESSAGE=ended.message,
    )
    return env


def run_after(inventory: Inventory, ended: Ended, out: Output, environ: Mapping[str, str] | None = None) -> None:
    """Run every ``after`` command in order, each within ``after_timeout``; warn about failures."""
    hooks = inventory.app.hooks
    if not hooks.after:
        return
    env = environment(inventory, ended, os.environ if environ is None else environ)
    for command in hooks.after:
        argv = hook_argv(command)
        shown = shlex.join(argv)
        out.progress(f"after: {shown}")
        try:
            done = subprocess.run(
                argv,
                env=env,
                cwd=inventory.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=hooks.after_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            out.warn(f"after hook {shown} did not finish within {hooks.after_timeout:g} s; stopped")
            continue
        except OSError as exc:
            out.warn(f"after hook {shown} could not start: {exc.strerror or exc}")
            continue
        for line in done.stdout.decode(errors="replace").splitlines():
            out.progress(f"  {line}")
        if done.returncode != 0:
            out.warn(f"after hook {shown} exited {done.returncode}; the run's exit code is unchanged")


@contextmanager
def after(inventory: Inventory, out: Output, ended: Ended, *, enabled: bool = True) -> Iterator[Ended]:
    """Run the ``after`` hooks once the block ends, however it ends, told how it ended."""
    try:
        yield ended
    except DeployError as exc:
        ended.outcome = "interrupted" if isinstance(exc, Interrupted) else "failed"
        ended.exit_code, ended.message = exc.exit_code, exc.message
        if enabled:
            run_after(inventory, ended, out)
        raise
    except KeyboardInterrupt:
        ended.outcome, ended.exit_code, ended.message = "interrupted", Interrupted.exit_code, "interrupted"
        if enabled:
            run_after(inventory, ended, out)
        raise
    ended.outcome = "ok" if ended.every_host_ok else "partial"
    if enabled:
        run_after(inventory, ended, out)
