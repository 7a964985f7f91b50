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
    """namespaced: the controller may write (workloads, cache claims, status, events) and read pod logs only in the served namespaces, and reads the kinds it watches in every namespace, never Secrets; clusterWide: the same rights in every namespace (opt-in)."""

    servedNamespaces: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Namespaces of the Models and InferenceServices the controller serves (rbac namespaced); they must exist. A stack adds its own namespace."""


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


class ModelFormat(StrEnum):
    """One of: gguf, mlx, safetensors, pytorch, custom."""

    GGUF = "gguf"
    MLX = "mlx"
    SAFETENSORS = "safetensors"
    PYTORCH = "pytorch"
    CUSTOM = "custom"


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
    """Layers to offload to the GPUs (--n-gpu-layers); -1 or unset offloads all."""

    sharding: NotRequired[pulumi.Input[GPUShardingSpec]]
    """Multi-GPU split."""


class HardwareSpec(TypedDict, total=False):
    """Hardware the model runs on."""

    accelerator: NotRequired[pulumi.Input[Accelerator]]
    """Compute backend (default cpu): cpu, metal, cuda, rocm, intel or vulkan."""

    gpu: NotRequired[pulumi.Input[GPUSpec]]
    """GPU requirements."""


class ModelResources(TypedDict, total=False):
    """Resources the model needs."""

    cpu: NotRequired[pulumi.Input[str]]
    """CPU the model needs, e.g. 8 or 500m."""

    memory: NotRequired[pulumi.Input[str]]
    """Memory the model needs, e.g. 48Gi."""


class ModelSpec(TypedDict, total=False):
    """A model file to serve: where it comes from, what it is, and what hardware it wants."""

    source: Required[pulumi.Input[str]]
    """Where the model comes from: an http(s)://, hf://, pvc:// or file:// URL, or an absolute path."""

    sha256: NotRequired[pulumi.Input[str]]
    """SHA-256 of the model file (64 hex digits); checked after download."""

    format: NotRequired[pulumi.Input[ModelFormat]]
    """File format (default gguf): gguf, mlx, safetensors, pytorch, custom."""

    quantization: NotRequired[pulumi.Input[str]]
    """Quantization of the weights, e.g. Q4_K_M (informational)."""

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


class EndpointType(StrEnum):
    """One of: ClusterIP, NodePort, LoadBalancer."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


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
    """Target average utilization in percent (Resource metrics)."""


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
    """llama.cpp server image; default: the hardware profile's."""

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

    noWarmup: NotRequired[pulumi.Input[bool]]
    """Skip the warm-up run at start (--no-warmup)."""

    tensorOverrides: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Tensor placement rules, each passed as --override-tensor, e.g. 'exps=CPU'."""

    batchSize: NotRequired[pulumi.Input[int]]
    """Logical batch size (--batch-size)."""

    uBatchSize: NotRequired[pulumi.Input[int]]
    """Physical batch size (--ubatch-size)."""

    extraArgs: NotRequired[pulumi.Input[list[pulumi.Input[str]]]]
    """Further llama-server arguments; a flag given here is not emitted a second time."""

    autoscaling: NotRequired[pulumi.Input[AutoscalingSpec]]
    """Horizontal pod autoscaling."""

    modelCache: NotRequired[pulumi.Input[ModelCacheSpec]]
    """Where the model file is kept."""

    hardwareProfile: NotRequired[pulumi.Input[Any]]
    """llmkube only: a hardware profile for this service (a name, or {extends: name, ...}); default: the stack's llmkube:hardware."""

    offload: NotRequired[pulumi.Input[OffloadMode]]
    """llmkube only: auto lets the planner pick the fastest placement that fits (GPU layers, moeCPULayers, moeCPUOffload, noKvOffload) and the hostMemory request; manual keeps the fields as written and checks them. Default: auto unless moeCPUOffload, moeCPULayers, noKvOffload or resources.hostMemory is set."""

    apiKey: NotRequired[pulumi.Input[ApiKeySpec]]
    """llmkube only: require this API key (a Secret mounted as a file, --api-key-file); a key held by Pulumi goes in llmkube:apiKeys instead. Delivery direct only."""

    webUI: NotRequired[pulumi.Input[bool]]
    """llmkube only: serve llama-server's web UI (--no-ui when false). Default: on for ClusterIP, off for NodePort and LoadBalancer."""

    slotsEndpoint: NotRequired[pulumi.Input[bool]]
    """llmkube only: serve /slots, which shows every slot's prompt (--no-slots when false). Default: on for ClusterIP, off for NodePort and LoadBalancer."""


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

    models: NotRequired[pulumi.Input[dict[str, pulumi.Input[ModelSpec]]]]
    """Models by name."""

    services: NotRequired[pulumi.Input[dict[str, pulumi.Input[InferenceServiceSpec]]]]
    """Inference services by name."""

    apiKeys: NotRequired[pulumi.Input[dict[str, pulumi.Input[str]]]]
    """API keys by service name, each a Pulumi secret (pulumi config set --secret --path 'llmkube:apiKeys.<service>' KEY): written to a Secret of the service's, mounted as a file (delivery direct)."""
