"""Every error `deploy` reports, and the exit code each one ends the process with.

    DeployError                     1  unexpected failure
    ├── ConfigError                 2  inventory unreadable or invalid, environment variable missing
    ├── UsageError                  2  bad flags, `--hosts` naming nothing, dirty tree, no release to go to
    ├── BuildError                  3  the Dockerfile does not build, the engine cannot be reached
    ├── RegistryError               4  push or pull refused, registry unreachable
    │   └── TagNotFound             2  the tag asked for is not in the registry
    ├── ConnectError                5  a host cannot be reached over SSH, or its key is not trusted
    │   └── HostKeyError            5  unknown or changed host key
    ├── LockedError                 6  another run holds the deploy lock
    ├── RolloutError                7  a release failed on hosts; the fleet was put back
    └── Interrupted               130  stopped by Ctrl-C or SIGTERM after putting hosts back

Foreign errors (yaml, pydantic, docker, paramiko, socket) are translated where they are
raised, with ``raise ... from``; the CLI maps each class to its exit code and prints one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from deployer.report import Report


class DeployError(Exception):
    """Base of every error `deploy` reports to the user."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None, report: Report | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: the per-host report of the run this error ended, when there is one
        self.report = report


class ConfigError(DeployError):
    """The inventory or the environment it names is not usable."""

    exit_code = 2


class UsageError(DeployError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class BuildError(DeployError):
    """The image could not be built."""

    exit_code = 3


class RegistryError(DeployError):
    """The registry refused, could not be reached, or lacks the image."""

    exit_code = 4


class TagNotFound(RegistryError):
    """The registry answered, and has no image under the tag asked for: bad input, not an outage."""

    exit_code = 2


class ConnectError(DeployError):
    """A host could not be reached or logged into over SSH."""

    exit_code = 5


class HostKeyError(ConnectError):
    """A host presented a key that is not in known_hosts, or one that changed."""


class CommandError(DeployError):
    """A command on a host failed or ran past its deadline."""

    exit_code = 7


class LockedError(DeployError):
    """Another run holds the deploy lock on a host."""

    exit_code = 6


class RolloutError(DeployError):
    """A rollout or rollback failed on some hosts; the report says what each host runs now."""

    exit_code = 7


class Interrupted(DeployError):
    """The run was stopped by a signal after hosts were put back."""

    exit_code = 130


EXIT_CODES: dict[str, int] = {
    "success": 0,
    "unexpected failure": DeployError.exit_code,
    "bad input (inventory, flags, dirty tree, tag not in the registry, nothing to roll back to)": UsageError.exit_code,
    "build failed": BuildError.exit_code,
    "registry error": RegistryError.exit_code,
    "host unreachable or host key refused": ConnectError.exit_code,
    "deploy lock held": LockedError.exit_code,
    "rollout or rollback failed (hosts put back)": RolloutError.exit_code,
    "interrupted (hosts put back, lock released)": Interrupted.exit_code,
}
