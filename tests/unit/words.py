"""Switches as `--dry-run` and `-v` show them, for exact comparisons."""

from __future__ import annotations

from deployer import commands

__all__ = ["started"]


def started(name: str, *before: str) -> list[str]:
    """The lines of a container started (after *before*) with its first look in the same round
    trip, then the wait for its health."""
    start = [*before, f"docker container start {name}", commands.inspect(name).render()]
    return [" && ".join(start), f"# wait until {name} is healthy"]
