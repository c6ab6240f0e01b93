"""deploy: ship one immutable image per commit to a fleet of servers over SSH."""

from __future__ import annotations

import gc

# Start-up builds a few hundred thousand long-lived objects (typer, pydantic, paramiko) and no
# garbage: the default threshold ran a collection every 700 allocations, each walking them all,
# about a fifth of start-up CPU. Cycles are still collected, less often.
gc.set_threshold(50_000, 20, 20)


def __getattr__(name: str) -> str:
    # `deployer.__version__` is looked up on demand: finding it may run git (see deployer.version),
    # which `deploy --help` must not pay for.
    if name == "__version__":
        from deployer.version import describe

        return describe().version
    raise AttributeError(f"module 'deployer' has no attribute {name!r}")
