"""The LLMKube controller install: least-privilege RBAC, the Deployment's flags, probes and security, and the
shared metadata helpers it is built from. Every manifest is checked against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

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
    SELECTOR_LABELS,
    controller_deployment,
    operator_manifests,
)

# The newest schema kubernetes-validate ships; strict, so an unknown or misspelt field fails.
K8S_VERSION = "1.37.0"

REPO = "ghcr.io/defilantech/llmkube-controller"
READ = {"get", "list", "watch"}
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
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------------------------------------------------
# ClusterRole: exactly this, and nothing more
# ---------------------------------------------------------------------------------------------------------

CRUD = {"create", "delete", "get", "list", "patch", "update", "watch"}
EXPECTED_MANAGER_GRANTS: dict[tuple[str, str], set[str]] = {
    ("inference.llmkube.dev", "models"): {"get", "list", "patch", "update", "watch"},
    ("inference.llmkube.dev", "inferenceservices"): {"get", "list", "patch", "update", "watch"},
    ("inference.llmkube.dev", "models/status"): {"get", "patch", "update"},
    ("inference.llmkube.dev", "inferenceservices/status"): {"get", "patch", "update"},
    ("inference.llmkube.dev", "models/finalizers"): {"update"},
    ("inference.llmkube.dev", "inferenceservices/finalizers"): {"update"},
    ("inference.llmkube.dev", "gpuquotas"): READ,
    ("inference.llmkube.dev", "loraadapters"): READ,
    ("inference.llmkube.dev", "modelpools"): READ,
    ("inference.llmkube.dev", "modelrouters"): READ,
    ("federation.llmkube.dev", "federatedclusters"): READ,
    ("apps", "deployments"): CRUD,
    ("", "services"): CRUD - {"delete"},
    ("autoscaling", "horizontalpodautoscalers"): CRUD,
    ("", "persistentvolumeclaims"): CRUD - {"delete"},
    ("batch", "jobs"): {"create", "get", "list", "watch"},
    ("", "configmaps"): READ,
    ("", "namespaces"): READ,
    ("", "nodes"): READ,
    ("", "persistentvolumes"): READ,
    ("", "pods"): READ,
    ("", "secrets"): READ,
    ("", "pods/log"): {"get"},
    ("discovery.k8s.io", "endpointslices"): READ,
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def test_manager_role_grants_nothing_beyond_the_table() -> None:
    assert set(grants(one(manifests(), "ClusterRole", MANAGER_ROLE))) == set(EXPECTED_MANAGER_GRANTS)


@pytest.mark.parametrize(
    ("key", "verbs"),
    sorted(EXPECTED_MANAGER_GRANTS.items()),
    ids=[f"{group or 'core'}/{resource}" for group, resource in sorted(EXPECTED_MANAGER_GRANTS)],
)
def test_manager_role_grant(key: tuple[str, str], verbs: set[str]) -> None:
    assert grants(one(manifests(), "ClusterRole", MANAGER_ROLE))[key] == verbs


@pytest.mark.parametrize(
    ("key", "forbidden"),
    [
        # A model cache holds tens of GiB of downloaded weights: never deleted by the controller.
        (("", "persistentvolumeclaims"), {"delete", "deletecollection"}),
        (("", "secrets"), WRITE_VERBS),
        (("", "nodes"), WRITE_VERBS),
        (("", "namespaces"), WRITE_VERBS),
        (("", "pods"), WRITE_VERBS),
        (("", "persistentvolumes"), WRITE_VERBS),
        (("inference.llmkube.dev", "models"), {"create", "delete", "deletecollection"}),
        (("inference.llmkube.dev", "inferenceservices"), {"create", "delete", "deletecollection"}),
    ],
)
def test_manager_role_never_grants(key: tuple[str, str], forbidden: set[str]) -> None:
    assert not grants(one(manifests(), "ClusterRole", MANAGER_ROLE))[key] & forbidden


def test_no_role_uses_wildcards_or_touches_rbac() -> None:
    for role in [o for o in manifests() if o["kind"] in ("ClusterRole", "Role")]:
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
    # Leader election is the only reason to hold a Role: nothing else is namespaced RBAC.
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
    for obj in manifests(version="0.9.20"):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "llmkube", obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "pulumi", obj["kind"]
        assert labels["app.kubernetes.io/component"] == "controller-manager", obj["kind"]
        assert labels["app.kubernetes.io/version"] == "0.9.20", obj["kind"]
        assert labels["control-plane"] == "controller-manager", obj["kind"]


def test_instance_label() -> None:
    objs = operator_manifests(settings(), instance="home-operator")
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
]


@pytest.mark.parametrize("wire", SETTINGS_VARIANTS, ids=str)
def test_every_manifest_validates_strictly(wire: dict[str, Any]) -> None:
    for obj in manifests(**wire):
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
