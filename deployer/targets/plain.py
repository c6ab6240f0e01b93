"""Plain hosts: each host runs the app's container itself, switched batch by batch, health-gated.

The promise kept here: when a run ends, every host it touched serves a release that passed
its health check, and the fleet is on one release unless the user allowed failures
(`app.rollout.max_failures`). How one host switches is a :class:`~deployer.switch.Switch`
from a strategy in :mod:`deployer.switch`; this module runs it, and undoes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import SecretStr

from deployer import accessories, commands, health, plan, proxy, roles, switch
from deployer.errors import ConnectError, DeployError, Interrupted, RolloutError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.plan import Release
from deployer.progress import Phase
from deployer.report import HostReport, Outcome, Report, StatusRow
from deployer.roles import Role
from deployer.state import Entry, HostState
from deployer.switch import Action, Drain, Route, Switch, WaitHealthy
from deployer.targets import operate, proxied


class HostFailed(DeployError):
    """One host failed its switch; carries what it serves after being put back."""

    def __init__(self, message: str, serving: str | None) -> None:
        super().__init__(message)
        self.serving = serving


def _perform(fleet: Fleet, host: Host, actions: list[Action], *, putting_back: bool = False) -> None:
    for action in actions:
        if not putting_back:
            fleet.out.watch.update(host.name, _phase(action))
        if isinstance(action, WaitHealthy):
            first = None
            if action.start is not None:
                first = commands.parse_inspect(fleet.run(host, action.start))
                if not putting_back:
                    fleet.out.watch.update(host.name, "health")
            health.wait(fleet, host, action.container, role=action.role, first=first, interruptible=not putting_back)
        elif isinstance(action, Route):
            proxied.route(fleet, host, action.container)
        elif isinstance(action, Drain):
            proxied.drain(fleet, host, action.container, action.stop_timeout)
        else:
            fleet.run(host, action)


#: the live view's last word on a host that did not switch
_ENDED: dict[Outcome, Phase] = {
    "failed": "failed",
    "unreachable": "failed",
    "reverted": "reverted",
    "untouched": "untouched",
}


def _phase(action: Action) -> Phase:
    """What a host is doing while *action* runs, as the live view says it."""
    if isinstance(action, WaitHealthy):
        return "health" if action.start is None else "switch"
    return "drain" if isinstance(action, Drain) else "switch"


def _activate(fleet: Fleet, host: Host, step: Switch, record: Callable[[], None]) -> None:
    """Run a switch and record it; on any failure put the host back and raise HostFailed."""
    reached = 0
    try:
        for part in step.steps:
            _perform(fleet, host, list(part.does))
            reached += 1
        record()
    except ConnectError:
        raise
    except Exception as exc:  # whatever stopped the switch, the host goes back
        serving = _undo(fleet, host, step, min(reached, len(step.steps) - 1))
        message = exc.message if isinstance(exc, DeployError) else f"unexpected {type(exc).__name__}: {exc}"
        where = f"put back on {serving}" if serving else "serving nothing"
        raise HostFailed(f"{message}; {where}", serving) from exc


def _undo(fleet: Fleet, host: Host, step: Switch, reached: int | None = None) -> str | None:
    """Undo a switch up to step *reached*; return the release the host serves afterwards."""
    fleet.out.watch.update(host.name, "revert")
    try:
        _perform(fleet, host, step.undo(reached), putting_back=True)
        return step.previous
    except DeployError as exc:
        fleet.out.warn(f"{host}: could not put {step.previous or 'it'} back: {exc.message}")
        return None


@dataclass(frozen=True)
class RoleMove:
    """What a run does to one role on one host: the switch (None: it runs the release already)."""

    role: Role
    switch: Switch | None
    #: the role's state on the host before the run
    state: HostState
    #: the release and digest it moves to
    release: str
    digest: str

    def line(self, fleet: Fleet, action: str, result: str) -> Entry:
        """The history line about this move."""
        return fleet.entry(action, self.release, self.digest, result, self.state.current, self.role.name)


def _switch_in_batches(fleet: Fleet, report: Report, plan_for: Callable[[Host], list[RoleMove]]) -> None:
    """Switch hosts batch by batch, each host all its roles; past `max_failures` or on Ctrl-C,
    put every switched host (every role of it) back."""
    app, action, release = fleet.app, report.action, report.release or ""
    moves = {host: plan_for(host) for host in fleet.hosts}
    previous = {host: roles.releases({m.role.name: m.state.current for m in moves[host]}) for host in fleet.hosts}
    steps = {
        host: switch.chain(release, previous[host], [m.switch for m in moves[host] if m.switch is not None])
        for host in fleet.hosts
    }
    switched: list[Host] = []
    failed: dict[Host, DeployError] = {}

    def halted() -> bool:
        return len(failed) > app.rollout.max_failures or fleet.cancel.is_set()

    def changed(host: Host) -> list[RoleMove]:
        return [move for move in moves[host] if move.switch is not None]

    def activate(host: Host) -> None:
        step = steps[host]
        if step is None:
            fleet.out.watch.update(host.name, "unchanged")
            return
        _activate(
            fleet,
            host,
            step,
            lambda: fleet.record_all(host, [m.line(fleet, action, "ok") for m in changed(host)], required=True),
        )
        fleet.out.watch.update(host.name, "healthy")

    for batch in plan.batches(fleet.hosts, app.rollout.batch_size):
        if halted():
            break
        fleet.out.progress(f"switching {', '.join(h.name for h in batch)}")
        for host, done in fleet.each(batch, activate).items():
            if done.error is None:
                switched.append(host)
            else:
                failed[host] = done.error

    put_back: dict[Host, str | None] = {}
    if halted():
        to_undo = [host for host in switched if steps[host] is not None]
        if to_undo:
            fleet.out.progress(f"putting {', '.join(h.name for h in to_undo)} back on their previous release")
        undone = fleet.each(to_undo, lambda host: _undo(fleet, host, steps[host]))  # type: ignore[arg-type]
        put_back = {host: outcome.value for host, outcome in undone.items()}

    results: dict[Host, list[Entry]] = {}  # the history lines still to write
    for host in fleet.hosts:
        error = failed.get(host)
        if host in put_back:
            serving = put_back[host]
            outcome: Outcome = "reverted" if serving == previous[host] else "failed"
            report.hosts.append(HostReport(host.name, outcome, serving, "put back because the run stopped"))
            results[host] = [m.line(fleet, action, "reverted") for m in changed(host)]
        elif error is not None:
            kind: Outcome = "unreachable" if isinstance(error, ConnectError) else "failed"
            serving = error.serving if isinstance(error, HostFailed) else None
            if isinstance(error, Interrupted):
                kind, serving = "reverted", previous[host]
            report.hosts.append(HostReport(host.name, kind, serving, error.message))
            results[host] = [m.line(fleet, action, "failed") for m in changed(host) or moves[host]]
        elif host in switched:
            results[host] = [
                m.line(fleet, action, "ok")
                for m in moves[host]
                if m.switch is None and m.state.activations()[-1:] != [m.release]
            ]
            serving_now = roles.releases({m.role.name: m.release for m in moves[host]})
            report.hosts.append(HostReport(host.name, "switched" if changed(host) else "unchanged", serving_now))
        else:
            report.hosts.append(
                HostReport(host.name, "untouched", previous[host], "not reached: the run stopped")
            )
        ended = _ENDED.get(report.hosts[-1].outcome)
        if ended is not None:
            fleet.out.watch.update(host.name, ended)

    fleet.each(
        [host for host, lines in results.items() if lines],
        lambda host: fleet.record_all(host, results[host]),
    )
    if fleet.cancel.is_set():
        raise Interrupted(f"{action} interrupted; switched hosts were put back", report=report)
    if len(failed) > app.rollout.max_failures:
        raise RolloutError(
            f"{action} of {release} failed on {len(failed)} host(s); "
            + ("every switched host was put back" if put_back else "no other host was switched"),
            report=report,
        )


class PlainHosts:
    """The target for hosts that each run the app's containers, one per role."""

    def rollout(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> Report:
        """Pull *release* once on every host, then switch them batch by batch, each host every
        role it runs, health-gated."""
        app = fleet.app
        report = Report("rollout", release.tag)
        placed = roles.placement(fleet.inventory, fleet.hosts, fleet.roles)
        _prepare_proxy(fleet, placed)
        hosts = [host for host in fleet.hosts if host in placed]
        fleet.out.progress(f"pulling {release.reference} on {len(hosts)} host(s)")

        def pull(host: Host) -> None:
            count = commands.PullCount()
            fleet.out.watch.update(host.name, "pull")

            def heard(line: str) -> None:
                nonlocal count
                before, count = count, count.add(line)
                if count != before:
                    fleet.out.watch.update(host.name, "pull", count.done, count.total)

            have = fleet.states[host]
            if release.served_by is None:
                for command in plan.pull_steps(release, app.registry_settings, password, have):
                    fleet.run(host, command, on_line=heard)
            elif plan.pull_steps(release, None, None, have):  # empty: the host keeps the release
                with fleet.transports[host].forward(release.served_by) as port:
                    for command in plan.pull_steps(release, None, None, have, f"127.0.0.1:{port}"):
                        fleet.run(host, command, on_line=heard)
            fleet.out.watch.update(host.name, "pulled", count.done, count.total)

        pulled = fleet.each(hosts, pull)
        failed = {host: outcome.error for host, outcome in pulled.items() if not outcome.ok}
        for host in failed:
            fleet.out.watch.update(host.name, "failed")
        if fleet.cancel.is_set():
            raise Interrupted("rollout interrupted while pulling; no container was replaced")
        if failed:
            report.hosts = [
                HostReport(
                    h.name,
                    "failed" if h in failed else "untouched",
                    roles.releases({r.name: fleet.states[h].of_role(r.name).current for r in placed.get(h, [])}),
                    str(failed.get(h) or ""),
                )
                for h in fleet.hosts
            ]
            reasons = "\n  ".join(str(error) for error in failed.values())
            raise RolloutError(f"pull failed, so no container was replaced:\n  {reasons}", report=report)

        if any(move.switch is not None for host in hosts for move in _to(fleet, host, release, secrets)):
            operate.before_switch(fleet, release, secrets)
        _switch_in_batches(fleet, report, lambda host: _to(fleet, host, release, secrets))
        _prune(fleet, placed, release.tag)
        return report

    def rollout_plan(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> dict[str, list[str]]:
        """What `rollout` would run on each host, in order, given what each host runs now."""
        app = fleet.app
        plans, after_pull = {}, {}
        for host, placed in roles.placement(fleet.inventory, fleet.hosts, fleet.roles).items():
            lines = [str(proxy.boot(app.proxy))] if app.proxy is not None and any(r.proxy for r in placed) else []
            pulls = [str(c) for c in plan.pull_steps(release, app.registry_settings, password, fleet.states[host])]
            if release.served_by is not None and pulls:
                lines.append(f"# forward {plan.FORWARDED_PLACEHOLDER} of the host to this machine's registry")
            lines += pulls
            after_pull[host.name] = len(lines)
            for move in _to(fleet, host, release, secrets):
                name = f"{move.role.name}: " if app.roles else ""
                if move.switch is None:
                    lines.append(f"# {name}already serving {release.tag}: nothing to switch")
                    continue
                if app.roles:
                    lines.append(f"# role {move.role.name}")
                lines += switch.lines(
                    move.switch.actions(), wait=f"# wait for health: {health.describe(move.role.healthcheck)}"
                )
            plans[host.name] = lines
        first = fleet.hosts[0] if fleet.hosts else None
        if first is not None and any(m.switch is not None for h in fleet.hosts for m in _to(fleet, h, release, secrets)):
            pulled = after_pull[first.name]
            plans[first.name][pulled:pulled] = [
                f"# before_switch, once: {commands.one_off(app, commands.one_off_name(app, 'ID'), release.reference, commands.hook_argv(hook), secrets)}"
                for hook in app.hooks.before_switch
            ]
        return plans

    def rollback(self, fleet: Fleet, to: str | None) -> Report:
        """Switch every role of every host back to its previous release (or *to*), from what
        the host kept of that role."""
        moves: dict[Host, list[RoleMove]] = {}
        problems = []
        placed = roles.placement(fleet.inventory, fleet.hosts, fleet.roles)
        for host in fleet.hosts:
            moves[host] = []
            for role in placed.get(host, []):
                state = fleet.states[host].of_role(role.name)
                where = f"{host} ({role.name})" if fleet.app.roles else str(host)
                target = to or state.previous()
                kept = state.container(target) if target is not None else None
                if target is None:
                    problems.append(f"{where}: no previous release recorded")
                elif kept is None:
                    names = ", ".join(c.release for c in state.containers) or "none"
                    problems.append(f"{where}: release {target} is no longer on this host (kept: {names})")
                else:
                    running = state.running
                    step = (
                        None
                        if running is not None and running.release == target
                        else switch.plan(switch.Move(fleet.app, state, target, role=role, accessories=bool(fleet.inventory.accessories)))
                    )
                    moves[host].append(RoleMove(role, step, state, target, kept.digest))
        if problems:
            raise UsageError("nothing to roll back to, so nothing was changed:\n  " + "\n  ".join(problems))
        _prepare_proxy(fleet, placed)
        releases = {move.release for found in moves.values() for move in found}
        report = Report("rollback", releases.pop() if len(releases) == 1 else "mixed")
        _switch_in_batches(fleet, report, lambda host: moves[host])
        return report

    def status(self, fleet: Fleet, hosts: list[Host]) -> list[StatusRow]:
        """Per host and role: the release it serves, its digest, state, health and start time."""
        placed = roles.placement(fleet.inventory, hosts, fleet.roles)

        def one(host: Host) -> list[StatusRow]:
            return [_status_row(fleet, host, role.name) for role in placed.get(host, [])]

        rows: list[StatusRow] = []
        for host, outcome in fleet.each([h for h in hosts if h in placed], one).items():
            if outcome.value is not None:
                rows += outcome.value
            else:
                rows.append(StatusRow(host.name, state="error", error=outcome.error.message if outcome.error else ""))
        return rows


def _status_row(fleet: Fleet, host: Host, role: str) -> StatusRow:
    """The status of one role on one host."""
    state = fleet.states[host].of_role(role)
    running = state.running
    kept = tuple(c.release for c in state.containers if not c.running)
    if running is None:
        return StatusRow(host.name, kept=kept, role=role)
    info = commands.parse_inspect(fleet.run(host, commands.inspect(running.name)))
    return StatusRow(
        host.name,
        release=running.release,
        digest=running.digest,
        state=info.status,
        health=info.health or "-",
        uptime=plan.uptime(info.started_at, datetime.now(timezone.utc)),
        started=info.started_at,
        restarts=info.restarts,
        kept=kept,
        role=role,
    )


def _prepare_proxy(fleet: Fleet, placed: Mapping[Host, list[Role]]) -> None:
    """Boot the proxy on the hosts where the run switches the role behind it."""
    if fleet.app.proxy is None:
        return
    hosts = [host for host, found in placed.items() if any(role.proxy for role in found)]
    if hosts:
        proxied.prepare(fleet, hosts)


def _to(fleet: Fleet, host: Host, release: Release, secrets: Mapping[str, SecretStr]) -> list[RoleMove]:
    """Per role of the run on *host*: the switch to *release*, None when it already serves it."""
    moves = []
    for role in roles.on_host(fleet.inventory, host, fleet.roles):
        state = fleet.states[host].of_role(role.name)
        running = state.running
        step = (
            None
            if running is not None and running.release == release.tag and running.digest == release.digest
            else switch.plan(switch.Move(fleet.app, state, release.tag, release, secrets, role, bool(fleet.inventory.accessories)))
        )
        moves.append(RoleMove(role, step, state, release.tag, release.digest))
    return moves


def _prune(fleet: Fleet, placed: Mapping[Host, list[Role]], release: str) -> None:
    """Keep `app.keep_releases` stopped releases per role on each host; remove older containers,
    and their images once no container of any role uses them."""
    app = fleet.app
    keep = app.keep_releases

    def prune(host: Host) -> None:
        before = fleet.states[host]
        names = [r.name for r in placed[host]]
        crowded = [
            name
            for name in names
            if len({c.name for c in before.of_role(name).containers} | {commands.container_name(app, release, name)})
            > keep + 1
        ]
        if not crowded:
            return  # what each role had before this run plus the new release: nothing to prune
        state = fleet.read_state(host)
        old = [c for name in crowded for c in state.of_role(name).retained(keep)[1]]
        if not old:
            return
        fleet.run(host, commands.remove_containers([c.name for c in old]))
        removed = {c.name for c in old}
        in_use = {c.digest for c in state.containers if c.name not in removed}
        images = list(
            dict.fromkeys(
                ref
                for c in old
                if c.digest not in in_use
                for ref in (f"{app.image}:{c.release}", f"{app.image}@{c.digest}")
                if not accessories.uses_image(fleet.inventory, ref, c.digest)
            )
        )
        if images:
            fleet.run(host, commands.remove_images(images))

    for host, outcome in fleet.each([h for h in fleet.hosts if h in placed], prune).items():
        if not outcome.ok and outcome.error is not None:
            fleet.out.warn(f"{host}: old releases not pruned: {outcome.error.message}")
