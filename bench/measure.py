"""Run the measurements: sessions on the lab, interleaved contenders, timings and counters.

A *session* holds the lab (its lock) for one repetition over every host count and contender,
then lets it go so others can run their tests. Each session starts the lab with the largest
host count asked for and measures smaller counts on the first N hosts. Within a repetition
the host counts and contenders are rotated, so no contender always goes first.

Per contender and host count: hosts emptied (and for `deploy (proxy)` the proxy booted), then
*cold* (release 1 onto empty hosts), then *warm* (release 2, which differs from release 1 in
its top layer only); for `deploy` and `deploy (proxy)`, then *rollback* (back to release 1)
with the registry stopped, and, untimed, a rollout of release 2 and a rollback under a bounded
request load to every host (bench/traffic.py), counting the requests that failed.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.load import MAX_TARGETS, Load
from tests.lab import Lab, lab_lock
from tests.lab.proxy_image import ensure_proxy_image

from . import contenders, costs, probes, sample, traffic
from .contenders import Contender, ContenderFailed, Fleet
from .phases import Phases, profile

T = TypeVar("T")
Log = Callable[[str], None]

RESULTS_DIR = Path(__file__).with_name("results")
ALL_CONTENDERS = ("deploy", "deploy-proxy", "loop-par", "loop-seq", "ansible")
SCENARIOS = ("cold", "warm", "rollback")


@dataclass(frozen=True)
class Plan:
    """What to measure."""

    hosts: tuple[int, ...] = (1, 4, 8)
    runs: int = 5
    contenders: tuple[str, ...] = ALL_CONTENDERS
    rollback: bool = True
    load: bool = True  # a rollout and a rollback of each deploy mode under request load, untimed
    load_rate: float = traffic.RATE  # requests a second per host
    warmup: bool = True
    phases: bool = True
    help_runs: int = 20
    bundle_bytes: int = sample.DEFAULT_BUNDLE_BYTES

    @classmethod
    def smoke(cls) -> Plan:
        """One host, one repetition, `deploy` in both modes and the parallel loop only."""
        return cls(hosts=(1,), runs=1, contenders=("deploy", "deploy-proxy", "loop-par"), warmup=False,
                   phases=False, help_runs=3)


@dataclass
class Sample:
    """One timed run of one contender."""

    contender: str
    scenario: str
    hosts: int
    run: int
    seconds: float
    cpu_seconds: float  # user + system time of the processes the contender started
    ssh_connections: list[int]  # new TCP connections to port 22, per host
    registry_bytes: list[int]  # bytes each host received from the registry
    error: str = ""


@dataclass
class Results:
    """Everything a benchmark run produced; saved as JSON and rendered by bench.report."""

    plan: Plan
    machine: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    images: list[sample.Image] = field(default_factory=list)
    pushes: list[sample.Push] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    startup: dict[str, list[float]] = field(default_factory=dict)
    phases: list[Phases] = field(default_factory=list)
    costs: dict[str, list[float]] = field(default_factory=dict)
    loads: list[traffic.LoadResult] = field(default_factory=list)
    started: str = ""
    finished: str = ""


def timed(action: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds of `action`, and the CPU seconds of the child processes it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` rotated left by `by`."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def settings() -> dict[str, Any]:
    """The settings each contender ran with, for the report."""
    return {
        "deploy": "the lab's default inventory (tests/lab/inventory.py) with "
                  f"app.rollout {contenders.DEPLOY_OVERRIDES['rollout']}: healthcheck GET /health on "
                  "port 8080 every 0.2 s (timeout 20 s, watch 0), keep_releases 3, ssh.parallel 16",
        "deploy (proxy)": "the same, with app.container.ports [] and app.proxy {hosts: "
                          f"[{traffic.PROXY_NAME}], app_port: 8080, tls: off, drain_timeout: "
                          f"{contenders.PROXY_DRAIN_TIMEOUT}, image: the lab's Caddy image}}; the proxy "
                          "booted (`deploy proxy boot`) on the emptied hosts before the timed runs",
        "load": f"{traffic.RATE:g} requests a second per host (tests/e2e/load.py, a new connection "
                "each, 5 s timeout) to GET /version: port 8080 of each host without the proxy, port "
                f"80 with Host {traffic.PROXY_NAME} behind it; from {traffic.LEAD} s before a rollout of "
                f"release 2 until {traffic.TAIL} s after the rollback to release 1 that follows it; "
                "untimed, registry running",
        "loops": f"bash + OpenSSH, -F none, BatchMode, the lab key and known_hosts, "
                 "StrictHostKeyChecking=yes, password on stdin; per host: docker login && docker pull "
                 f"&& docker rm -f && docker run ({contenders.RUN_OPTIONS}) && curl /health every "
                 f"{contenders.HEALTH_INTERVAL} s",
        "ansible": "ansible-playbook, forks = hosts, pipelining = True, ControlPersist=60s (a fresh "
                   "control dir per run, masters closed after it), host key checking against the lab's "
                   "known_hosts, no -C, gather_facts false, interpreter /usr/bin/python3; "
                   "community.docker.docker_login, docker_image (source: pull), docker_container, "
                   f"ansible.builtin.uri until 200 every {contenders.HEALTH_INTERVAL} s; `requests` for the "
                   "modules from the host image (python3-requests)",
    }


class Session:
    """The lab held for one repetition: fleets per host count, releases, counters."""

    def __init__(self, lab: Lab, plan: Plan, results: Results, workdir: Path, log: Log) -> None:
        self.lab = lab
        self.plan = plan
        self.results = results
        self.log = log
        hosts = lab.hosts[: max(plan.hosts)]
        if len(hosts) < max(plan.hosts):
            raise ValueError(f"the lab has {len(lab.hosts)} hosts, {max(plan.hosts)} are needed")
        self.hosts = hosts
        self.fleets = {n: Fleet(lab, tuple(hosts[:n]), workdir / f"hosts-{n}") for n in plan.hosts}
        self.proxied = any(contenders.CONTENDERS[name].proxied for name in plan.contenders)

    # --- set-up and clean-up ----------------------------------------------------------

    def __enter__(self) -> Session:
        for fleet in self.fleets.values():
            contenders.prepare(fleet)
        probes.install_counters(self.lab, self.hosts)
        if not self._releases_in_registry():
            self._make_releases()
        if self.proxied:  # after the releases: a lab reset empties the registry
            image = ensure_proxy_image(self.lab)
            for fleet in self.fleets.values():
                contenders.prepare_proxy(fleet, image)
        return self

    def __exit__(self, *exc: object) -> None:
        probes.remove_counters(self.lab, self.hosts)
        for fleet in self.fleets.values():
            contenders.close_ansible_masters(fleet)

    def _releases_in_registry(self) -> bool:
        images = self.results.images
        return len(images) == 2 and all(probes.has_tag(self.lab, image.tag) for image in images)

    def _make_releases(self) -> None:
        """Reset the lab, then commit, build and push release 1 and release 2."""
        self.log("preparing: lab reset, then build and push two releases of the sample image")
        self.lab.reset()
        inventory = self.fleets[min(self.plan.hosts)].inventory
        images = []
        for version in ("bench-1", "bench-2"):
            sample.commit_release(self.lab, version, self.plan.bundle_bytes)
            tag, push = sample.build_and_push(self.lab, inventory)
            self.results.pushes.append(push)
            images.append(sample.image(self.lab, tag, version))
        self.results.images = images

    # --- measuring --------------------------------------------------------------------

    def measure(self, contender: Contender, fleet: Fleet, scenario: str, image: sample.Image,
                run: int) -> Sample:
        """Time one contender run, with the host counters read around it; check what hosts serve."""
        hosts = list(fleet.hosts)
        before = probes.read_counters(self.lab, hosts)
        error = ""
        try:
            seconds, cpu = timed(lambda: contender.run(fleet, image.tag))
        except (ContenderFailed, subprocess.TimeoutExpired) as exc:
            seconds, cpu, error = 0.0, 0.0, str(exc)
        finally:
            contender.cleanup(fleet)
        after = probes.read_counters(self.lab, hosts)
        if not error:
            answers = traffic.serving(hosts, contender.proxied)
            if answers != [image.version] * len(hosts):
                error = f"after {contender.name} {scenario}, hosts serve {answers}, not {image.version}"
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        result = Sample(contender.name, scenario, len(hosts), run, seconds, cpu,
                        [d.ssh_connections for d in deltas], [d.registry_bytes for d in deltas], error)
        self.log(f"run {run + 1} N={len(hosts)} {contender.name:<15} {scenario:<8} "
                 + (f"FAILED: {error.splitlines()[0]}" if error else f"{seconds:6.2f} s  cpu {cpu:5.2f} s"))
        self.results.samples.append(result)
        return result

    def contender_round(self, contender: Contender, fleet: Fleet, run: int) -> None:
        """Cold, warm, for deploy its status of the hosts, and for deploy (both modes) a rollback
        with the registry stopped, then the load."""
        first, second = self.results.images
        self.empty(contender, fleet)
        if self.measure(contender, fleet, "cold", first, run).error:
            return
        if self.measure(contender, fleet, "warm", second, run).error:
            return
        if contender.name == "deploy":
            self.measure(contenders.STATUS, fleet, "status", second, run)
        rollback = contenders.ROLLBACKS.get(contender.name)
        if rollback is None:
            return
        if self.plan.rollback:
            self.lab.stop_registry()
            try:
                if self.measure(rollback, fleet, "rollback", first, run).error:
                    return
            finally:
                self.lab.start_registry()
        if self.plan.load:
            self.under_load(contender, rollback, fleet, run)

    def empty(self, contender: Contender, fleet: Fleet) -> None:
        """Empty the hosts, then what the contender needs on them before it is timed."""
        probes.reset_hosts(self.lab, fleet.hosts)
        contender.boot(fleet)

    def under_load(self, contender: Contender, rollback: Contender, fleet: Fleet, run: int) -> None:
        """Untimed: release 2 rolled out and rolled back while every host gets the same load
        (up to the load generator's MAX_TARGETS hosts; larger fleets are timed only)."""
        if len(fleet.hosts) > MAX_TARGETS:
            return
        first, second = self.results.images
        if traffic.serving(fleet.hosts, contender.proxied) != [first.version] * len(fleet.hosts):
            contender.run(fleet, first.tag)  # without the timed rollback, hosts serve release 2
        errors: dict[str, str] = {}
        bounds: list[tuple[str, float]] = []
        load = Load(traffic.targets(fleet.hosts, contender.proxied), rate=self.plan.load_rate,
                    max_seconds=traffic.MAX_SECONDS, workers=min(64, 8 * len(fleet.hosts)))
        with load:
            assert load.started_at is not None
            bounds.append(("rollout", load.started_at))
            time.sleep(traffic.LEAD)
            for verb, step, tag in (("rollout", contender, second.tag), ("rollback", rollback, first.tag)):
                if verb == "rollback":
                    bounds.append((verb, time.monotonic()))
                try:
                    step.run(fleet, tag)
                except (ContenderFailed, subprocess.TimeoutExpired) as exc:
                    errors[verb] = str(exc)
                    break
            time.sleep(traffic.TAIL)
        found = traffic.results_of(load.samples, bounds, contender=contender.name, hosts=len(fleet.hosts),
                                   run=run, rate=self.plan.load_rate, errors=errors)
        self.results.loads += found
        self.log(f"run {run + 1} N={len(fleet.hosts)} {contender.name:<15} under load: "
                 + ", ".join(f"{r.verb} {r.failed}/{r.total} failed" + (" (FAILED)" if r.error else "")
                             for r in found))

    def warmup(self) -> None:
        """One untimed cold rollout per contender on one host (caches, compiled bytecode)."""
        fleet = self.fleets[min(self.plan.hosts)]
        one = Fleet(fleet.lab, fleet.hosts[:1], fleet.workdir)
        for name in self.plan.contenders:
            contender = contenders.CONTENDERS[name]
            self.empty(contender, one)
            try:
                contender.run(one, self.results.images[0].tag)
            finally:
                contender.cleanup(one)
        self.log("warm-up done")

    def repetition(self, run: int) -> None:
        """Every host count and contender once, in an order rotated by `run`. The hosts of a count
        are emptied after its round: a host left running the app (whose HEALTHCHECK runs every
        second) would take CPU from the hosts a smaller count times next."""
        for n in rotated(self.plan.hosts, run):
            for name in rotated(self.plan.contenders, run):
                self.contender_round(contenders.CONTENDERS[name], self.fleets[n], run)
            probes.reset_hosts(self.lab, self.fleets[n].hosts)

    def profile_phases(self) -> None:
        """`deploy -v` cold and warm per host count, with each line's time: where the time goes."""
        first, second = self.results.images
        for n in self.plan.hosts:
            fleet = self.fleets[n]
            probes.reset_hosts(self.lab, fleet.hosts)
            for scenario, image in (("cold", first), ("warm", second)):
                self.results.phases.append(profile(fleet, image.tag, scenario))
            self.lab.stop_registry()
            try:
                self.results.phases.append(profile(fleet, first.tag, "rollback", verb="rollback"))
            finally:
                self.lab.start_registry()
        self.log("phase profiles done")


def run_session(lab: Lab, plan: Plan, results: Results, run: int, *, workdir: Path, log: Log,
                first: bool = True, last: bool = True) -> None:
    """One repetition on a lab the caller holds (its lock): set up, measure, clean up."""
    if first and not results.machine:
        results.machine = probes.machine(lab)
        results.settings = settings()
    with Session(lab, plan, results, workdir, log) as session:
        if first and plan.warmup:
            session.warmup()
        session.repetition(run)
        if last and plan.phases:
            session.profile_phases()
            results.costs = costs.unit_costs(lab, session.hosts[0], results.images[1].tag)


def startup_times(runs: int) -> dict[str, list[float]]:
    """Wall seconds of `deploy --help`, and of `python -c pass` for the interpreter's own share."""
    deploy = shutil.which("deploy")
    commands = {
        "deploy --help": [deploy, "--help"] if deploy else [sys.executable, "-m", "deployer", "--help"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {}
    for name, argv in commands.items():
        subprocess.run(argv, capture_output=True, check=True)  # warm the page cache and bytecode
        times[name] = [timed(_quiet(argv))[0] for _ in range(runs)]
    return times


def _quiet(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, capture_output=True, check=True)

    return run


def run_benchmark(plan: Plan, log: Log, *, workdir: Path, save: Callable[[Results], None]) -> Results:
    """Every repetition in its own session (lab lock taken and released), then start-up times."""
    results = Results(plan, started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    for run in range(plan.runs):
        with lab_lock():
            log(f"session {run + 1}/{plan.runs}: lab with {max(plan.hosts)} hosts")
            lab = Lab.up(hosts=max(plan.hosts), at_least=True)
            try:
                run_session(lab, plan, results, run, workdir=workdir, log=log,
                            first=run == 0, last=run == plan.runs - 1)
            finally:
                lab.close()
        save(results)
    results.startup = startup_times(plan.help_runs)
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save(results)
    return results
