"""Run one function per host on a bounded pool, wait for every host, return each outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from deployer.errors import DeployError

K = TypeVar("K")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The value a host's work returned, or the error that stopped it."""

    value: T | None = None
    error: DeployError | None = None

    @property
    def ok(self) -> bool:
        """True when the work finished without error."""
        return self.error is None


def fan_out(items: Sequence[K], work: Callable[[K], T], parallel: int) -> dict[K, Outcome[T]]:
    """Call *work* for every item, at most *parallel* at once; never stop early.

    A :class:`DeployError` becomes that item's outcome; any other exception is a bug and is
    raised once every item has finished.
    """
    if not items:
        return {}

    def guarded(item: K) -> Outcome[T]:
        try:
            return Outcome(value=work(item))
        except DeployError as exc:
            return Outcome(error=exc)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items)))) as pool:
        futures = [pool.submit(guarded, item) for item in items]
        return {item: future.result() for item, future in zip(items, futures, strict=True)}
