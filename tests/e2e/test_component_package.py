"""This repository as a Pulumi component package, used by real consumers through the real Pulumi CLI.

The CLI runs our components through the component provider (PulumiPlugin.yaml, __main__.py), started by our
Python language host's plugin mode; the consumers are Pulumi YAML programs (the YAML language host built
from github.com/pulumi/pulumi-yaml by tools/setup-pulumi --with-yaml) in temporary folders, with
``packages: {llmkube: <this checkout>}``. They render manifests to a folder (no cluster), and one deploys to
the local control plane and has Pulumi await the llama-server pod. A Python program gets the components
through ``pulumi package add`` (our host generates and links the SDK) and the provider builds them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import get, kubectl
from tests.e2e.pulumi_project import PULUMI, pulumi_cli
from tests.e2e.required import required
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

required(
    (Path(PULUMI).resolve().parent / "pulumi-language-yaml").exists() or shutil.which("pulumi-language-yaml"),
    "pulumi-language-yaml is not built (tools/setup-pulumi --with-yaml builds it)",
)

# Planning offline: the consumers' model files are nowhere to download from.
ENV = {"LLMKUBE_OFFLINE": "1"}
MODEL = {"source": "https://example.com/models/tiny.gguf", "catalog": "Llama-3.2-1B"}


def yaml_program(folder: Path, resources: dict[str, Any], outputs: dict[str, str]) -> Path:
    """A Pulumi YAML program in ``folder`` that uses this checkout's package, with a stack ``test``."""
    program = {
        "name": "consumer",
        "runtime": "yaml",
        "packages": {"llmkube": str(ROOT)},
        "resources": resources,
        "outputs": outputs,
    }
    # Through JSON: an object used twice must not become a YAML alias, which Pulumi YAML refuses.
    (folder / "Pulumi.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(program)), sort_keys=False))
    (folder / "state").mkdir()
    pulumi_cli(folder, "stack", "init", "test")
    return folder


def renderer(folder: Path) -> dict[str, Any]:
    return {"type": "pulumi:providers:kubernetes", "properties": {"renderYamlToDirectory": str(folder / "out")}}


def rendered(folder: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for path in sorted((folder / "out").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                out[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return out


def up_outputs(folder: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    pulumi_cli(folder, "up", "--stack", "test", "--yes", "--skip-preview", env={**ENV, **(env or {})})
    return json.loads(pulumi_cli(folder, "stack", "output", "--stack", "test", "--json").stdout)


def test_get_schema_describes_the_four_components(tmp_path: Path) -> None:
    schema = json.loads(pulumi_cli(tmp_path, "package", "get-schema", str(ROOT)).stdout)
    assert schema["name"] == "llmkube"
    resources = schema["resources"]
    assert set(resources) == {f"llmkube:index:{c}" for c in ("Platform", "Model", "InferenceService", "Operator")}
    for token, resource in resources.items():
        assert resource["isComponent"] is True, token
        assert resource["description"], token
        for name, prop in {**resource.get("inputProperties", {}), **resource.get("properties", {})}.items():
            assert prop.get("description"), f"{token}.{name}"
    service = resources["llmkube:index:InferenceService"]
    assert set(service["requiredInputs"]) == {"spec", "model"}
    assert {"endpoint", "baseUrl", "serviceName", "plan", "serverArgs", "scheduling"} <= set(service["properties"])
    spec = schema["types"]["llmkube:index:InferenceServiceSpec"]["properties"]
    assert spec["cacheTypeK"] == {
        "$ref": "#/types/llmkube:index:CacheType",
        "description": spec["cacheTypeK"]["description"],
    }
    assert [e["value"] for e in schema["types"]["llmkube:index:CacheType"]["enum"]][:2] == ["f16", "f32"]


def test_a_yaml_program_renders_a_platform(tmp_path: Path) -> None:
    platform = {
        "type": "llmkube:index:Platform",
        "properties": {
            "namespace": "team",
            "models": {"tiny": MODEL},
            "services": {"chat": {"modelRef": "tiny", "contextSize": 2048}},
        },
        "options": {"providers": ["${render}"]},
    }
    program = yaml_program(tmp_path, {"render": renderer(tmp_path), "llm": platform}, {"services": "${llm.services}"})
    outputs = up_outputs(program)
    chat = outputs["services"]["chat"]
    assert chat["endpoint"] == "http://chat.team.svc.cluster.local:8080"
    assert chat["plan"]["placement"] and "--ctx-size" in chat["serverArgs"]
    objects = rendered(program)
    assert set(objects) == {
        ("Namespace", "", "team"),
        ("PersistentVolumeClaim", "team", "llmkube-model-cache"),
        ("Deployment", "team", "chat"),
        ("Service", "team", "chat"),
        ("NetworkPolicy", "team", "chat"),
    }
    container = objects[("Deployment", "team", "chat")]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == chat["serverArgs"]


def model_and_service(namespace: str, provider: str) -> dict[str, Any]:
    """A Namespace of the consumer's own, and our Model and InferenceService taking Outputs from it."""
    return {
        "ns": {
            "type": "kubernetes:core/v1:Namespace",
            "properties": {"metadata": {"name": namespace}},
            "options": {"provider": f"${{{provider}}}"},
        },
        "tiny": {
            "type": "llmkube:index:Model",
            "properties": {"spec": MODEL, "namespace": "${ns.metadata.name}"},
            "options": {"providers": [f"${{{provider}}}"]},
        },
        "chat": {
            "type": "llmkube:index:InferenceService",
            "properties": {
                "spec": {"modelRef": "tiny", "contextSize": 2048},
                "model": "${tiny.spec}",
                "namespace": "${ns.metadata.name}",
            },
            "options": {"providers": [f"${{{provider}}}"]},
        },
    }


OUTPUTS = {"endpoint": "${chat.endpoint}", "namespace": "${chat.namespace}", "serverArgs": "${chat.serverArgs}"}


def test_a_yaml_program_passes_outputs_into_model_and_inference_service(tmp_path: Path) -> None:
    resources = {"render": renderer(tmp_path), **model_and_service("team", "render")}
    program = yaml_program(tmp_path, resources, OUTPUTS)
    outputs = up_outputs(program)
    assert outputs["endpoint"] == "http://chat.team.svc.cluster.local:8080"
    objects = rendered(program)
    assert set(objects) == {
        ("Namespace", "", "team"),  # the consumer's own
        ("PersistentVolumeClaim", "team", "chat-model-cache"),  # a standalone service's own cache
        ("Deployment", "team", "chat"),
        ("Service", "team", "chat"),
        ("NetworkPolicy", "team", "chat"),
    }
    container = objects[("Deployment", "team", "chat")]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == outputs["serverArgs"]


@pytest.fixture
def cluster_program(tmp_path: Path, cluster: dict[str, str]) -> Iterator[tuple[Path, dict[str, str]]]:
    provider = {"type": "pulumi:providers:kubernetes", "properties": {"kubeconfig": cluster["KUBECONFIG"]}}
    resources = {"k8s": provider, **model_and_service("yaml-consumer", "k8s")}
    program = yaml_program(tmp_path, resources, OUTPUTS)
    yield program, cluster
    pulumi_cli(program, "destroy", "--stack", "test", "--yes", check=False, env=ENV)
    kubectl(cluster, "delete", "namespace", "yaml-consumer", "--ignore-not-found", "--timeout=120s", check=False)


def test_a_yaml_program_deploys_to_the_cluster_and_awaits_the_pod(cluster_program: tuple[Path, dict[str, str]]) -> None:
    program, cluster = cluster_program
    outputs = up_outputs(program)  # Pulumi awaits the Deployment: the pod was scheduled and became ready
    assert outputs["endpoint"] == "http://chat.yaml-consumer.svc.cluster.local:8080"
    deployment = get(cluster, "deployment", "chat", "-n", "yaml-consumer")
    assert deployment["status"]["readyReplicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == outputs["serverArgs"]
    pods = get(cluster, "pods", "-n", "yaml-consumer", "-l", "app.kubernetes.io/instance=chat")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    # A second up changes nothing.
    again = pulumi_cli(program, "preview", "--stack", "test", "--expect-no-changes", env=ENV)
    assert again.returncode == 0


SDK_PROGRAM = """\
import pulumi
import pulumi_llmkube as llmkube

tiny = llmkube.Model(
    "tiny",
    spec=llmkube.ModelSpecArgs(source="https://example.com/models/tiny.gguf", catalog="Llama-3.2-1B"),
    namespace="team",
)
chat = llmkube.InferenceService(
    "chat",
    spec=llmkube.InferenceServiceSpecArgs(model_ref="tiny", context_size=2048, cache_type_k=llmkube.CacheType.Q8_0),
    model=tiny.spec,
    namespace=tiny.namespace,
)
pulumi.export("endpoint", chat.endpoint)
pulumi.export("serverArgs", chat.server_args)
"""


def test_pulumi_package_add_gives_a_python_program_the_components_through_the_provider(tmp_path: Path) -> None:
    # The generated SDK's components are remote: our provider builds them, the program passes Outputs across.
    program = tmp_path
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("pulumi==")]
    (program / "requirements.txt").write_text("\n".join(pins) + "\n")
    (program / "Pulumi.yaml").write_text("name: consumer\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n")
    subprocess.run([sys.executable, "-m", "venv", program / "venv"], check=True, timeout=300)
    subprocess.run([program / "venv/bin/pip", "install", "-q", *pins], check=True, timeout=600)
    added = pulumi_cli(program, "package", "add", str(ROOT))
    assert "import pulumi_llmkube as llmkube" in added.stdout + added.stderr
    assert yaml.safe_load((program / "Pulumi.yaml").read_text())["packages"] == {"llmkube": str(ROOT)}
    assert "sdks/llmkube" in (program / "requirements.txt").read_text().splitlines()

    (program / "__main__.py").write_text(SDK_PROGRAM)
    (program / "state").mkdir()
    pulumi_cli(program, "stack", "init", "test")
    pulumi_cli(program, "config", "set", "--stack", "test", "kubernetes:renderYamlToDirectory", str(program / "out"))
    outputs = up_outputs(program)
    assert outputs["endpoint"] == "http://chat.team.svc.cluster.local:8080"
    assert outputs["serverArgs"][outputs["serverArgs"].index("--cache-type-k") + 1] == "q8_0"
    assert set(rendered(program)) == {
        ("PersistentVolumeClaim", "team", "chat-model-cache"),
        ("Deployment", "team", "chat"),
        ("Service", "team", "chat"),
        ("NetworkPolicy", "team", "chat"),
    }


@pytest.mark.parametrize("model", ["${tiny.spec}", MODEL], ids=["from-an-output", "plain"])
def test_a_bad_argument_from_another_language_names_its_path_without_a_stack_trace(tmp_path: Path, model: Any) -> None:
    resources = {
        "render": renderer(tmp_path),
        "tiny": {
            "type": "llmkube:index:Model",
            "properties": {"spec": MODEL, "namespace": "team"},
            "options": {"providers": ["${render}"]},
        },
        "chat": {
            "type": "llmkube:index:InferenceService",
            "properties": {"spec": {"modelRef": "tiny", "contextSize": -1}, "model": model, "namespace": "team"},
            "options": {"providers": ["${render}"]},
        },
    }
    program = yaml_program(tmp_path, resources, {})
    preview = pulumi_cli(program, "preview", "--stack", "test", check=False, env=ENV)
    out = preview.stdout + preview.stderr
    assert preview.returncode != 0
    assert "InferenceService chat: spec.contextSize: -1: input should be greater than or equal to 128" in out, out
    assert "property spec.contextSize with value -1 has a problem" in out, out
    assert 'File "' not in out and "Traceback" not in out and "Unexpected" not in out, out
    assert not (tmp_path / "out").exists()  # nothing rendered
