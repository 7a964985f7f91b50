"""Pure builders of the LLMKube controller install (delivery operator): namespace, RBAC, Deployment, metrics Service.

The CRDs are not here (``crds.py`` generates them). Everything about the controller itself (flags, ports, probes,
names, what it watches and writes) is taken from the LLMKube operator at the version ``OperatorSettings`` pins;
the comments name the file a fact came from, so the next version bump knows what to re-check.
"""

from __future__ import annotations

from collections.abc import Iterable
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
# rbac namespaced: the controller's writes, a Role and its RoleBinding in each served namespace.
NAMESPACE_ROLE: Final = "llmkube-manager-namespace-role"
NAMESPACE_ROLE_BINDING: Final = "llmkube-manager-namespace-rolebinding"
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
METRICS_PORT_NAME: Final = "https"  # the metrics Service's port (a ServiceMonitor names it)


# ---------------------------------------------------------------------------------------------------------
# What the controller may do, one line per (apiGroup, resources), each with the calls that need it. Source:
# internal/controller/*.go and cmd/main.go at v0.9.19 (the +kubebuilder:rbac markers and config/rbac/role.yaml
# grant far more: every integration the binary has). Cut down to what the Models and InferenceServices our API
# can express make the controller do, plus what it watches whatever the objects. Three features get their rights
# only when used (GRANT_RULES, OperatorSettings.grants): Secrets (s3:// sourceSecretRef, model_controller.go
# s3Credentials: opt-in only), prefetch Jobs (spec.prefetch, model_prefetch.go, which also makes the Model's owner
# reference block deletion: models/finalizers) and pod eviction (maxPodLifetimeSeconds, pod_lifetime.go). Left
# out on purpose, with the spec field or integration that would need it: ModelRouter auth's Secrets, DRA claims
# (resourceclaims), ModelPool's patch of its member InferenceServices, ModelRouter's
# ConfigMap/ServiceAccount/RBAC writes, the status patches of the SLO and gateway controllers (spec.slo,
# spec.gateway), the Envoy AI Gateway, Pyrra and Grafana integrations (they self-gate on a flag or a CRD we do
# not install), namespaces (read only by the GPUQuota reconciler), and priorityclasses (named, never read).
#
# Reads are cluster-wide in every mode: cmd/main.go builds the manager without cache.Options.DefaultNamespaces
# (there is no watch-namespace flag), so controller-runtime's informers list and watch each kind in every
# namespace; and its cached client starts such an informer on the first Get or List of a kind. Without
# list/watch at cluster scope a cache never syncs: at startup the manager exits (a crash loop), later the
# reconcile that asked waits forever. Writes are what rbac chooses: namespaced puts them in a Role in each
# served namespace, clusterWide in the ClusterRole.
# ---------------------------------------------------------------------------------------------------------

Rule = tuple[str, tuple[str, ...], tuple[str, ...]]

_READ = ("get", "list", "watch")

CACHE_READ_RULES: Final[tuple[Rule, ...]] = (
    # model_controller.go For(Model); inferenceservice_controller.go For(InferenceService), Watches(Model);
    # scheduling.go evaluateGPUQueue lists every InferenceService (the cluster-wide GPU queue).
    ("inference.llmkube.dev", ("inferenceservices", "models"), _READ),
    # cmd/main.go starts the GPUQuota, LoRAAdapter, ModelPool and ModelRouter controllers unconditionally: For()
    # of each.
    ("inference.llmkube.dev", ("gpuquotas", "loraadapters", "modelpools", "modelrouters"), _READ),
    # The FederatedCluster hub controller, likewise started by default (--federation-role=hub).
    ("federation.llmkube.dev", ("federatedclusters",), _READ),
    # inferenceservice_controller.go SetupWithManager: Owns(Deployment, Service, HorizontalPodAutoscaler),
    # Watches(Pod, EndpointSlice); modelrouter_controller.go Owns(ConfigMap) too.
    ("apps", ("deployments",), _READ),
    ("", ("configmaps", "pods", "services"), _READ),
    ("autoscaling", ("horizontalpodautoscalers",), _READ),
    ("discovery.k8s.io", ("endpointslices",), _READ),
    # Cached Gets: model_storage.go ensureSharedModelCachePVC/ensureModelCachePVC (the model cache claim),
    # model_controller.go (a pvc:// source's claim).
    ("", ("persistentvolumeclaims",), _READ),
    # Cluster-scoped lookups: model_controller.go lists nodes (GPU capacity), driver_compat.go gets a pod's node,
    # volume_affinity.go the PersistentVolume behind a cache claim whose pod cannot schedule.
    ("", ("nodes", "persistentvolumes"), _READ),
)

WRITE_RULES: Final[tuple[Rule, ...]] = (
    # Status().Update: model_controller.go updateStatus, model_revalidate.go; inferenceservice_controller.go
    # and drain_before_rollout.go. The controller never creates, changes or deletes the objects themselves.
    ("inference.llmkube.dev", ("inferenceservices/status", "models/status"), ("update",)),
    # inferenceservice_controller.go reconcileDeployment: Create, Update, and Delete then Create when the
    # immutable selector must change.
    ("apps", ("deployments",), ("create", "delete", "update")),
    # reconcileService: Create, Update; garbage-collected through its owner reference, never deleted.
    ("", ("services",), ("create", "update")),
    # hpa_reconciler.go reconcileHPA: Create, Update; Delete when autoscaling is switched off.
    ("autoscaling", ("horizontalpodautoscalers",), ("create", "delete", "update")),
    # model_storage.go: Create of the shared or per-service model cache claim. Never delete: a cache holds tens
    # of GiB of downloaded weights.
    ("", ("persistentvolumeclaims",), ("create",)),
    # acceleration.go readPodLogs: the offload line of the llama-server log, read through a clientset
    # (cmd/main.go clientsetPodLogReader), not the cache; the subresource has no list or watch.
    ("", ("pods/log",), ("get",)),
    # The InferenceService reconciler's recorder (cmd/main.go mgr.GetEventRecorder: controller-runtime's
    # events.k8s.io/v1 broadcaster) creates its events in the InferenceService's namespace, and patches them
    # to count repeats. Core v1 events come only from leader election, in the controller's own namespace.
    ("events.k8s.io", ("events",), ("create", "patch")),
)

# Rights of the features in api.stack.OperatorGrant, as (cache reads, cluster-wide; writes, where the writes go).
GRANT_RULES: Final[dict[str, tuple[tuple[Rule, ...], tuple[Rule, ...]]]] = {
    # model_prefetch.go: a cached Get of the Model's prefetch Job (so an informer over every Job), Create of it;
    # the Job's controller owner reference to the Model blocks its deletion: models/finalizers.
    "prefetch": (
        (("batch", ("jobs",), _READ),),
        (("batch", ("jobs",), ("create",)), ("inference.llmkube.dev", ("models/finalizers",), ("update",))),
    ),
    # pod_lifetime.go: the eviction subresource of the expired pod (pods themselves are already read).
    "podEviction": ((), (("", ("pods/eviction",), ("create",)),)),
    # model_controller.go s3Credentials: a cached Get of the sourceSecretRef Secret, so an informer that lists and
    # watches every Secret of the cluster: nothing narrower works with the controller as it is built.
    "secretReads": ((("", ("secrets",), _READ),), ()),
}


def grant_rules(grants: Iterable[str]) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """The cache reads and the writes the given grants add, in OperatorGrant order."""
    chosen = [GRANT_RULES[g] for g in GRANT_RULES if g in set(grants)]
    return tuple(r for reads, _ in chosen for r in reads), tuple(w for _, writes in chosen for w in writes)


# With --metrics-secure (the default) every scrape is authenticated and authorized through the API server
# (controller-runtime filters.WithAuthenticationAndAuthorization); without these every scrape fails.
METRICS_AUTH_RULES: Final[tuple[Rule, ...]] = (
    ("authentication.k8s.io", ("tokenreviews",), ("create",)),
    ("authorization.k8s.io", ("subjectaccessreviews",), ("create",)),
)

# leader-elect takes a Lease in the controller's namespace (controller-runtime discovers the namespace from the
# service account, so no POD_NAMESPACE is needed). configmaps is the legacy lock upstream still grants.
LEADER_ELECTION_RULES: Final[tuple[Rule, ...]] = (
    ("", ("configmaps",), ("create", "delete", "get", "list", "patch", "update", "watch")),
    ("coordination.k8s.io", ("leases",), ("create", "delete", "get", "list", "patch", "update", "watch")),
    ("", ("events",), ("create", "patch")),
)


def _rules(table: tuple[Rule, ...]) -> list[dict[str, Any]]:
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
    """Every object of the controller install in its own namespace and at cluster scope, in apply order.

    Namespace first, then the ServiceAccount and RBAC, then the Deployment and its metrics Service. Not here: the
    CRDs (``crds.py``) and, with rbac namespaced, the Roles in the served namespaces
    (``served_namespace_manifests``). The caller decides whether to install at all (``settings.install``); this
    only says what an install is. ``instance`` fills app.kubernetes.io/instance, e.g. the Pulumi component's name.
    """
    ns = settings.namespace
    labels = controller_labels(settings, instance)
    # The ClusterRole holds the cache's reads; the writes only when the stack opted into clusterWide.
    grant_reads, grant_writes = grant_rules(settings.grants or ())
    writes = WRITE_RULES + grant_writes
    manager_table = CACHE_READ_RULES + grant_reads + (writes if settings.rbac == "clusterWide" else ())
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
        _role(MANAGER_ROLE, None, labels, _rules(manager_table)),
        _binding(MANAGER_ROLE_BINDING, None, labels, MANAGER_ROLE, ns),
        _role(METRICS_AUTH_ROLE, None, labels, _rules(METRICS_AUTH_RULES)),
        _binding(METRICS_AUTH_ROLE_BINDING, None, labels, METRICS_AUTH_ROLE, ns),
        # Bind a scraper's ServiceAccount to this to let it read /metrics; nothing is bound here.
        _role(METRICS_READER_ROLE, None, labels, [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
        _role(LEADER_ELECTION_ROLE, ns, labels, _rules(LEADER_ELECTION_RULES)),
        _binding(LEADER_ELECTION_ROLE_BINDING, ns, labels, LEADER_ELECTION_ROLE, ns),
        controller_deployment(settings, instance=instance),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(METRICS_SERVICE, ns, labels),
            "spec": {
                "selector": dict(SELECTOR_LABELS),
                "ports": [
                    {"name": METRICS_PORT_NAME, "port": METRICS_PORT, "protocol": "TCP", "targetPort": "metrics"}
                ],
            },
        },
    ]


def served_namespace_manifests(
    settings: OperatorSettings, *, instance: str = APP_NAME
) -> dict[str, list[dict[str, Any]]]:
    """rbac namespaced: the controller's writes in each served namespace (a Role and its RoleBinding), by namespace.

    Empty with rbac clusterWide, whose ClusterRole holds the writes. The namespaces must exist when these are
    applied; ``settings.served_namespaces`` is the full list (a stack has added its own namespace to it).
    """
    if settings.rbac == "clusterWide":
        return {}
    labels = controller_labels(settings, instance)
    writes = WRITE_RULES + grant_rules(settings.grants or ())[1]
    return {
        served: [
            _role(NAMESPACE_ROLE, served, labels, _rules(writes)),
            _binding(NAMESPACE_ROLE_BINDING, served, labels, NAMESPACE_ROLE, settings.namespace),
        ]
        for served in sorted(set(settings.served_namespaces or ()))
    }


def _role(name: str, namespace: str | None, labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A Role in ``namespace``, or a ClusterRole when it is None."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole" if namespace is None else "Role",
        "metadata": object_meta(name, namespace, labels),
        "rules": rules,
    }


def _binding(name: str, namespace: str | None, labels: dict[str, str], role: str, controller_ns: str) -> dict[str, Any]:
    """The binding of ``role`` (a ClusterRole when ``namespace`` is None, else a Role there) to the controller."""
    kind = "ClusterRole" if namespace is None else "Role"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": object_meta(name, namespace, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": controller_ns}],
    }


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
