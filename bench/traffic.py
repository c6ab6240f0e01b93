"""Requests to the app while `deploy` switches releases: where they go, and what failed when.

Both modes get the same bounded load from tests/e2e/load.py (`Load`): `RATE` requests a
second to every host, each on a new connection, only to the lab hosts' own addresses.
Without the proxy a request goes to the port the app publishes (8080); behind the proxy, to
the proxy's port 80 with the app's host name in the Host header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.e2e.load import Sample, Target, request, summarize
from tests.lab import LabHost

PROXY_NAME = "web.lab.test"  # the host name the app answers to behind the proxy
APP_PORT = 8080  # what the lab app publishes without the proxy (8080:8080)
PROXY_PORT = 80
PATH = "/version"
RATE = 20.0  # requests a second per host
LEAD = 0.5  # seconds of load before the rollout starts
TAIL = 0.5  # seconds of load after the rollback ended
MAX_SECONDS = 300.0  # the load stops by itself after this, whatever happens
EXAMPLES = 3  # failed requests a result keeps, for the report


def targets(hosts: Sequence[LabHost], proxied: bool) -> list[Target]:
    """One `/version` target per host: the app's own port, or the proxy's with the app's name."""
    if proxied:
        return [Target(host.address, PROXY_PORT, host_header=PROXY_NAME, path=PATH) for host in hosts]
    return [Target(host.address, APP_PORT, path=PATH) for host in hosts]


def serving(hosts: Sequence[LabHost], proxied: bool) -> list[str]:
    """What each host answers on /version in that mode, or `HTTP <status>` / the error."""
    answers = []
    for target in targets(hosts, proxied):
        sample = request(target, timeout=3)
        if sample.error is not None:
            answers.append(sample.error)
        else:
            answers.append(sample.body if sample.status == 200 else f"HTTP {sample.status}")
    return answers


@dataclass
class LoadResult:
    """Requests sent during one verb (rollout or rollback) of one run: how many, how many failed."""

    contender: str
    verb: str
    hosts: int
    run: int
    total: int
    failed: int
    rate: float  # requests a second per host
    examples: list[str] = field(default_factory=list)  # a few failed requests, as text
    error: str = ""  # the verb itself failed


def windows(samples: Iterable[Sample], bounds: Sequence[tuple[str, float]]) -> dict[str, list[Sample]]:
    """Samples by the window their request was sent in.

    `bounds` are (name, start) in time order, start in time.monotonic() seconds; a window runs
    until the next one starts, the last one to the end. A request sent before the first start
    counts in the first window.
    """
    found: dict[str, list[Sample]] = {name: [] for name, _ in bounds}
    if not bounds:
        return found
    for sample in samples:
        name = bounds[0][0]
        for candidate, start in bounds:
            if sample.at >= start:
                name = candidate
        found[name].append(sample)
    return found


def results_of(samples: Iterable[Sample], bounds: Sequence[tuple[str, float]], *, contender: str,
               hosts: int, run: int, rate: float, errors: dict[str, str] | None = None) -> list[LoadResult]:
    """One LoadResult per window: total and failed requests, a few failures as text."""
    results = []
    for verb, items in windows(samples, bounds).items():
        summary = summarize(items, examples=EXAMPLES)
        results.append(LoadResult(contender, verb, hosts, run, summary.total, summary.failed, rate,
                                  [str(example) for example in summary.examples],
                                  (errors or {}).get(verb, "")))
    return results
