"""`pulumi up` of the local stack for real: the Pulumi CLI, our language host and the Kubernetes provider
against the local control plane (tests/e2e/cluster.py): a real API server, scheduler and controller-manager,
with KWOK playing a dual-rtx5060ti node, an rtx4090 node and a cpu-only node.

One stack goes through a user's life: delivery direct (the llama-server pod is placed by the scheduler and
awaited by Pulumi), a no-op second up, a contextSize change that updates only the Deployment, a service added
and removed, a service no node can run, one for which no node has room left, a bad config, destroy; then
delivery operator (CRDs, custom resources checked by the API server against our schema, the operator's
workloads) and its destroy.

Each test starts from the state it needs, whatever ran before it (``-k`` on any one passes): ``deployed``
brings the stack back to its stack file as committed and up, ``fresh`` to its stack file and destroyed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import get, kubectl, ready, unschedulable_reason, wait_until
from tests.e2e.pulumi_project import copy_project, pulumi_cli

pytestmark = pytest.mark.e2e

STACK = "local"
NAMESPACE = "llmkube"
SERVICE = "qwen36-hybrid"  # 2 GPUs, 48Gi of host memory: only the dual-rtx5060ti node can take it
CACHE = "llmkube-model-cache"
# conftest.py turns the preview-time node check off for mock tests; these runs are what it is for.
ENV = {"LLMKUBE_NODE_CHECK": "1"}

# What a stack could create or leave behind; the namespaces the cluster itself uses are not ours.
KINDS = (
    "namespaces,customresourcedefinitions,clusterroles,clusterrolebindings,persistentvolumes,deployments,"
    "replicasets,statefulsets,daemonsets,pods,services,persistentvolumeclaims,serviceaccounts,roles,"
    "rolebindings,horizontalpodautoscalers,configmaps,secrets,poddisruptionbudgets,networkpolicies"
)
CLUSTER_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}

Object = tuple[str, str, str]


def objects(env: dict[str, str]) -> set[Object]:
    items = get(env, KINDS, "-A")["items"]
    return {
        (i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"])
        for i in items
        if i["metadata"].get("namespace", "") not in CLUSTER_NAMESPACES
        and not (i["kind"] == "Namespace" and i["metadata"]["name"] in CLUSTER_NAMESPACES)
        and not i["metadata"]["name"].startswith("system:")  # the API server's own RBAC
    }


class Local:
    """The project copy, the cluster's environment, and what the cluster held before the first up."""

    def __init__(self, project: Path, cluster: dict[str, str]) -> None:
        self.project = project
        self.cluster = cluster
        self.before = objects(cluster)
        self.base = ""  # the stack file as committed, pointed at the tests' cluster

    @property
    def stack_file(self) -> Path:
        return self.project / "stacks" / f"Pulumi.{STACK}.yaml"

    def reset(self) -> None:
        """Back to the stack file as committed (what a test edited is undone)."""
        self.stack_file.write_text(self.base)

    def pulumi(self, *args: str, check: bool = True) -> Any:
        return pulumi_cli(self.project, *args, "--stack", STACK, check=check, env=ENV)

    def up(self, *args: str) -> str:
        result = self.pulumi("up", "--yes", *args)
        return result.stdout + result.stderr

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets").stdout)

    def preview_steps(self) -> list[dict[str, Any]]:
        """The steps of `pulumi preview --json` that change something."""
        preview = json.loads(self.pulumi("preview", "--json").stdout)
        return [s for s in preview["steps"] if s["op"] != "same"]

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit the stack file's config (what a user does in a pull request)."""
        document = yaml.safe_load(self.stack_file.read_text())
        change(document["config"])
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def kubectl(self, *args: str, check: bool = True) -> str:
        return kubectl(self.cluster, *args, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        return get(self.cluster, *args)

    def after_destroy(self) -> set[Object]:
        """What a destroy must leave: the cluster as before, plus the kept cache claim, its volume and the
        namespace holding them (with what the cluster puts in every namespace: its default ServiceAccount and
        the root CA ConfigMap)."""
        volume = self.get("pvc", CACHE, "-n", NAMESPACE)["spec"]["volumeName"]
        return self.before | {
            ("Namespace", "", NAMESPACE),
            ("PersistentVolumeClaim", NAMESPACE, CACHE),
            ("PersistentVolume", "", volume),
            ("ServiceAccount", NAMESPACE, "default"),
            ("ConfigMap", NAMESPACE, "kube-root-ca.crt"),
        }

    def pods(self, service: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={service}"
        return self.get("pods", "-n", NAMESPACE, "-l", selector)["items"]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[Local]:
    project = copy_project(tmp_path_factory.mktemp("local"))
    state = Local(project, cluster)
    state.pulumi("stack", "init")
    # The stack file points at tools/cluster's kubeconfig; the tests' cluster has its own.
    state.pulumi("config", "set", "kubernetes:kubeconfig", cluster["KUBECONFIG"])
    state.base = state.stack_file.read_text()
    yield state
    # Leave the cluster to the other tests as this module found it: without what a destroy keeps on purpose.
    state.pulumi("destroy", "--yes", check=False)
    state.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")


@pytest.fixture
def deployed(local: Local) -> Local:
    """The stack as committed, up (delivery direct): an update converges whatever state a test left."""
    local.reset()
    local.up()
    return local


@pytest.fixture
def fresh(local: Local) -> Local:
    """The stack as committed, destroyed: only what a destroy keeps on purpose is left."""
    local.reset()
    local.pulumi("destroy", "--yes")
    return local


def short(urn: str) -> str:
    """``<type>::<name>`` of a URN."""
    return urn.split("$")[-1]


# --- delivery direct ------------------------------------------------------------------------------------------


def test_up_places_the_llama_server_pod_on_the_node_that_fits_and_awaits_it(fresh: Local) -> None:
    local = fresh
    preview = local.pulumi("preview").stdout
    assert "fits: kwok-dual-rtx5060ti" in preview, preview

    local.up()
    # Pulumi returned only after its await logic saw the Deployment available: no skipAwait involved.
    deployment = local.get("deployment", SERVICE, "-n", NAMESPACE)
    assert "pulumi.com/skipAwait" not in deployment["metadata"].get("annotations", {})
    assert deployment["status"]["availableReplicas"] == 1
    (pod,) = local.pods(SERVICE)
    assert ready(pod)
    assert pod["spec"]["nodeName"] == "kwok-dual-rtx5060ti"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["memory"] == "48Gi"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert local.get("pvc", CACHE, "-n", NAMESPACE)["status"]["phase"] == "Bound"
    # The restricted Pod Security Standard is enforced by the API server, and our pod passed it.
    labels = local.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    service = local.outputs()["services"][SERVICE]
    assert service["scheduling"] == "fits: kwok-dual-rtx5060ti"
    assert service["endpoint"] == f"http://{SERVICE}.{NAMESPACE}.svc.cluster.local:8080"


def test_a_second_up_with_no_change_changes_nothing(deployed: Local) -> None:
    local = deployed
    local.up("--expect-no-changes")


def test_changing_context_size_updates_only_the_deployment_argument(deployed: Local) -> None:
    local = deployed
    args = local.get("deployment", SERVICE, "-n", NAMESPACE)["spec"]["template"]["spec"]["containers"][0]["args"]
    index = args.index("--ctx-size") + 1
    assert args[index] == "90112"
    local.pulumi("config", "set", "--path", f"llmkube:services.{SERVICE}.contextSize", "65536")

    steps = local.preview_steps()
    # The service component's own properties (its effective spec and plan, which policies read) change too.
    component = f"llmkube:index:InferenceService::llmkube-{SERVICE}"
    assert {short(s["urn"]) for s in steps if s["op"] == "update" and not s["urn"].count("kubernetes:")} == {component}
    (step,) = [s for s in steps if short(s["urn"]).startswith("kubernetes:")]
    assert step["op"] == "update"
    assert short(step["urn"]) == f"kubernetes:apps/v1:Deployment::llmkube-{SERVICE}-deployment"
    assert set(step["detailedDiff"]) == {f"spec.template.spec.containers[0].args[{index}]"}
    diff = local.pulumi("preview", "--diff").stdout
    assert f'[{index}]: "90112" => "65536"' in diff, diff

    old_pod = local.pods(SERVICE)[0]["metadata"]["name"]
    local.up()
    deployment = local.get("deployment", SERVICE, "-n", NAMESPACE)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][index] == "65536"

    # Recreate (GPUs cannot be shared by the old and new pod): the new pod replaced the old one and is Ready.
    def replaced() -> list[dict[str, Any]]:
        pods = local.pods(SERVICE)
        return pods if [p["metadata"]["name"] for p in pods if p["metadata"]["name"] != old_pod] else []

    (pod,) = wait_until("the new pod alone", lambda: (pods := replaced()) and len(pods) == 1 and pods)
    assert ready(pod)


def test_an_api_key_set_as_a_secret_stays_secret_and_reaches_the_pod_as_a_file(deployed: Local) -> None:
    """pulumi config set --secret --path 'llmkube:apiKeys.<service>': in the Secret only, never in plain text in
    the stack file, the state, the Deployment or the outputs."""
    local = deployed
    key = "sk-local-e2e-0123456789abcdef"
    local.pulumi("config", "set", "--secret", "--path", f"llmkube:apiKeys.{SERVICE}", key)
    assert key not in local.stack_file.read_text()
    local.up()

    secret = local.get("secret", f"{SERVICE}-api-key", "-n", NAMESPACE)
    assert base64.b64decode(secret["data"]["api-key"]).decode() == key
    pod = local.get("deployment", SERVICE, "-n", NAMESPACE)["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--api-key-file") + 1] == "/etc/llmkube/api-key/api-key"
    assert {"name": "api-key", "mountPath": "/etc/llmkube/api-key", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]
    assert key not in json.dumps(pod)
    state = local.pulumi("stack", "export").stdout
    assert key not in state  # the Secret's data is a secret in the state: encrypted
    outputs = local.outputs()
    assert key not in json.dumps(outputs)
    # The service's NetworkPolicy, accepted by the API server: its port from the namespace's pods only.
    policy = local.get("networkpolicy", SERVICE, "-n", NAMESPACE)["spec"]
    assert policy["ingress"] == [{"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    assert outputs["services"][SERVICE]["apiKeySecret"] == {"name": f"{SERVICE}-api-key", "key": "api-key"}


def test_removing_a_service_deletes_its_workloads_but_never_the_shared_cache(deployed: Local) -> None:
    local = deployed

    def add(config: dict[str, Any]) -> None:
        config["llmkube:models"]["llama32-1b"] = {
            "source": "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/"
            "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
            "format": "gguf",
        }
        config["llmkube:services"]["small"] = {
            "modelRef": "llama32-1b",
            "contextSize": 4096,
            "extraArgs": ["--cache-ram", "1024"],  # llama-server's prompt cache, 8 GiB by default
            "resources": {"gpu": 0, "cpu": "2", "memory": "4Gi"},
        }

    local.edit(add)
    local.up()
    (pod,) = local.pods("small")
    # CPU only, yet pinned to the profile's node, whose GPU taint it tolerates.
    assert ready(pod) and pod["spec"]["nodeName"] == "kwok-dual-rtx5060ti"
    cache_uid = local.get("pvc", CACHE, "-n", NAMESPACE)["metadata"]["uid"]

    def remove(config: dict[str, Any]) -> None:
        config["llmkube:services"].pop("small")
        config["llmkube:models"].pop("llama32-1b")

    local.edit(remove)
    deletes = {short(s["urn"]) for s in local.preview_steps() if s["op"] == "delete"}
    assert deletes == {
        "llmkube:index:Model::llmkube-llama32-1b",
        "llmkube:index:InferenceService::llmkube-small",
        "kubernetes:apps/v1:Deployment::llmkube-small-deployment",
        "kubernetes:core/v1:Service::llmkube-small-service",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy::llmkube-small-network-policy",
    }, deletes
    local.up()
    assert local.kubectl("get", "deployment,service", "small", "-n", NAMESPACE, "--ignore-not-found").strip() == ""
    assert local.get("pvc", CACHE, "-n", NAMESPACE)["metadata"]["uid"] == cache_uid
    assert local.get("deployment", SERVICE, "-n", NAMESPACE)["status"]["availableReplicas"] == 1


def test_a_service_no_node_can_run_stays_pending_and_the_stack_says_why(deployed: Local) -> None:
    local = deployed

    # The profile claims two nodes of four GPUs; the cluster's biggest node has two.
    def add(config: dict[str, Any]) -> None:
        config["llmkube:hardware"] = {"extends": "dual-rtx5060ti", "gpu": {"count": 4}, "nodes": 2}
        config["llmkube:services"]["too-big"] = {
            "modelRef": "qwen36-35b-a3b",
            "contextSize": 8192,
            "resources": {"gpu": 4, "cpu": "8"},
        }

    local.edit(add)
    preview = local.pulumi("preview")
    said = preview.stdout + preview.stderr
    assert "llmkube:services.too-big: its pod will stay Pending, no node can run it:" in said, said
    assert "kwok-dual-rtx5060ti: nvidia.com/gpu 4 asked, 2 allocatable" in said, said

    local.up()  # returns without waiting out a timeout: that service alone is not awaited
    scheduling = local.outputs()["services"]["too-big"]["scheduling"]
    assert scheduling.startswith("Pending: no node can run it:"), scheduling
    # Not awaited, so its pod may not exist yet when `up` returns.
    (pod,) = wait_until("its pod", lambda: local.pods("too-big"))
    message = wait_until("the scheduler's verdict", lambda: unschedulable_reason(local.pods("too-big")[0]))
    assert "Insufficient nvidia.com/gpu" in message, message
    assert pod["status"]["phase"] == "Pending"

    def restore(config: dict[str, Any]) -> None:
        config["llmkube:hardware"] = "dual-rtx5060ti"
        config["llmkube:services"].pop("too-big")

    local.edit(restore)
    local.up()
    assert local.pods("too-big") == []


def test_a_service_wanting_the_gpus_another_holds_stays_pending_and_says_whose(deployed: Local) -> None:
    local = deployed

    # Both GPUs of the only node that fits are held by the first service: the second gets no room. The profile
    # claims two such nodes (the preview's pool check passes), the cluster has one.
    def add(config: dict[str, Any]) -> None:
        config["llmkube:hardware"] = {"extends": "dual-rtx5060ti", "nodes": 2}
        config["llmkube:services"]["second"] = {
            "modelRef": "qwen36-35b-a3b",
            "contextSize": 8192,
            "resources": {"gpu": 2, "cpu": "4", "hostMemory": "12Gi"},
        }

    local.edit(add)
    local.up()
    scheduling = local.outputs()["services"]["second"]["scheduling"]
    assert scheduling.startswith("Pending: no node has room left for it:"), scheduling
    assert (
        f"kwok-dual-rtx5060ti: nvidia.com/gpu 2 asked, 0 free (in use by {NAMESPACE}/{SERVICE} (this stack))"
        in scheduling
    ), scheduling
    wait_until("its pod", lambda: local.pods("second"))
    message = wait_until("the scheduler's verdict", lambda: unschedulable_reason(local.pods("second")[0]))
    assert "Insufficient nvidia.com/gpu" in message, message
    # The first service is untouched, and what it runs is still Ready.
    assert local.outputs()["services"][SERVICE]["scheduling"] == "fits: kwok-dual-rtx5060ti"
    assert all(ready(p) for p in local.pods(SERVICE))

    def restore(config: dict[str, Any]) -> None:
        config["llmkube:hardware"] = "dual-rtx5060ti"
        config["llmkube:services"].pop("second")

    local.edit(restore)
    local.up()
    assert local.pods("second") == []


def test_a_bad_config_fails_before_anything_is_applied(deployed: Local) -> None:
    local = deployed
    before = objects(local.cluster)
    local.pulumi("config", "set", "--path", f"llmkube:services.{SERVICE}.contextSize", "50")
    for command in (("preview",), ("up", "--yes")):
        result = local.pulumi(*command, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"llmkube:services.{SERVICE}.contextSize: 50: input should be greater than or equal to 128" in output
        assert "Traceback" not in output
    assert objects(local.cluster) == before
    local.reset()
    local.up("--expect-no-changes")


def test_destroy_leaves_the_cluster_as_it_was_but_for_the_protected_cache(deployed: Local) -> None:
    local = deployed
    local.pulumi("destroy", "--yes")
    wait_until("the cluster to be as before plus the cache", lambda: objects(local.cluster) == local.after_destroy())
    assert local.get("pvc", CACHE, "-n", NAMESPACE)["status"]["phase"] == "Bound"


# --- delivery operator ----------------------------------------------------------------------------------------


def test_operator_delivery_custom_resources_are_accepted_and_checked_by_the_api_server(deployed: Local) -> None:
    # A direct stack destroyed, keeping its namespace and cache; then the other delivery into that namespace.
    local = deployed
    local.pulumi("destroy", "--yes")
    local.pulumi("config", "set", "llmkube:delivery", "operator")
    local.up()

    for crd in ("models.inference.llmkube.dev", "inferenceservices.inference.llmkube.dev"):
        conditions = local.get("crd", crd)["status"]["conditions"]
        assert {"type": "Established", "status": "True"} in [{k: c[k] for k in ("type", "status")} for c in conditions]
    isvc = local.get("inferenceservice", SERVICE, "-n", NAMESPACE)
    assert isvc["spec"]["contextSize"] == 90112
    assert isvc["spec"]["modelRef"] == "qwen36-35b-a3b"
    assert local.get("model", "qwen36-35b-a3b", "-n", NAMESPACE)["spec"]["format"] == "gguf"
    # The operator's controller: scheduled and Ready (its image never runs under KWOK), awaited by Pulumi.
    operator = local.get("deployments", "-n", "llmkube-system")["items"]
    assert [d["status"].get("availableReplicas") for d in operator] == [1]
    # The namespace kept by the direct stack was adopted: its pod security now admits the operator's pods.
    assert local.get("namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"

    # The API server validates custom resources against the schema generated from our API.
    bad = {**isvc, "metadata": {"name": "bad", "namespace": NAMESPACE}, "spec": {**isvc["spec"], "contextSize": 50}}
    bad.pop("status", None)
    # A server-side dry run: refused, nothing stored (kubectl() raises with the server's answer).
    with pytest.raises(AssertionError) as refused:
        kubectl(local.cluster, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(bad))
    rejected = str(refused.value)
    assert "spec.contextSize" in rejected and "128" in rejected, rejected

    local.up("--expect-no-changes")


def test_operator_delivery_destroy_removes_crds_and_operator_but_not_the_cache(deployed: Local) -> None:
    local = deployed
    local.pulumi("destroy", "--yes")
    local.pulumi("config", "set", "llmkube:delivery", "operator")
    local.up()
    local.pulumi("destroy", "--yes")
    wait_until("the operator and its CRDs to be gone", lambda: objects(local.cluster) == local.after_destroy())
