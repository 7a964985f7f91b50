"""The LLMKube controller install: its RBAC in each scope (reads at cluster scope, writes only in the served
namespaces unless clusterWide is chosen), the Deployment's flags, probes and security, and the shared metadata
helpers it is built from. Every manifest is checked against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml

from llmkube_components import pipeline
from llmkube_components.api import OperatorSettings
from llmkube_components.errors import ConfigError
from llmkube_components.meta import (
    RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    object_meta,
    recommended_labels,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from llmkube_components.operator import (
    CONTROLLER_NAME,
    LEADER_ELECTION_ROLE,
    MANAGER_ROLE,
    METRICS_AUTH_ROLE,
    NAMESPACE_ROLE,
    NAMESPACE_ROLE_BINDING,
    SELECTOR_LABELS,
    controller_deployment,
    operator_manifests,
    served_namespace_manifests,
)
from llmkube_components.settings import Settings
from tests.pulumi_program import RecordingMocks, install_mocks
from tests.test_components import run

# The newest schema kubernetes-validate ships; strict, so an unknown or misspelt field fails.
K8S_VERSION = "1.37.0"

REPO = "ghcr.io/defilantech/llmkube-controller"
READ = {"get", "list", "watch"}
CRUD = {"create", "delete", "get", "list", "patch", "update", "watch"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def settings(**wire: Any) -> OperatorSettings:
    return OperatorSettings.model_validate(wire)


def manifests(**wire: Any) -> list[dict[str, Any]]:
    return operator_manifests(settings(**wire))


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, however the rules happen to be grouped."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule.get("apiGroups", []):  # a nonResourceURLs rule has none
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------------------------------------------------
# The controller's rights: reads at cluster scope, writes only where it serves (or everywhere, opted into)
# ---------------------------------------------------------------------------------------------------------

# What controller-runtime's caches list and watch in every namespace (the binary has no watch-namespace mode).
EXPECTED_CLUSTER_READS: dict[tuple[str, str], set[str]] = {
    ("inference.llmkube.dev", "models"): READ,
    ("inference.llmkube.dev", "inferenceservices"): READ,
    ("inference.llmkube.dev", "gpuquotas"): READ,
    ("inference.llmkube.dev", "loraadapters"): READ,
    ("inference.llmkube.dev", "modelpools"): READ,
    ("inference.llmkube.dev", "modelrouters"): READ,
    ("federation.llmkube.dev", "federatedclusters"): READ,
    ("apps", "deployments"): READ,
    ("", "services"): READ,
    ("autoscaling", "horizontalpodautoscalers"): READ,
    ("", "configmaps"): READ,
    ("", "pods"): READ,
    ("discovery.k8s.io", "endpointslices"): READ,
    ("", "persistentvolumeclaims"): READ,
    ("", "nodes"): READ,
    ("", "persistentvolumes"): READ,
}
# What the reconciles of Models and InferenceServices write (and the pod log they read), where they serve.
EXPECTED_WRITES: dict[tuple[str, str], set[str]] = {
    ("inference.llmkube.dev", "models/status"): {"update"},
    ("inference.llmkube.dev", "inferenceservices/status"): {"update"},
    ("apps", "deployments"): {"create", "delete", "update"},
    ("", "services"): {"create", "update"},
    ("autoscaling", "horizontalpodautoscalers"): {"create", "delete", "update"},
    ("", "persistentvolumeclaims"): {"create"},
    ("", "pods/log"): {"get"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
EXPECTED_CLUSTER_WIDE = {
    key: EXPECTED_CLUSTER_READS.get(key, set()) | EXPECTED_WRITES.get(key, set())
    for key in {*EXPECTED_CLUSTER_READS, *EXPECTED_WRITES}
}
SERVED = ["team-b", "team-a"]


def served(**wire: Any) -> dict[str, list[dict[str, Any]]]:
    return served_namespace_manifests(settings(**wire))


def manager_role(**wire: Any) -> dict[str, Any]:
    return one(manifests(**wire), "ClusterRole", MANAGER_ROLE)


def every_role(**wire: Any) -> list[dict[str, Any]]:
    objs = manifests(**wire) + [m for ms in served(**wire).values() for m in ms]
    return [o for o in objs if o["kind"] in ("ClusterRole", "Role")]


def test_namespaced_cluster_role_only_reads_what_the_caches_watch() -> None:
    assert grants(manager_role(servedNamespaces=SERVED)) == EXPECTED_CLUSTER_READS


@pytest.mark.parametrize(
    ("key", "verbs"),
    sorted(EXPECTED_WRITES.items()),
    ids=[f"{group or 'core'}/{resource}" for group, resource in sorted(EXPECTED_WRITES)],
)
@pytest.mark.parametrize("namespace", SERVED)
def test_namespaced_writes_are_a_role_in_each_served_namespace(
    key: tuple[str, str], verbs: set[str], namespace: str
) -> None:
    role = one(served(servedNamespaces=SERVED)[namespace], "Role", NAMESPACE_ROLE)
    assert role["metadata"]["namespace"] == namespace
    assert grants(role)[key] == verbs


def test_namespaced_role_grants_nothing_beyond_the_table() -> None:
    for objs in served(servedNamespaces=SERVED).values():
        assert grants(one(objs, "Role")) == EXPECTED_WRITES


def test_cluster_wide_is_the_reads_and_the_writes_in_every_namespace() -> None:
    assert grants(manager_role(rbac="clusterWide")) == EXPECTED_CLUSTER_WIDE
    assert served(rbac="clusterWide") == {}


def test_the_default_is_namespaced() -> None:
    assert settings().rbac == "namespaced"
    assert manager_role() == manager_role(rbac="namespaced")


@pytest.mark.parametrize("wire", [{"servedNamespaces": SERVED}, {"rbac": "clusterWide"}], ids=["namespaced", "wide"])
def test_no_role_reads_secrets(wire: dict[str, Any]) -> None:
    # The controller reads Secrets only for an s3:// source's sourceSecretRef and ModelRouter auth: no mode grants
    # them unless the user grants secretReads (below).
    for role in every_role(**wire):
        assert not any(resource.startswith("secrets") for _, resource in grants(role)), role["metadata"]["name"]


def test_namespaced_cluster_role_writes_nothing_and_reads_no_logs() -> None:
    cluster_grants = grants(manager_role(servedNamespaces=SERVED))
    assert all(verbs <= READ for verbs in cluster_grants.values())
    assert ("", "pods/log") not in cluster_grants


@pytest.mark.parametrize(
    ("served_namespaces", "expected"),
    [(["b", "a", "a", "b"], ["a", "b"]), (["team"], ["team"]), ([], []), (None, [])],
)
def test_one_role_and_binding_per_served_namespace_in_order(
    served_namespaces: list[str] | None, expected: list[str]
) -> None:
    wire = {} if served_namespaces is None else {"servedNamespaces": served_namespaces}
    by_namespace = served(**wire)
    assert list(by_namespace) == expected
    for namespace, objs in by_namespace.items():
        assert [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in objs] == [
            ("Role", NAMESPACE_ROLE, namespace),
            ("RoleBinding", NAMESPACE_ROLE_BINDING, namespace),
        ]


@pytest.mark.parametrize("namespace", ["llmkube-system", "ops"])
def test_served_namespace_binding_binds_the_controller_service_account(namespace: str) -> None:
    binding = one(served(namespace=namespace, servedNamespaces=["team"])["team"], "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAMESPACE_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": namespace}]


@pytest.mark.parametrize("wire", [{"servedNamespaces": SERVED}, {"rbac": "clusterWide"}], ids=["namespaced", "wide"])
@pytest.mark.parametrize(
    ("key", "forbidden"),
    [
        # A model cache holds tens of GiB of downloaded weights: never deleted by the controller.
        (("", "persistentvolumeclaims"), {"delete", "deletecollection"}),
        (("", "nodes"), WRITE_VERBS),
        (("", "pods"), WRITE_VERBS),
        (("", "persistentvolumes"), WRITE_VERBS),
        (("", "services"), {"delete", "deletecollection"}),  # garbage-collected through owner references
        (("inference.llmkube.dev", "models"), WRITE_VERBS),
        (("inference.llmkube.dev", "inferenceservices"), WRITE_VERBS),
    ],
)
def test_no_role_grants(wire: dict[str, Any], key: tuple[str, str], forbidden: set[str]) -> None:
    for role in every_role(**wire):
        assert not grants(role).get(key, set()) & forbidden, role["metadata"]["name"]


@pytest.mark.parametrize("wire", [{"servedNamespaces": SERVED}, {"rbac": "clusterWide"}], ids=["namespaced", "wide"])
def test_no_role_uses_wildcards_or_touches_rbac(wire: dict[str, Any]) -> None:
    for role in every_role(**wire):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert "rbac.authorization.k8s.io" not in rule.get("apiGroups", []), role["metadata"]["name"]


def test_metrics_auth_role_only_reviews_tokens_and_access() -> None:
    assert grants(one(manifests(), "ClusterRole", METRICS_AUTH_ROLE)) == {
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    }


@pytest.mark.parametrize(
    ("binding", "role"),
    [("llmkube-manager-rolebinding", MANAGER_ROLE), ("llmkube-metrics-auth-rolebinding", METRICS_AUTH_ROLE)],
)
@pytest.mark.parametrize("namespace", ["llmkube-system", "ops"])
def test_cluster_role_bindings_bind_the_controller_service_account(binding: str, role: str, namespace: str) -> None:
    b = one(manifests(namespace=namespace), "ClusterRoleBinding", binding)
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": namespace}]


# ---------------------------------------------------------------------------------------------------------
# Where the controller serves: the settings, a stack's own namespace, bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (
            {},
            "llmkube:operator.servedNamespaces: none given: with rbac namespaced (the default) the controller may "
            "write only in the namespaces it serves; list the namespaces of its Models and InferenceServices, or set "
            "rbac: clusterWide",
        ),
        ({"servedNamespaces": []}, "llmkube:operator.servedNamespaces: none given: with rbac namespaced"),
        (
            {"rbac": "clusterWide", "servedNamespaces": ["team"]},
            "llmkube:operator.servedNamespaces: ['team'] applies only with rbac namespaced; rbac clusterWide grants "
            "the controller its rights in every namespace: remove servedNamespaces, or set rbac: namespaced",
        ),
        (
            {"servedNamespaces": ["team", "kube-system"]},
            "llmkube:operator.servedNamespaces[1]: 'kube-system' is reserved for the cluster's own components; the "
            "controller must not write there",
        ),
        ({"rbac": "cluster"}, "llmkube:operator.rbac: 'cluster': input should be 'namespaced' or 'clusterWide'"),
        ({"servedNamespaces": ["Team"]}, "llmkube:operator.servedNamespaces[0]: 'Team'"),
        ({"servedNamespaces": "team"}, "llmkube:operator.servedNamespaces: 'team'"),
    ],
)
def test_a_bad_scope_is_a_config_error_naming_its_path(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        pipeline.operator(wire)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    ("wire", "served_keys"),
    [
        ({"servedNamespaces": ["team"]}, ["team"]),
        ({"rbac": "clusterWide"}, []),
        ({"rbac": "clusterWide", "servedNamespaces": []}, []),
    ],
)
def test_an_operator_alone_serves_what_it_is_told(wire: dict[str, Any], served_keys: list[str]) -> None:
    assert list(pipeline.operator(wire).served) == served_keys


@pytest.mark.parametrize(
    ("operator", "served_keys"),
    [
        ({}, ["llmkube"]),
        ({"servedNamespaces": ["team", "llmkube"]}, ["llmkube", "team"]),
        ({"rbac": "clusterWide"}, []),
    ],
)
def test_a_stack_serves_its_own_namespace(operator: dict[str, Any], served_keys: list[str]) -> None:
    built = pipeline.platform({"delivery": "operator", "operator": operator}, Settings(offline=True)).operator
    assert built is not None
    assert list(built.served) == served_keys
    # The settings the Operator component registers (and policies read) name every served namespace.
    assert built.settings.served_namespaces == (served_keys or None)


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        (
            {"rbac": "clusterWide", "servedNamespaces": ["team"]},
            "llmkube:operator.servedNamespaces: ['team'] applies only with rbac namespaced",
        ),
        ({"servedNamespaces": ["kube-public"]}, "llmkube:operator.servedNamespaces[0]: 'kube-public' is reserved"),
    ],
)
def test_a_stack_reports_a_bad_scope_with_its_config_path(operator: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        pipeline.platform({"delivery": "operator", "operator": operator}, Settings(offline=True))
    assert message in str(err.value)


def test_a_stack_that_does_not_install_the_operator_is_not_checked_for_it() -> None:
    raw = {"delivery": "operator", "operator": {"install": False, "rbac": "clusterWide", "servedNamespaces": ["x"]}}
    assert pipeline.platform(raw, Settings(offline=True)).operator is None


def test_the_operator_component_registers_the_roles_where_it_serves() -> None:
    from llmkube_components import Operator

    def program() -> Operator:
        return Operator("op", {"servedNamespaces": ["team-b", "team-a"]})

    def check(op: Any, mocks: RecordingMocks) -> None:
        roles = {(r.name, r.kind, (r.inputs.get("metadata") or {}).get("namespace", "")) for r in mocks.resources}
        assert {
            ("op-in-team-a-role", "Role", "team-a"),
            ("op-in-team-a-role-binding", "RoleBinding", "team-a"),
            ("op-in-team-b-role", "Role", "team-b"),
            ("op-in-team-b-role-binding", "RoleBinding", "team-b"),
            # The install's own objects keep the names they always had.
            ("op-role", "Role", "llmkube-system"),
            ("op-role-binding", "RoleBinding", "llmkube-system"),
            ("op-llmkube-manager-role", "ClusterRole", ""),
        } <= roles
        component = next(r for r in mocks.resources if r.type == "llmkube:index:Operator")
        assert component.inputs["settings"]["rbac"] == "namespaced"
        assert component.inputs["settings"]["servedNamespaces"] == ["team-b", "team-a"]

    run({}, check, program)


def test_the_operator_component_refuses_namespaced_rights_nowhere() -> None:
    from llmkube_components import Operator

    mocks = install_mocks({})

    @pulumi.runtime.test
    def program() -> None:
        Operator("op")

    with pytest.raises(ConfigError) as err:
        program()
    assert str(err.value).startswith("Operator op: servedNamespaces: none given: with rbac namespaced")
    assert [r for r in mocks.resources if r.type.startswith("kubernetes:")] == []


# ---------------------------------------------------------------------------------------------------------
# Leader election: a namespaced Role only
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["llmkube-system", "ops"])
def test_leader_election_is_scoped_to_the_operator_namespace(namespace: str) -> None:
    objs = manifests(namespace=namespace)
    role = one(objs, "Role", LEADER_ELECTION_ROLE)
    binding = one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == namespace
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEADER_ELECTION_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": namespace}]
    assert grants(role) == {
        ("", "configmaps"): CRUD,
        ("coordination.k8s.io", "leases"): CRUD,
        ("", "events"): {"create", "patch"},
    }
    # In its own namespace, leader election is the controller's only Role (its writes are where it serves).
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Role"] == [LEADER_ELECTION_ROLE]


# ---------------------------------------------------------------------------------------------------------
# Deployment
# ---------------------------------------------------------------------------------------------------------


def test_deployment_image_is_the_settings_image_ref() -> None:
    for s in (settings(), settings(version="0.9.20"), settings(image="registry.local/llmkube:dev")):
        assert controller_deployment(s)["spec"]["template"]["spec"]["containers"][0]["image"] == s.image_ref


@pytest.mark.parametrize(
    ("version", "image"),
    [("0.9.19", f"{REPO}:0.9.19"), ("0.9.20", f"{REPO}:0.9.20"), ("v0.9.20", f"{REPO}:0.9.20")],
)
def test_image_tag_follows_version(version: str, image: str) -> None:
    assert container(manifests(version=version))["image"] == image


@pytest.mark.parametrize("image", ["registry.local/llmkube-controller:dev", f"{REPO}@sha256:{'a' * 64}"])
def test_custom_image_wins_over_version(image: str) -> None:
    assert container(manifests(version="0.9.20", image=image))["image"] == image


def test_version_label_follows_version() -> None:
    assert one(manifests(version="v0.9.20"), "Deployment")["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "0.9.20"
    )


def test_controller_flags() -> None:
    # Flag names as cmd/main.go defines them at v0.9.19.
    assert container(manifests())["args"] == [
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8443",
        "--metrics-secure=true",
    ]
    assert container(manifests())["command"] == ["/manager"]


@pytest.mark.parametrize(
    ("probe", "path"),
    [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
)
def test_probes_hit_the_health_port(probe: str, path: str) -> None:
    c = container(manifests())
    assert c[probe]["httpGet"] == {"path": path, "port": 8081}
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in c["ports"]


def test_metrics_port_and_service() -> None:
    objs = manifests()
    assert {"name": "metrics", "containerPort": 8443, "protocol": "TCP"} in container(objs)["ports"]
    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 8443, "protocol": "TCP", "targetPort": "metrics"}]
    assert svc["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_pod_spec_basics() -> None:
    pod = one(manifests(), "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == CONTROLLER_NAME
    assert pod["terminationGracePeriodSeconds"] == 10
    assert one(manifests(), "ServiceAccount")["metadata"]["name"] == CONTROLLER_NAME


def test_restricted_security_context_at_pod_and_container_level() -> None:
    pod = one(manifests(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ctx = pod["containers"][0]["securityContext"]
    assert ctx == {**RESTRICTED_CONTAINER_SECURITY_CONTEXT, "readOnlyRootFilesystem": True}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_every_writable_path_is_a_declared_volume() -> None:
    pod = one(manifests(), "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "model-cache": "/models"}
    assert {v["name"] for v in pod["volumes"]} == set(mounts)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (None, {"requests": {"cpu": "10m", "memory": "512Mi"}, "limits": {"cpu": "500m", "memory": "2Gi"}}),
        (
            {"memoryRequest": "1Gi"},
            {"requests": {"cpu": "10m", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "2Gi"}},
        ),
        (
            {"cpuRequest": "100m", "memoryRequest": "1Gi", "cpuLimit": "1", "memoryLimit": "4Gi"},
            {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
        ),
    ],
)
def test_resources_default_per_field(resources: dict[str, str] | None, expected: dict[str, Any]) -> None:
    wire = {"resources": resources} if resources is not None else {}
    assert container(manifests(**wire))["resources"] == expected


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            {"memoryRequest": "4Gi"},
            "llmkube:operator.resources.memoryRequest: the memory request 4Gi is above the memory limit 2Gi",
        ),
        ({"memoryLimit": "256Mi"}, "llmkube:operator.resources.memoryLimit: the memory request 512Mi is above"),
        ({"cpuRequest": "2", "cpuLimit": "1"}, "llmkube:operator.resources.cpuRequest: the cpu request 2 is above"),
    ],
)
def test_request_above_limit_fails_with_the_config_path(resources: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        manifests(resources=resources)
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# Labels, namespace, order
# ---------------------------------------------------------------------------------------------------------


def test_every_object_carries_the_recommended_labels() -> None:
    for obj in manifests(version="0.9.20") + served(version="0.9.20", servedNamespaces=["team"])["team"]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "llmkube", obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "pulumi", obj["kind"]
        assert labels["app.kubernetes.io/component"] == "controller-manager", obj["kind"]
        assert labels["app.kubernetes.io/version"] == "0.9.20", obj["kind"]
        assert labels["control-plane"] == "controller-manager", obj["kind"]


def test_instance_label() -> None:
    objs = operator_manifests(settings(), instance="home-operator")
    objs += served_namespace_manifests(settings(servedNamespaces=["team"]), instance="home-operator")["team"]
    assert {o["metadata"]["labels"]["app.kubernetes.io/instance"] for o in objs} == {"home-operator"}


def test_selector_is_stable_across_versions_and_matches_the_pods() -> None:
    old, new = one(manifests(version="0.9.19"), "Deployment"), one(manifests(version="0.9.20"), "Deployment")
    # A Deployment's selector is immutable: an upgrade must not change it.
    assert old["spec"]["selector"] == new["spec"]["selector"] == {"matchLabels": SELECTOR_LABELS}
    assert SELECTOR_LABELS["control-plane"] == "controller-manager"
    template_labels = new["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR_LABELS.items() <= template_labels.items()


@pytest.mark.parametrize("namespace", ["llmkube-system", "ops"])
def test_namespace_enforces_restricted_and_holds_every_namespaced_object(namespace: str) -> None:
    objs = manifests(namespace=namespace)
    ns = objs[0]
    assert ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"):
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]
        else:
            assert "namespace" not in obj["metadata"], obj["kind"]


def test_order_namespace_rbac_then_workload_and_no_crds() -> None:
    assert [(o["kind"], o["metadata"]["name"]) for o in manifests()] == [
        ("Namespace", "llmkube-system"),
        ("ServiceAccount", "llmkube-controller-manager"),
        ("ClusterRole", "llmkube-manager-role"),
        ("ClusterRoleBinding", "llmkube-manager-rolebinding"),
        ("ClusterRole", "llmkube-metrics-auth-role"),
        ("ClusterRoleBinding", "llmkube-metrics-auth-rolebinding"),
        ("ClusterRole", "llmkube-metrics-reader"),
        ("Role", "llmkube-leader-election-role"),
        ("RoleBinding", "llmkube-leader-election-rolebinding"),
        ("Deployment", "llmkube-controller-manager"),
        ("Service", "llmkube-controller-manager-metrics-service"),
    ]


# ---------------------------------------------------------------------------------------------------------
# Schema validation and determinism
# ---------------------------------------------------------------------------------------------------------

SETTINGS_VARIANTS = [
    {},
    {"version": "0.9.20", "namespace": "ops"},
    {"image": f"{REPO}@sha256:{'b' * 64}"},
    {"resources": {"cpuRequest": "100m", "memoryRequest": "1Gi", "cpuLimit": "2", "memoryLimit": "4Gi"}},
    {"servedNamespaces": ["team-a", "team-b"]},
    {"rbac": "clusterWide"},
]


@pytest.mark.parametrize("wire", SETTINGS_VARIANTS, ids=str)
def test_every_manifest_validates_strictly(wire: dict[str, Any]) -> None:
    for obj in manifests(**wire) + [m for objs in served(**wire).values() for m in objs]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_catches_an_unknown_field() -> None:
    # Proof that the test above can fail: a misspelt container field is rejected.
    deployment = copy.deepcopy(one(manifests(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("wire", SETTINGS_VARIANTS, ids=str)
def test_deterministic(wire: dict[str, Any]) -> None:
    first, second = manifests(**wire), manifests(**wire)
    assert first == second
    assert yaml.safe_dump_all(first) == yaml.safe_dump_all(second)
    # No shared objects: PyYAML would write anchors (&id001) for them.
    assert "&id" not in yaml.safe_dump_all(first)


def test_output_is_not_shared_with_later_calls() -> None:
    first = manifests()
    container(first)["securityContext"]["capabilities"]["drop"].append("MUTATED")
    one(first, "Deployment")["spec"]["selector"]["matchLabels"]["x"] = "y"
    assert manifests() == operator_manifests(settings())
    assert "MUTATED" not in container(manifests())["securityContext"]["capabilities"]["drop"]
    assert RESTRICTED_CONTAINER_SECURITY_CONTEXT["capabilities"] == {"drop": ["ALL"]}
    assert "x" not in SELECTOR_LABELS


# ---------------------------------------------------------------------------------------------------------
# meta.py
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected_version"),
    [(None, None), ("0.9.19", "0.9.19")],
)
def test_recommended_labels(version: str | None, expected_version: str | None) -> None:
    labels = recommended_labels("llama-server", "inference", "qwen", version)
    expected = {
        "app.kubernetes.io/name": "llama-server",
        "app.kubernetes.io/instance": "qwen",
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "llmkube",
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if expected_version is not None:
        expected["app.kubernetes.io/version"] = expected_version
    assert labels == expected


@pytest.mark.parametrize("bad", ["1.2.3+build.1", "-x", "x" * 64, "a b"])
def test_recommended_labels_reject_invalid_label_values(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid label value"):
        recommended_labels("llmkube", "controller", "llmkube", bad)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"name": "a"}, {"name": "a"}),
        ({"name": "a", "namespace": "ns"}, {"name": "a", "namespace": "ns"}),
        ({"name": "a", "labels": {}, "annotations": None}, {"name": "a"}),
        (
            {"name": "a", "labels": {"k": "v"}, "annotations": {"n": "m"}},
            {"name": "a", "labels": {"k": "v"}, "annotations": {"n": "m"}},
        ),
    ],
)
def test_object_meta_leaves_out_unset_entries(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert object_meta(**kwargs) == expected


def test_object_meta_copies_its_mappings() -> None:
    labels = {"k": "v"}
    meta = object_meta("a", labels=labels)
    meta["labels"]["k"] = "changed"
    assert labels == {"k": "v"}


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({}, {}),
        ({"run_as_user": 1000}, {"runAsUser": 1000}),
        (
            {"run_as_user": 1000, "run_as_group": 1000, "fs_group": 102},
            {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 102},
        ),
    ],
)
def test_restricted_pod_security_context(kwargs: dict[str, int], extra: dict[str, int]) -> None:
    assert restricted_pod_security_context(**kwargs) == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        **extra,
    }


def test_restricted_pod_security_context_refuses_root() -> None:
    with pytest.raises(ValueError, match="root"):
        restricted_pod_security_context(run_as_user=0)


def test_restricted_container_security_context_is_a_fresh_copy() -> None:
    ctx = restricted_container_security_context()
    assert ctx == RESTRICTED_CONTAINER_SECURITY_CONTEXT
    ctx["capabilities"]["drop"].append("X")
    assert RESTRICTED_CONTAINER_SECURITY_CONTEXT["capabilities"]["drop"] == ["ALL"]
    assert restricted_container_security_context(read_only_root_filesystem=True)["readOnlyRootFilesystem"] is True


# ---------------------------------------------------------------------------------------------------------
# Grants: the rights of operator features, added by a stack that uses them, or opted into
# ---------------------------------------------------------------------------------------------------------

GRANTED_READS = {"prefetch": {("batch", "jobs"): READ}, "podEviction": {}, "secretReads": {("", "secrets"): READ}}
GRANTED_WRITES = {
    "prefetch": {("batch", "jobs"): {"create"}, ("inference.llmkube.dev", "models/finalizers"): {"update"}},
    "podEviction": {("", "pods/eviction"): {"create"}},
    "secretReads": {},
}


@pytest.mark.parametrize("grant", sorted(GRANTED_READS))
def test_a_grant_adds_its_reads_cluster_wide_and_its_writes_where_it_serves(grant: str) -> None:
    wire = {"servedNamespaces": SERVED, "grants": [grant]}
    assert grants(manager_role(**wire)) == {**EXPECTED_CLUSTER_READS, **GRANTED_READS[grant]}
    for objs in served(**wire).values():
        assert grants(one(objs, "Role")) == {**EXPECTED_WRITES, **GRANTED_WRITES[grant]}


def stack_with(models: dict[str, Any], services: dict[str, Any], **operator: Any) -> pipeline.StackBuild:
    raw = {"delivery": "operator", "operator": operator, "models": models, "services": services}
    return pipeline.platform(raw, Settings(offline=True))


MODEL = {"source": "https://example.com/m-Q4_K_M.gguf", "catalog": "Llama-3.2-1B"}


def test_a_stack_grants_what_its_models_and_services_use() -> None:
    plain = stack_with({"m": MODEL}, {"s": {"modelRef": "m"}}).operator
    assert plain is not None and plain.settings.grants is None
    used = stack_with(
        {"m": {**MODEL, "prefetch": True}}, {"s": {"modelRef": "m", "maxPodLifetimeSeconds": 86400}}
    ).operator
    assert used is not None and used.settings.grants == ["prefetch", "podEviction"]
    role = one(used.served["llmkube"], "Role")
    assert {("batch", "jobs"), ("", "pods/eviction")} <= set(grants(role))


def test_an_s3_source_with_a_secret_needs_secret_reads_granted_by_the_user() -> None:
    s3 = {**MODEL, "source": "s3://models/m-Q4_K_M.gguf", "sourceSecretRef": {"name": "s3-credentials"}}
    with pytest.raises(ConfigError) as err:
        stack_with({"m": s3}, {})
    assert "llmkube:models.m.sourceSecretRef: 's3-credentials': in delivery operator the LLMKube controller" in str(
        err.value
    )
    granted = stack_with({"m": s3}, {}, grants=["secretReads"]).operator
    assert granted is not None
    assert grants(one(granted.manifests, "ClusterRole", MANAGER_ROLE))[("", "secrets")] == READ
