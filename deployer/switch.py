"""A switch: the ordered steps that move one host to a release, each with what puts it back.

A strategy is a function that returns a :class:`Switch`; the target runs any of them the same
way. :func:`stop_first` stops the running release before starting the next (needed while a
container publishes the host's ports). :func:`start_first` starts the next release beside the
running one behind the host's reverse proxy, gates it on health, moves traffic in one atomic
change, drains the old release and only then stops it: no request is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from deployer import accessories, commands, proxy, roles
from deployer.commands import RemoteCommand
from deployer.config import DEFAULT_ROLE, App
from deployer.plan import Release
from deployer.roles import Role
from deployer.state import HostState


@dataclass(frozen=True)
class WaitHealthy:
    """Wait until a container passes its role's health check (and its watch window); *start*,
    when set, is run first: it starts the container and prints its state as
    :func:`commands.inspect` does, the first look of the wait (see :func:`started`)."""

    container: str
    role: str = DEFAULT_ROLE
    start: RemoteCommand | None = None

    def __str__(self) -> str:
        return f"# wait until {self.container} is healthy"


def started(container: str, role: str, *before: RemoteCommand) -> WaitHealthy:
    """Run *before*, start *container* and wait for its health: one round trip to its first look."""
    return WaitHealthy(container, role, commands.chain(*before, commands.start(container), commands.inspect(container)))


@dataclass(frozen=True)
class Route:
    """Point the app's route on the host's proxy at a container (None: take the route away)."""

    container: str | None

    def __str__(self) -> str:
        return f"# route the app's traffic to {self.container}" if self.container else "# remove the app's route"


@dataclass(frozen=True)
class Drain:
    """Wait until the requests and connections in flight to a container have ended (bounded),
    then stop it, waiting up to *stop_timeout* seconds (kept for rollback)."""

    container: str
    stop_timeout: int

    def __str__(self) -> str:
        return f"# wait until no request is in flight to {self.container}, then stop it"


Action = RemoteCommand | WaitHealthy | Route | Drain


@dataclass(frozen=True)
class Step:
    """What one step does, and what puts the host back if it, or a later step, fails."""

    does: tuple[Action, ...]
    undo: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Move:
    """What a strategy plans from: the app, the state of the role on the host, and the release
    to move it to, from a fresh container of *image* (with *secrets*), else from the container
    the host kept. *role* defaults to the web role (an app without roles)."""

    app: App
    state: HostState
    release: str
    image: Release | None = None
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    role: Role | None = None
    #: the inventory has accessories: the release's container joins the app's accessories network
    accessories: bool = False

    @property
    def the_role(self) -> Role:
        """The role moved."""
        return self.role if self.role is not None else roles.get(self.app, DEFAULT_ROLE)


@dataclass(frozen=True)
class Switch:
    """The steps that move one host from its running release (*previous*) to *release*."""

    release: str
    previous: str | None
    steps: tuple[Step, ...]

    def actions(self) -> list[Action]:
        """The happy path, in order, as `--dry-run` shows it."""
        return [action for step in self.steps for action in step.does]

    def undo(self, reached: int | None = None) -> list[Action]:
        """Put the host back after step *reached* (default: the last) failed or was done."""
        last = len(self.steps) - 1 if reached is None else reached
        return [action for step in reversed(self.steps[: last + 1]) for action in step.undo]


def lines(actions: list[Action], wait: str | None = None) -> list[str]:
    """*actions* as messages show them: command lines, and for each wait, after the command that
    starts its container, *wait* (default: a comment naming the container)."""
    shown = []
    for action in actions:
        if isinstance(action, WaitHealthy):
            shown += [str(action.start)] if action.start is not None else []
            shown.append(wait if wait is not None else str(action))
        else:
            shown.append(str(action))
    return shown


def stop_first(move: Move) -> Switch:
    """Create the release's container from the image (else use the kept one); in one round trip,
    join it to the accessories' network, stop the running release and start the new one; wait
    for its health."""
    app, state, release, image, secrets = move.app, move.state, move.release, move.image, move.secrets
    role = move.the_role
    target = commands.container_name(app, release, role.name)
    steps: list[Step] = []
    if image is not None:
        create = commands.create_container(app, release, image.reference, image.digest, secrets, role=role)
        kept = state.container(release) is not None
        steps.append(Step((commands.remove_container(target), create) if kept else (create,)))
    joins = [accessories.join(app, target)] if move.accessories else []
    running = state.running
    timeout = app.container.stop_timeout
    stop_target = commands.stop(target, timeout)
    if running is None:
        steps.append(Step((started(target, role.name, *joins),), undo=(stop_target,)))
    else:
        steps.append(
            Step(
                (started(target, role.name, *joins, commands.stop(running.name, timeout)),),
                undo=(stop_target, started(running.name, role.name)),
            )
        )
    return Switch(release, running.release if running else None, tuple(steps))


def start_first(move: Move) -> Switch:
    """Start the release beside the running one on the proxy's network, wait for its health,
    route the app's traffic to it, drain the old release, then stop it (kept for rollback)."""
    app, state, release, image, secrets = move.app, move.state, move.release, move.image, move.secrets
    role = move.the_role
    target = commands.container_name(app, release, role.name)
    running = state.running
    timeout = app.container.stop_timeout
    prepare: list[RemoteCommand] = []
    if image is not None:
        if state.container(release) is not None:
            prepare.append(commands.remove_container(target))
        create = commands.create_container(
            app, release, image.reference, image.digest, secrets, network=proxy.NETWORK, role=role
        )
        prepare.append(create)
    joins = [] if image is not None else [proxy.connect(target)]  # a kept release may predate the proxy
    if move.accessories:
        joins.append(accessories.join(app, target))
    if running is not None:
        joins.append(proxy.connect(running.name))
    steps = [Step(tuple(prepare))] if prepare else []
    steps += [
        Step((started(target, role.name, *joins),), undo=(Drain(target, timeout),)),
        Step((Route(target),), undo=(Route(running.name if running else None),)),
    ]
    if running is not None:
        steps.append(Step((Drain(running.name, timeout),), undo=(started(running.name, role.name),)))
    return Switch(release, running.release if running else None, tuple(steps))


def plan(move: Move) -> Switch:
    """The switch for *move* by its role's strategy: start-first behind the proxy, else stop-first."""
    return start_first(move) if move.the_role.proxy else stop_first(move)


def chain(release: str, previous: str | None, switches: list[Switch]) -> Switch | None:
    """One host's switch of several roles: their steps one after the other, so a failure in a
    later role puts the earlier ones back too, and undoing it undoes every role. None when no
    role has anything to switch."""
    if not switches:
        return None
    return Switch(release, previous, tuple(step for one in switches for step in one.steps))
