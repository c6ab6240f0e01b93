"""Fan-out past what the lab holds: `deploy status` against 100+ SSH hosts that have no engine.

    python -m bench --fanout 1,50,100,150 [--runs 3] [--json PATH] [--markdown PATH]

Each host is its own loopback address (127.0.1.1, 127.0.1.2, ...) on port 2222, served by
local sshd processes (one per 16 addresses, the most one sshd listens on), each forking a process
per connection as any host's sshd does. They set ``DOCKER_HOST`` to a socket that does not exist,
so no host has a Docker engine: `deploy status` must still connect to every host and print a
row per host (the engine's error). Measured per host count: wall time and the CPU seconds
of the `deploy` process, with the default `ssh.parallel` (16) and with one connection per host
at once; the figure is the cost of one more host (the slope between the smallest and largest
count). Nothing here touches the lab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .measure import rotated, timed

ROOT = Path(__file__).resolve().parents[1]
PORT = 2222
#: listening sockets one sshd may have (OpenSSH's MAX_LISTEN_SOCKS)
ADDRESSES_PER_SSHD = 16
Log = Callable[[str], None]


def address(index: int) -> str:
    """The loopback address of host *index* (0-based): 127.0.1.1 onwards."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


@dataclass
class Sample:
    """One `deploy status` run."""

    hosts: int
    parallel: int
    run: int
    seconds: float
    cpu_seconds: float
    rows: int
    exit_code: int
    #: rows per kind of answer: the missing engine named, else the start of the error
    answers: dict[str, int] = field(default_factory=dict)


@dataclass
class Results:
    """Every sample of a fan-out session, with when it ran."""

    sizes: list[int]
    runs: int
    started: str
    finished: str = ""
    samples: list[Sample] = field(default_factory=list)


@contextmanager
def sshd(directory: Path, hosts: int) -> Iterator[tuple[Path, Path]]:
    """Local sshds for *hosts* loopback addresses; yields the client key and known_hosts file."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True)
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    host_key = " ".join((directory / "host_key.pub").read_text().split()[:2])
    known = directory / "known_hosts"
    known.write_text("".join(f"[{address(i)}]:{PORT} {host_key}\n" for i in range(hosts)))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    procs = []
    try:
        for first in range(0, hosts, ADDRESSES_PER_SSHD):
            config = directory / f"sshd_config.{first}"
            listen = "".join(f"ListenAddress {address(i)}:{PORT}\n"
                             for i in range(first, min(hosts, first + ADDRESSES_PER_SSHD)))
            config.write_text(
                f"{listen}HostKey {directory / 'host_key'}\nAuthorizedKeysFile {directory / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                f"UsePAM no\nStrictModes no\nMaxStartups 1000\nPidFile {directory / f'sshd.{first}.pid'}\n"
                "SetEnv DOCKER_HOST=unix:///nonexistent/docker.sock\n"
            )
            procs.append(subprocess.Popen([binary, "-D", "-f", str(config)], stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while subprocess.run(["ssh", "-q", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
                              "-i", str(directory / "client_key"), "-p", str(PORT),
                              f"root@{address(hosts - 1)}", "true"], check=False).returncode != 0:
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                raise RuntimeError("the local sshd did not answer")
            time.sleep(0.2)
        yield directory / "client_key", known
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)


def inventory(directory: Path, hosts: int, parallel: int, key: Path, known: Path) -> Path:
    """An inventory whose group `fan` is the first *hosts* loopback addresses."""
    path = directory / f"inventory-{hosts}-{parallel}.yaml"
    path.write_text(yaml.safe_dump({
        "app": {"name": "web", "image": "registry.invalid/acme/web"},
        "ssh": {"user": "root", "port": PORT, "identity_file": str(key), "known_hosts": str(known),
                "parallel": parallel},
        "hosts": {"fan": [address(i) for i in range(hosts)]},
    }, sort_keys=False))
    return path


def status(path: Path, hosts: int, parallel: int, run: int) -> Sample:
    """Time one `deploy status --hosts fan --json`; count the rows that name the missing engine."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT),
           "HOME": str(path.parent)}  # no ~/.ssh/config of the operator's
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}

    def call() -> None:
        outcome["done"] = subprocess.run(
            [sys.executable, "-m", "deployer", "-i", str(path), "status", "--hosts", "fan", "--json"],
            env=env, capture_output=True, text=True, timeout=300, check=False)

    seconds, cpu = timed(call)
    done = outcome["done"]
    answers: Counter[str] = Counter()
    try:
        found = json.loads(done.stdout)["hosts"]
    except (ValueError, KeyError):
        found = []
    for row in found:
        error = str(row.get("error") or "")
        answers["no engine" if "Cannot connect to the Docker daemon" in error else error.split(": ", 1)[-1][:60]] += 1
    return Sample(hosts, parallel, run, seconds, cpu, len(found), done.returncode, dict(answers))


def settle(timeout: float = 120.0) -> None:
    """Wait until no sshd session of a previous run is left (they outlive a client that gave up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = subprocess.run(["pgrep", "-f", "^sshd: root"], capture_output=True, text=True, check=False)
        if not sessions.stdout.split():
            return
        time.sleep(0.5)


def run(sizes: Sequence[int], runs: int, log: Log) -> Results:
    """Every size with the default parallelism and with every host at once, `runs` times."""
    results = Results(list(sizes), runs, time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    with tempfile.TemporaryDirectory(prefix="deploy-fanout-") as scratch:
        directory = Path(scratch)
        with sshd(directory, max(sizes)) as (key, known):
            for repetition in range(runs):
                # Every host at once overloads this machine (docs/benchmarks.md): those runs go last,
                # and an untimed run of one host lets the next repetition start from a quiet machine.
                settle()
                status(inventory(directory, 1, 16, key, known), 1, 16, repetition)
                plans = [(hosts, 16) for hosts in rotated(list(sizes), repetition)]
                plans += [(hosts, hosts) for hosts in rotated(list(sizes), repetition) if hosts > 16]
                for hosts, parallel in plans:
                    settle()
                    found = status(inventory(directory, hosts, parallel, key, known), hosts, parallel, repetition)
                    results.samples.append(found)
                    log(f"run {repetition + 1} hosts {hosts:4d} parallel {parallel:4d}: {found.seconds:6.2f} s "
                        f"cpu {found.cpu_seconds:5.2f} s rows {found.rows} exit {found.exit_code} {found.answers}")
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


def save(results: Results, path: Path) -> None:
    """Write *results* as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=1))


def render(results: Results) -> str:
    """The Markdown table: medians per size and parallelism, and the cost of one more host."""
    lines = [
        f"Measured {results.started} - {results.finished}; median of {results.runs} run(s).",
        "",
        "| hosts | ssh.parallel | wall s | CPU s | rows | answers (all runs) | exit code |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    medians: dict[tuple[int, bool], tuple[float, float]] = {}
    for hosts in results.sizes:
        for every in (False, True):
            found = [s for s in results.samples if s.hosts == hosts and (s.parallel == hosts) == every
                     and (every or s.parallel == 16)]
            if not found or (every and hosts <= 16):
                continue
            wall = statistics.median(s.seconds for s in found)
            cpu = statistics.median(s.cpu_seconds for s in found)
            medians[(hosts, every)] = (wall, cpu)
            rows = sorted({s.rows for s in found})
            codes = sorted({s.exit_code for s in found})
            answers: Counter[str] = Counter()
            for sample in found:
                answers.update(sample.answers)
            lines.append(f"| {hosts} | {found[0].parallel} | {wall:.2f} | {cpu:.2f} | {', '.join(map(str, rows))} | "
                         + "; ".join(f"{what}: {count}" for what, count in answers.most_common())
                         + f" | {', '.join(map(str, codes))} |")
    small, large = min(results.sizes), max(results.sizes)
    lines.append("")
    for every, label in ((False, "ssh.parallel 16"), (True, "every host at once")):
        low = medians.get((small, False)) if small <= 16 else medians.get((small, every))
        high = medians.get((large, every))
        if low and high and large > small:
            extra = large - small
            lines.append(f"- One more host, {label}: {(high[0] - low[0]) / extra * 1000:.1f} ms of wall time, "
                         f"{(high[1] - low[1]) / extra * 1000:.1f} ms of CPU (from {small} to {large} hosts).")
    return "\n".join(lines) + "\n"
