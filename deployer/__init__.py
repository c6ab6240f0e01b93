"""deploy: ship one immutable image per commit to a fleet of servers over SSH."""

__version__ = "0.1.0"
