"""deploy: ship one immutable image per commit to a fleet of servers over SSH."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # `deployer.__version__` is looked up on demand: finding it may run git (see deployer.version),
    # which `deploy --help` must not pay for.
    if name == "__version__":
        from deployer.version import describe

        return describe().version
    raise AttributeError(f"module 'deployer' has no attribute {name!r}")
