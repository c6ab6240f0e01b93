"""The fan-out benchmark's pure parts: host addresses and the report."""

from __future__ import annotations

from bench import fanout


def test_each_host_is_its_own_loopback_address() -> None:
    assert [fanout.address(i) for i in (0, 1, 249, 250)] == ["127.0.1.1", "127.0.1.2", "127.0.1.250", "127.0.2.1"]


def test_the_report_gives_medians_and_the_cost_of_one_more_host() -> None:
    samples = [
        fanout.Sample(1, 16, run, 1.0 + run, 0.5, 1, 7, {"no engine": 1}) for run in range(3)
    ] + [
        fanout.Sample(101, 16, run, 11.0 + run, 1.5, 101, 7, {"no engine": 101}) for run in range(3)
    ] + [
        fanout.Sample(101, 101, 0, 30.0, 2.0, 101, 7, {"no engine": 1, "did not finish in time": 100}),
    ]
    text = fanout.render(fanout.Results([1, 101], 3, "start", "end", samples))
    assert "| 1 | 16 | 2.00 | 0.50 | 1 | no engine: 3 | 7 |" in text
    assert "| 101 | 16 | 12.00 | 1.50 | 101 | no engine: 303 | 7 |" in text
    assert "| 101 | 101 | 30.00 | 2.00 | 101 | did not finish in time: 100; no engine: 1 | 7 |" in text
    assert "- One more host, ssh.parallel 16: 100.0 ms of wall time, 10.0 ms of CPU (from 1 to 101 hosts)." in text
    assert "- One more host, every host at once: 280.0 ms of wall time, 15.0 ms of CPU (from 1 to 101 hosts)." in text
