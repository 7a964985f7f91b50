"""The stack config contract: everything under the ``llmkube:`` namespace of a Pulumi stack file."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field

from .base import IMAGE_PATTERN, ApiModel, DnsLabel, DnsSubdomain, PositiveQuantity, Quantity, pattern
from .model import ModelSpec
from .service import InferenceServiceSpec

Delivery = Literal["direct", "operator"]

# Namespaces of the cluster's own components: a stack never deploys into them, nor labels them.
RESERVED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# Namespaces every cluster has and shares: a stack may deploy into one as it is, never create (relabel) it.
SHARED_NAMESPACES = frozenset({"default"})

OPERATOR_VERSION = "0.9.19"
OPERATOR_IMAGE_REPOSITORY = "ghcr.io/defilantech/llmkube-controller"

# Controller requests and limits when the stack sets none: upstream's own (config/manager/manager.yaml).
# Upstream raised memory to 512Mi/2Gi in v0.3.1 after the controller was OOM-killed during model downloads
# (it copies, hashes and parses GGUF files in process), so smaller defaults are not safe.
DEFAULT_OPERATOR_CPU_REQUEST = "10m"
DEFAULT_OPERATOR_MEMORY_REQUEST = "512Mi"
DEFAULT_OPERATOR_CPU_LIMIT = "500m"
DEFAULT_OPERATOR_MEMORY_LIMIT = "2Gi"

# Where the controller holds its write rights (operator.py has the rules): namespaced grants them by a Role in
# each served namespace and keeps only reads cluster-wide; clusterWide grants them in every namespace.
RbacScope = Literal["namespaced", "clusterWide"]
# Rights beyond the base set, for operator features a stack may use (operator.py has the rules): prefetch
# (Model prefetch Jobs), podEviction (maxPodLifetimeSeconds recycles pods through the eviction API),
# secretReads (s3:// sources' sourceSecretRef: the controller's cached client then watches every Secret).
OperatorGrant = Literal["prefetch", "podEviction", "secretReads"]


class OperatorResources(ApiModel):
    """Requests and limits of the controller container."""

    cpu_request: Quantity | None = Field(None, description=f"CPU request (default {DEFAULT_OPERATOR_CPU_REQUEST}).")
    memory_request: Quantity | None = Field(
        None, description=f"Memory request (default {DEFAULT_OPERATOR_MEMORY_REQUEST})."
    )
    cpu_limit: Quantity | None = Field(None, description=f"CPU limit (default {DEFAULT_OPERATOR_CPU_LIMIT}).")
    memory_limit: Quantity | None = Field(None, description=f"Memory limit (default {DEFAULT_OPERATOR_MEMORY_LIMIT}).")


class OperatorSettings(ApiModel):
    """How the LLMKube operator is installed (delivery operator)."""

    version: str = Field(
        OPERATOR_VERSION,
        pattern=r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$",
        description="LLMKube controller version; picks the image tag.",
    )
    namespace: DnsLabel = Field("llmkube-system", description="Namespace of the controller.")
    image: str | None = Field(
        None, pattern=IMAGE_PATTERN, description=f"Controller image; default {OPERATOR_IMAGE_REPOSITORY}:<version>."
    )
    install: bool = Field(
        True, description="Install the controller and CRDs; false when the cluster already runs LLMKube."
    )
    resources: OperatorResources | None = Field(None, description="Controller requests and limits.")
    rbac: RbacScope = Field(
        "namespaced",
        description="namespaced: the controller may write (workloads, cache claims, status, events) and read pod "
        "logs only in the served namespaces, and reads the kinds it watches in every namespace (Secrets only with "
        "grants secretReads); clusterWide: the same rights in every namespace (opt-in).",
    )
    served_namespaces: list[DnsLabel] | None = Field(
        None,
        description="Namespaces of the Models and InferenceServices the controller serves (rbac namespaced); "
        "they must exist. A stack adds its own namespace.",
    )
    grants: list[OperatorGrant] | None = Field(
        None,
        description="Rights for operator features beyond the base set: prefetch (Jobs that fill the model cache; "
        "a stack adds it when a Model sets prefetch), podEviction (pods/eviction for maxPodLifetimeSeconds; added "
        "when a service sets it), secretReads (get, list and watch of every Secret in the cluster, which the "
        "controller needs to read an s3:// source's sourceSecretRef: opt-in only).",
    )

    @property
    def image_ref(self) -> str:
        # Released images are tagged with the bare version (0.9.19), not the git tag (v0.9.19).
        return self.image or f"{OPERATOR_IMAGE_REPOSITORY}:{self.version.removeprefix('v')}"


# The operator's defaults for its shared cache volume (cmd/main.go --model-cache-size and
# --model-cache-access-mode). A PVC can grow (where the class allows expansion) but never shrink, so the
# size is an explicit choice, never derived. RWO is what every storage class offers: pods on one node share
# it; services on several nodes need an RWX class.
DEFAULT_CACHE_SIZE = "100Gi"
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]
DEFAULT_CACHE_ACCESS_MODE: AccessMode = "ReadWriteOnce"

# The link the downloader fetches models over, in megabits per second: it only sizes how long Pulumi waits for
# a rollout (workloads.rollout_timeout), so a low guess costs a longer wait on a failure, a high one a failed
# `pulumi up` on a rollout that was still downloading. 100 Mbit/s is a common home or office uplink.
DEFAULT_DOWNLOAD_MBPS = 100
MAX_DOWNLOAD_MBPS = 100_000  # 100 Gbit/s; a larger figure is a typo (bytes, or bits, per second)


CacheMode = Literal["shared", "perService"]

# The cache volumes' names, as the operator names them (model_storage.go ModelCachePVCName, modelCachePVCName).
SHARED_CACHE_PVC_NAME = "llmkube-model-cache"
PER_SERVICE_CACHE_SUFFIX = "-model-cache"


class CacheSettings(ApiModel):
    """The namespace's model cache volumes (delivery direct; the operator manages its own)."""

    mode: CacheMode = Field(
        "shared",
        description="shared: one volume for the namespace (the operator's default); perService: one per service, "
        "deleted with it.",
    )
    size: PositiveQuantity = Field(
        DEFAULT_CACHE_SIZE, description="Requested size; a PVC cannot shrink later, so leave room for new models."
    )
    storage_class: DnsSubdomain | None = Field(None, description="StorageClass; default: the cluster's.")
    access_mode: AccessMode = Field(
        DEFAULT_CACHE_ACCESS_MODE,
        description="ReadWriteMany lets services on several nodes share one cache (needs such storage).",
    )


NetworkPolicyPeerKey = Literal["namespaceSelector", "podSelector", "ipBlock"]


class NetworkPolicySettings(ApiModel):
    """The NetworkPolicy of each service: who may reach its port, and where its pod may connect to."""

    enabled: bool = Field(
        True,
        description="Render a NetworkPolicy per service (false: none, e.g. where the CNI does not enforce them).",
    )
    ingress_from: list[dict[NetworkPolicyPeerKey, Any]] | None = Field(
        None,
        description="Who may reach the serving port of an in-cluster (ClusterIP) service: networking/v1 "
        "NetworkPolicyPeers (namespaceSelector, podSelector, ipBlock). Default: the pods of the service's own "
        "namespace. NodePort and LoadBalancer services are reachable from anywhere (their API key guards them).",
    )
    egress_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        None,
        description="Further TCP ports the model downloaders may connect to, e.g. 9000 for a MinIO endpoint "
        "(an s3:// source's AWS_ENDPOINT_URL, which lives in its Secret); the sources' own ports are open already "
        "(443 for https://, hf:// and s3:// on AWS, 80 for http://).",
    )


# How the HorizontalPodAutoscaler's llamacpp:* metrics reach it (observability.autoscaler): hpa renders the HPA
# alone (a custom-metrics adapter of the user's serves the series); prometheusAdapter adds prometheus-adapter's
# rules for them; keda renders a KEDA ScaledObject with Prometheus triggers instead of the HPA (KEDA makes its
# own), which is what allows minReplicas 0.
Autoscaler = Literal["hpa", "prometheusAdapter", "keda"]
DEFAULT_AUTOSCALER: Final = "hpa"
DEFAULT_SCRAPE_INTERVAL: Final = "30s"
# The Grafana dashboard sidecar's convention (kube-prometheus-stack's sidecar.dashboards.label and labelValue).
DASHBOARD_LABEL: Final = "grafana_dashboard"
DASHBOARD_LABEL_VALUE: Final = "1"
# Where a dashboard sidecar with folderAnnotation set puts the dashboard.
DASHBOARD_FOLDER_ANNOTATION: Final = "grafana_folder"
DEFAULT_ADAPTER_CONFIGMAP: Final = "llmkube-prometheus-adapter-rules"
PROMETHEUS_DURATION_PATTERN = pattern(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
    "a Prometheus duration such as 30s, 1m or 1m30s",
)
URL_PATTERN = pattern(r"^https?://[^\s/]+(/\S*)?$", "an http:// or https:// URL")


class ServiceAccountRef(ApiModel):
    """A ServiceAccount, by namespace and name."""

    namespace: DnsLabel = Field(..., description="Its namespace.")
    name: DnsSubdomain = Field(..., description="Its name.")


class ObservabilitySettings(ApiModel):
    """Metrics scraped, a Grafana dashboard, and what makes the autoscaler's llamacpp:* metrics available."""

    pod_monitor: bool = Field(
        False,
        description="Render a Prometheus Operator PodMonitor (monitoring.coreos.com/v1) for the llama-server "
        "pods' /metrics, with the labels service, namespace, model and runtime on every series.",
    )
    service_monitor: bool = Field(
        False,
        description="Render a ServiceMonitor instead, through the services' Services (same labels).",
    )
    scrape_annotations: bool = Field(
        False,
        description="Annotate the llama-server pods prometheus.io/scrape, port and path, for a Prometheus without "
        "the Prometheus Operator (delivery direct; its scrape job must set service from the pod label "
        "inference.llmkube.dev/service).",
    )
    scrape_interval: Annotated[str, Field(pattern=PROMETHEUS_DURATION_PATTERN)] = Field(
        DEFAULT_SCRAPE_INTERVAL, description=f"Scrape interval (default {DEFAULT_SCRAPE_INTERVAL})."
    )
    monitor_labels: dict[str, str] | None = Field(
        None,
        description="Labels of the PodMonitor or ServiceMonitor that your Prometheus selects monitors by, e.g. "
        "{release: kube-prometheus-stack}.",
    )
    dashboard: bool = Field(
        False,
        description=f"Render a Grafana dashboard: a ConfigMap labelled {DASHBOARD_LABEL}, which Grafana's "
        "dashboard sidecar loads, with a row per service.",
    )
    dashboard_namespace: DnsLabel | None = Field(
        None, description="Namespace of the dashboard's ConfigMap (default: the stack's namespace)."
    )
    dashboard_folder: str | None = Field(
        None, description=f"Grafana folder of the dashboard (the {DASHBOARD_FOLDER_ANNOTATION} annotation)."
    )
    autoscaler: Autoscaler = Field(
        DEFAULT_AUTOSCALER,
        description="What serves the autoscaling metrics: hpa (the HPA alone; your custom-metrics adapter serves "
        "them), prometheusAdapter (adds prometheus-adapter rules for them), keda (a KEDA ScaledObject with "
        "Prometheus triggers instead of the HPA; allows minReplicas 0).",
    )
    adapter_namespace: DnsLabel | None = Field(
        None,
        description="Namespace of the prometheus-adapter rules ConfigMap (default: the stack's namespace).",
    )
    adapter_config_map: DnsSubdomain = Field(
        DEFAULT_ADAPTER_CONFIGMAP,
        description=f"Name of the prometheus-adapter rules ConfigMap (default {DEFAULT_ADAPTER_CONFIGMAP}): "
        "point the adapter at it (Helm chart value rules.existing).",
    )
    prometheus_url: Annotated[str, Field(pattern=URL_PATTERN)] | None = Field(
        None,
        description="The Prometheus that KEDA queries (autoscaler keda), e.g. "
        "http://prometheus-operated.monitoring.svc:9090.",
    )
    wake_queries: dict[str, Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="Autoscaler keda with minReplicas 0: a PromQL query per service (by its key under services) "
        "that sees demand while no pod runs, e.g. its gateway route's request rate; above 0 it wakes the service "
        "(a KEDA trigger that only activates, never scales beyond minReplicas 1).",
    )
    prometheus_service_account: ServiceAccountRef | None = Field(
        None,
        description="Delivery operator: the ServiceAccount your Prometheus scrapes with; bound to the "
        "controller's metrics-reader role, which its HTTPS /metrics asks for.",
    )

    @property
    def scraped(self) -> bool:
        """Whether the stack renders anything that has the pods scraped."""
        return self.pod_monitor or self.service_monitor or self.scrape_annotations


class StackConfig(ApiModel):
    """Everything a stack file sets under llmkube:."""

    delivery: Delivery = Field(
        "direct",
        description="direct: Pulumi renders the llama.cpp workloads; operator: CRDs, the LLMKube "
        "operator and Model/InferenceService custom resources.",
    )
    namespace: DnsLabel = Field("llmkube", description="Namespace of the models and services.")
    create_namespace: bool = Field(
        True,
        description="Create the namespace and set its Pod Security labels (false when it exists already; it is "
        "then used as it is).",
    )
    allow_host_path: bool = Field(
        False,
        description="Allow models from a path of the node (file:// or an absolute path), mounted as hostPath: "
        "the namespace's Pod Security then has to be privileged.",
    )
    hardware: str | dict[str, Any] = Field(
        "cpu-only",
        description="Hardware profile: a built-in name, or {extends: name, ...overrides}, or a whole profile.",
    )
    operator: OperatorSettings = Field(
        default_factory=OperatorSettings, description="Operator install settings (delivery operator)."
    )
    model_cache: CacheSettings = Field(
        default_factory=CacheSettings, description="The shared model cache volume (delivery direct)."
    )
    download_mbps: int = Field(
        DEFAULT_DOWNLOAD_MBPS,
        ge=1,
        le=MAX_DOWNLOAD_MBPS,
        description="Download speed to expect for model files, in megabits per second (delivery direct): Pulumi "
        "waits for a Deployment as long as its model takes to download at this speed, with headroom, on top of "
        "its usual wait.",
    )
    network_policy: NetworkPolicySettings = Field(
        default_factory=NetworkPolicySettings, description="Network policies of the services."
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings,
        description="Metrics scraping, a Grafana dashboard, and the autoscaler's metrics (all off by default).",
    )
    models: dict[str, ModelSpec] = Field(default_factory=dict, description="Models by name.")
    services: dict[str, InferenceServiceSpec] = Field(default_factory=dict, description="Inference services by name.")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API keys by service name, each a Pulumi secret (pulumi config set --secret --path "
        "'llmkube:apiKeys.<service>' KEY): written to a Secret of the service's, mounted as a file (delivery direct).",
    )
