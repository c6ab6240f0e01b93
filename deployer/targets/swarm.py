"""Swarm clusters: the app's service moved to a release by Swarm's own rolling update.

A Swarm group is reached through one manager, which holds the deploy lock and the release
history like any host (:mod:`deployer.fleet`). Only the way the running containers change
differs: one service per app is created or updated to the release's digest, Swarm replaces
its tasks (health-gated by the image's HEALTHCHECK: a task only counts as running once
healthy) and rolls a failed update back by itself. deploy waits until the service has
converged, within ``swarm.timeout``; when it does not, deploy puts it back itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

from pydantic import SecretStr

from deployer.commands import RemoteCommand, login_for
from deployer.config import App, Swarm
from deployer.errors import DeployError, Interrupted, RolloutError, UsageError
from deployer.fleet import Fleet
from deployer.inventory import Host
from deployer.plan import Release
from deployer.report import HostReport, Report, StatusRow
from deployer.state import Entry
from deployer.targets import swarm_service as service_commands
from deployer.targets.swarm_service import ClusterState, Service, ServiceChanges, secret_names, secret_targets

#: seconds between two looks at a converging service
POLL = 1.0
#: UpdateStatus states in which Swarm has given an update up, in words
_GIVEN_UP = {
    "paused": "Swarm paused the update",
    "rollback_started": "Swarm rolled the update back",  # and deploy waits until it has
    "rollback_completed": "Swarm rolled the update back",
    "rollback_paused": "Swarm paused rolling the update back",
}
_ADDRESS = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):")


# ---------------------------------------------------------------- decisions


def check(app: App, swarm: Swarm, state: ClusterState) -> None:
    """Refuse, before anything changes, what the cluster cannot do as the inventory asks."""
    bound = [port for port in app.container.ports if _ADDRESS.match(port)]
    if bound:
        raise UsageError(
            f"app.container.ports: {', '.join(bound)}: a Swarm service publishes a port on every "
            "address of its node, not on one; nothing was changed",
            hint="drop the address for a Swarm group",
        )
    if not state.nodes:
        raise UsageError("no node of the cluster is ready and active; nothing was changed")
    if app.container.ports and isinstance(swarm.replicas, int) and swarm.replicas > len(state.nodes):
        raise UsageError(
            f"{swarm.replicas} replicas publish ports, but only {len(state.nodes)} node(s) are ready: "
            "a node runs at most one task that publishes a port in host mode; nothing was changed",
            hint='lower swarm.replicas, or use replicas: "global"',
        )
    service = state.service
    if service is not None and (service.replicas is None) != (swarm.replicas == "global"):
        mode = "global" if service.replicas is None else "replicated"
        raise UsageError(
            f"the service {app.name} is {mode} and Swarm cannot change a service's mode; nothing was changed",
            hint=f"remove it on the manager (docker service rm {app.name}), then roll out again",
        )


def refuse_hooks(app: App) -> None:
    """A Swarm cluster runs no ``before_switch`` hook: refuse before anything changes."""
    if app.hooks.before_switch:
        raise UsageError(
            "app.hooks.before_switch: a Swarm cluster does not run it (its nodes' volumes and secrets "
            "are Swarm's, not a one-off container's on the manager); nothing was changed",
            hint="run the command by hand before the rollout, with an inventory for the cluster that has "
            "no before_switch",
        )


def converged(state: ClusterState, digest: str) -> bool:
    """Every task the service wants runs *digest*, running (healthy), and no update is under way."""
    service, tasks = state.service, state.current
    if service is None or service.update in ("updating", "rollback_started"):
        return False
    return len(tasks) == state.expected and all(t.running and t.digest == digest for t in tasks)


def given_up(state: ClusterState, digest: str, created: bool) -> str | None:
    """Why the service will not converge on *digest*: Swarm gave the update up, or (for a service
    just created, which Swarm only restarts) a task of it failed. None while there is hope."""
    service = state.service
    if service is None:
        return "the service is gone"
    if service.update in _GIVEN_UP:
        return f"{_GIVEN_UP[service.update]} ({service.message})"
    failed = [t for t in state.tasks if t.digest == digest and t.state in ("failed", "rejected")]
    if created and failed:
        return f"a task on {failed[0].node or 'no node'} {failed[0].state}: {failed[0].error}"
    return None


def waiting_for(state: ClusterState, digest: str) -> str:
    """What the service still waits for, in a few words."""
    ready = [t for t in state.current if t.running and t.digest == digest]
    behind = [t for t in state.current if t not in ready]
    text = f"{len(ready)} of {state.expected} task(s) running {digest[:19]}"
    if behind:
        task = behind[0]
        on = "" if task.digest == digest else f" on {task.digest[:19]}"
        text += f"; {task.node or 'a task'}: {task.state}{on} {task.error}".rstrip()
    return text


def secret_changes(service: Service, secrets: Mapping[str, str]) -> ServiceChanges:
    """Swap the service's secrets for *secrets* (target -> name), leaving the unchanged ones."""
    return ServiceChanges(
        secret_rm=tuple(
            sorted(name for target, name in service.secrets.items() if secrets.get(target) != name)
        ),
        secret_add=tuple(
            service_commands.secret_spec(name, target)
            for target, name in secrets.items()
            if service.secrets.get(target) != name
        ),
    )


def changes(app: App, service: Service, secrets: Mapping[str, str]) -> ServiceChanges:
    """What to remove from and add to the service so that it matches the inventory."""
    spec = app.container
    ports = [service_commands.publish_spec(port) for port in spec.ports]
    mounts = {volume.split(":")[1]: service_commands.mount_spec(volume) for volume in spec.volumes}
    swap = secret_changes(service, secrets)
    return ServiceChanges(
        env_rm=tuple(sorted(set(service.env) - set(spec.env))),
        env_add=tuple(f"{key}={value}" for key, value in spec.env.items() if service.env.get(key) != value),
        publish_rm=tuple(sorted(service.ports - set(ports))),
        publish_add=tuple(port for port in ports if port not in service.ports),
        mount_rm=tuple(sorted(set(service.mounts) - set(mounts))),
        mount_add=tuple(mount for target, mount in mounts.items() if service.mounts.get(target) != mount),
        secret_rm=swap.secret_rm,
        secret_add=swap.secret_add,
    )


def apply(
    app: App,
    swarm: Swarm,
    release: Release,
    service: Service | None,
    secrets: Mapping[str, str],
    password: SecretStr | None,
) -> RemoteCommand:
    """The command that creates the service on *release*, or updates it to *release*."""
    login = login_for(app.registry_settings, password)
    if service is None:
        return service_commands.create_service(
            app, swarm, release.tag, release.reference, release.digest, secrets, login=login
        )
    return service_commands.update_service(
        app,
        swarm,
        release.tag,
        release.reference,
        release.digest,
        changes(app, service, secrets),
        login=login,
    )


def last_activation(
    history: tuple[Entry, ...], release: str | None = None, *, besides: str = ""
) -> Entry | None:
    """The latest successful switch to *release* (any release but *besides* when None)."""
    for entry in reversed(history):
        if entry.result == "ok" and (entry.release == release if release else entry.release != besides):
            return entry
    return None


# ---------------------------------------------------------------- the run


class _Stopped(DeployError):
    """The service will not converge; carries the last state seen and whether Swarm went back itself."""

    def __init__(self, message: str, state: ClusterState, *, interrupted: bool = False) -> None:
        super().__init__(message)
        self.state = state
        self.interrupted = interrupted

    @property
    def swarm_went_back(self) -> bool:
        """True when Swarm is already rolling the update back."""
        return self.state.service is not None and self.state.service.update.startswith("rollback")


def _cluster(fleet: Fleet) -> tuple[Host, Swarm]:
    host = fleet.hosts[0]  # inventory.one_kind made it the run's only host
    assert host.swarm is not None
    if fleet.app.roles:
        raise UsageError(
            f"{host}: a Swarm cluster runs the app as one service, and app.roles is set: roles run on "
            "plain hosts only; nothing was changed",
            hint="select plain hosts' groups; deploy a Swarm cluster from an inventory without app.roles",
        )
    return host, host.swarm


def read(fleet: Fleet, host: Host) -> ClusterState:
    """Ask the manager for the ready nodes, the service and its tasks."""
    return service_commands.parse_cluster(fleet.run(host, service_commands.read_swarm(fleet.app)))


def _wait(
    fleet: Fleet,
    host: Host,
    digest: str,
    stop: Callable[[ClusterState], str | None],
    interruptible: bool = True,
) -> ClusterState:
    """Poll until the service has converged on *digest*; raise _Stopped when it will not."""
    assert host.swarm is not None
    deadline = time.monotonic() + host.swarm.timeout
    shown = ""
    while True:
        state = read(fleet, host)
        if converged(state, digest):
            return state
        reason = stop(state)
        if reason is not None:
            raise _Stopped(reason, state)
        if interruptible and fleet.cancel.is_set():
            raise _Stopped("interrupted", state, interrupted=True)
        waiting = waiting_for(state, digest)
        if time.monotonic() >= deadline:
            raise _Stopped(f"not converged within {host.swarm.timeout:g} s: {waiting}", state)
        if waiting != shown:
            fleet.out.progress(waiting, host=host.name)
            shown = waiting
        time.sleep(POLL)


def _paused(state: ClusterState) -> str | None:
    """Why a rollback will not finish: Swarm paused it (a rolled-back task failed too)."""
    service = state.service
    if service is not None and service.update in ("paused", "rollback_paused"):
        return f"{_GIVEN_UP[service.update]} ({service.message})"
    return None


def _put_back(fleet: Fleet, host: Host, previous: Service | None, stopped: _Stopped) -> ClusterState | None:
    """Return the service to *previous*, or remove it when it had none; the state it settles in."""
    if previous is None:
        fleet.run(host, service_commands.remove_service(fleet.app))
        return None
    if not stopped.swarm_went_back:
        fleet.run(host, service_commands.undo_update(fleet.app))
    return _wait(fleet, host, previous.digest, _paused, interruptible=False)


def _names(fleet: Fleet, host: Host, *known: tuple[str, str]) -> dict[str, str]:
    """Release names by digest: from the cluster's history, then *known* (digest, release) pairs."""
    names = {entry.digest: entry.release for entry in fleet.states[host].history}
    names.update(known)
    return names


def _switch(
    fleet: Fleet, host: Host, report: Report, release: Release, previous: Service | None, secrets: list[str]
) -> None:
    """Wait for the service to converge on *release*, else put it back; report per node, record."""
    action, before = report.action, previous.release if previous else None
    try:
        state = _wait(fleet, host, release.digest, lambda s: given_up(s, release.digest, previous is None))
    except _Stopped as stopped:
        where = _failed(fleet, host, report, release, previous, stopped)
        fleet.record(host, action, release.tag, release.digest, "failed", before, secrets)
        if stopped.interrupted:
            raise Interrupted(f"{action} interrupted; {where}", report=report) from None
        raise RolloutError(
            f"{action} of {release.tag} failed on {host}: {stopped.message}; {where}", report=report
        ) from None
    report.hosts = [HostReport(f"{host}/{task.node}", "switched", release.tag) for task in state.current]
    fleet.record(host, action, release.tag, release.digest, "ok", before, secrets)


def _failed(
    fleet: Fleet, host: Host, report: Report, release: Release, previous: Service | None, stopped: _Stopped
) -> str:
    """Put the service back, report every node (what it serves now, why the release failed there),
    and say where the service is."""
    errors = {
        t.node: f"{t.state}: {t.error}" for t in stopped.state.tasks if t.digest == release.digest and t.error
    }
    try:
        settled = _put_back(fleet, host, previous, stopped)
        where = (
            f"the service is back on {previous.release or previous.digest}"
            if previous
            else "the service was removed"
        )
    except DeployError as exc:
        fleet.out.warn(f"{host}: could not put the service back: {exc.message}")
        settled, where = stopped.state, "the service could not be put back"
    known = [(release.digest, release.tag)] + ([(previous.digest, previous.release)] if previous else [])
    names = _names(fleet, host, *known)
    serving = {t.node: names.get(t.digest, t.digest) for t in (settled.current if settled else [])}
    nodes = sorted(({t.node for t in stopped.state.current} | set(errors) | set(serving)) - {""})
    report.hosts = [
        HostReport(
            f"{host}/{node}",
            "reverted" if previous is not None and serving.get(node) == previous.release else "failed",
            serving.get(node),
            errors.get(node, stopped.message),
        )
        for node in nodes
    ]
    return where


def _already(fleet: Fleet, host: Host, report: Report, state: ClusterState, release: Release) -> bool:
    """True, with the report filled in, when the service runs *release* everywhere already."""
    service = state.service
    if service is None or service.release != release.tag or not converged(state, release.digest):
        return False
    report.hosts = [HostReport(f"{host}/{task.node}", "unchanged", release.tag) for task in state.current]
    if fleet.states[host].activations()[-1:] != [release.tag]:
        secrets = sorted(service.secrets.values())
        fleet.record(host, report.action, release.tag, release.digest, "ok", release.tag, secrets)
    return True


def _record_late(fleet: Fleet, host: Host, state: ClusterState) -> None:
    """Record a release the service converged on after the last run lost the manager mid-wait."""
    service = state.service
    history = fleet.states[host]
    if service is None or not service.release or not converged(state, service.digest):
        return
    last = history.activations()[-1:]
    if last != [service.release]:
        fleet.out.warn(f"{host}: recording {service.release}, which an earlier run left unrecorded")
        previous = last[0] if last else None
        secrets = sorted(service.secrets.values())
        fleet.record(host, "rollout", service.release, service.digest, "ok", previous, secrets)
        fleet.read_state(host)


def unused_secrets(app: App, history: tuple[Entry, ...], service: Service | None, existing: list[str]) -> list[str]:
    """Secret versions no release a rollback could go to uses: neither the service's nor those of
    the last `app.keep_releases` other activations."""
    keep = set(service.secrets.values()) if service is not None else set()
    kept = 0
    for entry in reversed(history):
        if kept > app.keep_releases:
            break
        if entry.result == "ok":
            keep.update(entry.secrets or [])
            kept += 1
    return [name for name in existing if name not in keep]


def _prune_secrets(fleet: Fleet, host: Host) -> None:
    """Remove the app's secret versions no kept release uses (Docker refuses one still in use)."""
    try:
        existing = service_commands.parse_secrets(fleet.run(host, service_commands.list_secrets(fleet.app)))
        state = read(fleet, host)
        unused = unused_secrets(fleet.app, fleet.read_state(host).history, state.service, existing)
        if unused:
            fleet.run(host, service_commands.remove_secrets(unused))
    except DeployError as exc:
        fleet.out.warn(f"{host}: old secret versions not pruned: {exc.message}")


# ---------------------------------------------------------------- the target


class SwarmCluster:
    """The target for a Swarm cluster, changed through one of its managers."""

    def rollout(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> Report:
        """Create or update the cluster's service to *release*; wait until it converges, else put it back."""
        host, swarm = _cluster(fleet)
        app = fleet.app
        refuse_hooks(app)
        state = read(fleet, host)
        check(app, swarm, state)
        _record_late(fleet, host, state)
        report = Report("rollout", release.tag)
        if _already(fleet, host, report, state, release):
            return report
        key = fleet.run(host, service_commands.secret_key(app)).strip() if secrets else ""
        names = secret_names(app, secrets, key)
        for target, name in names.items():
            fleet.run(host, service_commands.create_secret(app, name, secrets[target]))
        if fleet.cancel.is_set():
            raise Interrupted("rollout interrupted; nothing was changed")
        verb = "updating" if state.service else "creating"
        fleet.out.progress(f"{verb} service {app.name} on {release.reference}", host=host.name)
        fleet.run(host, apply(app, swarm, release, state.service, names, password))
        _switch(fleet, host, report, release, state.service, sorted(names.values()))
        if secrets:
            _prune_secrets(fleet, host)
        return report

    def rollout_plan(
        self, fleet: Fleet, release: Release, *, password: SecretStr | None, secrets: Mapping[str, SecretStr]
    ) -> dict[str, list[str]]:
        """What `rollout` would run on the cluster's manager, given what the service runs now."""
        host, swarm = _cluster(fleet)
        app = fleet.app
        refuse_hooks(app)
        state = read(fleet, host)
        check(app, swarm, state)
        service = state.service
        if service is not None and service.release == release.tag and converged(state, release.digest):
            return {host.name: [f"# already serving {release.tag}: nothing to change"]}
        key = fleet.run(host, service_commands.secret_key(app, create=False)).strip() if secrets else ""
        names = secret_names(app, secrets, key)
        lines = [
            str(service_commands.create_secret(app, name, secrets[target])) for target, name in names.items()
        ]
        lines.append(str(apply(app, swarm, release, service, names, password)))
        lines.append(
            f"# then wait until every task runs {release.digest}, healthy, within {swarm.timeout:g} s"
        )
        return {host.name: lines}

    def rollback(self, fleet: Fleet, to: str | None) -> Report:
        """Move the cluster's service back to its previous release (or *to*) and that release's secrets."""
        host, _ = _cluster(fleet)
        state = read(fleet, host)
        _record_late(fleet, host, state)
        app, history = fleet.app, fleet.states[host].history
        service = state.service
        if service is None:
            raise UsageError(
                f"nothing to roll back to, so nothing was changed:\n  {host}: no service {app.name}"
            )
        entry = last_activation(history, to, besides=service.release)
        if entry is None:
            why = f"release {to} was never rolled out here" if to else "no previous release recorded"
            raise UsageError(f"nothing to roll back to, so nothing was changed:\n  {host}: {why}")
        target = Release(app.image, entry.release, entry.digest)
        report = Report("rollback", target.tag)
        if _already(fleet, host, report, state, target):
            return report
        secrets = secret_targets(app, entry.secrets) if entry.secrets is not None else dict(service.secrets)
        fleet.out.progress(f"updating service {app.name} back to {target.reference}", host=host.name)
        fleet.run(
            host,
            service_commands.revert_service(
                app, target.tag, target.reference, target.digest, secret_changes(service, secrets)
            ),
        )
        _switch(fleet, host, report, target, service, sorted(secrets.values()))
        return report

    def status(self, fleet: Fleet, hosts: list[Host]) -> list[StatusRow]:
        """Per task of each cluster's service: release, digest, state, uptime."""
        rows: list[StatusRow] = []
        for host, outcome in fleet.each(hosts, lambda host: read(fleet, host)).items():
            if outcome.value is None:
                rows.append(StatusRow(host.name, state="error", error=str(outcome.error)))
            else:
                rows += _task_rows(fleet, host, outcome.value)
        return rows


def _task_rows(fleet: Fleet, host: Host, state: ClusterState) -> list[StatusRow]:
    service = state.service
    if service is None:
        return [StatusRow(host.name, state="no service")]
    names = _names(fleet, host, (service.digest, service.release))
    settled = converged(state, service.digest)
    return [
        StatusRow(
            f"{host}/{task.node}",
            release=names.get(task.digest),
            digest=task.digest,
            state=task.state,
            uptime=task.since if task.running else "-",
            error=task.error,
            settled=settled,
        )
        for task in state.current
    ]
