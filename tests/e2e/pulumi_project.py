"""The real Pulumi CLI on a copy of this repo's Pulumi project, with its own file backend.

project = copy_project(tmp_path)                  # Pulumi.yaml, __main__.py, stacks/, the repo's venv
pulumi_cli(project, "stack", "init", "dev")
pulumi_cli(project, "up", "--stack", "dev", "--yes")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.cluster import gone, wait_until
from tests.e2e.required import required
from tests.pulumi_program import ROOT

PULUMI = required(
    shutil.which("pulumi"), "pulumi is not on PATH (tools/test sources tools/pulumi-env, which builds it)"
)


def copy_project(folder: Path) -> Path:
    """A copy of the Pulumi project in ``folder``, with a ``state`` folder for its backend and the repo's venv."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "stacks", folder / "stacks")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    (folder / "state").mkdir()
    return folder


def pulumi_cli(
    project: Path, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``pulumi <args>`` non-interactively in ``project``; AssertionError with its output when it fails."""
    full_env = {
        **os.environ,
        **(env or {}),
        "PULUMI_BACKEND_URL": f"file://{project / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "llmkube-dev",  # the stack files' encryptionsalt is for it
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    result = subprocess.run(
        [PULUMI, *args, "--non-interactive", "--color", "never"],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class ClusterStack:
    """A stack of a project copy deployed to the local cluster: its Pulumi CLI, and the cluster's environment
    (PATH with kubectl, KUBECONFIG) for tests/e2e/cluster.py's kubectl and get."""

    project: Path
    cluster: dict[str, str]
    name: str

    def pulumi(self, *args: str) -> str:
        return pulumi_cli(self.project, *args, "--stack", self.name).stdout


class ReconfiguredStack:
    """A stack of a project copy on the local cluster whose ``llmkube:`` config each case replaces: ``up(config)``
    writes it into the stack file (the rest, kubeconfig and encryption salt, stays) and deploys it."""

    def __init__(
        self, project: Path, cluster: dict[str, str], name: str, env: dict[str, str], *, namespace: str, pods: str
    ) -> None:
        """``pods``: the label selector of the stack's pods in ``namespace``, which destroy waits to go."""
        self.project = project
        self.cluster = cluster
        self.name = name
        self.env = env
        self.namespace = namespace
        self.pods = pods
        self.stack_file = project / "stacks" / f"Pulumi.{name}.yaml"

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return pulumi_cli(self.project, *args, "--stack", self.name, check=check, env=self.env)

    def configure(self, config: dict[str, Any]) -> None:
        """The stack file's llmkube config becomes ``config``."""
        document = yaml.safe_load(self.stack_file.read_text()) if self.stack_file.exists() else {}
        kept = {k: v for k, v in (document.get("config") or {}).items() if not k.startswith("llmkube:")}
        document["config"] = {**kept, **{f"llmkube:{k}": v for k, v in config.items()}}
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def up(self, config: dict[str, Any]) -> None:
        self.configure(config)
        self.pulumi("up", "--yes")

    def destroy(self) -> None:
        """Deletes what the stack made but the kept namespace and cache claim, and waits for its pods to go, so that
        the next case starts with the nodes free."""
        self.pulumi("destroy", "--yes", check=False)
        wait_until(
            "the stack's pods to be gone",
            lambda: gone(self.cluster, "pods", "-n", self.namespace, "-l", self.pods),
            timeout=120,
        )


@contextlib.contextmanager
def initialised_stack(
    project: Path,
    cluster: dict[str, str],
    name: str,
    env: dict[str, str],
    config: dict[str, Any],
    *,
    namespace: str,
    pods: str,
) -> Iterator[ReconfiguredStack]:
    """A ReconfiguredStack with ``config``, initialised against the cluster; destroyed when the block ends."""
    state = ReconfiguredStack(project, cluster, name, env, namespace=namespace, pods=pods)
    state.configure(config)
    try:
        state.pulumi("stack", "init")
        state.pulumi("config", "set", "kubernetes:kubeconfig", cluster["KUBECONFIG"])
        yield state
    finally:
        state.destroy()
