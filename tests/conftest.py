"""Shared pytest setup: the `e2e` marker and the lab fixtures.

The lab (a TLS registry and SSH + Docker hosts in containers) starts only when a test
asks for `lab` or `clean_lab`, once per session; DEPLOY_LAB_KEEP=1 leaves it running
afterwards and DEPLOY_LAB_HOSTS sets the number of hosts (default 3).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.lab import Lab, lab_lock


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against the lab (registry and SSH hosts in Docker)")
    config.addinivalue_line(
        "markers", "package: builds the wheel and sdist and runs the installed wheel (needs PyPI)")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The running lab, held by this session (another session on the machine waits)."""
    with lab_lock():
        lab = Lab.up(hosts=int(os.environ.get("DEPLOY_LAB_HOSTS", "3")))
        try:
            yield lab
        finally:
            if os.environ.get("DEPLOY_LAB_KEEP") == "1":
                lab.close()
            else:
                lab.down()


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    """The lab, reset to its initial state (empty hosts and registry, app at v1)."""
    lab.reset()
    return lab
