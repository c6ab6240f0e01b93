"""Where `deploy`'s time goes: run it with -v and stamp each line of its output with the time.

`deploy -v` prints every command it runs on a host (`<host>  $ <command>`) as it starts it,
and its progress lines (`release ...`, `pulling ...`, `pulled`, `switching ...`); the gaps
between those lines are the phases. The lock command is the one host command not printed.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .contenders import GROUP, Fleet

ROOT = Path(__file__).resolve().parents[1]  # the checkout under test, as tests/e2e/support.py runs it
_COMMAND = re.compile(r"^(\S+)  \$ (.*)$")
Event = tuple[float, str]


@dataclass
class Phases:
    """One profiled `deploy -v` run: total, phases in order, and host commands per host."""

    scenario: str
    hosts: int
    seconds: float
    cpu_seconds: float
    phases: list[tuple[str, float]]
    commands_per_host: float  # median over hosts of the commands printed, plus the unprinted lock
    health_probes_per_host: float  # of which `curl` health probes
    events: list[Event] = field(default_factory=list)


def _first(events: list[Event], test: Callable[[str], bool]) -> float | None:
    return next((t for t, line in events if test(line)), None)


def _last(events: list[Event], test: Callable[[str], bool]) -> float | None:
    return next((t for t, line in reversed(events) if test(line)), None)


def _is_command(line: str) -> bool:
    return _COMMAND.match(line) is not None


def _is_history_append(line: str) -> bool:
    """The command that adds the run's line to a host's history: `cat >>` once, now a script that
    writes the history anew from its stdin (the state read names the file too, without stdin)."""
    return _is_command(line) and "history.jsonl" in line and ("cat >>" in line or line.endswith("< (stdin)"))


def split(events: list[Event], total: float, verb: str) -> list[tuple[str, float]]:
    """Phase durations from the stamped lines of one run; a missing marker merges its phase."""
    if verb == "rollout":
        marks = [
            ("start-up, inventory, registry digest", _first(events, lambda s: s.startswith("release "))),
            ("connect, lock, read state", _first(events, lambda s: s.startswith("pulling "))),
            ("pull and tag", _last(events, lambda s: s.endswith("  pulled"))),
            ("switch, health checks, history", _last(events, _is_history_append)),
        ]
        tail = "prune, unlock, exit"
    else:
        marks = [
            ("start-up, inventory, connect, lock", _first(events, _is_command)),
            ("read state", _first(events, lambda s: s.startswith("switching "))),
            ("switch, health checks, history", _last(events, _is_history_append)),
        ]
        tail = "unlock, exit"
    phases, previous = [], 0.0
    for label, mark in marks:
        if mark is not None and mark >= previous:
            phases.append((label, mark - previous))
            previous = mark
    phases.append((tail, total - previous))
    return phases


def serial_steps(events: list[Event], total: float) -> dict[str, float]:
    """Steps whose time grows with the hosts although they could run at once, and the tail.

    - lock: from the `release` line to the first host command: connecting (in parallel) and
      taking the lock host after host (the lock command is not printed);
    - history: from the first history append to the last, which run host after host;
    - tail: from the last host command (the lock release) to the end of the process.
    """
    commands = [t for t, line in events if _is_command(line)]
    appends = [t for t, line in events if _is_history_append(line)]
    release = _first(events, lambda s: s.startswith("release "))
    steps = {}
    if release is not None and commands:
        steps["connect + lock"] = commands[0] - release
    if appends:
        steps["history appends"] = appends[-1] - appends[0]
    if commands:
        steps["unlock + exit"] = total - commands[-1]
    return steps


def profile(fleet: Fleet, tag: str, scenario: str, verb: str = "rollout") -> Phases:
    """Run `deploy -v rollout` (or rollback) on the fleet, stamping each stderr line."""
    argv = [sys.executable, "-m", "deployer", "-v", "-i", str(fleet.inventory), verb, "--hosts", GROUP]
    if verb == "rollout":
        argv += ["--tag", tag]
    env = {**os.environ, **fleet.lab.env(), "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    events: list[Event] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=fleet.lab.app_repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read() if proc.stdout else ""))
    reader.start()
    for line in proc.stderr:
        events.append((time.perf_counter() - started, line.rstrip("\n")))
    code = proc.wait()
    total = time.perf_counter() - started
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise RuntimeError(f"deploy -v {verb} exited {code}:\n{''.join(stdout)}"
                           + "\n".join(line for _, line in events))
    commands = Counter(m.group(1) for _, line in events if (m := _COMMAND.match(line)))
    probes = Counter(m.group(1) for _, line in events
                     if (m := _COMMAND.match(line)) and "$(curl " in m.group(2))
    hosts = [host.address for host in fleet.hosts]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Phases(
        scenario=scenario,
        hosts=len(hosts),
        seconds=total,
        cpu_seconds=cpu,
        phases=split(events, total, verb),
        commands_per_host=statistics.median(commands[h] + 1 for h in hosts),
        health_probes_per_host=statistics.median(probes[h] for h in hosts),
        events=events,
    )
