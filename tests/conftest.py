"""Test-wide settings."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# Plan from the built-in catalog: tests never wait on model hosts (the GGUF reader has its own tests against
# a local server). Subprocesses (the real Pulumi CLI in tests/e2e) inherit it.
os.environ.setdefault("LLMKUBE_OFFLINE", "1")
# Mock-based tests never read a cluster (a developer's KUBECONFIG or ~/.kube/config): the node check is off
# unless a test turns it on. The end-to-end tests that deploy to the local cluster set it for their runs.
os.environ.setdefault("LLMKUBE_NODE_CHECK", "0")


@pytest.fixture(autouse=True)
def _keep_sigint_handler() -> Iterator[None]:
    # Tests that run __main__.py install the stack program's quiet SIGINT handler; Ctrl-C must still stop pytest.
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The fast path (`tools/test -m "not e2e"`) does not import the end-to-end modules at all: they look for
    # their tools at import, and in CI a missing tool is a failure there.
    if config.getoption("markexpr") == "not e2e" and "e2e" in collection_path.parts:
        return True
    return None
