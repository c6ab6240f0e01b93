"""The main job end to end on the local lab: build, push, roll out, serve, roll out v2, roll back.

    python -m tests.sandbox          (./dev sandbox installs everything first)

It runs the real `deploy` command exactly as a user would, from the sample app's repository,
and leaves the lab up for trying commands by hand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.lab import Lab, lab_lock

ROOT = Path(__file__).resolve().parents[1]


def deploy(lab: Lab, *args: str) -> None:
    """Run `deploy ARGS` in the sample app's repository and stop the sandbox if it fails."""
    print(f"\n$ deploy {shlex.join(args)}", flush=True)
    env = {**os.environ, **lab.env()}
    result = subprocess.run([sys.executable, "-m", "deployer", *args], cwd=lab.app_repo, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"deploy {args[0]} failed with exit code {result.returncode}")


def show(lab: Lab) -> None:
    """What each host serves now, asked over HTTP."""
    for host in lab.hosts:
        status, body = lab.http_get(host, "/version")
        print(f"  {host.address}:8080/version -> {status} {body.strip()}")


def main() -> None:
    print("starting the lab (a TLS+auth registry and 3 SSH+Docker hosts)...", flush=True)
    with lab_lock():
        run(Lab.up())


def run(lab: Lab) -> None:
    """The story: v1 everywhere, v2 everywhere, back to v1."""
    lab.reset()
    deploy(lab, "build")
    deploy(lab, "push")
    deploy(lab, "rollout", "--hosts", "lab")
    show(lab)
    lab.commit_app("v2")
    print("\ncommitted v2 of the sample app", flush=True)
    deploy(lab, "build")
    deploy(lab, "push")
    deploy(lab, "rollout", "--hosts", "lab")
    show(lab)
    deploy(lab, "rollback", "--hosts", "lab")
    show(lab)
    deploy(lab, "status", "--hosts", "lab")
    print(
        "\nThe lab is still up. Try it by hand:\n"
        f"  eval \"$(cd {ROOT} && python3 -m tests.lab env)\"; cd {lab.app_repo}; deploy history --hosts lab\n"
        "Remove it with: python3 -m tests.lab down"
    )


if __name__ == "__main__":
    main()
