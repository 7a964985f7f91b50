"""The operator's rights on the real API server: `pulumi up` of a delivery-operator stack on the local cluster
(tests/e2e/cluster.py), then the API server's own authorizer is asked, impersonating the controller's
ServiceAccount (`kubectl auth can-i --as=...`), about every call the controller makes for the Models and
InferenceServices of that stack, and about calls it must not be able to make.

The controller binary itself cannot run here: KWOK marks its pod Running and Ready without running a container,
its image cannot run under KWOK, and its Go module (github.com/defilantech/llmkube, v0.9.19) cannot be built
because the Go module proxy refuses it. So what is proven is the authorizer's decision for each of the
controller's calls, listed below from its source at the pinned version, not a controller reconciling with
those rights.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cluster import get, kubectl
from tests.e2e.pulumi_project import ClusterStack, copy_project

pytestmark = pytest.mark.e2e

STACK = "local"
NAMESPACE = "llmkube-rbac"  # the stack's namespace: its models and services live here, so the controller serves it
ELSEWHERE = "elsewhere"  # a namespace the stack does not serve
OPERATOR_NAMESPACE = "llmkube-system"
CONTROLLER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:llmkube-controller-manager"
ALL = "*"  # every namespace at once (a cluster-wide request: `kubectl auth can-i -A`), or a cluster-scoped kind

Call = tuple[str, str, str]  # (verb, resource[.group][/subresource], namespace or ALL)

# controller-runtime's informers list and watch each kind in every namespace (cmd/main.go sets no
# DefaultNamespaces), and a cached Get or List starts one for its kind: without these a cache never syncs.
CACHE_KINDS = (
    "models.inference.llmkube.dev",  # model_controller.go For(Model); inferenceservice_controller.go Watches(Model)
    "inferenceservices.inference.llmkube.dev",  # For(InferenceService); scheduling.go lists them all (GPU queue)
    "gpuquotas.inference.llmkube.dev",  # the GPUQuota, LoRAAdapter, ModelPool and ModelRouter controllers,
    "loraadapters.inference.llmkube.dev",  # started unconditionally by cmd/main.go: For() of each
    "modelpools.inference.llmkube.dev",
    "modelrouters.inference.llmkube.dev",
    "federatedclusters.federation.llmkube.dev",  # the FederatedCluster hub controller (--federation-role=hub)
    "deployments.apps",  # inferenceservice_controller.go Owns(Deployment, Service, HorizontalPodAutoscaler)
    "services",
    "horizontalpodautoscalers.autoscaling",
    "pods",  # Watches(Pod)
    "endpointslices.discovery.k8s.io",  # Watches(EndpointSlice)
    "configmaps",  # modelrouter_controller.go Owns(ConfigMap)
    "persistentvolumeclaims",  # model_storage.go: cached Get of the model cache claim
    "nodes",  # model_controller.go lists nodes (GPU capacity); driver_compat.go gets a pod's node
    "persistentvolumes",  # volume_affinity.go: the volume behind a cache claim whose pod cannot schedule
)
CACHE_READS: list[Call] = [(verb, kind, ALL) for kind in CACHE_KINDS for verb in ("get", "list", "watch")]

# The reconciles of a Model and an InferenceService, in their namespace.
RECONCILE_CALLS: list[Call] = [
    ("update", "models.inference.llmkube.dev/status", NAMESPACE),  # model_controller.go updateStatus
    ("update", "inferenceservices.inference.llmkube.dev/status", NAMESPACE),  # Status().Update
    ("create", "deployments.apps", NAMESPACE),  # reconcileDeployment
    ("update", "deployments.apps", NAMESPACE),
    ("delete", "deployments.apps", NAMESPACE),  # recreated when its immutable selector must change
    ("create", "services", NAMESPACE),  # reconcileService
    ("update", "services", NAMESPACE),
    ("create", "horizontalpodautoscalers.autoscaling", NAMESPACE),  # hpa_reconciler.go
    ("update", "horizontalpodautoscalers.autoscaling", NAMESPACE),
    ("delete", "horizontalpodautoscalers.autoscaling", NAMESPACE),  # autoscaling switched off
    ("create", "persistentvolumeclaims", NAMESPACE),  # model_storage.go: the model cache claim
    ("get", "pods/log", NAMESPACE),  # acceleration.go: the offload line of the llama-server log
    ("create", "events.events.k8s.io", NAMESPACE),  # the InferenceService reconciler's events (events.k8s.io/v1)
    ("patch", "events.events.k8s.io", NAMESPACE),
]

# What the manager needs whatever it serves: leader election in its own namespace, reviews for /metrics.
MANAGER_CALLS: list[Call] = [
    ("get", "leases.coordination.k8s.io", OPERATOR_NAMESPACE),
    ("create", "leases.coordination.k8s.io", OPERATOR_NAMESPACE),
    ("update", "leases.coordination.k8s.io", OPERATOR_NAMESPACE),
    ("create", "tokenreviews.authentication.k8s.io", ALL),
    ("create", "subjectaccessreviews.authorization.k8s.io", ALL),
]

# Never, in either mode: Secrets anywhere, deleting a model cache, Jobs, bare pods, evictions, RBAC, and
# changing or deleting the Models and InferenceServices themselves.
NEVER: list[Call] = [
    *[(verb, "secrets", where) for where in (NAMESPACE, ELSEWHERE, ALL) for verb in ("get", "list", "watch")],
    ("delete", "persistentvolumeclaims", NAMESPACE),
    ("create", "jobs.batch", NAMESPACE),
    ("create", "pods", NAMESPACE),
    ("create", "pods/eviction", NAMESPACE),
    ("create", "roles.rbac.authorization.k8s.io", NAMESPACE),
    ("create", "rolebindings.rbac.authorization.k8s.io", NAMESPACE),
    ("update", "models.inference.llmkube.dev", NAMESPACE),
    ("delete", "inferenceservices.inference.llmkube.dev", NAMESPACE),
    ("update", "nodes", ALL),
]

# The reconcile's calls in a namespace the stack does not serve, and across all namespaces at once.
WRITES_ELSEWHERE: list[Call] = [
    (verb, resource, where) for verb, resource, _ in RECONCILE_CALLS for where in (ELSEWHERE, ALL)
]


def can(env: dict[str, str], call: Call) -> bool:
    """The API server's authorization decision for the controller's ServiceAccount making ``call``."""
    verb, resource, where = call
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={CONTROLLER}", "-A" if where == ALL else f"--namespace={where}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = kubectl(env, *args, check=False).strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {answer!r}"
    return answer == "yes"


def decisions(env: dict[str, str], calls: list[Call]) -> dict[Call, bool]:
    return {call: can(env, call) for call in calls}


class Stack(ClusterStack):
    """A copy of the project with the local stack in delivery operator, serving NAMESPACE."""

    def roles(self, namespace: str) -> set[str]:
        return {r["metadata"]["name"] for r in get(self.cluster, "roles", "-n", namespace)["items"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[Stack]:
    s = Stack(copy_project(tmp_path_factory.mktemp("rbac")), cluster, STACK)
    s.pulumi("stack", "init")
    s.pulumi("config", "set", "kubernetes:kubeconfig", cluster["KUBECONFIG"])
    s.pulumi("config", "set", "llmkube:namespace", NAMESPACE)
    s.pulumi("config", "set", "llmkube:delivery", "operator")
    yield s
    s.pulumi("destroy", "--yes")
    kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")


def test_namespaced_the_controller_may_make_its_calls_where_it_serves_and_only_read_elsewhere(stack: Stack) -> None:
    stack.pulumi("config", "set", "--path", "llmkube:operator.rbac", "namespaced")  # the default, written out
    stack.pulumi("up", "--yes")
    assert "llmkube-manager-namespace-role" in stack.roles(NAMESPACE)
    # The Model and the InferenceService whose reconcile the calls below are: accepted by the API server.
    assert get(stack.cluster, "models,inferenceservices", "-n", NAMESPACE)["items"]

    allowed = decisions(stack.cluster, CACHE_READS + RECONCILE_CALLS + MANAGER_CALLS)
    assert [call for call, yes in allowed.items() if not yes] == []
    denied = decisions(stack.cluster, NEVER + WRITES_ELSEWHERE)
    assert [call for call, yes in denied.items() if yes] == []


def test_cluster_wide_is_an_opt_in_that_writes_everywhere_but_still_reads_no_secrets(stack: Stack) -> None:
    stack.pulumi("config", "set", "--path", "llmkube:operator.rbac", "clusterWide")
    stack.pulumi("up", "--yes")
    # The writes moved into the ClusterRole: the Role in the served namespace is gone.
    assert "llmkube-manager-namespace-role" not in stack.roles(NAMESPACE)

    allowed = decisions(stack.cluster, CACHE_READS + RECONCILE_CALLS + MANAGER_CALLS + WRITES_ELSEWHERE)
    assert [call for call, yes in allowed.items() if not yes] == []
    denied = decisions(stack.cluster, NEVER)
    assert [call for call, yes in denied.items() if yes] == []
