"""The policy pack (policy/) under the real Pulumi CLI and policy runtime, through our Python language host.

Each rule: a stack that breaks it fails the preview (mandatory) or prints and passes (advisory), naming the rule
and the config path, without a traceback. Offline (LLMKUBE_OFFLINE) and without a cluster, as on a pull request.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.pulumi_project import copy_project, pulumi_cli
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

POLICY = ROOT / "policy"
OFFLINE = {"LLMKUBE_OFFLINE": "1", "LLMKUBE_NODE_CHECK": "0"}
FILE = "Llama-3.2-1B-Instruct-Q4_K_M.gguf"
NODE_FILE = "/srv/models/m.gguf"
CATALOG = "Llama-3.2-1B"


def preview(tmp_path: Path, stack: str, edit: Callable[[dict[str, Any]], None] | None = None,
            config: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    project = copy_project(tmp_path)
    stack_file = project / "stacks" / f"Pulumi.{stack}.yaml"
    if edit is not None:
        document = yaml.safe_load(stack_file.read_text())
        edit(document["config"])
        stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    pulumi_cli(project, "stack", "init", stack)
    args = ["preview", "--stack", stack, "--policy-pack", str(POLICY)]
    if config is not None:
        (project / "policy.json").write_text(json.dumps(config))
        args += ["--policy-pack-config", str(project / "policy.json")]
    return pulumi_cli(project, *args, check=False, env=OFFLINE)


def output(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    return text


@pytest.mark.parametrize("stack", ["dev", "local"])
def test_our_stacks_pass_the_pack(tmp_path: Path, stack: str) -> None:
    result = preview(tmp_path, stack)  # the pack's defaults
    text = output(result)
    assert result.returncode == 0, text
    assert "[advisory]  llmkube-pinned-images" in text  # advisory rules print and pass
    assert "[mandatory]" not in text


def _service(config: dict[str, Any]) -> dict[str, Any]:
    return config["llmkube:services"]["llama32-1b"]


def _model(config: dict[str, Any]) -> dict[str, Any]:
    return config["llmkube:models"]["llama32-1b"]


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], dict[str, Any], str]] = {
    "llmkube-exposure": (
        lambda c: _service(c).update(endpoint={"type": "LoadBalancer"}),
        {},
        "llmkube:services.llama32-1b.endpoint.type: LoadBalancer exposes the server without an API key",
    ),
    "llmkube-integrity": (
        lambda c: _model(c).update(source=f"http://mirror.example/{FILE}", catalog=CATALOG),
        {"llmkube-integrity": "mandatory"},
        "llmkube:models.llama32-1b.source: plain http",
    ),
    "llmkube-gpu-budget": (
        lambda c: None,
        {"llmkube-gpu-budget": {"maxGpus": 1}},
        "namespace llmkube: 2 GPUs requested (qwen36-hybrid 2), over maxGpus 1",
    ),
    "llmkube-pod-security": (
        lambda c: (c.update({"llmkube:allowHostPath": True}), _model(c).update(source=NODE_FILE, catalog=CATALOG)),
        {},
        "mounts the node's /srv/models/m.gguf (hostPath)",
    ),
    "llmkube-allowed-sources": (
        lambda c: None,
        {"llmkube-allowed-sources": {"allowedOwners": ["ggml-org"]}},
        "llmkube:models.llama32-1b.source: Hugging Face organisation bartowski is not in allowedOwners (ggml-org)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("rule", list(CASES))
def test_a_stack_that_breaks_a_mandatory_rule_fails_the_preview(tmp_path: Path, rule: str) -> None:
    edit, config, message = CASES[rule]
    stack = "local" if rule == "llmkube-gpu-budget" else "dev"
    result = preview(tmp_path, stack, edit, config)
    text = output(result)
    assert result.returncode != 0, text
    assert f"[mandatory]  {rule}" in text, text
    assert message in text, text


def test_integrity_is_mandatory_by_default(tmp_path: Path) -> None:
    text = output(result := preview(tmp_path, "dev", lambda c: _model(c).pop("sha256")))
    assert result.returncode != 0
    assert "[mandatory]  llmkube-integrity" in text
    assert "llmkube:models.llama32-1b.sha256: Llama-3.2-1B-Instruct-Q4_K_M.gguf is downloaded without a sha256" in text


def test_the_speed_rule_is_advisory_and_configured(tmp_path: Path) -> None:
    config = {"llmkube-speed": {"minDecodeTokensPerSecond": 1000}}
    result = preview(tmp_path, "dev", config=config)
    text = output(result)
    assert result.returncode == 0, text
    assert "[advisory]  llmkube-speed" in text
    assert "llmkube:services.llama32-1b: decodes about" in text and "below minDecodeTokensPerSecond 1000" in text


def test_a_service_without_a_plan_fails_the_fit_rule(tmp_path: Path) -> None:
    # Offline, a file no catalog entry describes cannot be planned: nobody checked that it fits.
    edit = lambda c: _model(c).update(source="https://mirror.example/unknown-model.gguf", sha256="ab" * 32)  # noqa: E731
    result = preview(tmp_path, "dev", edit)
    text = output(result)
    assert result.returncode != 0, text
    assert "[mandatory]  llmkube-fit" in text and "llmkube:services.llama32-1b: no plan at preview" in text


def test_pr_check_previews_with_the_pack_and_compares_the_plans_with_no_network(tmp_path: Path) -> None:
    """tools/pr-check, as the workflow runs it, in a network namespace of its own: no cluster, no model metadata
    from the network. The base changes contextSize and the offload fields: the comparison shows the deltas."""
    project = copy_project(tmp_path)
    pulumi_cli(project, "stack", "init", "local")
    document = yaml.safe_load((project / "stacks" / "Pulumi.local.yaml").read_text())
    service = document["config"]["llmkube:services"]["qwen36-hybrid"]
    service["contextSize"] = 32768
    service.pop("moeCPUOffload", None)
    service["moeCPULayers"] = 30
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{project / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "llmkube-dev",
        "LLMKUBE_PROJECT": str(project),
    }
    script = f"ip link set lo up && exec {ROOT / 'tools' / 'pr-check'} local {base}"
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", "sh", "-c", script],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    text = output(result)
    assert result.returncode == 0, text
    assert "[advisory]  llmkube-pinned-images" in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **qwen36-hybrid**:")]
    assert "`--ctx-size` 32768 -> 90112" in line and "`--n-cpu-moe` 30 -> unset" in line, line
    assert "host RAM: " in line and "memory request: " in line and "decode: " in line, line


def test_an_unchanged_stack_previews_with_no_changes_under_the_pack(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    pulumi_cli(project, "stack", "init", "dev")
    pulumi_cli(project, "up", "--stack", "dev", "--yes", "--skip-preview", env=OFFLINE)
    args = ["--policy-pack", str(POLICY), "--expect-no-changes"]
    result = pulumi_cli(project, "preview", "--stack", "dev", *args, check=False, env=OFFLINE)
    assert result.returncode == 0, output(result)


def test_the_pack_checks_a_yaml_program_that_uses_our_components(tmp_path: Path) -> None:
    """Any program using our components: here Pulumi YAML through the component provider, with an Ingress of
    its own in front of our keyless, LoadBalancer service."""
    from tests.e2e.test_component_package import MODEL, renderer, yaml_program

    provider = {"providers": ["${render}"]}
    resources = {
        "render": renderer(tmp_path),
        "tiny": {
            "type": "llmkube:index:Model",
            "properties": {"spec": MODEL, "namespace": "team"},
            "options": provider,
        },
        "chat": {
            "type": "llmkube:index:InferenceService",
            "properties": {
                "spec": {"modelRef": "tiny", "contextSize": 2048, "endpoint": {"type": "LoadBalancer"}},
                "model": "${tiny.spec}",
                "namespace": "team",
            },
            "options": provider,
        },
        "web": {
            "type": "kubernetes:networking.k8s.io/v1:Ingress",
            "properties": {
                "metadata": {"name": "web", "namespace": "team"},
                "spec": {"defaultBackend": {"service": {"name": "chat", "port": {"number": 8080}}}},
            },
            "options": {"provider": "${render}"},
        },
    }
    program = yaml_program(tmp_path, resources, {"endpoint": "${chat.endpoint}"})
    args = ["preview", "--stack", "test", "--policy-pack", str(POLICY)]
    result = pulumi_cli(program, *args, check=False, env=OFFLINE)
    text = output(result)
    assert result.returncode != 0, text
    assert "InferenceService chat: spec.endpoint.type: LoadBalancer exposes the server without an API key" in text
    assert "service chat (team): Ingress team/web routes to it without an API key" in text
