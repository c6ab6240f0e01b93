"""End-to-end test lab for `deploy`: a TLS registry and SSH + Docker hosts in containers.

Use `python -m tests.lab up|down|reset|env|status`, or the pytest fixtures `lab` and
`clean_lab` from tests/conftest.py.
"""

from .lab import DockerCLIError, Lab, LabHost, LabNotUpError, lab_lock, teardown

__all__ = ["DockerCLIError", "Lab", "LabHost", "LabNotUpError", "lab_lock", "teardown"]
