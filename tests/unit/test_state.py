"""What a host keeps: lock and history commands, compared exactly, and how the history is read."""

from __future__ import annotations

from deployer import state
from deployer.state import Container, Entry, HostState

from .test_commands import APP


def test_lock_and_history_paths() -> None:
    history = ("/var/lib/deploy/apps/web/history.jsonl", ".deploy/web/history.jsonl")
    read = ("/var/lib/deploy/apps/web", "deployer.app=web", *history)
    assert state.acquire_lock(APP, b"{}").argv[4:] == (*read, ""), "the lock is taken and the state read at once"
    assert state.acquire_lock(APP, b"{}", break_first=True).argv[4:] == (*read, "break")
    assert state.acquire_lock(APP, b"{}").ok_statuses == frozenset({0, state.LOCK_HELD})
    assert state.acquire_lock(APP, b"{}").stdin == b"{}"
    assert state.release_lock(APP, "tok").argv[4:] == ("/var/lib/deploy/apps/web/lock", "tok")
    assert state.append_history(APP, b"{}\n").argv[4:] == ("/var/lib/deploy/apps/web", ".deploy/web/history.jsonl")
    assert state.read_state(APP).argv[4:] == read, "an earlier version's history is read"
    assert state.read_state(APP).argv[2] in state.acquire_lock(APP, b"{}").argv[2]


def test_lock_records_order_contending_runs_the_same_way_on_both_sides() -> None:
    early = state.LockRecord("b", "alice", "laptop", 1, "t", "rollout", started=100.0)
    late = state.LockRecord("a", "bob", "ci", 2, "t", "rollout", started=200.0)
    tie = state.LockRecord("c", "carol", "ci", 3, "t", "rollout", started=100.0)
    assert early.precedes(late) and not late.precedes(early)
    assert early.precedes(tie) and not tie.precedes(early), "the token breaks a tie"
    older_version = '{"token": "x", "by": "u", "machine": "m", "pid": 1, "since": "t", "command": "c"}'
    parsed = state.LockRecord.parse(older_version)
    assert parsed is not None and parsed.started == 0.0, "a lock without a start time is the oldest"
    assert state.LockRecord.parse('{"token": "x"}') is None


def test_lock_and_history_are_written_aside_then_moved_into_place() -> None:
    lock = state.acquire_lock(APP, b"{}").argv[2]
    assert 'cat > "$t"' in lock and 'ln "$t" "$1/lock"' in lock, "a full disk cannot leave an empty lock"
    history = state.append_history(APP, b"{}\n").argv[2]
    assert 'mv -f "$t" "$h"' in history and ">>" not in history, "never appended in place"


def _entry(release: str, result: str = "ok") -> Entry:
    return Entry("t", "rollout", release, f"sha256:{release}", "me", result)


def test_a_switch_put_back_by_the_run_does_not_count_as_an_activation() -> None:
    history = (_entry("v1"), _entry("v2"), _entry("v3"), _entry("v3", "reverted"))
    host = HostState((Container("web-v2", "v2", "sha256:v2", "running", "1"),), history)
    assert host.activations() == ["v1", "v2"]
    assert host.previous() == "v1"


def test_pruning_never_takes_the_release_a_rollback_needs() -> None:
    containers = tuple(
        Container(f"web-{r}", r, f"sha256:{r}", "running" if r == "v4" else "exited", str(i))
        for i, r in enumerate(("v1", "v2", "v3", "v4"))
    )
    # v4 runs; the history lost the lines of v2 to v4 except that v1 ran before v4
    host = HostState(containers, (_entry("v3"), _entry("v1"), _entry("v4")))
    assert host.previous() == "v1"
    kept, old = host.retained(1)
    assert [c.release for c in kept] == ["v1"]
    assert sorted(c.release for c in old) == ["v2", "v3"]


def test_unreadable_history_lines_are_counted() -> None:
    output = '---\n{"time":"t","action":"rollout","release":"v1","digest":"d","by":"me","result":"ok"}\n{"ti\n\n'
    found = state.parse_state(output)
    assert [e.release for e in found.history] == ["v1"]
    assert found.unreadable == 1
