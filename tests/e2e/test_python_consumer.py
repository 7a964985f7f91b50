"""A separate Python program that installs llmkube as a wheel, as a user's program would, and uses it.

The program lives in its own folder with its own virtualenv (pip installs a wheel built from this checkout,
with the checkout's pins as constraints, since the Kubernetes plugin built here is the pinned one). It makes
its own Namespace and Secret with pulumi_kubernetes and passes their Outputs into our Model and
InferenceService; preview, up against the local control plane (the pod awaited), and a second up that
changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import get, kubectl
from tests.e2e.pulumi_project import pulumi_cli
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

NAMESPACE = "py-consumer"
ENV = {"LLMKUBE_OFFLINE": "1"}  # the model file is nowhere to download from: plan offline

PROGRAM = '''\
"""A user's program: its own Namespace and Secret, our components on their Outputs."""

import pulumi
import pulumi_kubernetes as k8s

from llmkube_components import InferenceService, Model

config = pulumi.Config()
provider = k8s.Provider("cluster", kubeconfig=config.require("kubeconfig"))
on_cluster = pulumi.ResourceOptions(provider=provider)
namespace = k8s.core.v1.Namespace("team", metadata={"name": "py-consumer"}, opts=on_cluster)
token = k8s.core.v1.Secret(
    "client-token",
    metadata={"namespace": namespace.metadata.name},
    string_data={"token": config.require_secret("token")},
    opts=on_cluster,
)
ours = pulumi.ResourceOptions(providers=[provider])
model = Model(
    "tiny",
    {"spec": {"source": "https://example.com/models/tiny.gguf", "catalog": "Llama-3.2-1B"},
     "namespace": namespace.metadata.name},
    opts=ours,
)
chat = InferenceService(
    "chat",
    {
        "spec": {"modelRef": "tiny", "contextSize": 2048, "podAnnotations": {"example.com/token": token.metadata.name}},
        "model": model,
    },
    opts=ours,
)
pulumi.export("endpoint", chat.endpoint)
pulumi.export("namespace", chat.namespace)
pulumi.export("serverArgs", chat.server_args)
pulumi.export("placement", chat.plan.apply(lambda plan: plan["placement"]))
'''


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def consumer(tmp_path: Path, cluster: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("llmkube_components-*.whl")
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    (tmp_path / "constraints.txt").write_text("\n".join(pins) + "\n")
    program = tmp_path / "program"
    program.mkdir()
    run(sys.executable, "-m", "venv", program / "venv")
    run(program / "venv/bin/python", "-m", "pip", "install", "--quiet", "-c", tmp_path / "constraints.txt", wheel)
    (program / "Pulumi.yaml").write_text("name: consumer\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n")
    (program / "__main__.py").write_text(PROGRAM)
    (program / "state").mkdir()
    pulumi_cli(program, "stack", "init", "test")
    pulumi_cli(program, "config", "set", "--stack", "test", "kubeconfig", cluster["KUBECONFIG"])
    pulumi_cli(program, "config", "set", "--stack", "test", "--secret", "token", "s3cr3t")
    yield program, cluster
    pulumi_cli(program, "destroy", "--stack", "test", "--yes", check=False, env=ENV)
    kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)


def test_a_python_program_passes_its_outputs_into_our_components(consumer: tuple[Path, dict[str, str]]) -> None:
    program, cluster = consumer
    preview = pulumi_cli(program, "preview", "--stack", "test", env=ENV)
    assert "llmkube:index:InferenceService" in preview.stdout

    pulumi_cli(program, "up", "--stack", "test", "--yes", "--skip-preview", env=ENV)
    outputs = json.loads(pulumi_cli(program, "stack", "output", "--stack", "test", "--json").stdout)
    assert outputs["endpoint"] == f"http://chat.{NAMESPACE}.svc.cluster.local:8080"
    assert outputs["namespace"] == NAMESPACE and outputs["placement"]
    deployment = get(cluster, "deployment", "chat", "-n", NAMESPACE)
    assert deployment["status"]["readyReplicas"] == 1  # awaited by Pulumi: scheduled and ready
    template = deployment["spec"]["template"]
    # The Secret's name, auto-named by Pulumi, came into our component as an Output.
    assert template["metadata"]["annotations"]["example.com/token"].startswith("client-token-")
    assert template["spec"]["containers"][0]["args"] == outputs["serverArgs"]
    state = pulumi_cli(program, "stack", "export", "--stack", "test").stdout
    assert "s3cr3t" not in state  # the Secret's value stays encrypted in state

    # A second up has nothing to do (it fails if it would change anything).
    pulumi_cli(program, "up", "--stack", "test", "--yes", "--expect-no-changes", env=ENV)
