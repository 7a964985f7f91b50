"""Pure builders of the LLMKube controller install (delivery operator): namespace, RBAC, Deployment, metrics Service.

The CRDs are not here (``crds.py`` generates them). Everything about the controller itself (flags, ports, probes,
names, what it watches and writes) is taken from the LLMKube operator at the version ``OperatorSettings`` pins;
the comments name the file a fact came from, so the next version bump knows what to re-check.
"""

from __future__ import annotations

from typing import Any, Final

from .api import OperatorSettings, parse_quantity
from .api.stack import (
    DEFAULT_OPERATOR_CPU_LIMIT,
    DEFAULT_OPERATOR_CPU_REQUEST,
    DEFAULT_OPERATOR_MEMORY_LIMIT,
    DEFAULT_OPERATOR_MEMORY_REQUEST,
    OperatorResources,
)
from .errors import ConfigError, Problem, config_path
from .meta import (
    object_meta,
    recommended_labels,
    restricted_container_security_context,
    restricted_pod_security_context,
)

# ---------------------------------------------------------------------------------------------------------
# Names. The upstream kustomize install (config/default: namePrefix llmkube-, namespace llmkube-system) uses
# the same ones, and the llmkube CLI tells users to `kubectl exec deploy/llmkube-controller-manager`.
# ---------------------------------------------------------------------------------------------------------

APP_NAME: Final = "llmkube"
COMPONENT: Final = "controller-manager"
CONTROLLER_NAME: Final = "llmkube-controller-manager"  # Deployment and ServiceAccount
MANAGER_ROLE: Final = "llmkube-manager-role"
MANAGER_ROLE_BINDING: Final = "llmkube-manager-rolebinding"
METRICS_AUTH_ROLE: Final = "llmkube-metrics-auth-role"
METRICS_AUTH_ROLE_BINDING: Final = "llmkube-metrics-auth-rolebinding"
METRICS_READER_ROLE: Final = "llmkube-metrics-reader"
LEADER_ELECTION_ROLE: Final = "llmkube-leader-election-role"
LEADER_ELECTION_ROLE_BINDING: Final = "llmkube-leader-election-rolebinding"
METRICS_SERVICE: Final = "llmkube-controller-manager-metrics-service"
CONTAINER_NAME: Final = "manager"

# The Deployment selector is immutable once created, so it holds only labels that never change (no version,
# no instance): the pair upstream selects on in config/manager/manager.yaml.
SELECTOR_LABELS: Final[dict[str, str]] = {"control-plane": COMPONENT, "app.kubernetes.io/name": APP_NAME}

# cmd/main.go: --health-probe-bind-address serves /healthz and /readyz (healthz.Ping); --metrics-bind-address
# serves /metrics over HTTPS (--metrics-secure defaults to true) with a self-signed certificate.
HEALTH_PORT: Final = 8081
METRICS_PORT: Final = 8443


# ---------------------------------------------------------------------------------------------------------
# What the controller may do, one line per (apiGroup, resources). Sources: the +kubebuilder:rbac markers in
# internal/controller/*.go and config/rbac/role.yaml at v0.9.19, cut down to what Models and
# InferenceServices need plus what the binary watches unconditionally. Left out on purpose: the optional
# integrations that self-gate on a flag or a CRD we do not install (Envoy AI Gateway, Pyrra, Grafana),
# ModelRouter's own RBAC/ServiceAccount writes, pod eviction (maxPodLifetime) and DRA claims, which our API
# cannot express; and priorityclasses, which the controller only names and never reads.
# ---------------------------------------------------------------------------------------------------------

_READ = ("get", "list", "watch")
_WRITE = ("create", "get", "list", "patch", "update", "watch")
_MANAGE = ("create", "delete", "get", "list", "patch", "update", "watch")

MANAGER_RULES: Final[tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]] = (
    # The controller's inputs: it never creates or deletes them, it adds and removes its finalizer.
    ("inference.llmkube.dev", ("inferenceservices", "models"), ("get", "list", "patch", "update", "watch")),
    ("inference.llmkube.dev", ("inferenceservices/status", "models/status"), ("get", "patch", "update")),
    # Owner references with blockOwnerDeletion need update on the owner's finalizers subresource.
    ("inference.llmkube.dev", ("inferenceservices/finalizers", "models/finalizers"), ("update",)),
    # cmd/main.go starts the GPUQuota, LoRAAdapter, ModelPool and ModelRouter controllers unconditionally:
    # without list/watch their caches never sync and the manager exits, so the pod crash-loops.
    ("inference.llmkube.dev", ("gpuquotas", "loraadapters", "modelpools", "modelrouters"), _READ),
    # The FederatedCluster hub controller, likewise started by default (--federation-role=hub).
    ("federation.llmkube.dev", ("federatedclusters",), _READ),
    # The llama.cpp workloads. A Deployment is deleted and recreated when its selector must change, an HPA
    # when autoscaling is switched off; Services are only ever garbage-collected through owner references.
    ("apps", ("deployments",), _MANAGE),
    ("", ("services",), _WRITE),
    ("autoscaling", ("horizontalpodautoscalers",), _MANAGE),
    # The model cache PVCs. Never delete: a cache holds tens of GiB of downloaded weights.
    ("", ("persistentvolumeclaims",), _WRITE),
    # Model prefetch Jobs; the garbage collector removes them with their Model.
    ("batch", ("jobs",), ("create", "get", "list", "watch")),
    # Only ModelRouters write ConfigMaps; their controller's Owns(ConfigMap) still needs the cache.
    ("", ("configmaps",), _READ),
    # Read-only lookups: GPU capacity on nodes, pod state and the offload line in the llama-server log,
    # source credentials in secrets, namespaces for quotas, the PV behind a model cache that cannot schedule.
    ("", ("namespaces", "nodes", "persistentvolumes", "pods", "secrets"), _READ),
    ("", ("pods/log",), ("get",)),  # the log subresource has no list or watch
    # The InferenceService controller watches EndpointSlices to see ready replicas.
    ("discovery.k8s.io", ("endpointslices",), _READ),
    # Events through both the legacy and the events.k8s.io recorder.
    ("", ("events",), ("create", "patch")),
    ("events.k8s.io", ("events",), ("create", "patch")),
)

# With --metrics-secure (the default) every scrape is authenticated and authorized through the API server
# (controller-runtime filters.WithAuthenticationAndAuthorization); without these every scrape fails.
METRICS_AUTH_RULES: Final[tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]] = (
    ("authentication.k8s.io", ("tokenreviews",), ("create",)),
    ("authorization.k8s.io", ("subjectaccessreviews",), ("create",)),
)

# leader-elect takes a Lease in the controller's namespace (controller-runtime discovers the namespace from the
# service account, so no POD_NAMESPACE is needed). configmaps is the legacy lock upstream still grants.
LEADER_ELECTION_RULES: Final[tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]] = (
    ("", ("configmaps",), ("create", "delete", "get", "list", "patch", "update", "watch")),
    ("coordination.k8s.io", ("leases",), ("create", "delete", "get", "list", "patch", "update", "watch")),
    ("", ("events",), ("create", "patch")),
)


def _rules(table: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": list(resources), "verbs": sorted(verbs)}
        for group, resources, verbs in table
    ]


# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def controller_labels(settings: OperatorSettings, instance: str = APP_NAME) -> dict[str, str]:
    """Labels of every object of the install: the recommended labels and the selector's control-plane label."""
    labels = recommended_labels(APP_NAME, COMPONENT, instance, settings.version.removeprefix("v"))
    return {**labels, **SELECTOR_LABELS}


def controller_resources(resources: OperatorResources | None) -> dict[str, dict[str, str]]:
    """Requests and limits of the manager container: the stack's values, upstream's defaults for the rest.

    Raises ConfigError when a request ends up above its limit, which the API server would reject at apply.
    """
    r = resources or OperatorResources()
    # (field, section, resource, default): the field's wire name is the config path users wrote.
    table = (
        ("cpu_request", "requests", "cpu", DEFAULT_OPERATOR_CPU_REQUEST),
        ("memory_request", "requests", "memory", DEFAULT_OPERATOR_MEMORY_REQUEST),
        ("cpu_limit", "limits", "cpu", DEFAULT_OPERATOR_CPU_LIMIT),
        ("memory_limit", "limits", "memory", DEFAULT_OPERATOR_MEMORY_LIMIT),
    )
    out: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for field, section, resource, default in table:
        value = getattr(r, field)
        out[section][resource] = str(value) if value is not None else default

    problems = []
    for resource, request_field, limit_field in (
        ("cpu", "cpu_request", "cpu_limit"),
        ("memory", "memory_request", "memory_limit"),
    ):
        request, limit = out["requests"][resource], out["limits"][resource]
        if parse_quantity(request) > parse_quantity(limit):
            # Name the field the user wrote: the limit when only the limit is theirs, else the request.
            only_limit_set = getattr(r, request_field) is None and getattr(r, limit_field) is not None
            blamed = limit_field if only_limit_set else request_field
            alias = OperatorResources.model_fields[blamed].alias or blamed
            problems.append(
                Problem(
                    config_path("operator", "resources", alias),
                    f"the {resource} request {request} is above the {resource} limit {limit}; "
                    f"a request must not exceed its limit",
                )
            )
    if problems:
        raise ConfigError(problems)
    return out


def operator_manifests(settings: OperatorSettings, *, instance: str = APP_NAME) -> list[dict[str, Any]]:
    """Every object of the controller install except the CRDs, in apply order.

    Namespace first, then the ServiceAccount and RBAC, then the Deployment and its metrics Service. The caller
    decides whether to install at all (``settings.install``); this only says what an install is.
    ``instance`` fills app.kubernetes.io/instance, e.g. the Pulumi component's name.
    """
    ns = settings.namespace
    labels = controller_labels(settings, instance)
    subject = [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": ns}]

    def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": object_meta(name, labels=labels),
            "rules": rules,
        }

    def cluster_role_binding(name: str, role: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": object_meta(name, labels=labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [dict(s) for s in subject],
        }

    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            # The controller pod meets the restricted standard, so its namespace can enforce it.
            "metadata": object_meta(ns, labels={**labels, "pod-security.kubernetes.io/enforce": "restricted"}),
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": object_meta(CONTROLLER_NAME, ns, labels),
        },
        cluster_role(MANAGER_ROLE, _rules(MANAGER_RULES)),
        cluster_role_binding(MANAGER_ROLE_BINDING, MANAGER_ROLE),
        cluster_role(METRICS_AUTH_ROLE, _rules(METRICS_AUTH_RULES)),
        cluster_role_binding(METRICS_AUTH_ROLE_BINDING, METRICS_AUTH_ROLE),
        # Bind a scraper's ServiceAccount to this to let it read /metrics; nothing is bound here.
        cluster_role(METRICS_READER_ROLE, [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": object_meta(LEADER_ELECTION_ROLE, ns, labels),
            "rules": _rules(LEADER_ELECTION_RULES),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": object_meta(LEADER_ELECTION_ROLE_BINDING, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEADER_ELECTION_ROLE},
            "subjects": [dict(s) for s in subject],
        },
        controller_deployment(settings, instance=instance),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(METRICS_SERVICE, ns, labels),
            "spec": {
                "selector": dict(SELECTOR_LABELS),
                "ports": [{"name": "https", "port": METRICS_PORT, "protocol": "TCP", "targetPort": "metrics"}],
            },
        },
    ]


def controller_deployment(settings: OperatorSettings, *, instance: str = APP_NAME) -> dict[str, Any]:
    """The controller Deployment (config/manager/manager.yaml and config/default at the pinned version)."""
    labels = controller_labels(settings, instance)

    def probe(path: str, initial_delay: int, period: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": HEALTH_PORT},
            "initialDelaySeconds": initial_delay,
            "periodSeconds": period,
        }

    container = {
        "name": CONTAINER_NAME,
        "image": settings.image_ref,
        # The image's entrypoint is /manager already; naming it keeps a custom image with another entrypoint
        # (a debug build) running the controller.
        "command": ["/manager"],
        "args": [
            # One replica is the norm, but a rolling update briefly runs two: only the Lease holder reconciles.
            "--leader-elect",
            f"--health-probe-bind-address=:{HEALTH_PORT}",
            # The flag defaults to "0", which switches metrics off; HTTPS is --metrics-secure's default,
            # written out so a reader does not have to know it.
            f"--metrics-bind-address=:{METRICS_PORT}",
            "--metrics-secure=true",
        ],
        "ports": [
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": probe("/healthz", 15, 20),
        "readinessProbe": probe("/readyz", 5, 10),
        "resources": controller_resources(settings.resources),
        "securityContext": restricted_container_security_context(read_only_root_filesystem=True),
        # With a read-only root these are the only writable paths: /tmp for scratch files, and /models, the
        # default --model-cache-path, where the controller copies and validates local (file://) sources.
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "model-cache", "mountPath": "/models"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(CONTROLLER_NAME, settings.namespace, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(SELECTOR_LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    # kubectl logs/exec pick this container without -c.
                    "annotations": {"kubectl.kubernetes.io/default-container": CONTAINER_NAME},
                },
                "spec": {
                    "serviceAccountName": CONTROLLER_NAME,
                    # The image is distroless:nonroot with USER 65532:65532 (Dockerfile.goreleaser), a numeric
                    # user, so runAsNonRoot is checkable without pinning runAsUser here.
                    "securityContext": restricted_pod_security_context(),
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "model-cache", "emptyDir": {}},
                    ],
                    "terminationGracePeriodSeconds": 10,
                },
            },
        },
    }
