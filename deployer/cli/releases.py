"""Rollout and rollback, and the release a run pins by digest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from deployer.cli.base import (
    AcceptKeysOption,
    BreakLockOption,
    HostsOption,
    JsonOption,
    RolesOption,
    Session,
    TagOption,
    app,
    connected,
    select_roles,
    session_of,
)
from deployer.errors import DeployError

if TYPE_CHECKING:
    from deployer.config import Inventory
    from deployer.local_registry import LocalRegistry
    from deployer.plan import Release
    from deployer.report import Report


def pinned_release(session: Session, inventory: Inventory, tag: str | None, local: LocalRegistry | None) -> Release:
    """The release to roll out: --tag or HEAD's tag, pinned to its digest in the registry (or in
    the *local* one, which then serves it)."""
    from deployer import config, registry, source
    from deployer.errors import TagNotFound
    from deployer.plan import Release

    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    if local is None:
        digest = registry.digest(inventory, tag, password=config.registry_password(inventory))
    else:
        config.release_tag(tag, "--tag")
        found = registry.local_digest(local.address, inventory.app.image, tag)
        if found is None:
            raise TagNotFound(
                f"{inventory.app.image}:{tag} is not in the local registry ({local.storage})",
                hint="app.registry is false: deploy build puts each image there; build that commit here",
            )
        digest = found
    session.out.progress(f"release {tag} is {inventory.app.image}@{digest}")
    return Release(inventory.app.image, tag, digest, served_by=None if local is None else local.port)


@contextmanager
def _serving(session: Session, inventory: Inventory) -> Iterator[LocalRegistry | None]:
    """This machine's registry for the length of the run, when the app has none (else None)."""
    if not inventory.app.no_registry:
        yield None
        return
    from deployer import local_registry

    with local_registry.serve(inventory.app.name) as local:
        session.out.progress(f"serving releases from the local registry on {local.address} ({local.storage})")
        yield local


@contextmanager
def _reporting(session: Session, as_json: bool) -> Iterator[None]:
    """Show the per-host report an error carries before the error itself."""
    try:
        yield
    except DeployError as exc:
        if exc.report is not None:
            _finish(session, exc.report, as_json)
        raise


def _finish(session: Session, report: Report, as_json: bool) -> None:
    if as_json:
        session.out.json(report.to_dict())
    else:
        session.out.report(report)


@app.command()
def rollout(
    ctx: typer.Context,
    hosts: HostsOption,
    tag: TagOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands for each host; change nothing.")
    ] = False,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
    roles: RolesOption = None,
) -> None:
    """Pull the release on every host, then switch them batch by batch, health-gated: on each
    host, every role it runs (or --roles).

    On a Swarm cluster: create or update the app's service, and let Swarm roll its tasks.
    """
    from deployer import config, hooks, targets

    session = session_of(ctx)
    inventory = session.inventory()
    selected, only = select_roles(inventory, hosts, roles)
    ended = hooks.Ended("rollout", [host.name for host in selected], tag or "")
    with hooks.after(inventory, session.out, ended, enabled=not dry_run):
        target = targets.pick(selected)
        secrets = config.container_secrets(inventory)
        password = config.registry_password(inventory)
        with _serving(session, inventory) as local:  # the app's own registry on this machine, or None
            release = pinned_release(session, inventory, tag, local)
            ended.release = release.tag
            lock_for = None if dry_run else f"rollout {release.tag}"
            with (
                _reporting(session, as_json),
                session.out.watching(as_json=as_json or dry_run),
                connected(session, inventory, selected, accept_new_host_keys, lock_for, break_lock, roles=only) as fleet,
            ):
                if dry_run:
                    plans = target.rollout_plan(fleet, release, password=password, secrets=secrets)
                    if as_json:
                        session.out.json(plans)
                    else:
                        for host, lines in plans.items():
                            session.out.result(f"{host}:")
                            for line in lines:
                                session.out.result(f"  {line}")
                    return
                report = target.rollout(fleet, release, password=password, secrets=secrets)
        _finish(session, report, as_json)
        ended.every_host_ok = report.ok


@app.command()
def rollback(
    ctx: typer.Context,
    hosts: HostsOption,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="TAG", help="Release tag to go back to (still kept on the hosts)."),
    ] = None,
    as_json: JsonOption = False,
    accept_new_host_keys: AcceptKeysOption = False,
    break_lock: BreakLockOption = False,
    roles: RolesOption = None,
) -> None:
    """Put every host (every role of it, or --roles) back on the release it ran before (or
    --to TAG), from what it kept.

    On a Swarm cluster: move the service back to that release's digest and secrets.
    """
    from deployer import config, hooks, targets

    to = None if to is None else config.release_tag(to)
    session = session_of(ctx)
    inventory = session.inventory()
    selected, only = select_roles(inventory, hosts, roles)
    ended = hooks.Ended("rollback", [host.name for host in selected], to or "")
    with hooks.after(inventory, session.out, ended):
        target = targets.pick(selected)
        lock_for = f"rollback {to or ''}".strip()
        with (
            _reporting(session, as_json),
            session.out.watching(as_json=as_json),
            connected(session, inventory, selected, accept_new_host_keys, lock_for, break_lock, roles=only) as fleet,
        ):
            report = target.rollback(fleet, to)
        ended.release = report.release or ""
        _finish(session, report, as_json)
        ended.every_host_ok = report.ok
