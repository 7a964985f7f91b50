"""The real Pulumi CLI, Python language host and Kubernetes provider on the dev stack (no cluster needed).

The dev stack renders its manifests to a folder (kubernetes:renderYamlToDirectory), so `pulumi preview` and
`pulumi up` run for real here: the engine, the provider's schema checks and its YAML rendering. The set of
objects rendered must be exactly the set the mock-based component tests see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.e2e.cluster import get, kubectl, wait_until
from tests.e2e.pulumi_project import copy_project, pulumi_cli
from tests.pulumi_program import install_mocks, run_main, stack_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def rendered_objects(folder: Path) -> set[tuple[str, str, str]]:
    objects = set()
    for path in folder.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                meta = doc["metadata"]
                objects.add((doc["kind"], meta.get("namespace", ""), meta["name"]))
    return objects


def mocked_objects(config: dict[str, Any]) -> set[tuple[str, str, str]]:
    mocks = install_mocks(config)

    @pulumi.runtime.test
    def program() -> None:
        run_main()

    program()
    return {
        (r.kind, (r.inputs["metadata"]).get("namespace", ""), r.object_name)
        for r in mocks.resources
        if r.type.startswith("kubernetes:")
    }


def test_preview_and_up_of_the_dev_stack_render_what_the_mocks_see(project: Path) -> None:
    pulumi_cli(project, "stack", "init", "dev")
    preview = pulumi_cli(project, "preview", "--stack", "dev")
    assert "llmkube:index:Platform" in preview.stdout

    pulumi_cli(project, "up", "--stack", "dev", "--yes", "--skip-preview")
    rendered = rendered_objects(project / "rendered" / "dev")
    assert ("Deployment", "llmkube", "llama32-1b") in rendered
    assert rendered == mocked_objects(stack_config("dev"))

    outputs = yaml.safe_load(pulumi_cli(project, "stack", "output", "--stack", "dev", "--json").stdout)
    assert outputs["services"]["llama32-1b"]["baseUrl"] == "http://llama32-1b.llmkube.svc.cluster.local:8080/v1"

    # Nothing changed, so nothing to do: the program is deterministic.
    pulumi_cli(project, "preview", "--stack", "dev", "--expect-no-changes")


def test_bad_config_fails_preview_with_the_clear_error_and_no_stack_trace(project: Path) -> None:
    pulumi_cli(project, "stack", "init", "dev")
    pulumi_cli(project, "config", "set", "--stack", "dev", "--path", "llmkube:services.llama32-1b.contextSize", "50")
    result = pulumi_cli(project, "preview", "--stack", "dev", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "llmkube:services.llama32-1b.contextSize: 50: input should be greater than or equal to 128" in output
    assert "Traceback" not in output
    assert not (project / "rendered").exists()


def test_the_rendered_dev_manifests_apply_cleanly_to_the_local_cluster(project: Path, cluster: dict[str, str]) -> None:
    pulumi_cli(project, "stack", "init", "dev")
    pulumi_cli(project, "up", "--stack", "dev", "--yes", "--skip-preview")
    folder = project / "rendered" / "dev"
    # As the README says: namespaces first (kubectl applies files in name order, and the namespace's file
    # sorts after the Deployment's), then everything (the provider puts CRDs, none here, in 0-crd/).
    (namespace,) = folder.glob("1-manifest/v1-namespace-*.yaml")
    kubectl(cluster, "apply", "--server-side", "--field-manager=llmkube-test", "-f", str(namespace))
    applied = kubectl(cluster, "apply", "--server-side", "--field-manager=llmkube-test", "-R", "-f", str(folder))
    assert "deployment.apps/llama32-1b serverside-applied" in applied, applied
    try:
        kubectl(cluster, "rollout", "status", "deployment/llama32-1b", "-n", "llmkube", "--timeout=120s")
        pod = get(cluster, "pods", "-n", "llmkube", "-l", "app.kubernetes.io/instance=llama32-1b")["items"][0]
        assert pod["spec"]["nodeName"] == "kwok-cpu-only"  # the cpu-only profile's node
        assert get(cluster, "pvc", "llmkube-model-cache", "-n", "llmkube")["status"]["phase"] == "Bound"
    finally:
        kubectl(cluster, "delete", "-R", "-f", str(folder), "--wait=true", "--timeout=120s")
        # The claim's volume goes after it, asynchronously; later tests compare the cluster's objects.
        wait_until("the cache volume to be deleted", lambda: not cache_volumes(cluster))


def cache_volumes(cluster: dict[str, str]) -> list[str]:
    return [
        pv["metadata"]["name"]
        for pv in get(cluster, "pv")["items"]
        if (pv["spec"].get("claimRef") or {}).get("namespace") == "llmkube"
    ]
