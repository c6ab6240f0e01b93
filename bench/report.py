"""Turn results into statistics, target checks and a Markdown report; save and load them as JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .contenders import CONTENDERS, ROLLBACK, ROLLBACKS, STATUS
from .measure import Plan, Results, Sample
from .phases import Phases, serial_steps
from .sample import Image, Layer, Push
from .traffic import LoadResult

LABELS = {**{name: c.label for name, c in CONTENDERS.items()},
          **{c.name: c.label for c in (*ROLLBACKS.values(), STATUS)}}
PROXY = "deploy-proxy"
#: the most deploy (proxy) may take, as a multiple of deploy's plain rollout
PROXY_LIMIT = 1.2


@dataclass(frozen=True)
class Stat:
    """Median and range of a few measurements."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat | None:
        """The statistics of `values`, or None when there are none."""
        items = list(values)
        if not items:
            return None
        return cls(statistics.median(items), min(items), max(items), len(items))

    def seconds(self) -> str:
        """`1.23 s (1.10-1.40)`."""
        if self.count == 1:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def samples(results: Results, contender: str, scenario: str, hosts: int) -> list[Sample]:
    """The successful samples of one contender, scenario and host count."""
    return [s for s in results.samples if s.contender == contender and s.scenario == scenario
            and s.hosts == hosts and not s.error]


def time_stat(results: Results, contender: str, scenario: str, hosts: int) -> Stat | None:
    """Wall seconds of one contender, scenario and host count."""
    return Stat.of(s.seconds for s in samples(results, contender, scenario, hosts))


def _median(results: Results, contender: str, scenario: str, hosts: int) -> float | None:
    found = time_stat(results, contender, scenario, hosts)
    return found.median if found else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _per_host(results: Results, contender: str, scenario: str, field: str) -> Stat | None:
    values: list[float] = []
    for sample in results.samples:
        if sample.contender == contender and sample.scenario == scenario and not sample.error:
            values += getattr(sample, field)
    return Stat.of(values)


def changed_layer_bytes(results: Results) -> int | None:
    """Compressed size of the layers release 2 adds to release 1."""
    if len(results.images) != 2:
        return None
    return sum(layer.size for layer in results.images[1].new_layers(results.images[0]))


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One target: what is compared, the measured value, the limit, and whether it was met."""

    name: str
    measured: float | None
    limit: float
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        """True when measured ≤ limit; None when not measured."""
        return None if self.measured is None else self.measured <= self.limit

    def verdict(self) -> str:
        """`met (23 % margin)` or `missed by 12 %`."""
        if self.measured is None:
            return "not measured"
        if self.limit == 0:
            return "met" if self.met else "**missed**"
        if self.met:
            return f"met ({(1 - self.measured / self.limit) * 100:.0f} % margin)"
        return f"**missed** by {(self.measured / self.limit - 1) * 100:.0f} %"


def targets(results: Results) -> list[Target]:
    """The issue's targets, evaluated on the medians (N = the largest host count measured)."""
    big = max(results.plan.hosts)

    def med(contender: str, scenario: str, hosts: int) -> float | None:
        return _median(results, contender, scenario, hosts)

    def cpu(hosts: int) -> float | None:
        found = Stat.of(s.cpu_seconds for s in samples(results, "deploy", "warm", hosts))
        return found.median if found else None

    found: list[Target] = []
    for hosts in sorted({8, big} & set(results.plan.hosts)):
        for scenario in ("cold", "warm"):
            found.append(Target(f"N={hosts} {scenario}: deploy / parallel ssh loop",
                                _ratio(med("deploy", scenario, hosts), med("loop-par", scenario, hosts)), 1.05))
    found.append(Target("N=1 warm: deploy / parallel ssh loop",
                        _ratio(med("deploy", "warm", 1), med("loop-par", "warm", 1)), 1.25))
    for scenario in ("cold", "warm"):
        found.append(Target(f"N={big} {scenario}: deploy / Ansible",
                            _ratio(med("deploy", scenario, big), med("ansible", scenario, big)), 0.3))
    for hosts in sorted({8, big} & set(results.plan.hosts)):
        found.append(Target(f"N={hosts}: deploy rollback (registry stopped) / parallel loop's warm rollout",
                            _ratio(med(ROLLBACK.name, "rollback", hosts), med("loop-par", "warm", hosts)), 0.6))
    if big > 1:
        one, most = cpu(1), cpu(big)
        added = (most - one) / (big - 1) * 1000 if one is not None and most is not None else None
        found.append(Target(f"deploy's CPU per added host, warm, 1 to {big} hosts", added, 10, " ms"))
    if PROXY in results.plan.contenders:
        for hosts in sorted({1, big} & set(results.plan.hosts)):
            for scenario in ("cold", "warm"):
                found.append(Target(f"N={hosts} {scenario}: deploy (proxy) / deploy",
                                    _ratio(med(PROXY, scenario, hosts), med("deploy", scenario, hosts)),
                                    PROXY_LIMIT))
        if results.loads:
            failed = [r.failed for r in results.loads if r.contender == PROXY and not r.error]
            found.append(Target("failed requests under load, deploy (proxy), rollouts and rollbacks",
                                sum(failed) if failed else None, 0, ""))
    startup = Stat.of(results.startup.get("deploy --help", []))
    found.append(Target("`deploy --help` wall time", startup.median if startup else None, 0.3, " s"))
    pulled = _per_host(results, "deploy", "warm", "registry_bytes")
    found.append(Target("bytes pulled per host on a code-only change / changed layer",
                        _ratio(pulled.median if pulled else None, changed_layer_bytes(results)), 1.1))
    connections = [c for s in results.samples if s.contender.startswith("deploy") and not s.error
                   for c in s.ssh_connections]
    found.append(Target("SSH connections per host per deploy run (most seen)",
                        max(connections) if connections else None, 1, ""))
    return found


# ---------------------------------------------------------------- Markdown


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _mb(size: float) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _times_section(results: Results) -> list[str]:
    names = list(results.plan.contenders)
    rows = []
    for hosts in results.plan.hosts:
        for scenario in ("cold", "warm"):
            ours = _median(results, "deploy", scenario, hosts)
            row = [str(hosts), scenario]
            for name in names:
                found = time_stat(results, name, scenario, hosts)
                cell = found.seconds() if found else "-"
                ratio = _ratio(found.median if found else None, ours)
                if name != "deploy" and ratio is not None:
                    cell += f" **x{ratio:.2f}**"
                row.append(cell)
            rows.append(row)
    return [
        "### Rollout wall time",
        "",
        f"Seconds, median (min-max) of {results.plan.runs} run(s); **x** is the tool's median / "
        "deploy's (above 1: deploy is faster).",
        "",
        *_table(["hosts", "release", *(LABELS[n] for n in names)], rows),
    ]


def _scaling_section(results: Results) -> list[str]:
    hosts = results.plan.hosts
    if len(hosts) < 2 or 1 not in hosts:
        return []
    rows = []
    for name in ("deploy", PROXY, "loop-par", "loop-seq", "ansible"):
        if name not in results.plan.contenders:
            continue
        for scenario in ("cold", "warm"):
            medians = [_median(results, name, scenario, n) for n in hosts]
            base = medians[hosts.index(1)]
            ratios = [_ratio(m, base) for m in medians]
            rows.append([LABELS[name], scenario, *(f"{m:.2f}" if m else "-" for m in medians),
                         *(f"{r:.2f}" if r else "-" for n, r in zip(hosts, ratios, strict=True) if n != 1)])
    header = ["tool", "release", *(f"T({n}) s" for n in hosts), *(f"T({n})/T(1)" for n in hosts if n != 1)]
    cpu_rows = []
    for deploy in ("deploy", PROXY):
        for n in hosts:
            for scenario in ("cold", "warm", "rollback"):
                name = ROLLBACKS[deploy].name if scenario == "rollback" else deploy
                found = Stat.of(s.cpu_seconds for s in samples(results, name, scenario, n))
                if found:
                    cpu_rows.append([LABELS[deploy], str(n), scenario, f"{found.median:.2f}",
                                     f"{found.median / n:.2f}"])
    return ["### Scaling", "", *_table(header, rows),
            "CPU seconds (user + system) of the `deploy` process, median:", "",
            *_table(["mode", "hosts", "run", "CPU s", "CPU s per host"], cpu_rows)]


def _bytes_section(results: Results) -> list[str]:
    if len(results.images) != 2:
        return []
    second = results.images[1]
    changed = changed_layer_bytes(results) or 0
    lines = [
        "### Code-only change: bytes moved",
        "",
        f"Release 2 differs from release 1 in its top layer only. Image: {_mb(second.total_bytes)} "
        f"compressed in {len(second.layers)} layers ({', '.join(_mb(layer.size) for layer in second.layers)}) "
        f"plus a {_mb(second.config_bytes)} config; the changed layer is {_mb(changed)}.",
        "",
    ]
    push_rows = []
    for index, push in enumerate(results.pushes[-2:]):
        push_rows.append([f"release {index + 1}", f"{push.seconds:.2f}", _mb(push.stored_bytes),
                          _mb(push.received_bytes), f"{push.layers_pushed} / {push.layers_skipped}"])
    lines += ["`deploy push` (registry storage growth; bytes received on the registry's interface):", "",
              *_table(["push", "s", "stored", "received", "layers sent / skipped"], push_rows)]
    rows = []
    for name in results.plan.contenders:
        for scenario, reference in (("cold", second.total_bytes), ("warm", changed)):
            found = _per_host(results, name, scenario, "registry_bytes")
            if found:
                what = "whole image" if scenario == "cold" else "changed layer"
                rows.append([LABELS[name], scenario, _mb(found.median), _mb(found.high),
                             f"{found.median / reference:.3f} x {what}"])
    lines += ["Bytes each host received from the registry (IP level, TLS included), per host and run:", "",
              *_table(["tool", "release", "median", "max", "ratio"], rows)]
    return lines


def _status_section(results: Results) -> list[str]:
    """`deploy status` of the hosts, each serving the warm release, next to the warm rollout."""
    rows = []
    for n in results.plan.hosts:
        found = time_stat(results, STATUS.name, "status", n)
        cpu = Stat.of(s.cpu_seconds for s in samples(results, STATUS.name, "status", n))
        warm = _median(results, "deploy", "warm", n)
        if found and cpu:
            rows.append([str(n), found.seconds(), f"{cpu.median:.2f}", f"{warm:.2f}" if warm else "-"])
    if not rows:
        return []
    return ["### deploy status", "",
            "`deploy status --hosts lab` right after the warm rollout: connect, read each host's state and "
            "inspect its container, one table.", "",
            *_table(["hosts", "status s", "CPU s", "warm rollout s"], rows)]


def _rollback_section(results: Results) -> list[str]:
    rows = []
    for deploy, rollback in ROLLBACKS.items():
        for n in results.plan.hosts:
            back = time_stat(results, rollback.name, "rollback", n)
            warm = _median(results, deploy, "warm", n)
            if back and warm:
                rows.append([LABELS[deploy], str(n), back.seconds(), f"{warm:.2f}", f"{back.median / warm:.2f}"])
    if not rows:
        return []
    return ["### Rollback with the registry stopped", "",
            *_table(["mode", "hosts", "rollback s", "warm rollout s", "ratio"], rows)]


def load_totals(loads: Iterable[LoadResult], contender: str, verb: str, hosts: int) -> tuple[int, int, int]:
    """(requests, failed requests, runs) of one deploy mode's verb at a host count, summed over
    the runs whose verb succeeded."""
    found = [r for r in loads if (r.contender, r.verb, r.hosts) == (contender, verb, hosts) and not r.error]
    return sum(r.total for r in found), sum(r.failed for r in found), len(found)


def _load_section(results: Results) -> list[str]:
    if not results.loads:
        return []
    rate = results.loads[0].rate
    rows = []
    for contender in ROLLBACKS:
        for n in results.plan.hosts:
            cells = []
            for verb in ("rollout", "rollback"):
                total, failed, runs = load_totals(results.loads, contender, verb, n)
                cells.append(f"{failed} of {total} ({runs} run{'s' if runs != 1 else ''})" if runs else "-")
            if any(cell != "-" for cell in cells):
                rows.append([LABELS[contender], str(n), *cells])
    examples = [f"- {LABELS.get(r.contender, r.contender)} N={r.hosts} {r.verb}: {example}"
                for r in results.loads for example in r.examples[:1]][:6]
    errors = [f"- run {r.run + 1} N={r.hosts} {LABELS.get(r.contender, r.contender)} {r.verb}: "
              f"{r.error.splitlines()[0]}" for r in results.loads if r.error]
    return ["### Failed requests under load", "",
            f"{rate:g} requests a second to every host during a rollout of release 2 and the rollback "
            "that follows (untimed runs): failed requests of all requests sent, summed over the runs.", "",
            *_table(["mode", "hosts", "rollout", "rollback"], rows),
            *(["A failed request of each kind:", "", *examples, ""] if examples else []),
            *(["Runs that failed under load:", "", *errors, ""] if errors else [])]


def _startup_section(results: Results) -> list[str]:
    rows = []
    for name, values in results.startup.items():
        found = Stat.of(values)
        if found:
            rows.append([f"`{name}`", f"{found.median:.3f}", f"{found.low:.3f}", f"{found.high:.3f}",
                         str(found.count)])
    if not rows:
        return []
    return ["### Start-up", "", *_table(["command", "median s", "min s", "max s", "runs"], rows)]


def _ssh_section(results: Results) -> list[str]:
    rows = []
    for name in [*results.plan.contenders, *(c.name for c in ROLLBACKS.values())]:
        cells = []
        for scenario in ("cold", "warm", "rollback"):
            found = _per_host(results, name, scenario, "ssh_connections")
            cells.append(f"{found.median:g} (max {found.high:g})" if found else "-")
        if any(cell != "-" for cell in cells):
            rows.append([LABELS[name], *cells])
    return ["### SSH connections per host per run", "",
            "New TCP connections to port 22, counted by an iptables rule on each host: median (max).",
            "", *_table(["tool", "cold", "warm", "rollback"], rows)]


def _phases_section(results: Results) -> list[str]:
    if not results.phases:
        return []
    rows = [[str(p.hosts), p.scenario, f"{p.seconds:.2f}", f"{p.cpu_seconds:.2f}",
             " · ".join(f"{label} {seconds:.2f}" for label, seconds in p.phases),
             f"{p.commands_per_host:g}", f"{p.health_probes_per_host:g}"] for p in results.phases]
    serial_rows = [[str(p.hosts), p.scenario,
                    *(f"{steps[key]:.2f}" if key in steps else "-"
                      for key in ("connect + lock", "history appends", "unlock + exit"))]
                   for p in results.phases for steps in [serial_steps(p.events, p.seconds)]]
    return ["### Where deploy's time goes", "",
            "One `deploy -v` run each, every output line stamped with its time (seconds per phase):",
            "", *_table(["hosts", "run", "total s", "CPU s", "phases (s)", "host commands per host",
                         "of which health probes"], rows),
            "Steps that grow with the host count although they could run at once, and the tail (s): "
            "from the `release` line to the first host command (connect in parallel, then lock host "
            "after host); from the first history append to the last (host after host); from the "
            "last host command (the lock release) to the end of the process.", "",
            *_table(["hosts", "run", "connect + lock", "history appends", "unlock + exit"], serial_rows)]


def _costs_section(results: Results) -> list[str]:
    rows = []
    for name, values in results.costs.items():
        found = Stat.of(values)
        if found:
            rows.append([name, f"{found.median * 1000:.0f}", f"{found.low * 1000:.0f}",
                         f"{found.high * 1000:.0f}", str(found.count)])
    if not rows:
        return []
    return ["### Unit costs", "", "Each measured alone against one idle lab host (bench/costs.py):", "",
            *_table(["what", "median ms", "min ms", "max ms", "runs"], rows)]


def _targets_section(results: Results) -> list[str]:
    rows = [[t.name, "-" if t.measured is None else f"{t.measured:.3g}{t.unit}", f"≤ {t.limit:g}{t.unit}",
             t.verdict()] for t in targets(results)]
    return ["### Targets", "", *_table(["target", "measured", "limit", "result"], rows)]


def render(results: Results) -> str:
    """The whole report as Markdown (headings from level 3 down, to nest in a page)."""
    failures = [s for s in results.samples if s.error]
    lines = [
        f"Measured {results.started} - {results.finished or 'unfinished'}; "
        f"hosts {', '.join(map(str, results.plan.hosts))}; {results.plan.runs} run(s) each, interleaved.",
        "",
        *(f"- {key}: {value}" for key, value in results.machine.items()),
        "",
        *_targets_section(results),
        *_times_section(results),
        *_scaling_section(results),
        *_rollback_section(results),
        *_status_section(results),
        *_load_section(results),
        *_bytes_section(results),
        *_ssh_section(results),
        *_phases_section(results),
        *_startup_section(results),
        *_costs_section(results),
        "### Settings",
        "",
        *(f"- {key}: {value}" for key, value in results.settings.items()),
        "",
    ]
    if failures:
        lines += ["### Failed runs", "", *(f"- run {s.run + 1} N={s.hosts} {s.contender} {s.scenario}: "
                                          f"{s.error.splitlines()[0] if s.error else ''}" for s in failures), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- JSON


def save(results: Results, path: Path) -> None:
    """Write the results as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=1) + "\n")


def load(path: Path) -> Results:
    """Read results written by :func:`save`."""
    data: dict[str, Any] = json.loads(path.read_text())
    plan: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                            for key, value in data["plan"].items()}
    return Results(
        plan=Plan(**plan),
        machine=data["machine"],
        settings=data["settings"],
        images=[Image(i["tag"], i["version"], tuple(Layer(**layer) for layer in i["layers"]), i["config_bytes"])
                for i in data["images"]],
        pushes=[Push(**push) for push in data["pushes"]],
        samples=[Sample(**s) for s in data["samples"]],
        startup=data["startup"],
        costs=data.get("costs", {}),
        loads=[LoadResult(**r) for r in data.get("loads", [])],
        phases=[Phases(**{**p, "phases": [tuple(x) for x in p["phases"]],
                          "events": [tuple(e) for e in p["events"]]}) for p in data["phases"]],
        started=data["started"],
        finished=data["finished"],
    )
