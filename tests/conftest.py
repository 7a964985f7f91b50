"""Test-wide settings."""

import os

# Plan from the built-in catalog: tests never wait on model hosts (the GGUF reader has its own tests against
# a local server). Subprocesses (the real Pulumi CLI in tests/e2e) inherit it.
os.environ.setdefault("LLMKUBE_OFFLINE", "1")
