"""Typed Args of the LLMKube specs, for the Pulumi components and their schema.

Generated from the typed API (``api/``) by ``python -m llmkube_components.argsgen``: do not edit by hand;
a test keeps this file equal to what the generator writes. Keys are the LLMKube JSON names; every value
accepts a ``pulumi.Input`` (a plain value or an Output of another resource).
"""

# ruff: noqa: E501

from enum import StrEnum
from typing import Any, NotRequired, Required, TypedDict

import pulumi


class Delivery(StrEnum):
    """One of: direct, operator."""

    DIRECT = "direct"
    OPERATOR = "operator"


class OperatorResources(TypedDict, total=False):
    """Requests and limits of the controller container."""

    cpuRequest: NotRequired[pulumi.Input[str]]
    """CPU request (default 10m)."""

    memoryRequest: NotRequired[pulumi.Input[str]]
    """Memory request (default 512Mi)."""

    cpuLimit: NotRequired[pulumi.Input[str]]
    """CPU limit (default 500m)."""

    memoryLimit: NotRequired[pulumi.Input[str]]
    """Memory limit (default 2Gi)."""


class RbacScope(StrEnum):
    """One of: namespaced, clusterWide."""

    NAMESPACED = "namespaced"
    CLUSTER_WIDE = "clusterWide"


class OperatorGrant(StrEnum):
    """One of: prefetch, podEviction, secretReads."""

    PREFETCH = "prefetch"
    POD_EVICTION = "podEviction"
    SECRET_READS = "secretReads"


class OperatorSettings(TypedDict, total=False):
    """How the LLMKube operator is installed (delivery operator)."""

    version: NotRequired[pulumi.Input[str]]
    """LLMKube controller version; picks the image tag."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the controller."""

    image: NotRequired[pulumi.Input[str]]
    """Controller image; default ghcr.io/defilantech/llmkube-controller:<version>."""

    install: NotRequired[pulumi.Input[bool]]
    """Install the controller and CRDs; false when the cluster already runs LLMKube."""

    resources: NotRequired[pulumi.Input[OperatorResources]]
    """Controller requests and limits."""

    rbac: NotRequired[pulumi.Input[RbacScope]]
    """namespaced: the controller may write (workloads, cache claims, status, events) and read pod logs only in the served namespaces, and reads the kinds it watches in every namespace (Secrets only with grants secretReads); clusterWide: the same rights in every namespace (opt-in)."""

    servedNamespaces: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Namespaces of the Models and InferenceServices the controller serves (rbac namespaced); they must exist. A stack adds its own namespace."""

    grants: NotRequired[pulumi.Input[list[pulumi.Input[OperatorGrant]]]]
    """Rights for operator features beyond the base set: prefetch (Jobs that fill the model cache; a stack adds it when a Model sets prefetch), podEviction (pods/eviction for maxPodLifetimeSeconds; added when a service sets it), secretReads (get, list and watch of every Secret in the cluster, which the controller needs to read an s3:// source's sourceSecretRef: opt-in only)."""


class CacheMode(StrEnum):
    """One of: shared, perService."""

    SHARED = "shared"
    PER_SERVICE = "perService"


class AccessMode(StrEnum):
    """One of: ReadWriteOnce, ReadWriteMany, ReadWriteOncePod."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class CacheSettings(TypedDict, total=False):
    """The namespace's model cache volumes (delivery direct; the operator manages its own)."""

    mode: NotRequired[pulumi.Input[CacheMode]]
    """shared: one volume for the namespace (the operator's default); perService: one per service, deleted with it."""

    size: NotRequired[pulumi.Input[str]]
    """Requested size; a PVC cannot shrink later, so leave room for new models."""

    storageClass: NotRequired[pulumi.Input[str]]
    """StorageClass; default: the cluster's."""

    accessMode: NotRequired[pulumi.Input[AccessMode]]
    """ReadWriteMany lets services on several nodes share one cache (needs such storage)."""


class NetworkPolicySettings(TypedDict, total=False):
    """The NetworkPolicy of each service: who may reach its port, and where its pod may connect to."""

    enabled: NotRequired[pulumi.Input[bool]]
    """Render a NetworkPolicy per service (false: none, e.g. where the CNI does not enforce them)."""

    ingressFrom: NotRequired[pulumi.Input[list[pulumi.Input[dict[str, pulumi.Input[Any]]]]]]
    """Who may reach the serving port of an in-cluster (ClusterIP) service: networking/v1 NetworkPolicyPeers (namespaceSelector, podSelector, ipBlock). Default: the pods of the service's own namespace. NodePort and LoadBalancer services are reachable from anywhere (their API key guards them)."""

    egressPorts: NotRequired[pulumi.Input[list[pulumi.Input[int]]]]
    """Further TCP ports the model downloaders may connect to, e.g. 9000 for a MinIO endpoint (an s3:// source's AWS_ENDPOINT_URL, which lives in its Secret); the sources' own ports are open already (443 for https://, hf:// and s3:// on AWS, 80 for http://)."""


class Autoscaler(StrEnum):
    """One of: hpa, prometheusAdapter, keda."""

    HPA = "hpa"
    PROMETHEUS_ADAPTER = "prometheusAdapter"
    KEDA = "keda"


class ServiceAccountRef(TypedDict, total=False):
    """A ServiceAccount, by namespace and name."""

    namespace: Required[pulumi.Input[str]]
    """Its namespace."""

    name: Required[pulumi.Input[str]]
    """Its name."""


class ObservabilitySettings(TypedDict, total=False):
    """Metrics scraped, a Grafana dashboard, and what makes the autoscaler's llamacpp:* metrics available."""

    podMonitor: NotRequired[pulumi.Input[bool]]
    """Render a Prometheus Operator PodMonitor (monitoring.coreos.com/v1) for the llama-server pods' /metrics, with the labels service, namespace, model and runtime on every series."""

    serviceMonitor: NotRequired[pulumi.Input[bool]]
    """Render a ServiceMonitor instead, through the services' Services (same labels)."""

    scrapeAnnotations: NotRequired[pulumi.Input[bool]]
    """Annotate the llama-server pods prometheus.io/scrape, port and path, for a Prometheus without the Prometheus Operator (delivery direct; its scrape job must set service from the pod label inference.llmkube.dev/service)."""

    scrapeInterval: NotRequired[pulumi.Input[str]]
    """Scrape interval (default 30s)."""

    monitorLabels: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Labels of the PodMonitor or ServiceMonitor that your Prometheus selects monitors by, e.g. {release: kube-prometheus-stack}."""

    dashboard: NotRequired[pulumi.Input[bool]]
    """Render a Grafana dashboard: a ConfigMap labelled grafana_dashboard, which Grafana's dashboard sidecar loads, with a row per service."""

    dashboardNamespace: NotRequired[pulumi.Input[str]]
    """Namespace of the dashboard's ConfigMap (default: the stack's namespace)."""

    dashboardFolder: NotRequired[pulumi.Input[str]]
    """Grafana folder of the dashboard (the grafana_folder annotation)."""

    autoscaler: NotRequired[pulumi.Input[Autoscaler]]
    """What serves the autoscaling metrics: hpa (the HPA alone; your custom-metrics adapter serves them), prometheusAdapter (adds prometheus-adapter rules for them), keda (a KEDA ScaledObject with Prometheus triggers instead of the HPA; allows minReplicas 0)."""

    adapterNamespace: NotRequired[pulumi.Input[str]]
    """Namespace of the prometheus-adapter rules ConfigMap (default: the stack's namespace)."""

    adapterConfigMap: NotRequired[pulumi.Input[str]]
    """Name of the prometheus-adapter rules ConfigMap (default llmkube-prometheus-adapter-rules): point the adapter at it (Helm chart value rules.existing)."""

    prometheusUrl: NotRequired[pulumi.Input[str]]
    """The Prometheus that KEDA queries (autoscaler keda), e.g. http://prometheus-operated.monitoring.svc:9090."""

    wakeQueries: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Autoscaler keda with minReplicas 0: a PromQL query per service (by its key under services) that sees demand while no pod runs, e.g. its gateway route's request rate; above 0 it wakes the service (a KEDA trigger that only activates, never scales beyond minReplicas 1)."""

    prometheusServiceAccount: NotRequired[pulumi.Input[ServiceAccountRef]]
    """Delivery operator: the ServiceAccount your Prometheus scrapes with; bound to the controller's metrics-reader role, which its HTTPS /metrics asks for."""


class LocalObjectReference(TypedDict, total=False):
    """A reference to an object of the same namespace (core/v1 LocalObjectReference)."""

    name: NotRequired[pulumi.Input[str]]
    """Name of the object."""


class ModelFormat(StrEnum):
    """One of: gguf, mlx, safetensors, pytorch, custom."""

    GGUF = "gguf"
    MLX = "mlx"
    SAFETENSORS = "safetensors"
    PYTORCH = "pytorch"
    CUSTOM = "custom"


class RefreshPolicy(StrEnum):
    """One of: IfNotPresent, OnChange."""

    IF_NOT_PRESENT = "IfNotPresent"
    ON_CHANGE = "OnChange"


class TolerationOperator(StrEnum):
    """One of: Exists, Equal."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TolerationEffect(StrEnum):
    """One of: NoSchedule, PreferNoSchedule, NoExecute."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(TypedDict, total=False):
    """A pod toleration (core/v1 Toleration)."""

    key: NotRequired[pulumi.Input[str]]
    """Taint key the toleration applies to; empty with Exists matches all."""

    operator: NotRequired[pulumi.Input[TolerationOperator]]
    """Exists or Equal (default Equal)."""

    value: NotRequired[pulumi.Input[str]]
    """Taint value to match with operator Equal."""

    effect: NotRequired[pulumi.Input[TolerationEffect]]
    """Taint effect to match; empty matches all effects."""

    tolerationSeconds: NotRequired[pulumi.Input[int]]
    """How long a NoExecute toleration keeps the pod bound after the taint appears."""


class Accelerator(StrEnum):
    """One of: cpu, metal, cuda, rocm, intel, vulkan."""

    CPU = "cpu"
    METAL = "metal"
    CUDA = "cuda"
    ROCM = "rocm"
    INTEL = "intel"
    VULKAN = "vulkan"


class GpuVendor(StrEnum):
    """One of: nvidia, amd, intel."""

    NVIDIA = "nvidia"
    AMD = "amd"
    INTEL = "intel"


class ShardingStrategy(StrEnum):
    """One of: layer, tensor, row, pipeline, none."""

    LAYER = "layer"
    TENSOR = "tensor"
    ROW = "row"
    PIPELINE = "pipeline"
    NONE = "none"


class GPUShardingSpec(TypedDict, total=False):
    """How a model is spread over several GPUs."""

    strategy: NotRequired[pulumi.Input[ShardingStrategy]]
    """Split strategy across GPUs (default layer): layer (llama.cpp --split-mode layer), row, tensor, pipeline or none."""

    layerSplit: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """One entry per GPU: the layer range it holds, as the operator writes it (['0-24', '25-39']), or its share (['3', '2']); becomes --tensor-split. Even split when unset."""


class GpuRuntime(StrEnum):
    """One of: vulkan, rocm."""

    VULKAN = "vulkan"
    ROCM = "rocm"


class GPUResourceClaim(TypedDict, total=False):
    """A Dynamic Resource Allocation claim the server's pod uses for its GPUs."""

    name: Required[pulumi.Input[str]]
    """Name of the claim inside the pod."""

    resourceClaimName: NotRequired[pulumi.Input[str]]
    """An existing ResourceClaim to use."""

    resourceClaimTemplateName: NotRequired[pulumi.Input[str]]
    """A ResourceClaimTemplate to create a claim per pod from."""


class GPUSpec(TypedDict, total=False):
    """The GPUs a model is served on."""

    enabled: NotRequired[pulumi.Input[bool]]
    """Serve this model on GPUs."""

    count: NotRequired[pulumi.Input[int]]
    """Number of GPUs (0-8)."""

    memory: NotRequired[pulumi.Input[str]]
    """GPU memory the model needs, e.g. 16Gi."""

    vendor: NotRequired[pulumi.Input[GpuVendor]]
    """GPU vendor (default nvidia); picks the device-plugin resource name."""

    resourceName: NotRequired[pulumi.Input[str]]
    """Extended resource to request instead of the vendor default, e.g. nvidia.com/mig-1g.10gb."""

    layers: NotRequired[pulumi.Input[int]]
    """Layers to offload to the GPUs (--n-gpu-layers); -1 or unset offloads all (at most 4096)."""

    sharding: NotRequired[pulumi.Input[GPUShardingSpec]]
    """Multi-GPU split."""

    runtime: NotRequired[pulumi.Input[GpuRuntime]]
    """GPU runtime when it is not the vendor's own: vulkan or rocm (picks the server image flavour; delivery direct takes the image from the hardware profile or spec.image)."""

    tolerationKey: NotRequired[pulumi.Input[str]]
    """Taint key of the GPU nodes, tolerated with operator Exists and effect NoSchedule; default: the GPU resource name."""

    resourceClaims: NotRequired[pulumi.Input[list[pulumi.Input[GPUResourceClaim]]]]
    """Dynamic Resource Allocation claims for the GPUs instead of a device-plugin resource (pod.spec.resourceClaims and the container's resources.claims)."""


class HardwareSpec(TypedDict, total=False):
    """Hardware the model runs on."""

    accelerator: NotRequired[pulumi.Input[Accelerator]]
    """Compute backend (default cpu): cpu, metal, cuda, rocm, intel or vulkan."""

    gpu: NotRequired[pulumi.Input[GPUSpec]]
    """GPU requirements."""

    memoryBudget: NotRequired[pulumi.Input[str]]
    """Unified-memory budget for the model on Apple silicon (the operator's Metal agent); not used by Kubernetes workloads."""

    memoryFraction: NotRequired[pulumi.Input[float]]
    """Share of unified memory for the model on Apple silicon (the operator's Metal agent); not used by Kubernetes workloads."""


class ModelResources(TypedDict, total=False):
    """Resources the model needs."""

    cpu: NotRequired[pulumi.Input[str]]
    """CPU the model needs, e.g. 8 or 500m."""

    memory: NotRequired[pulumi.Input[str]]
    """Memory the model needs, e.g. 48Gi."""


class ModelSpec(TypedDict, total=False):
    """A model file to serve: where it comes from, what it is, and what hardware it wants."""

    source: Required[pulumi.Input[str]]
    """Where the model comes from: an http(s)://, hf://, s3://, pvc:// or file:// URL, an absolute path, or a bare repository id (owner/name/file.gguf, fetched from Hugging Face)."""

    sourceSecretRef: NotRequired[pulumi.Input[LocalObjectReference]]
    """A Secret of the model's namespace whose keys become the downloader's environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL) for s3://, HF_TOKEN for Hugging Face."""

    sha256: NotRequired[pulumi.Input[str]]
    """SHA-256 of the model file (64 hex digits); checked after download."""

    format: NotRequired[pulumi.Input[ModelFormat]]
    """File format (default gguf): gguf, mlx, safetensors, pytorch, custom."""

    quantization: NotRequired[pulumi.Input[str]]
    """Quantization of the weights, e.g. Q4_K_M (informational)."""

    mmproj: NotRequired[pulumi.Input[str]]
    """Multimodal projector file (a URL, or a name in files) staged beside the model and passed as --mmproj."""

    refreshPolicy: NotRequired[pulumi.Input[RefreshPolicy]]
    """IfNotPresent (default IfNotPresent): a cached file is used as it is; OnChange: the source is checked at every start and the file fetched again when it changed."""

    prefetch: NotRequired[pulumi.Input[bool]]
    """Fill the shared model cache ahead of any service (a Job in delivery direct)."""

    prefetchTolerations: NotRequired[pulumi.Input[list[pulumi.Input[Toleration]]]]
    """Tolerations of the prefetch Job's pod."""

    hardware: NotRequired[pulumi.Input[HardwareSpec]]
    """Hardware the model wants."""

    resources: NotRequired[pulumi.Input[ModelResources]]
    """CPU and memory the model needs."""

    files: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Further files of a multi-file model (e.g. GGUF splits), downloaded beside the first."""

    fileSha256: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """llmkube only: SHA-256 of further files, keyed by their entry in files (64 hex digits each); checked after download (delivery direct), like sha256 for the model file."""

    catalog: NotRequired[pulumi.Input[str]]
    """llmkube only: the planner's built-in architecture entry for this model (e.g. qwen3-30b-a3b), used when the file's metadata cannot be read; default: recognised from the file name."""


class ServiceMode(StrEnum):
    """One of: chat, embedding, rerank."""

    CHAT = "chat"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class Runtime(StrEnum):
    """One of: llamacpp, llamacpp-router, personaplex, vllm, tgi, sglang, generic."""

    LLAMACPP = "llamacpp"
    LLAMACPP_ROUTER = "llamacpp-router"
    PERSONAPLEX = "personaplex"
    VLLM = "vllm"
    TGI = "tgi"
    SGLANG = "sglang"
    GENERIC = "generic"


class EndpointType(StrEnum):
    """One of: ClusterIP, NodePort, LoadBalancer."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class GatewayRef(TypedDict, total=False):
    """The Gateway (gateway.networking.k8s.io) a route attaches to."""

    name: Required[pulumi.Input[str]]
    """Name of the Gateway."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the Gateway; default: the service's."""


class GatewaySpec(TypedDict, total=False):
    """A Gateway API HTTPRoute in front of the server."""

    enabled: NotRequired[pulumi.Input[bool]]
    """Render the route (default: on when gateway is set)."""

    gatewayRef: Required[pulumi.Input[GatewayRef]]
    """The Gateway the route attaches to."""

    modelName: NotRequired[pulumi.Input[str]]
    """Model name clients send (the body's model field); default: the service's name."""


class EndpointSpec(TypedDict, total=False):
    """How the server is exposed."""

    port: NotRequired[pulumi.Input[int]]
    """Service and container port (default 8080)."""

    path: NotRequired[pulumi.Input[str]]
    """API path clients call (default /v1/chat/completions)."""

    type: NotRequired[pulumi.Input[EndpointType]]
    """Service type: ClusterIP (default), NodePort, LoadBalancer."""

    nodePort: NotRequired[pulumi.Input[int]]
    """Fixed node port (30000-32767) for type NodePort or LoadBalancer."""

    gateway: NotRequired[pulumi.Input[GatewaySpec]]
    """Route requests from a Gateway API Gateway to the server (an HTTPRoute)."""


class GpuSharingMode(StrEnum):
    """One of: exclusive, shared, partitioned."""

    EXCLUSIVE = "exclusive"
    SHARED = "shared"
    PARTITIONED = "partitioned"


class GpuSharingSpec(TypedDict, total=False):
    """How a server shares physical GPUs: whole devices, time-sliced shares, or MIG partitions."""

    mode: NotRequired[pulumi.Input[GpuSharingMode]]
    """exclusive (default exclusive): whole GPUs; shared: time-sliced replicas of a GPU the device plugin advertises; partitioned: a MIG profile."""

    profile: NotRequired[pulumi.Input[str]]
    """MIG profile for mode partitioned, e.g. 1g.10gb (requests nvidia.com/mig-<profile>; the planner plans against its memory)."""

    memoryLimitGiB: NotRequired[pulumi.Input[int]]
    """GPU memory the server may use in mode shared, in GiB: the planner plans against it and the operator counts it against GPU quotas; nothing enforces it on the device (no MPS limit is rendered), so delivery direct warns."""


class InferenceResources(TypedDict, total=False):
    """Compute the server asks the scheduler for."""

    gpu: NotRequired[pulumi.Input[int]]
    """GPUs (0-8); default: all GPUs of the hardware profile."""

    cpu: NotRequired[pulumi.Input[str]]
    """CPU request and limit, e.g. 8."""

    memory: NotRequired[pulumi.Input[str]]
    """Memory limit (and request unless hostMemory is set)."""

    hostMemory: NotRequired[pulumi.Input[str]]
    """System RAM the server needs for offloaded experts and KV cache; becomes the memory request and wins over memory for it."""

    ephemeralStorage: NotRequired[pulumi.Input[str]]
    """Ephemeral storage request and limit."""

    gpuMemory: NotRequired[pulumi.Input[str]]
    """GPU memory the server needs, e.g. 16Gi (scheduling hint for shared GPUs)."""

    gpuSharing: NotRequired[pulumi.Input[GpuSharingSpec]]
    """How the server shares its GPUs with others."""


class CacheType(StrEnum):
    """One of: f16, f32, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl."""

    F16 = "f16"
    F32 = "f32"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"
    Q4_1 = "q4_1"
    Q5_0 = "q5_0"
    Q5_1 = "q5_1"
    IQ4_NL = "iq4_nl"


class MetricType(StrEnum):
    """One of: Pods, Resource."""

    PODS = "Pods"
    RESOURCE = "Resource"


class MetricSpec(TypedDict, total=False):
    """A metric the autoscaler follows."""

    type: Required[pulumi.Input[MetricType]]
    """Pods (a per-pod custom metric) or Resource (cpu, memory)."""

    name: Required[pulumi.Input[str]]
    """Metric name, e.g. llamacpp:requests_processing or cpu."""

    targetAverageValue: NotRequired[pulumi.Input[str]]
    """Target average value per pod."""

    targetAverageUtilization: NotRequired[pulumi.Input[int]]
    """Target average utilization in percent (1-100, Resource metrics)."""


class AutoscalingSpec(TypedDict, total=False):
    """Horizontal pod autoscaling."""

    minReplicas: NotRequired[pulumi.Input[int]]
    """Fewest replicas (1-10, default 1)."""

    maxReplicas: Required[pulumi.Input[int]]
    """Most replicas (1-100)."""

    metrics: NotRequired[pulumi.Input[list[pulumi.Input[MetricSpec]]]]
    """Metrics to follow; default: llamacpp:requests_processing averaging 2 per pod."""


class CachePersistence(StrEnum):
    """One of: Cached, Ephemeral."""

    CACHED = "Cached"
    EPHEMERAL = "Ephemeral"


class ModelCacheSpec(TypedDict, total=False):
    """Where the model file is kept between pod restarts."""

    persistence: NotRequired[pulumi.Input[CachePersistence]]
    """Cached (default): a persistent volume shared by the namespace's services; Ephemeral: an emptyDir, downloaded again on every start."""

    claimName: NotRequired[pulumi.Input[str]]
    """Use this existing PersistentVolumeClaim as the cache."""


class SpeculativeType(StrEnum):
    """One of: none, disabled, mtp, draft, draft-simple, draft-eagle3, draft-mtp, draft-dflash, draft-dspark, ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache."""

    NONE = "none"
    DISABLED = "disabled"
    MTP = "mtp"
    DRAFT = "draft"
    DRAFT_SIMPLE = "draft-simple"
    DRAFT_EAGLE3 = "draft-eagle3"
    DRAFT_MTP = "draft-mtp"
    DRAFT_DFLASH = "draft-dflash"
    DRAFT_DSPARK = "draft-dspark"
    NGRAM_SIMPLE = "ngram-simple"
    NGRAM_MAP_K = "ngram-map-k"
    NGRAM_MAP_K4V = "ngram-map-k4v"
    NGRAM_MOD = "ngram-mod"
    NGRAM_CACHE = "ngram-cache"


class SpeculativeDecodingSpec(TypedDict, total=False):
    """Speculative decoding: a cheap drafter proposes tokens the model checks in one batch (--spec-type)."""

    type: Required[pulumi.Input[SpeculativeType]]
    """llama.cpp's --spec-type, or mtp (draft-mtp: the model's own multi-token-prediction layer, Qwen3.5/3.6), draft (draft-simple) or disabled (none). draft-* types but draft-mtp need draft weights; ngram-* types need none."""

    draftModelRef: NotRequired[pulumi.Input[str]]
    """A Model of the same namespace (a key of llmkube:models) whose file is the draft model."""

    draftModel: NotRequired[pulumi.Input[str]]
    """The draft model as a file of the served Model's files list."""

    nDraftMax: NotRequired[pulumi.Input[int]]
    """Most tokens drafted per step (--spec-draft-n-max)."""

    pMin: NotRequired[pulumi.Input[float]]
    """Least probability a drafted token needs to be kept (--spec-draft-p-min)."""


class RopeScalingType(StrEnum):
    """One of: linear, yarn, longrope."""

    LINEAR = "linear"
    YARN = "yarn"
    LONGROPE = "longrope"


class RopeScalingSpec(TypedDict, total=False):
    """RoPE scaling, to run a model past the context length it was trained with."""

    type: Required[pulumi.Input[RopeScalingType]]
    """linear, yarn or longrope (--rope-scaling)."""

    factor: NotRequired[pulumi.Input[str]]
    """Context scaling factor, e.g. 4 (--rope-scale)."""

    originalContext: NotRequired[pulumi.Input[int]]
    """The context the model was trained with (--yarn-orig-ctx)."""


class RolloutPolicySpec(TypedDict, total=False):
    """How a changed server replaces the running one."""

    force: NotRequired[pulumi.Input[bool]]
    """Replace pods at once, even with requests in flight."""

    waitForIdle: NotRequired[pulumi.Input[bool]]
    """Wait until the server has no request in flight before replacing it (delivery operator only)."""

    idleTimeoutSeconds: NotRequired[pulumi.Input[int]]
    """Longest wait for idle before replacing anyway (default 300)."""


class DisruptionSpec(TypedDict, total=False):
    """A PodDisruptionBudget for the server's pods (voluntary evictions: drains, autoscaler)."""

    protectStartup: NotRequired[pulumi.Input[bool]]
    """Protect pods while they load the model (default true)."""

    protectAlways: NotRequired[pulumi.Input[bool]]
    """Protect ready pods too."""


class Priority(StrEnum):
    """One of: critical, high, normal, low, batch."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BATCH = "batch"


class ProbeOverridesSpec(TypedDict, total=False):
    """Probes (core/v1 Probe) that replace the server's defaults."""

    startup: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Startup probe, replacing the default."""

    liveness: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Liveness probe, replacing the default."""

    readiness: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Readiness probe, replacing the default."""


class SloIndicator(StrEnum):
    """One of: availability, latency."""

    AVAILABILITY = "availability"
    LATENCY = "latency"


class SLOSpec(TypedDict, total=False):
    """A service-level objective for the server."""

    name: NotRequired[pulumi.Input[str]]
    """Name of the objective; default: the service's."""

    indicator: NotRequired[pulumi.Input[SloIndicator]]
    """availability (default availability): share of requests answered without error; latency: share answered within latencyThreshold."""

    objective: Required[pulumi.Input[str]]
    """Target in percent, 50 to 99.999, e.g. 99.5."""

    latencyThreshold: NotRequired[pulumi.Input[str]]
    """Seconds a request may take, for indicator latency."""

    window: NotRequired[pulumi.Input[str]]
    """Window the objective is measured over (default 28d)."""


class VLLMConfigAttentionBackend(StrEnum):
    """One of: FLASH_ATTN, FLASHINFER, XFORMERS, flashinfer, flash_attn, xformers, torch_sdpa."""

    FLASH_ATTN = "FLASH_ATTN"
    FLASHINFER = "FLASHINFER"
    XFORMERS = "XFORMERS"
    FLASHINFER_ = "flashinfer"
    FLASH_ATTN_ = "flash_attn"
    XFORMERS_ = "xformers"
    TORCH_SDPA = "torch_sdpa"


class VLLMConfigDtype(StrEnum):
    """One of: auto, float16, bfloat16."""

    AUTO = "auto"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class SecretKeySelector(TypedDict, total=False):
    """A key of a Secret in the same namespace (core/v1 SecretKeySelector)."""

    key: Required[pulumi.Input[str]]
    """Key in the Secret's data."""

    name: NotRequired[pulumi.Input[str]]
    """Name of the Secret."""

    optional: NotRequired[pulumi.Input[bool]]
    """Start even when the Secret or key is missing."""


class KvCacheDtype(StrEnum):
    """One of: auto, fp8_e5m2, fp8_e4m3."""

    AUTO = "auto"
    FP8_E5M2 = "fp8_e5m2"
    FP8_E4M3 = "fp8_e4m3"


class VLLMConfigQuantization(StrEnum):
    """One of: awq, gptq, squeezellm, fp8, nvfp4, mxfp4, compressed-tensors."""

    AWQ = "awq"
    GPTQ = "gptq"
    SQUEEZELLM = "squeezellm"
    FP8 = "fp8"
    NVFP4 = "nvfp4"
    MXFP4 = "mxfp4"
    COMPRESSED_TENSORS = "compressed-tensors"


class VLLMSpeculative(TypedDict, total=False):
    """vLLM speculative decoding."""

    enabled: NotRequired[pulumi.Input[bool]]
    """Turn speculative decoding on."""

    model: NotRequired[pulumi.Input[str]]
    """Draft model (a Hugging Face id or a path)."""

    numSpeculativeTokens: NotRequired[pulumi.Input[int]]
    """Tokens drafted per step (1-16, default 4)."""


class VLLMConfig(TypedDict, total=False):
    """vLLM engine settings."""

    attentionBackend: NotRequired[pulumi.Input[VLLMConfigAttentionBackend]]
    """Attention backend."""

    cpuOffloadGB: NotRequired[pulumi.Input[int]]
    """GiB of weights offloaded to CPU memory."""

    dtype: NotRequired[pulumi.Input[VLLMConfigDtype]]
    """Weight dtype."""

    enableChunkedPrefill: NotRequired[pulumi.Input[bool]]
    """Chunked prefill."""

    enableExpertParallel: NotRequired[pulumi.Input[bool]]
    """Expert parallelism for MoE models."""

    enablePrefixCaching: NotRequired[pulumi.Input[bool]]
    """Automatic prefix caching."""

    gpuMemoryUtilization: NotRequired[pulumi.Input[float]]
    """Share of GPU memory vLLM may use (0.1-0.99)."""

    hfTokenSecretRef: NotRequired[pulumi.Input[SecretKeySelector]]
    """Hugging Face token."""

    kvCacheCustomDtype: NotRequired[pulumi.Input[str]]
    """Any KV cache dtype vLLM knows; wins over kvCacheDtype."""

    kvCacheDtype: NotRequired[pulumi.Input[KvCacheDtype]]
    """KV cache dtype (default auto)."""

    maxModelLen: NotRequired[pulumi.Input[int]]
    """Context length."""

    maxNumBatchedTokens: NotRequired[pulumi.Input[int]]
    """Most tokens per batch (at least 512)."""

    quantization: NotRequired[pulumi.Input[VLLMConfigQuantization]]
    """Weight quantization."""

    speculative: NotRequired[pulumi.Input[VLLMSpeculative]]
    """Speculative decoding."""

    tensorParallelSize: NotRequired[pulumi.Input[int]]
    """GPUs the model is split over."""


class SGLangConfigAttentionBackend(StrEnum):
    """One of: flashinfer, flash_attn, torch_native."""

    FLASHINFER = "flashinfer"
    FLASH_ATTN = "flash_attn"
    TORCH_NATIVE = "torch_native"


class SGLangConfigLogLevel(StrEnum):
    """One of: debug, info, warning, error."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LoraAdapter(TypedDict, total=False):
    """A LoRA adapter SGLang loads at start."""

    name: Required[pulumi.Input[str]]
    """Adapter name clients select."""

    path: Required[pulumi.Input[str]]
    """Adapter path or Hugging Face id."""


class SGLangConfigReasoningParser(StrEnum):
    """One of: qwen3, deepseek-r1."""

    QWEN3 = "qwen3"
    DEEPSEEK_R1 = "deepseek-r1"


class SGLangSpeculativeAlgorithm(StrEnum):
    """One of: EAGLE, EAGLE3, Medusa."""

    EAGLE = "EAGLE"
    EAGLE3 = "EAGLE3"
    MEDUSA = "Medusa"


class SGLangSpeculative(TypedDict, total=False):
    """SGLang speculative decoding."""

    acceptThresholdAcc: NotRequired[pulumi.Input[float]]
    """Accept threshold (accumulated)."""

    acceptThresholdSingle: NotRequired[pulumi.Input[float]]
    """Accept threshold (single)."""

    algorithm: NotRequired[pulumi.Input[SGLangSpeculativeAlgorithm]]
    """Drafting algorithm."""

    draftModelPath: NotRequired[pulumi.Input[str]]
    """Draft model path or id."""

    eagleTopK: NotRequired[pulumi.Input[int]]
    """EAGLE top-k."""

    enabled: NotRequired[pulumi.Input[bool]]
    """Turn speculative decoding on."""

    numDraftTokens: NotRequired[pulumi.Input[int]]
    """Draft tokens per step (default 4)."""

    numSteps: NotRequired[pulumi.Input[int]]
    """Drafting steps."""


class SGLangConfigToolCallParser(StrEnum):
    """One of: llama3, qwen3, qwen25, hermes, functionary, mistral."""

    LLAMA3 = "llama3"
    QWEN3 = "qwen3"
    QWEN25 = "qwen25"
    HERMES = "hermes"
    FUNCTIONARY = "functionary"
    MISTRAL = "mistral"


class SGLangConfig(TypedDict, total=False):
    """SGLang engine settings."""

    attentionBackend: NotRequired[pulumi.Input[SGLangConfigAttentionBackend]]
    """Attention backend."""

    chatTemplate: NotRequired[pulumi.Input[str]]
    """Chat template name or path."""

    chunkedPrefillSize: NotRequired[pulumi.Input[int]]
    """Chunked prefill size."""

    contextLength: NotRequired[pulumi.Input[int]]
    """Context length."""

    dataParallelSize: NotRequired[pulumi.Input[int]]
    """Data-parallel replicas."""

    enablePrefixCaching: NotRequired[pulumi.Input[bool]]
    """Prefix caching (RadixAttention)."""

    expertParallelSize: NotRequired[pulumi.Input[int]]
    """Expert-parallel size."""

    hfTokenSecretRef: NotRequired[pulumi.Input[SecretKeySelector]]
    """Hugging Face token."""

    kvCacheCustomDtype: NotRequired[pulumi.Input[str]]
    """Any KV cache dtype SGLang knows."""

    kvCacheDtype: NotRequired[pulumi.Input[KvCacheDtype]]
    """KV cache dtype (default auto)."""

    logLevel: NotRequired[pulumi.Input[SGLangConfigLogLevel]]
    """Log level."""

    loraAdapters: NotRequired[pulumi.Input[list[pulumi.Input[LoraAdapter]]]]
    """LoRA adapters loaded at start."""

    loraModules: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """LoRA modules."""

    loraTargetModules: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """LoRA target modules."""

    maxLoraRank: NotRequired[pulumi.Input[int]]
    """Largest LoRA rank."""

    maxRunningRequests: NotRequired[pulumi.Input[int]]
    """Concurrent requests."""

    memFractionStatic: NotRequired[pulumi.Input[float]]
    """Share of GPU memory for weights and KV cache (0.1-0.99)."""

    quantization: NotRequired[pulumi.Input[str]]
    """Weight quantization."""

    reasoningParser: NotRequired[pulumi.Input[SGLangConfigReasoningParser]]
    """Reasoning parser."""

    skipTokenizerInit: NotRequired[pulumi.Input[bool]]
    """Skip tokenizer initialisation."""

    speculative: NotRequired[pulumi.Input[SGLangSpeculative]]
    """Speculative decoding."""

    tensorParallelSize: NotRequired[pulumi.Input[int]]
    """GPUs the model is split over."""

    toolCallParser: NotRequired[pulumi.Input[SGLangConfigToolCallParser]]
    """Tool-call parser."""

    trustRemoteCode: NotRequired[pulumi.Input[bool]]
    """Run the model repository's own code."""


class TGIConfigDtype(StrEnum):
    """One of: float16, bfloat16."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class TGIConfigQuantize(StrEnum):
    """One of: bitsandbytes, gptq, awq, eetq."""

    BITSANDBYTES = "bitsandbytes"
    GPTQ = "gptq"
    AWQ = "awq"
    EETQ = "eetq"


class TGIConfig(TypedDict, total=False):
    """Text Generation Inference settings."""

    dtype: NotRequired[pulumi.Input[TGIConfigDtype]]
    """Weight dtype."""

    hfTokenSecretRef: NotRequired[pulumi.Input[SecretKeySelector]]
    """Hugging Face token."""

    maxInputLength: NotRequired[pulumi.Input[int]]
    """Longest prompt."""

    maxTotalTokens: NotRequired[pulumi.Input[int]]
    """Longest prompt plus answer."""

    quantize: NotRequired[pulumi.Input[TGIConfigQuantize]]
    """Quantization."""


class PersonaPlexConfig(TypedDict, total=False):
    """PersonaPlex (speech) runtime settings."""

    cpuOffload: NotRequired[pulumi.Input[bool]]
    """Offload weights to CPU memory."""

    hfTokenSecretRef: NotRequired[pulumi.Input[SecretKeySelector]]
    """Hugging Face token."""

    quantize4Bit: NotRequired[pulumi.Input[bool]]
    """Load the weights in 4 bits."""


class MultiNodeMember(TypedDict, total=False):
    """Overrides for one member of a multi-node group, by rank."""

    rank: Required[pulumi.Input[int]]
    """The member: 0 is the node that runs llama-server, 1.. the nodes that run ggml-rpc-server."""

    nodeName: NotRequired[pulumi.Input[str]]
    """Pin the member to the node of this name (its kubernetes.io/hostname label); default: the scheduler picks a node of the member's hardware profile, never one another member of the group runs on."""

    hardwareProfile: NotRequired[pulumi.Input[Any]]
    """llmkube only: the hardware of this member's node (a profile name, or {extends: name, ...}); default: the service's. The planner sizes the member's share of the layers by its memory."""


class MultiNodeSpec(TypedDict, total=False):
    """One model served by several nodes: llama-server on one, ggml-rpc-server on the others (llama.cpp RPC)."""

    size: Required[pulumi.Input[Any]]
    """Nodes in the group, counting the one that runs llama-server (1-16), or auto: the planner weighs one node and every size up to maxSize (offload auto) and keeps the fastest placement that fits."""

    maxSize: NotRequired[pulumi.Input[int]]
    """llmkube only: with size auto, the most nodes the group may take (default 4)."""

    rendezvousPort: NotRequired[pulumi.Input[int]]
    """Port the members meet on: each worker's ggml-rpc-server listens on it (default 50052)."""

    members: NotRequired[pulumi.Input[list[pulumi.Input[MultiNodeMember]]]]
    """Per-member overrides (node, hardware), by rank; members not listed take the defaults."""

    workerImage: NotRequired[pulumi.Input[str]]
    """llmkube only: image of the workers' ggml-rpc-server; default: the service's image. Both sides must speak the same RPC protocol version and be built with -DGGML_RPC=ON: one image for both is safest."""

    workerCommand: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """llmkube only: the workers' command; default ['/app/ggml-rpc-server'] (where llama.cpp's images keep their programs; older builds call it rpc-server). Its arguments (--host, --port, --cache) are ours."""

    workerCache: NotRequired[pulumi.Input[bool]]
    """llmkube only: ggml-rpc-server keeps the large tensors it receives in a local cache (-c, an emptyDir of the worker pod), so a restarted llama-server sends their hashes instead of the weights (default true)."""


class OffloadMode(StrEnum):
    """One of: auto, manual."""

    AUTO = "auto"
    MANUAL = "manual"


class ApiKeySpec(TypedDict, total=False):
    """Where llama-server's API key comes from: an existing Kubernetes Secret of the service's namespace. A key Pulumi holds (a secret stack config value, or a component argument) fills this in itself."""

    secretName: Required[pulumi.Input[str]]
    """Name of the Secret that holds the key."""

    secretKey: NotRequired[pulumi.Input[str]]
    """Key in the Secret's data (default api-key); the value may hold several API keys, one per line."""


class InferenceServiceSpec(TypedDict, total=False):
    """One llama.cpp server (Deployment + Service) serving a Model."""

    modelRef: Required[pulumi.Input[str]]
    """Name of the Model (a key of llmkube:models) to serve."""

    mode: NotRequired[pulumi.Input[ServiceMode]]
    """chat (default), embedding or rerank."""

    replicas: NotRequired[pulumi.Input[int]]
    """Pod replicas (0-10, default 1)."""

    image: NotRequired[pulumi.Input[str]]
    """Server image; default: the hardware profile's (llama.cpp)."""

    runtime: NotRequired[pulumi.Input[Runtime]]
    """Serving runtime (default llamacpp). Delivery direct renders llamacpp and llamacpp-router; vllm, sglang, tgi, personaplex and generic need delivery operator."""

    endpoint: NotRequired[pulumi.Input[EndpointSpec]]
    """How the server is exposed."""

    resources: NotRequired[pulumi.Input[InferenceResources]]
    """GPUs, CPU and memory for the server."""

    nodeSelector: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Node labels the pod must match; adds to the profile's."""

    tolerations: NotRequired[pulumi.Input[list[pulumi.Input[Toleration]]]]
    """Pod tolerations; add to the profile's."""

    affinity: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Pod affinity (core/v1 Affinity), passed through."""

    podAnnotations: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Annotations added to the pod template."""

    podLabels: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """Labels added to the pod template."""

    runtimeClassName: NotRequired[pulumi.Input[str]]
    """RuntimeClass of the pod, e.g. nvidia."""

    priorityClassName: NotRequired[pulumi.Input[str]]
    """PriorityClass of the pod."""

    contextSize: NotRequired[pulumi.Input[int]]
    """Context window in tokens (--ctx-size), shared by the parallel slots."""

    parallelSlots: NotRequired[pulumi.Input[int]]
    """Concurrent sequences (--parallel)."""

    flashAttention: NotRequired[pulumi.Input[bool]]
    """Flash attention (--flash-attn on|off); unset: llama.cpp's auto."""

    jinja: NotRequired[pulumi.Input[bool]]
    """Use the model's Jinja chat template (--jinja); tool calling needs it."""

    cacheTypeK: NotRequired[pulumi.Input[CacheType]]
    """K cache type (--cache-type-k)."""

    cacheTypeV: NotRequired[pulumi.Input[CacheType]]
    """V cache type (--cache-type-v); quantized types need flash attention."""

    cacheTypeCustomK: NotRequired[pulumi.Input[str]]
    """Any K cache type llama.cpp knows; wins over cacheTypeK."""

    cacheTypeCustomV: NotRequired[pulumi.Input[str]]
    """Any V cache type llama.cpp knows; wins over cacheTypeV."""

    moeCPUOffload: NotRequired[pulumi.Input[bool]]
    """Keep all routed MoE expert weights in system RAM (--cpu-moe)."""

    moeCPULayers: NotRequired[pulumi.Input[int]]
    """Keep the routed experts of the first N layers in system RAM (--n-cpu-moe N)."""

    noKvOffload: NotRequired[pulumi.Input[bool]]
    """Keep the KV cache in system RAM (--no-kv-offload)."""

    gpuLayers: NotRequired[pulumi.Input[int]]
    """llmkube only: layers this service offloads to the GPUs (--n-gpu-layers N, counting the output layer as llama.cpp does: the first layers stay on the CPU); wins over the Model's hardware.gpu.layers. offload: auto sets it when the model does not fit whole. Delivery operator passes it in extraArgs."""

    tensorSplit: NotRequired[pulumi.Input[list[pulumi.Input[float]]]]
    """llmkube only: each GPU's share of the offloaded layers for this service (--tensor-split, e.g. [22, 27] layers); wins over the Model's hardware.gpu.sharding.layerSplit. offload: auto sets it to balance the GPUs after moving experts to the CPU. With multiNode the workers' devices come first (rank 1's, rank 2's, ...), then the server's own GPUs, as llama.cpp orders RPC devices. Delivery operator passes it in extraArgs."""

    noWarmup: NotRequired[pulumi.Input[bool]]
    """Skip the warm-up run at start (--no-warmup)."""

    tensorOverrides: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Tensor placement rules, each passed as --override-tensor, e.g. 'exps=CPU'."""

    batchSize: NotRequired[pulumi.Input[int]]
    """Logical batch size (--batch-size)."""

    uBatchSize: NotRequired[pulumi.Input[int]]
    """Physical batch size (--ubatch-size, at most 16384)."""

    extraArgs: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Further llama-server arguments; a flag given here is not emitted a second time."""

    autoscaling: NotRequired[pulumi.Input[AutoscalingSpec]]
    """Horizontal pod autoscaling."""

    modelCache: NotRequired[pulumi.Input[ModelCacheSpec]]
    """Where the model file is kept."""

    speculativeDecoding: NotRequired[pulumi.Input[SpeculativeDecodingSpec]]
    """Speculative decoding (--spec-type, -md, --spec-draft-n-max, --spec-draft-p-min)."""

    ropeScaling: NotRequired[pulumi.Input[RopeScalingSpec]]
    """RoPE scaling (--rope-scaling, --rope-scale, --yarn-orig-ctx)."""

    reasoningBudget: NotRequired[pulumi.Input[int]]
    """Most thinking tokens per answer (--reasoning-budget); 0 turns thinking off."""

    reasoningBudgetMessage: NotRequired[pulumi.Input[str]]
    """Text appended when the budget runs out (--reasoning-budget-message)."""

    metadataOverrides: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """GGUF metadata overrides, each KEY=TYPE:VALUE (--override-kv)."""

    turboQuantBits: NotRequired[pulumi.Input[int]]
    """TurboQuant KV cache bits (3, 6 or 8) of llama.cpp forks that have it; needs delivery operator."""

    hotCacheMaxSize: NotRequired[pulumi.Input[str]]
    """Hot prompt cache size of the oMLX runtime (Apple, operator's Metal agent only)."""

    pagedSSDCacheDir: NotRequired[pulumi.Input[str]]
    """Paged SSD KV cache directory of the oMLX runtime (Apple, operator's Metal agent only)."""

    pagedSSDCacheMaxSize: NotRequired[pulumi.Input[str]]
    """Paged SSD KV cache size of the oMLX runtime (Apple, operator's Metal agent only)."""

    suspend: NotRequired[pulumi.Input[bool]]
    """Stop the server (no pods) and keep everything else; the model cache stays."""

    revisionHistoryLimit: NotRequired[pulumi.Input[int]]
    """Old ReplicaSets kept for rollback (Deployment revisionHistoryLimit)."""

    rolloutPolicy: NotRequired[pulumi.Input[RolloutPolicySpec]]
    """How a changed server replaces the old one."""

    disruption: NotRequired[pulumi.Input[DisruptionSpec]]
    """PodDisruptionBudget of the server's pods."""

    maxPodLifetimeSeconds: NotRequired[pulumi.Input[int]]
    """Recycle a pod (through the eviction API) after it has run this long; delivery operator only: Kubernetes has no equivalent for a Deployment's pods."""

    maxPodLifetimeIdleTimeoutSeconds: NotRequired[pulumi.Input[int]]
    """With maxPodLifetimeSeconds: wait up to this long for the pod to be idle before recycling it (delivery operator only)."""

    priority: NotRequired[pulumi.Input[Priority]]
    """Scheduling priority (default normal): critical, high, normal, low or batch; becomes a PriorityClass unless priorityClassName is set."""

    evictionProtection: NotRequired[pulumi.Input[bool]]
    """Keep the pods from being evicted by the cluster autoscaler (safe-to-evict false)."""

    topologySpreadConstraints: NotRequired[pulumi.Input[list[pulumi.Input[dict[str, pulumi.Input[Any]]]]]]
    """Pod topology spread constraints (core/v1 TopologySpreadConstraint), passed through."""

    podSecurityContext: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Pod security context (core/v1), merged over the restricted defaults."""

    securityContext: NotRequired[pulumi.Input[dict[str, pulumi.Input[Any]]]]
    """Server container security context (core/v1), merged over the restricted defaults."""

    imagePullSecrets: NotRequired[pulumi.Input[list[pulumi.Input[LocalObjectReference]]]]
    """Secrets for pulling the images (pod imagePullSecrets)."""

    env: NotRequired[pulumi.Input[list[pulumi.Input[dict[str, pulumi.Input[Any]]]]]]
    """Environment variables of the server container (core/v1 EnvVar), added to ours."""

    command: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Container entrypoint, replacing the image's."""

    args: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Container arguments, replacing the generated llama-server arguments entirely."""

    containerPort: NotRequired[pulumi.Input[int]]
    """Port the server listens on inside the pod (--port); default: endpoint.port."""

    bindAddress: NotRequired[pulumi.Input[str]]
    """Address the server binds to (--host); default 0.0.0.0."""

    probeOverrides: NotRequired[pulumi.Input[ProbeOverridesSpec]]
    """Startup, liveness and readiness probes replacing the defaults."""

    skipModelInit: NotRequired[pulumi.Input[bool]]
    """Do not stage the model in an init container: the image or a volume already has it at the cache path."""

    extraVolumes: NotRequired[pulumi.Input[list[pulumi.Input[dict[str, pulumi.Input[Any]]]]]]
    """Further pod volumes (core/v1 Volume), passed through."""

    extraVolumeMounts: NotRequired[pulumi.Input[list[pulumi.Input[dict[str, pulumi.Input[Any]]]]]]
    """Further mounts of the server container (core/v1 VolumeMount), passed through."""

    slo: NotRequired[pulumi.Input[SLOSpec]]
    """Service-level objective."""

    vllmConfig: NotRequired[pulumi.Input[VLLMConfig]]
    """vLLM settings (runtime vllm, delivery operator)."""

    sglangConfig: NotRequired[pulumi.Input[SGLangConfig]]
    """SGLang settings (runtime sglang, delivery operator)."""

    tgiConfig: NotRequired[pulumi.Input[TGIConfig]]
    """TGI settings (runtime tgi, delivery operator)."""

    personaPlexConfig: NotRequired[pulumi.Input[PersonaPlexConfig]]
    """PersonaPlex settings (runtime personaplex, delivery operator)."""

    allowWeakerSecurityContext: NotRequired[pulumi.Input[bool]]
    """llmkube only: let podSecurityContext and securityContext weaken the restricted defaults (run as root, privilege escalation, added capabilities, a writable root, ...); the preview warns."""

    hardwareProfile: NotRequired[pulumi.Input[Any]]
    """llmkube only: a hardware profile for this service (a name, or {extends: name, ...}); default: the stack's llmkube:hardware."""

    multiNode: NotRequired[pulumi.Input[MultiNodeSpec]]
    """llmkube only (upstream's multiNode serves vLLM): serve the model from several nodes with llama.cpp RPC: llama-server on the first, ggml-rpc-server on each other, each node's devices taking a share of the layers by memory. Delivery direct only; one replica."""

    offload: NotRequired[pulumi.Input[OffloadMode]]
    """llmkube only: auto lets the planner pick the fastest placement that fits (gpuLayers, tensorSplit, moeCPULayers, moeCPUOffload, noKvOffload) and the hostMemory request; manual keeps the fields as written and checks them. Default: auto unless one of those fields or resources.hostMemory is set."""

    apiKey: NotRequired[pulumi.Input[ApiKeySpec]]
    """llmkube only: require this API key (a Secret mounted as a file, --api-key-file); a key held by Pulumi goes in llmkube:apiKeys instead. Delivery direct only."""

    webUI: NotRequired[pulumi.Input[bool]]
    """llmkube only: serve llama-server's web UI (--no-ui when false). Default: on for ClusterIP, off for NodePort and LoadBalancer."""

    slotsEndpoint: NotRequired[pulumi.Input[bool]]
    """llmkube only: serve /slots, which shows every slot's prompt (--no-slots when false). Default: on for ClusterIP, off for NodePort and LoadBalancer."""

    routerModels: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """llmkube only: keys of llmkube:models served beside modelRef by a llamacpp-router service, each under its Model key as the model name clients send (modelRef's too). One model is loaded at a time (--models-max 1) and swapped on demand; each must fit the profile with the service's settings. Delivery direct only."""


class PlatformArgs(TypedDict, total=False):
    """Everything a stack file sets under llmkube:."""

    delivery: NotRequired[pulumi.Input[Delivery]]
    """direct: Pulumi renders the llama.cpp workloads; operator: CRDs, the LLMKube operator and Model/InferenceService custom resources."""

    namespace: NotRequired[pulumi.Input[str]]
    """Namespace of the models and services."""

    createNamespace: NotRequired[pulumi.Input[bool]]
    """Create the namespace and set its Pod Security labels (false when it exists already; it is then used as it is)."""

    allowHostPath: NotRequired[pulumi.Input[bool]]
    """Allow models from a path of the node (file:// or an absolute path), mounted as hostPath: the namespace's Pod Security then has to be privileged."""

    hardware: NotRequired[pulumi.Input[Any]]
    """Hardware profile: a built-in name, or {extends: name, ...overrides}, or a whole profile."""

    operator: NotRequired[pulumi.Input[OperatorSettings]]
    """Operator install settings (delivery operator)."""

    modelCache: NotRequired[pulumi.Input[CacheSettings]]
    """The shared model cache volume (delivery direct)."""

    downloadMbps: NotRequired[pulumi.Input[int]]
    """Download speed to expect for model files, in megabits per second (delivery direct): Pulumi waits for a Deployment as long as its model takes to download at this speed, with headroom, on top of its usual wait."""

    networkPolicy: NotRequired[pulumi.Input[NetworkPolicySettings]]
    """Network policies of the services."""

    observability: NotRequired[pulumi.Input[ObservabilitySettings]]
    """Metrics scraping, a Grafana dashboard, and the autoscaler's metrics (all off by default)."""

    models: NotRequired[pulumi.Input[dict[str, pulumi.Input[ModelSpec]]]]
    """Models by name."""

    services: NotRequired[pulumi.Input[dict[str, pulumi.Input[InferenceServiceSpec]]]]
    """Inference services by name."""

    apiKeys: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """API keys by service name, each a Pulumi secret (pulumi config set --secret --path 'llmkube:apiKeys.<service>' KEY): written to a Secret of the service's, mounted as a file (delivery direct)."""
