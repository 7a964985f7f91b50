"""The stack program's process behaviour (its Pulumi behaviour is in test_components.py and tests/e2e)."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.pulumi_program import ROOT

# A program busy in its event loop when the engine stops the plugins' process group with SIGINT.
BUSY = """
import os, signal, time
from llmkube_components.program import quiet_interrupt
quiet_interrupt()
print("ready", flush=True)
time.sleep(30)
"""


def test_sigint_from_the_engine_ends_the_program_without_a_traceback() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", BUSY], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGINT
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
