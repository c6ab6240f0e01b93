"""Registry-less rollouts: `deploy` with `app.registry: false` against `docker save | ssh host docker load`.

    python -m bench --no-registry [--hosts 1,8] [--runs 3] [--json PATH] [--markdown PATH]

The lab registry is stopped for the whole session: nothing may come from it. The sample image
(bench/sample.py: a 40 MiB base layer, busybox, the app with a 1 MiB bundle) is built twice by
`deploy build` with `registry: false`, which leaves each release in the local engine and in
`deploy`'s registry cache (under the session's own XDG_CACHE_HOME). Per host count and
contender, rotated per repetition: hosts emptied, then *cold* (release 1) and *warm* (release 2,
which differs in its top layer only). Each host counts the bytes it receives on port 22 (an
iptables chain), so every byte of an image that reaches a host is counted, whoever sends it.

Contenders:

- ``deploy``: ``deploy rollout`` with the lab's default inventory, ``app.registry: false``,
  ``image: acme/web``, all hosts in one batch;
- ``saveload-seq``: for each host in turn, ``docker save IMAGE | ssh HOST 'docker load && docker rm -f
  && docker run ... && curl /health until 200'``;
- ``saveload-par``: the same, one background pipeline per host, then ``wait``.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.e2e.support import deploy, ok
from tests.lab import Lab, LabHost, lab_lock

from . import probes, sample
from .contenders import (
    CONTAINER,
    DEPLOY_OVERRIDES,
    GROUP,
    HEALTH_INTERVAL,
    HEALTH_TRIES,
    HEALTH_URL,
    RUN_OPTIONS,
    TIMEOUT,
    per_host,
    ssh_options,
)
from .measure import rotated

Log = Callable[[str], None]
IMAGE = "acme/web"
CHAIN = "DEPLOYBENCHSSH"
CONTENDERS = {
    "deploy": "deploy rollout (registry: false)",
    "saveload-seq": "docker save | ssh docker load, sequential",
    "saveload-par": "docker save | ssh docker load, parallel",
}
SCENARIOS = ("cold", "warm")
#: the issue's goals: deploy cold faster than the parallel loop, and warm at least 5 times faster
WARM_FACTOR = 5.0


@dataclass
class Run:
    """One timed rollout."""

    contender: str
    scenario: str
    hosts: int
    run: int
    seconds: float
    ssh_bytes: list[int]  # bytes each host received on port 22
    error: str = ""


@dataclass
class NoRegistryResults:
    """Everything one registry-less benchmark produced."""

    hosts: tuple[int, ...]
    runs: int
    images: list[sample.Image] = field(default_factory=list)
    samples: list[Run] = field(default_factory=list)
    started: str = ""
    finished: str = ""


# ---------------------------------------------------------------- the contenders


def inventory_overrides() -> dict[str, object]:
    """What `deploy` is given on top of the lab's default inventory."""
    return {**DEPLOY_OVERRIDES, "image": IMAGE, "registry": False}


def remote_script(tag: str) -> str:
    """What each host runs on the image `docker save` sends it: load, replace the container, wait."""
    image = shlex.quote(f"{IMAGE}:{tag}")
    return " && ".join([
        "docker load -q >/dev/null",
        f"{{ docker rm -f {CONTAINER} >/dev/null 2>&1 || true; }}",
        f"docker run -d --name {CONTAINER} {RUN_OPTIONS} {image} >/dev/null",
        f"i=0 && until curl -fsS -o /dev/null --max-time 2 {HEALTH_URL}; do "
        f'i=$((i+1)); [ "$i" -lt {HEALTH_TRIES} ] || exit 1; sleep {HEALTH_INTERVAL}; done',
    ])


def loop_script(lab: Lab, hosts: Sequence[LabHost], tag: str, *, parallel: bool) -> str:
    """The local bash loop: `docker save IMAGE | ssh HOST SCRIPT` per host, in turn or all at once."""
    addresses = " ".join(host.address for host in hosts)
    image = shlex.quote(f"{IMAGE}:{tag}")
    pipeline = f'docker save {image} | ssh {shlex.join(ssh_options(lab))} "$host" "$remote"'
    script = per_host(addresses, pipeline, parallel=parallel)
    return f"set -u -o pipefail\nremote={shlex.quote(remote_script(tag))}\n" + script


class _Session:
    """The lab held for the benchmark, its registry stopped: inventories, releases, counters."""

    def __init__(self, lab: Lab, hosts: tuple[int, ...], workdir: Path, log: Log) -> None:
        self.lab, self.log, self.workdir = lab, log, workdir
        self.hosts = lab.hosts[: max(hosts)]
        self.cache = workdir / "cache"
        self.inventories = {n: workdir / f"inventory-{n}.yaml" for n in hosts}

    def env(self) -> dict[str, str]:
        return {"XDG_CACHE_HOME": str(self.cache)}

    def prepare(self, bundle_bytes: int, base_bytes: int) -> list[sample.Image]:
        """Reset the lab, stop its registry, build release 1 and 2 without a registry."""
        self.log("preparing: lab reset, registry stopped, two releases built with registry: false")
        self.lab.reset()
        self.lab.stop_registry()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for n, path in self.inventories.items():
            self.lab.write_inventory(path, hosts=list(self.hosts[:n]), app_overrides=inventory_overrides())
        images = []
        any_inventory = str(next(iter(self.inventories.values())))
        for version in ("bench-1", "bench-2"):
            sample.commit_release(self.lab, version, bundle_bytes, base_bytes)
            built = ok(deploy(self.lab, "-i", any_inventory, "build", env=self.env())).stdout.strip()
            tag = built.splitlines()[-1].rsplit(":", 1)[1]
            images.append(self.image(tag, version))
        script = (f"iptables -w -N {CHAIN} 2>/dev/null || iptables -w -F {CHAIN}; "
                  f"iptables -w -A {CHAIN} -p tcp --dport 22 -j RETURN && "
                  f"{{ iptables -w -C INPUT -j {CHAIN} 2>/dev/null || iptables -w -I INPUT 1 -j {CHAIN}; }}")
        probes.parallel(lambda host: self.lab.host_exec(host, ["sh", "-c", script]), self.hosts)
        return images

    def image(self, tag: str, version: str) -> sample.Image:
        """The release as `deploy`'s registry cache stores it (read from its files)."""
        v2 = self.cache / "deploy" / "registry" / "web" / "docker" / "registry" / "v2"
        digest = (v2 / "repositories" / IMAGE / "_manifests/tags" / tag / "current/link").read_text().strip()
        data = json.loads((v2 / "blobs/sha256" / digest[7:9] / digest[7:] / "data").read_text())
        layers = tuple(sample.Layer(str(item["digest"]), int(item["size"])) for item in data["layers"])
        return sample.Image(tag, version, layers, int(data["config"]["size"]))

    def close(self) -> None:
        script = (f"iptables -w -D INPUT -j {CHAIN} 2>/dev/null; iptables -w -F {CHAIN} 2>/dev/null; "
                  f"iptables -w -X {CHAIN} 2>/dev/null; true")
        probes.parallel(lambda host: self.lab.host_exec(host, ["sh", "-c", script], check=False), self.hosts)
        self.lab.start_registry()

    def counters(self, hosts: Sequence[LabHost]) -> list[int]:
        def one(host: LabHost) -> int:
            listing = self.lab.host_exec(host, ["iptables", "-w", "-L", CHAIN, "-n", "-v", "-x"]).stdout
            return int(listing.splitlines()[2].split()[1])

        return probes.parallel(one, hosts)

    def rollout(self, contender: str, n: int, tag: str) -> None:
        hosts = self.hosts[:n]
        if contender == "deploy":
            result = deploy(self.lab, "-i", str(self.inventories[n]), "rollout", "--hosts", GROUP,
                            "--tag", tag, env=self.env(), timeout=TIMEOUT)
            if result.code != 0:
                raise RuntimeError(f"deploy rollout exited {result.code}:\n{result.output}")
            return
        script = loop_script(self.lab, hosts, tag, parallel=contender == "saveload-par")
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{contender} exited {done.returncode}:\n{done.stdout}{done.stderr}")

    def measure(self, contender: str, n: int, scenario: str, image: sample.Image, run: int) -> Run:
        hosts = self.hosts[:n]
        before = self.counters(hosts)
        error = ""
        started = time.perf_counter()
        try:
            self.rollout(contender, n, image.tag)
            seconds = time.perf_counter() - started
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            seconds, error = 0.0, str(exc)
        after = self.counters(hosts)
        if not error:
            answers = probes.serving(self.lab, hosts)
            if answers != [image.version] * n:
                error = f"hosts serve {answers}, not {image.version}"
        found = Run(contender, scenario, n, run, seconds, [a - b for a, b in zip(after, before, strict=True)],
                    error)
        self.log(f"run {run + 1} N={n} {contender:<13} {scenario:<5} "
                 + (f"FAILED: {error.splitlines()[0]}" if error else f"{seconds:6.2f} s"))
        return found


def run(hosts: tuple[int, ...], runs: int, workdir: Path, log: Log,
        bundle_bytes: int = sample.DEFAULT_BUNDLE_BYTES, base_bytes: int = sample.BASE_BYTES) -> NoRegistryResults:
    """The whole benchmark, holding the lab (its lock) throughout."""
    results = NoRegistryResults(hosts, runs, started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    with lab_lock():
        lab = Lab.up(hosts=max(3, max(hosts)), at_least=True)
        session = _Session(lab, hosts, workdir, log)
        try:
            results.images = session.prepare(bundle_bytes, base_bytes)
            first, second = results.images
            for repetition in range(runs):
                for n in rotated(hosts, repetition):
                    for contender in rotated(list(CONTENDERS), repetition):
                        probes.reset_hosts(lab, session.hosts[:n])
                        cold = session.measure(contender, n, "cold", first, repetition)
                        results.samples.append(cold)
                        if not cold.error:
                            results.samples.append(session.measure(contender, n, "warm", second, repetition))
        finally:
            session.close()
            lab.close()
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return results


# ---------------------------------------------------------------- the report


def _median(results: NoRegistryResults, contender: str, scenario: str, n: int,
            value: Callable[[Run], float]) -> float | None:
    values = [value(s) for s in results.samples
              if (s.contender, s.scenario, s.hosts) == (contender, scenario, n) and not s.error]
    return statistics.median(values) if values else None


def render(results: NoRegistryResults) -> str:
    """Markdown: wall time and bytes per host, medians, and the issue's two goals."""
    first, second = results.images
    changed = sum(layer.size for layer in second.new_layers(first))
    lines = [
        "## Without a registry: deploy against docker save | ssh docker load",
        "",
        f"{results.runs} run(s), {results.started} to {results.finished}. Image: {first.total_bytes / 2**20:.1f} MiB "
        f"compressed; release 2 changes one layer of {changed / 2**20:.2f} MiB. Medians; bytes are what each "
        "host received on port 22 (mean over hosts).",
        "",
        "| hosts | scenario | contender | seconds | MiB per host |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n in results.hosts:
        for scenario in SCENARIOS:
            for contender, name in CONTENDERS.items():
                label = name.replace("|", "\\|")
                seconds = _median(results, contender, scenario, n, lambda s: s.seconds)
                received = _median(results, contender, scenario, n,
                                   lambda s: statistics.mean(s.ssh_bytes) / 2**20)
                if seconds is None or received is None:
                    lines.append(f"| {n} | {scenario} | {label} | failed | - |")
                else:
                    lines.append(f"| {n} | {scenario} | {label} | {seconds:.2f} | {received:.2f} |")
    lines += ["", "| goal | hosts | measured | met |", "| --- | --- | --- | --- |"]
    for n in results.hosts:
        ours_cold = _median(results, "deploy", "cold", n, lambda s: s.seconds)
        loop_cold = _median(results, "saveload-par", "cold", n, lambda s: s.seconds)
        ours_warm = _median(results, "deploy", "warm", n, lambda s: s.seconds)
        loop_warm = _median(results, "saveload-par", "warm", n, lambda s: s.seconds)
        if None not in (ours_cold, loop_cold, ours_warm, loop_warm):
            assert ours_cold and loop_cold and ours_warm and loop_warm
            lines.append(f"| cold: faster than the parallel loop | {n} | {ours_cold:.2f} s vs {loop_cold:.2f} s "
                         f"| {'yes' if ours_cold < loop_cold else 'no'} |")
            lines.append(f"| warm: {WARM_FACTOR:g}x faster than the parallel loop | {n} | "
                         f"{loop_warm / ours_warm:.1f}x | {'yes' if loop_warm >= WARM_FACTOR * ours_warm else 'no'} |")
    return "\n".join(lines) + "\n"


def save(results: NoRegistryResults, path: Path) -> None:
    """The results as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=1))
