"""Benchmarks of `deploy` against a shell loop over ssh and an Ansible playbook, on the lab.

Run with `./dev bench` (or `python -m bench --help`); not part of the test run. The figures
and their analysis live in docs/benchmarks.md; raw results go to bench/results/ (git-ignored).
"""
