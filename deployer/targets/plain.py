"""Plain hosts: each host runs the app's container itself, switched batch by batch, health-gated.

The promise kept here: when a run ends, every host it touched serves a release that passed
its health check, and the fleet is on one release unless the user allowed failures
(`app.rollout.max_failures`). How one host switches is a :class:`~deployer.switch.Switch`
from a strategy in :mod:`deployer.switch`; this module runs it, and undoes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from pydantic import SecretStr

from deployer import accessories, commands, health, plan, proxy, switch
from deployer.errors import ConnectError, DeployError, Interrupted, RolloutError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.plan import Release
from deployer.report import HostReport, Outcome, Report, StatusRow
from deployer.switch import Action, Drain, Route, Switch, WaitHealthy
from deployer.targets import proxied


class HostFailed(DeployError):
    """One host failed its switch; carries what it serves after being put back."""

    def __init__(self, message: str, serving: str | None) -> None:
        super().__init__(message)
        self.serving = serving


def _perform(fleet: Fleet, host: Host, actions: list[Action], *, putting_back: bool = False) -> None:
    for action in actions:
        if isinstance(action, WaitHealthy):
            health.wait(fleet, host, action.container, interruptible=not putting_back)
        elif isinstance(action, Route):
            proxied.route(fleet, host, action.container)
        elif isinstance(action, Drain):
            proxied.drain(fleet, host, action.container)
        else:
            fleet.run(host, action)


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
    try:
        _perform(fleet, host, step.undo(reached), putting_back=True)
        return step.previous
    except DeployError as exc:
        fleet.out.warn(f"{host}: could not put {step.previous or 'it'} back: {exc.message}")
        return None


def _switch_in_batches(
    fleet: Fleet,
    report: Report,
    digest_of: Callable[[Host], str],
    plan_for: Callable[[Host], Switch | None],
) -> None:
    """Switch hosts batch by batch; past `max_failures` or on Ctrl-C, put every switched host back."""
    app, action, release = fleet.app, report.action, report.release or ""
    previous = {host: fleet.states[host].current for host in fleet.hosts}
    steps: dict[Host, Switch | None] = {}
    switched: list[Host] = []
    failed: dict[Host, DeployError] = {}

    def halted() -> bool:
        return len(failed) > app.rollout.max_failures or fleet.cancel.is_set()

    def activate(host: Host) -> None:
        step = steps[host]
        if step is None:
            return
        _activate(
            fleet,
            host,
            step,
            lambda: fleet.record(host, action, release, digest_of(host), "ok", previous[host], required=True),
        )

    for batch in plan.batches(fleet.hosts, app.rollout.batch_size):
        if halted():
            break
        steps.update({host: plan_for(host) for host in batch})
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

    results: dict[Host, str] = {}  # the history lines still to write
    for host in fleet.hosts:
        error = failed.get(host)
        if host in put_back:
            serving = put_back[host]
            outcome: Outcome = "reverted" if serving == previous[host] else "failed"
            report.hosts.append(HostReport(host.name, outcome, serving, "put back because the run stopped"))
            results[host] = "reverted"
        elif error is not None:
            kind: Outcome = "unreachable" if isinstance(error, ConnectError) else "failed"
            serving = error.serving if isinstance(error, HostFailed) else None
            if isinstance(error, Interrupted):
                kind, serving = "reverted", previous[host]
            report.hosts.append(HostReport(host.name, kind, serving, error.message))
            results[host] = "failed"
        elif host in switched:
            changed = steps[host] is not None
            if not changed and fleet.states[host].activations()[-1:] != [release]:
                results[host] = "ok"
            report.hosts.append(HostReport(host.name, "switched" if changed else "unchanged", release))
        else:
            report.hosts.append(
                HostReport(host.name, "untouched", previous[host], "not reached: the run stopped")
            )

    fleet.each(
        list(results),
        lambda host: fleet.record(host, action, release, digest_of(host), results[host], previous[host]),
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
    """The target for hosts that each run the app's container."""

    def rollout(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> Report:
        """Pull *release* on every host, then switch them batch by batch, health-gated."""
        app = fleet.app
        report = Report("rollout", release.tag)
        if app.proxy is not None:
            proxied.prepare(fleet)
        fleet.out.progress(f"pulling {release.reference} on {len(fleet.hosts)} host(s)")

        def pull(host: Host) -> None:
            for command in plan.pull_steps(release, app.registry, password):
                fleet.run(host, command)
            fleet.out.progress("pulled", host=host.name)

        pulled = fleet.each(fleet.hosts, pull)
        failed = {host: outcome.error for host, outcome in pulled.items() if not outcome.ok}
        if fleet.cancel.is_set():
            raise Interrupted("rollout interrupted while pulling; no container was replaced")
        if failed:
            report.hosts = [
                HostReport(
                    h.name,
                    "failed" if h in failed else "untouched",
                    fleet.states[h].current,
                    str(failed.get(h) or ""),
                )
                for h in fleet.hosts
            ]
            reasons = "\n  ".join(str(error) for error in failed.values())
            raise RolloutError(f"pull failed, so no container was replaced:\n  {reasons}", report=report)

        _switch_in_batches(
            fleet, report, lambda host: release.digest, lambda host: _to(fleet, host, release, secrets)
        )
        _prune(fleet, release.tag)
        return report

    def rollout_plan(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> dict[str, list[str]]:
        """What `rollout` would run on each host, in order, given what each host runs now."""
        app = fleet.app
        plans = {}
        for host in fleet.hosts:
            lines = [str(proxy.boot(app.proxy))] if app.proxy is not None else []
            lines += [str(command) for command in plan.pull_steps(release, app.registry, password)]
            step = _to(fleet, host, release, secrets)
            if step is None:
                lines.append(f"# already serving {release.tag}: nothing to switch")
            else:
                lines += [
                    f"# wait for health: {health.describe(app.healthcheck)}"
                    if isinstance(action, WaitHealthy)
                    else str(action)
                    for action in step.actions()
                ]
            plans[host.name] = lines
        return plans

    def rollback(self, fleet: Fleet, to: str | None) -> Report:
        """Switch every host back to its previous release (or *to*) from what it kept locally."""
        targets: dict[Host, str] = {}
        problems = []
        for host in fleet.hosts:
            state = fleet.states[host]
            target = to or state.previous()
            if target is None:
                problems.append(f"{host}: no previous release recorded")
            elif state.container(target) is None:
                kept = ", ".join(c.release for c in state.containers) or "none"
                problems.append(f"{host}: release {target} is no longer on this host (kept: {kept})")
            else:
                targets[host] = target
        if problems:
            raise UsageError("nothing to roll back to, so nothing was changed:\n  " + "\n  ".join(problems))
        if fleet.app.proxy is not None:
            proxied.prepare(fleet)
        releases = set(targets.values())
        report = Report("rollback", releases.pop() if len(releases) == 1 else "mixed")

        def plan_for(host: Host) -> Switch | None:
            state = fleet.states[host]
            if state.running is not None and state.running.release == targets[host]:
                return None
            return switch.plan(
                switch.Move(fleet.app, state, targets[host], accessories=bool(fleet.inventory.accessories))
            )

        def digest_of(host: Host) -> str:
            kept = fleet.states[host].container(targets[host])
            return kept.digest if kept else ""

        _switch_in_batches(fleet, report, digest_of, plan_for)
        return report

    def status(self, fleet: Fleet, hosts: list[Host]) -> list[StatusRow]:
        """Per host: the release it serves, its digest, state, health and start time."""

        def one(host: Host) -> StatusRow:
            state = fleet.states[host]
            running = state.running
            kept = tuple(c.release for c in state.containers if not c.running)
            if running is None:
                return StatusRow(host.name, kept=kept)
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
            )

        return [
            outcome.value
            if outcome.value is not None
            else StatusRow(host.name, state="error", error=outcome.error.message if outcome.error else "")
            for host, outcome in fleet.each(hosts, one).items()
        ]


def _to(fleet: Fleet, host: Host, release: Release, secrets: Mapping[str, SecretStr]) -> Switch | None:
    """The switch that moves *host* to *release*, or None when it already serves it."""
    state = fleet.states[host]
    running = state.running
    if running is not None and running.release == release.tag and running.digest == release.digest:
        return None
    return switch.plan(
        switch.Move(fleet.app, state, release.tag, release, secrets, accessories=bool(fleet.inventory.accessories))
    )


def _prune(fleet: Fleet, release: str) -> None:
    """Keep `app.keep_releases` stopped releases per host; remove older containers and images."""
    app = fleet.app

    def prune(host: Host) -> None:
        names = {c.name for c in fleet.states[host].containers} | {commands.container_name(app, release)}
        if len(names) <= app.keep_releases + 1:
            return  # what the host had before this run plus the new release: nothing to prune
        state = fleet.read_state(host)
        kept, old = state.retained(app.keep_releases)
        if not old:
            return
        fleet.run(host, commands.remove_containers([c.name for c in old]))
        in_use = {c.digest for c in (*kept, *([state.running] if state.running else []))}
        images = [
            ref
            for c in old
            if c.digest not in in_use
            for ref in (f"{app.image}:{c.release}", f"{app.image}@{c.digest}")
            if not accessories.uses_image(fleet.inventory, ref, c.digest)
        ]
        if images:
            fleet.run(host, commands.remove_images(images))

    for host, outcome in fleet.each(fleet.hosts, prune).items():
        if not outcome.ok and outcome.error is not None:
            fleet.out.warn(f"{host}: old releases not pruned: {outcome.error.message}")
