"""The main job end to end on the local lab: build, push, roll out behind each host's reverse
proxy, serve, roll out v2 and roll back under a steady request load that loses nothing.

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

from tests.e2e.load import Load, Target, request
from tests.lab import Lab, lab_lock
from tests.lab.proxy_image import ensure_proxy_image

ROOT = Path(__file__).resolve().parents[1]


NAME = "web.lab.test"


def deploy(lab: Lab, *args: str) -> None:
    """Run `deploy ARGS` in the sample app's repository and stop the sandbox if it fails."""
    print(f"\n$ deploy {shlex.join(args)}", flush=True)
    env = {**os.environ, **lab.env(), "DEPLOY_INVENTORY": str(_inventory_path(lab))}
    result = subprocess.run([sys.executable, "-m", "deployer", *args], cwd=lab.app_repo, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"deploy {args[0]} failed with exit code {result.returncode}")


def show(lab: Lab) -> None:
    """What each host's proxy answers for the app now, asked over HTTP."""
    for target in _targets(lab):
        answer = request(target)
        print(f"  http://{NAME}/version at {target.address}:80 -> {answer.status} {answer.body or answer.error}")


def _inventory_path(lab: Lab) -> Path:
    """The sandbox's inventory: the lab's, with the app behind the proxy. It lives beside the
    lab's state, not in the app's repository, where it would make every build dirty."""
    return lab.state_dir / "sandbox-inventory.yaml"


def _targets(lab: Lab) -> list[Target]:
    return [Target(host.address, 80, host_header=NAME) for host in lab.hosts]


def main() -> None:
    print("starting the lab (a TLS+auth registry and 3 SSH+Docker hosts)...", flush=True)
    with lab_lock():
        run(Lab.up())


def run(lab: Lab) -> None:
    """The story: v1 everywhere behind the proxy, v2 everywhere, back to v1, no request lost."""
    lab.reset()
    proxy = {"hosts": [NAME], "app_port": 8080, "image": ensure_proxy_image(lab), "drain_timeout": 5}
    lab.write_inventory(_inventory_path(lab), app_overrides={"container": {"ports": []}, "proxy": proxy})
    deploy(lab, "build")
    deploy(lab, "push")
    deploy(lab, "setup", "--hosts", "lab")
    deploy(lab, "rollout", "--hosts", "lab")
    show(lab)
    lab.commit_app("v2")
    print("\ncommitted v2 of the sample app", flush=True)
    deploy(lab, "build")
    deploy(lab, "push")
    with Load(_targets(lab), rate=20, max_seconds=300) as load:
        print(f"\nsending 20 requests a second to {NAME} on every host while v2 rolls out and back", flush=True)
        deploy(lab, "rollout", "--hosts", "lab")
        show(lab)
        deploy(lab, "rollback", "--hosts", "lab")
        show(lab)
    summary = load.summary()
    print(f"\n{summary.total} requests during the rollout and the rollback, {summary.failed} failed", flush=True)
    deploy(lab, "status", "--hosts", "lab")
    deploy(lab, "proxy", "status", "--hosts", "lab")
    print(
        "\nThe lab is still up. Try it by hand:\n"
        f"  eval \"$(cd {ROOT} && python3 -m tests.lab env)\"; cd {lab.app_repo}\n"
        f"  deploy -i {_inventory_path(lab)} history --hosts lab\n"
        "Remove it with: python3 -m tests.lab down"
    )


if __name__ == "__main__":
    main()
