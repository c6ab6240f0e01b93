"""python -m tests.lab up [--hosts N] | down | reset | env | status"""

from __future__ import annotations

import argparse
import shlex
import time

from .lab import MAX_HOSTS, Lab, LabNotUpError, lab_lock, teardown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the lab, or reuse a matching running one")
    up.add_argument("--hosts", type=int, default=3, choices=range(1, MAX_HOSTS + 1), metavar="N",
                    help=f"number of hosts, 1 to {MAX_HOSTS} (default 3)")
    commands.add_parser("down", help="remove the lab (cached images stay)")
    commands.add_parser("reset", help="empty the hosts and registry, reset the app repo")
    commands.add_parser("env", help="print export lines for deploy")
    commands.add_parser("status", help="show the lab's containers and daemons")
    args = parser.parse_args(argv)

    if args.command in ("up", "down", "reset"):
        with lab_lock():
            _change(args)
    elif args.command == "env":
        for key, value in Lab.load().env().items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        for name, state in Lab.load().status().items():
            print(f"{name}\t{state}")


def _change(args: argparse.Namespace) -> None:
    """up, down or reset, with the time it took."""
    started = time.monotonic()
    if args.command == "up":
        lab = Lab.up(hosts=args.hosts)
        for host in lab.hosts:
            print(f"{host.name}\t{host.address}\t{host.container}")
        print(f"registry\t{lab.registry}\t(user {lab.registry_user})")
        print(f"lab up in {time.monotonic() - started:.1f} s; state in {lab.state_dir}")
    elif args.command == "down":
        teardown()
        print(f"lab down in {time.monotonic() - started:.1f} s")
    else:
        Lab.load().reset()
        print(f"lab reset in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except LabNotUpError as err:
        raise SystemExit(str(err)) from None
