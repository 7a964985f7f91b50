"""InferenceService: one llama.cpp server for a Model (LLMKube ``inference.llmkube.dev/v1alpha1`` spec)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .base import (
    ApiModel,
    DnsSubdomain,
    Image,
    NonEmpty,
    Quantity,
    crd_default,
    crd_schema,
    llmkube_only,
    pattern,
)
from .core import LocalObjectReference, Toleration
from .model import MAX_LAYERS
from .runtimes import (
    PersonaPlexConfig,
    SGLangConfig,
    TGIConfig,
    VLLMConfig,
)

ServiceMode = Literal["chat", "embedding", "rerank"]
EndpointType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
CacheType = Literal["f16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
CachePersistence = Literal["Cached", "Ephemeral"]
MetricType = Literal["Pods", "Resource"]
OffloadMode = Literal["auto", "manual"]
Runtime = Literal["llamacpp", "llamacpp-router", "personaplex", "vllm", "tgi", "sglang", "generic"]
# Runtimes whose server is llama.cpp's llama-server: the ones delivery direct renders.
LLAMACPP_RUNTIMES: Final = frozenset({"llamacpp", "llamacpp-router"})
DEFAULT_RUNTIME: Runtime = "llamacpp"
# llama.cpp's --spec-type values, and upstream's friendlier names for three of them.
SpeculativeType = Literal[
    "none",
    "disabled",
    "mtp",
    "draft",
    "draft-simple",
    "draft-eagle3",
    "draft-mtp",
    "draft-dflash",
    "draft-dspark",
    "ngram-simple",
    "ngram-map-k",
    "ngram-map-k4v",
    "ngram-mod",
    "ngram-cache",
]
SPEC_TYPE_ALIASES: Final = {"mtp": "draft-mtp", "draft": "draft-simple", "disabled": "none"}
# Types that decode with a separate draft model's weights (draft-mtp may take a separate MTP head file).
DRAFT_WEIGHT_TYPES: Final = frozenset({"draft-simple", "draft-eagle3", "draft-dflash", "draft-dspark"})
RopeScalingType = Literal["linear", "yarn", "longrope"]
Priority = Literal["critical", "high", "normal", "low", "batch"]
DEFAULT_PRIORITY: Priority = "normal"
GpuSharingMode = Literal["exclusive", "shared", "partitioned"]
DEFAULT_GPU_SHARING: GpuSharingMode = "exclusive"
SloIndicator = Literal["availability", "latency"]
DEFAULT_SLO_INDICATOR: SloIndicator = "availability"
DEFAULT_SLO_WINDOW = "28d"
DEFAULT_IDLE_TIMEOUT_SECONDS = 300
TurboQuantBits = Literal[3, 6, 8]
DECIMAL_PATTERN = pattern(r"^[0-9]+(\.[0-9]+)?$", "a decimal number such as 4 or 2.5")
WINDOW_PATTERN = pattern(r"^[0-9]+[mhdw]$", "a duration in minutes, hours, days or weeks, such as 30m or 28d")
# --override-kv KEY=TYPE:VALUE, the types llama.cpp parses.
METADATA_OVERRIDE_PATTERN = pattern(
    r"^[^=\s]+=(int|float|bool|str):.*$", "KEY=TYPE:VALUE with TYPE int, float, bool or str"
)

# Defaults the operator applies to unset fields; the builders apply the same ones.
DEFAULT_PORT = 8080
DEFAULT_PATH = "/v1/chat/completions"
DEFAULT_ENDPOINT_TYPE: EndpointType = "ClusterIP"
DEFAULT_REPLICAS = 1
DEFAULT_MIN_REPLICAS = 1
# The operator's autoscaling default: scale on llama.cpp's in-flight requests, two per pod.
DEFAULT_AUTOSCALING_METRIC = "llamacpp:requests_processing"
DEFAULT_AUTOSCALING_TARGET = "2"

# Where the service's API key lives when Pulumi holds it (llmkube:apiKeys, the component's apiKey argument):
# a Secret of the service's own, ``<service>-api-key``, under this key.
API_KEY_SECRET_SUFFIX = "-api-key"
DEFAULT_API_KEY_SECRET_KEY = "api-key"
# Keys of a Secret's data (core/v1 validation: IsConfigMapKey).
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]{1,253}$"
# Endpoint types that reach the server from outside the cluster: without a key, anyone who can reach a node
# (NodePort) or the load balancer can use the model, its web UI and /slots (which shows other users' prompts).
EXPOSED_ENDPOINT_TYPES: Final = frozenset({"NodePort", "LoadBalancer"})

# Cache types that are not plain floats: llama.cpp needs flash attention to quantize the V cache.
QUANTIZED_CACHE_TYPES = frozenset({"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"})


class GatewayRef(ApiModel):
    """The Gateway (gateway.networking.k8s.io) a route attaches to."""

    name: NonEmpty = Field(..., description="Name of the Gateway.")
    namespace: str | None = Field(None, description="Namespace of the Gateway; default: the service's.")


class GatewaySpec(ApiModel):
    """A Gateway API HTTPRoute in front of the server."""

    enabled: bool | None = Field(None, description="Render the route (default: on when gateway is set).")
    gateway_ref: GatewayRef = Field(..., description="The Gateway the route attaches to.")
    model_name: str | None = Field(
        None, description="Model name clients send (the body's model field); default: the service's name."
    )

    @property
    def on(self) -> bool:
        return self.enabled is not False


class EndpointSpec(ApiModel):
    """How the server is exposed."""

    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        json_schema_extra=crd_default(DEFAULT_PORT),
        description=f"Service and container port (default {DEFAULT_PORT}).",
    )
    path: str | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_PATH),
        description=f"API path clients call (default {DEFAULT_PATH}).",
    )
    type: EndpointType | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_ENDPOINT_TYPE),
        description=f"Service type: {DEFAULT_ENDPOINT_TYPE} (default), NodePort, LoadBalancer.",
    )
    node_port: int | None = Field(
        None, ge=30000, le=32767, description="Fixed node port (30000-32767) for type NodePort or LoadBalancer."
    )
    gateway: GatewaySpec | None = Field(
        None, description="Route requests from a Gateway API Gateway to the server (an HTTPRoute)."
    )

    @model_validator(mode="after")
    def _node_port_needs_type(self) -> EndpointSpec:
        if self.node_port is not None and self.type in (None, "ClusterIP"):
            raise PydanticCustomError(
                "llmkube_rule",
                "nodePort {port} needs type NodePort or LoadBalancer, not {type}",
                {"port": self.node_port, "type": self.type or "ClusterIP (the default)"},
            )
        return self


class GpuSharingSpec(ApiModel):
    """How a server shares physical GPUs: whole devices, time-sliced shares, or MIG partitions."""

    mode: GpuSharingMode | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_GPU_SHARING),
        description=f"exclusive (default {DEFAULT_GPU_SHARING}): whole GPUs; shared: time-sliced replicas of a "
        "GPU the device plugin advertises; partitioned: a MIG profile.",
    )
    profile: str | None = Field(
        None,
        description="MIG profile for mode partitioned, e.g. 1g.10gb (requests nvidia.com/mig-<profile>; the "
        "planner plans against its memory).",
    )
    memory_limit_gi_b: int | None = Field(
        None,
        ge=1,
        alias="memoryLimitGiB",
        description="GPU memory the server may use in mode shared, in GiB: the planner plans against it and the "
        "operator counts it against GPU quotas; nothing enforces it on the device (no MPS limit is rendered), so "
        "delivery direct warns.",
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> GpuSharingSpec:
        mode = self.mode or DEFAULT_GPU_SHARING
        if mode == "partitioned" and not self.profile:
            raise PydanticCustomError("llmkube_rule", "mode partitioned needs a profile, e.g. 1g.10gb", {})
        if self.profile and mode != "partitioned":
            raise PydanticCustomError(
                "llmkube_rule",
                "profile {profile} needs mode partitioned, not {mode}",
                {"profile": self.profile, "mode": mode},
            )
        if self.memory_limit_gi_b is not None and mode != "shared":
            raise PydanticCustomError("llmkube_rule", "memoryLimitGiB needs mode shared, not {mode}", {"mode": mode})
        return self


# Multi-node groups (llama.cpp RPC): rank 0 runs llama-server, ranks 1.. run ggml-rpc-server.
MAX_GROUP_SIZE: Final = 16  # llama.cpp's llama_max_devices(): every member brings at least one device
DEFAULT_MAX_GROUP_SIZE: Final = 4
DEFAULT_RPC_PORT: Final = 50052  # ggml-rpc-server's default port (tools/rpc)
AUTO: Final = "auto"
DEFAULT_WORKER_COMMAND: Final = ["/app/ggml-rpc-server"]


class MultiNodeMember(ApiModel):
    """Overrides for one member of a multi-node group, by rank."""

    rank: int = Field(
        ...,
        ge=0,
        le=MAX_GROUP_SIZE - 1,
        description="The member: 0 is the node that runs llama-server, 1.. the nodes that run ggml-rpc-server.",
    )
    node_name: DnsSubdomain | None = Field(
        None,
        description="Pin the member to the node of this name (its kubernetes.io/hostname label); default: the "
        "scheduler picks a node of the member's hardware profile, never one another member of the group runs on.",
    )
    hardware_profile: str | dict[str, Any] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: the hardware of this member's node (a profile name, or {extends: name, ...}); "
        "default: the service's. The planner sizes the member's share of the layers by its memory.",
    )


class MultiNodeSpec(ApiModel):
    """One model served by several nodes: llama-server on one, ggml-rpc-server on the others (llama.cpp RPC)."""

    size: Annotated[int, Field(ge=1, le=MAX_GROUP_SIZE)] | Literal["auto"] = Field(
        ...,
        description=f"Nodes in the group, counting the one that runs llama-server (1-{MAX_GROUP_SIZE}), or auto: "
        "the planner weighs one node and every size up to maxSize (offload auto) and keeps the fastest placement "
        "that fits.",
    )
    max_size: Annotated[int, Field(ge=2, le=MAX_GROUP_SIZE)] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description=f"llmkube only: with size auto, the most nodes the group may take (default "
        f"{DEFAULT_MAX_GROUP_SIZE}).",
    )
    rendezvous_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None,
        description=f"Port the members meet on: each worker's ggml-rpc-server listens on it (default "
        f"{DEFAULT_RPC_PORT}).",
    )
    members: Annotated[list[MultiNodeMember], Field(max_length=MAX_GROUP_SIZE)] | None = Field(
        None, description="Per-member overrides (node, hardware), by rank; members not listed take the defaults."
    )
    worker_image: Image | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: image of the workers' ggml-rpc-server; default: the service's image. Both sides "
        "must speak the same RPC protocol version and be built with -DGGML_RPC=ON: one image for both is safest.",
    )
    worker_command: Annotated[list[NonEmpty], Field(min_length=1)] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description=f"llmkube only: the workers' command; default {DEFAULT_WORKER_COMMAND} (where llama.cpp's images "
        "keep their programs; older builds call it rpc-server). Its arguments (--host, --port, --cache) are ours.",
    )
    worker_cache: bool | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: ggml-rpc-server keeps the large tensors it receives in a local cache (-c, an "
        "emptyDir of the worker pod), so a restarted llama-server sends their hashes instead of the weights "
        "(default true).",
    )

    @property
    def is_auto(self) -> bool:
        return self.size == AUTO

    @property
    def port(self) -> int:
        return self.rendezvous_port or DEFAULT_RPC_PORT

    @property
    def cache_on(self) -> bool:
        return self.worker_cache is not False

    @property
    def largest(self) -> int:
        """The most nodes the group may take: size, or maxSize with size auto."""
        if isinstance(self.size, int):
            return self.size
        return self.max_size or DEFAULT_MAX_GROUP_SIZE

    def member(self, rank: int) -> MultiNodeMember | None:
        return next((m for m in self.members or () if m.rank == rank), None)

    @field_validator("size", mode="before")
    @classmethod
    def _size_or_auto(cls, value: Any) -> Any:
        # One message for both halves of the union (pydantic would report each alternative's failure).
        if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_GROUP_SIZE):
            return value
        raise PydanticCustomError(
            "llmkube_rule",
            "{value} is not a node count from 1 to {most} or auto",
            {"value": repr(value), "most": MAX_GROUP_SIZE},
        )

    @model_validator(mode="after")
    def _members_in_group(self) -> MultiNodeSpec:
        if self.max_size is not None and not self.is_auto:
            raise PydanticCustomError(
                "llmkube_rule", "maxSize {max} needs size auto, not {size}", {"max": self.max_size, "size": self.size}
            )
        seen: set[int] = set()
        for member in self.members or ():
            if member.rank in seen:
                raise PydanticCustomError(
                    "llmkube_rule", "members: rank {rank} is given twice; one entry per member", {"rank": member.rank}
                )
            seen.add(member.rank)
            if member.rank >= self.largest:
                raise PydanticCustomError(
                    "llmkube_rule",
                    "members: rank {rank} is outside a group of at most {n} nodes (ranks 0-{last})",
                    {"rank": member.rank, "n": self.largest, "last": self.largest - 1},
                )
        names = [m.node_name for m in self.members or () if m.node_name]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PydanticCustomError(
                "llmkube_rule",
                "members: node {node} is given to two members; each member runs on a node of its own",
                {"node": ", ".join(twice)},
            )
        return self


class InferenceResources(ApiModel):
    """Compute the server asks the scheduler for."""

    gpu: int | None = Field(None, ge=0, le=8, description="GPUs (0-8); default: all GPUs of the hardware profile.")
    cpu: Quantity | None = Field(None, description="CPU request and limit, e.g. 8.")
    memory: Quantity | None = Field(None, description="Memory limit (and request unless hostMemory is set).")
    host_memory: Quantity | None = Field(
        None,
        description="System RAM the server needs for offloaded experts and KV cache; becomes the memory "
        "request and wins over memory for it.",
    )
    ephemeral_storage: Quantity | None = Field(None, description="Ephemeral storage request and limit.")
    gpu_memory: Quantity | None = Field(
        None, description="GPU memory the server needs, e.g. 16Gi (scheduling hint for shared GPUs)."
    )
    gpu_sharing: GpuSharingSpec | None = Field(None, description="How the server shares its GPUs with others.")


class MetricSpec(ApiModel):
    """A metric the autoscaler follows."""

    type: MetricType = Field(..., description="Pods (a per-pod custom metric) or Resource (cpu, memory).")
    name: NonEmpty = Field(..., description="Metric name, e.g. llamacpp:requests_processing or cpu.")
    target_average_value: Quantity | None = Field(None, description="Target average value per pod.")
    target_average_utilization: (
        Annotated[int, Field(ge=1, le=100), crd_schema({"type": "integer", "format": "int32"})] | None
    ) = Field(None, description="Target average utilization in percent (1-100, Resource metrics).")

    @model_validator(mode="after")
    def _one_target(self) -> MetricSpec:
        if (self.target_average_value is None) == (self.target_average_utilization is None):
            raise PydanticCustomError(
                "llmkube_rule", "set exactly one of targetAverageValue and targetAverageUtilization", {}
            )
        if self.target_average_utilization is not None and self.type != "Resource":
            raise PydanticCustomError(
                "llmkube_rule", "targetAverageUtilization needs type Resource, not {type}", {"type": self.type}
            )
        return self


class AutoscalingSpec(ApiModel):
    """Horizontal pod autoscaling."""

    # 0 (scale to zero) is llmkube's: KEDA's ScaledObject takes it (observability.autoscaler keda, checked in
    # checks.py); an HPA does not, and upstream's CRD keeps its minimum of 1.
    min_replicas: (
        Annotated[
            int,
            Field(ge=0, le=10),
            crd_schema({"type": "integer", "format": "int32", "minimum": 1, "maximum": 10}),
        ]
        | None
    ) = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_MIN_REPLICAS),
        # The CRD's words: its schema takes 1-10; 0 is told at llmkube:observability.autoscaler.
        description=f"Fewest replicas (1-10, default {DEFAULT_MIN_REPLICAS}).",
    )
    max_replicas: int = Field(..., ge=1, le=100, description="Most replicas (1-100).")
    metrics: list[MetricSpec] | None = Field(
        None,
        description=f"Metrics to follow; default: {DEFAULT_AUTOSCALING_METRIC} averaging "
        f"{DEFAULT_AUTOSCALING_TARGET} per pod.",
    )

    def effective_metrics(self) -> list[MetricSpec]:
        """The metrics the autoscaler follows: the given ones, else the operator's default."""
        if self.metrics:
            return list(self.metrics)
        # The models take their LLMKube (camelCase) names only.
        default = {"type": "Pods", "name": DEFAULT_AUTOSCALING_METRIC, "targetAverageValue": DEFAULT_AUTOSCALING_TARGET}
        return [MetricSpec.model_validate(default)]

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas is not None and self.min_replicas > self.max_replicas:
            raise PydanticCustomError(
                "llmkube_rule",
                "minReplicas {min} is above maxReplicas {max}",
                {"min": self.min_replicas, "max": self.max_replicas},
            )
        return self


class ModelCacheSpec(ApiModel):
    """Where the model file is kept between pod restarts."""

    persistence: CachePersistence | None = Field(
        None,
        description="Cached (default): a persistent volume shared by the namespace's services; "
        "Ephemeral: an emptyDir, downloaded again on every start.",
    )
    claim_name: DnsSubdomain | None = Field(None, description="Use this existing PersistentVolumeClaim as the cache.")

    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            "!(has(self.persistence) && self.persistence == 'Ephemeral' && has(self.claimName))",
            "claimName cannot be set when persistence is Ephemeral",
        ),
    )

    @model_validator(mode="after")
    def _claim_needs_cache(self) -> ModelCacheSpec:
        if self.persistence == "Ephemeral" and self.claim_name is not None:
            raise PydanticCustomError(
                "llmkube_rule",
                "claimName {claim} cannot be set when persistence is Ephemeral",
                {"claim": repr(self.claim_name)},
            )
        return self


class ApiKeySpec(ApiModel):
    """Where llama-server's API key comes from: an existing Kubernetes Secret of the service's namespace.

    A key Pulumi holds (a secret stack config value, or a component argument) fills this in itself.
    """

    secret_name: DnsSubdomain = Field(..., description="Name of the Secret that holds the key.")
    secret_key: str = Field(
        DEFAULT_API_KEY_SECRET_KEY,
        pattern=SECRET_KEY_PATTERN,
        description=f"Key in the Secret's data (default {DEFAULT_API_KEY_SECRET_KEY}); the value may hold several "
        "API keys, one per line.",
    )


class SpeculativeDecodingSpec(ApiModel):
    """Speculative decoding: a cheap drafter proposes tokens the model checks in one batch (--spec-type)."""

    type: SpeculativeType = Field(
        ...,
        description="llama.cpp's --spec-type, or mtp (draft-mtp: the model's own multi-token-prediction layer, "
        "Qwen3.5/3.6), draft (draft-simple) or disabled (none). draft-* types but draft-mtp need draft weights; "
        "ngram-* types need none.",
    )
    draft_model_ref: str | None = Field(
        None, description="A Model of the same namespace (a key of llmkube:models) whose file is the draft model."
    )
    draft_model: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        None, description="The draft model as a file of the served Model's files list."
    )
    n_draft_max: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Most tokens drafted per step (--spec-draft-n-max)."
    )
    p_min: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Least probability a drafted token needs to be kept (--spec-draft-p-min)."
    )

    @property
    def resolved_type(self) -> str:
        """llama.cpp's spelling of the type."""
        return SPEC_TYPE_ALIASES.get(self.type, self.type)

    @property
    def draft_given(self) -> bool:
        return bool(self.draft_model_ref) or bool(self.draft_model)

    @model_validator(mode="after")
    def _draft_weights(self) -> SpeculativeDecodingSpec:
        kind = self.resolved_type
        if self.draft_model_ref and self.draft_model:
            raise PydanticCustomError(
                "llmkube_rule", "set one of draftModelRef (a Model) and draftModel (a file of the Model), not both", {}
            )
        if kind in DRAFT_WEIGHT_TYPES and not self.draft_given:
            raise PydanticCustomError(
                "llmkube_rule",
                "type {type} needs draft weights: set draftModelRef to a Model or draftModel to a file in the "
                "Model's files",
                {"type": self.type},
            )
        if self.draft_given and kind not in DRAFT_WEIGHT_TYPES | {"draft-mtp"}:
            raise PydanticCustomError(
                "llmkube_rule",
                "draftModelRef and draftModel are for the draft-* types and mtp, not {type}",
                {"type": self.type},
            )
        return self


class RopeScalingSpec(ApiModel):
    """RoPE scaling, to run a model past the context length it was trained with."""

    type: RopeScalingType = Field(..., description="linear, yarn or longrope (--rope-scaling).")
    factor: str | None = Field(
        None, pattern=DECIMAL_PATTERN, description="Context scaling factor, e.g. 4 (--rope-scale)."
    )
    original_context: Annotated[int, Field(ge=128)] | None = Field(
        None, description="The context the model was trained with (--yarn-orig-ctx)."
    )


class RolloutPolicySpec(ApiModel):
    """How a changed server replaces the running one."""

    force: bool | None = Field(None, description="Replace pods at once, even with requests in flight.")
    wait_for_idle: bool | None = Field(
        None,
        description="Wait until the server has no request in flight before replacing it (delivery operator only).",
    )
    idle_timeout_seconds: Annotated[int, Field(ge=0)] | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_IDLE_TIMEOUT_SECONDS),
        description=f"Longest wait for idle before replacing anyway (default {DEFAULT_IDLE_TIMEOUT_SECONDS}).",
    )


class DisruptionSpec(ApiModel):
    """A PodDisruptionBudget for the server's pods (voluntary evictions: drains, autoscaler)."""

    protect_startup: bool | None = Field(
        None,
        json_schema_extra=crd_default(True),
        description="Protect pods while they load the model (default true).",
    )
    protect_always: bool | None = Field(None, description="Protect ready pods too.")


class ProbeOverridesSpec(ApiModel):
    """Probes (core/v1 Probe) that replace the server's defaults."""

    startup: dict[str, Any] | None = Field(None, description="Startup probe, replacing the default.")
    liveness: dict[str, Any] | None = Field(None, description="Liveness probe, replacing the default.")
    readiness: dict[str, Any] | None = Field(None, description="Readiness probe, replacing the default.")


class SLOSpec(ApiModel):
    """A service-level objective for the server."""

    name: str | None = Field(None, description="Name of the objective; default: the service's.")
    indicator: SloIndicator | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_SLO_INDICATOR),
        description=f"availability (default {DEFAULT_SLO_INDICATOR}): share of requests answered without "
        "error; latency: share answered within latencyThreshold.",
    )
    objective: str = Field(..., pattern=DECIMAL_PATTERN, description="Target in percent, 50 to 99.999, e.g. 99.5.")
    latency_threshold: str | None = Field(
        None, pattern=DECIMAL_PATTERN, description="Seconds a request may take, for indicator latency."
    )
    window: str | None = Field(
        None,
        pattern=WINDOW_PATTERN,
        json_schema_extra=crd_default(DEFAULT_SLO_WINDOW),
        description=f"Window the objective is measured over (default {DEFAULT_SLO_WINDOW}).",
    )

    @model_validator(mode="after")
    def _rules(self) -> SLOSpec:
        if not 50 <= float(self.objective) <= 99.999:
            raise PydanticCustomError(
                "llmkube_rule", "objective {objective} must be between 50 and 99.999", {"objective": self.objective}
            )
        if self.indicator == "latency" and self.latency_threshold is None:
            raise PydanticCustomError("llmkube_rule", "indicator latency needs latencyThreshold", {})
        return self


class InferenceServiceSpec(ApiModel):
    """One llama.cpp server (Deployment + Service) serving a Model."""

    model_ref: NonEmpty = Field(..., description="Name of the Model (a key of llmkube:models) to serve.")
    mode: ServiceMode | None = Field(None, description="chat (default), embedding or rerank.")
    replicas: int | None = Field(
        None,
        ge=0,
        le=10,
        json_schema_extra=crd_default(DEFAULT_REPLICAS),
        description=f"Pod replicas (0-10, default {DEFAULT_REPLICAS}).",
    )
    image: Image | None = Field(None, description="Server image; default: the hardware profile's (llama.cpp).")
    runtime: Runtime | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_RUNTIME),
        description=f"Serving runtime (default {DEFAULT_RUNTIME}). Delivery direct renders llamacpp and "
        "llamacpp-router; vllm, sglang, tgi, personaplex and generic need delivery operator.",
    )
    endpoint: EndpointSpec | None = Field(None, description="How the server is exposed.")
    resources: InferenceResources | None = Field(None, description="GPUs, CPU and memory for the server.")
    node_selector: dict[str, str] | None = Field(
        None, description="Node labels the pod must match; adds to the profile's."
    )
    tolerations: list[Toleration] | None = Field(None, description="Pod tolerations; add to the profile's.")
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (core/v1 Affinity), passed through.")
    pod_annotations: dict[str, str] | None = Field(None, description="Annotations added to the pod template.")
    pod_labels: dict[str, str] | None = Field(None, description="Labels added to the pod template.")
    runtime_class_name: DnsSubdomain | None = Field(None, description="RuntimeClass of the pod, e.g. nvidia.")
    priority_class_name: DnsSubdomain | None = Field(None, description="PriorityClass of the pod.")
    context_size: int | None = Field(
        None, ge=128, le=2097152, description="Context window in tokens (--ctx-size), shared by the parallel slots."
    )
    parallel_slots: int | None = Field(None, ge=1, le=64, description="Concurrent sequences (--parallel).")
    flash_attention: bool | None = Field(
        None, description="Flash attention (--flash-attn on|off); unset: llama.cpp's auto."
    )
    jinja: bool | None = Field(
        None, description="Use the model's Jinja chat template (--jinja); tool calling needs it."
    )
    cache_type_k: CacheType | None = Field(None, description="K cache type (--cache-type-k).")
    cache_type_v: CacheType | None = Field(
        None, description="V cache type (--cache-type-v); quantized types need flash attention."
    )
    cache_type_custom_k: NonEmpty | None = Field(
        None, description="Any K cache type llama.cpp knows; wins over cacheTypeK."
    )
    cache_type_custom_v: NonEmpty | None = Field(
        None, description="Any V cache type llama.cpp knows; wins over cacheTypeV."
    )
    moe_cpu_offload: bool | None = Field(
        None, alias="moeCPUOffload", description="Keep all routed MoE expert weights in system RAM (--cpu-moe)."
    )
    moe_cpu_layers: (
        Annotated[int, Field(ge=0, le=MAX_LAYERS), crd_schema({"type": "integer", "format": "int32", "minimum": 0})]
        | None
    ) = Field(
        None,
        alias="moeCPULayers",
        description="Keep the routed experts of the first N layers in system RAM (--n-cpu-moe N).",
    )
    no_kv_offload: bool | None = Field(None, description="Keep the KV cache in system RAM (--no-kv-offload).")
    gpu_layers: Annotated[int, Field(ge=0, le=MAX_LAYERS)] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: layers this service offloads to the GPUs (--n-gpu-layers N, counting the output "
        "layer as llama.cpp does: the first layers stay on the CPU); wins over the Model's hardware.gpu.layers. "
        "offload: auto sets it when the model does not fit whole. Delivery operator passes it in extraArgs.",
    )
    tensor_split: (
        Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1, max_length=MAX_GROUP_SIZE)] | None
    ) = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: each GPU's share of the offloaded layers for this service (--tensor-split, e.g. "
        "[22, 27] layers); wins over the Model's hardware.gpu.sharding.layerSplit. offload: auto sets it to balance "
        "the GPUs after moving experts to the CPU. With multiNode the workers' devices come first (rank 1's, rank "
        "2's, ...), then the server's own GPUs, as llama.cpp orders RPC devices. Delivery operator passes it in "
        "extraArgs.",
    )
    no_warmup: bool | None = Field(None, description="Skip the warm-up run at start (--no-warmup).")
    tensor_overrides: list[str] | None = Field(
        None, description="Tensor placement rules, each passed as --override-tensor, e.g. 'exps=CPU'."
    )
    batch_size: int | None = Field(None, ge=1, le=16384, description="Logical batch size (--batch-size).")
    u_batch_size: (
        Annotated[int, Field(ge=1, le=16384), crd_schema({"type": "integer", "format": "int32", "minimum": 1})] | None
    ) = Field(None, description="Physical batch size (--ubatch-size, at most 16384).")
    extra_args: list[str] | None = Field(
        None, description="Further llama-server arguments; a flag given here is not emitted a second time."
    )
    autoscaling: AutoscalingSpec | None = Field(None, description="Horizontal pod autoscaling.")
    model_cache: ModelCacheSpec | None = Field(None, description="Where the model file is kept.")

    # Decoding and context
    speculative_decoding: SpeculativeDecodingSpec | None = Field(
        None, description="Speculative decoding (--spec-type, -md, --spec-draft-n-max, --spec-draft-p-min)."
    )
    rope_scaling: RopeScalingSpec | None = Field(
        None, description="RoPE scaling (--rope-scaling, --rope-scale, --yarn-orig-ctx)."
    )
    reasoning_budget: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Most thinking tokens per answer (--reasoning-budget); 0 turns thinking off."
    )
    reasoning_budget_message: str | None = Field(
        None, description="Text appended when the budget runs out (--reasoning-budget-message)."
    )
    metadata_overrides: (
        list[Annotated[str, Field(pattern=METADATA_OVERRIDE_PATTERN), crd_schema({"type": "string"})]] | None
    ) = Field(None, description="GGUF metadata overrides, each KEY=TYPE:VALUE (--override-kv).")
    turbo_quant_bits: TurboQuantBits | None = Field(
        None,
        description="TurboQuant KV cache bits (3, 6 or 8) of llama.cpp forks that have it; needs delivery operator.",
    )
    hot_cache_max_size: str | None = Field(
        None, description="Hot prompt cache size of the oMLX runtime (Apple, operator's Metal agent only)."
    )
    paged_ssd_cache_dir: str | None = Field(
        None,
        alias="pagedSSDCacheDir",
        description="Paged SSD KV cache directory of the oMLX runtime (Apple, operator's Metal agent only).",
    )
    paged_ssd_cache_max_size: str | None = Field(
        None,
        alias="pagedSSDCacheMaxSize",
        description="Paged SSD KV cache size of the oMLX runtime (Apple, operator's Metal agent only).",
    )

    # Lifecycle
    suspend: bool | None = Field(
        None,
        json_schema_extra=crd_default(False),
        description="Stop the server (no pods) and keep everything else; the model cache stays.",
    )
    revision_history_limit: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Old ReplicaSets kept for rollback (Deployment revisionHistoryLimit)."
    )
    rollout_policy: RolloutPolicySpec | None = Field(None, description="How a changed server replaces the old one.")
    disruption: DisruptionSpec | None = Field(None, description="PodDisruptionBudget of the server's pods.")
    max_pod_lifetime_seconds: Annotated[int, Field(ge=1)] | None = Field(
        None,
        json_schema_extra={"format": "int64"},
        description="Recycle a pod (through the eviction API) after it has run this long; delivery operator only: "
        "Kubernetes has no equivalent for a Deployment's pods.",
    )
    max_pod_lifetime_idle_timeout_seconds: Annotated[int, Field(ge=0)] | None = Field(
        None,
        json_schema_extra={"format": "int64"},
        description="With maxPodLifetimeSeconds: wait up to this long for the pod to be idle before recycling it "
        "(delivery operator only).",
    )
    priority: Priority | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_PRIORITY),
        description=f"Scheduling priority (default {DEFAULT_PRIORITY}): critical, high, normal, low or batch; "
        "becomes a PriorityClass unless priorityClassName is set.",
    )
    eviction_protection: bool | None = Field(
        None, description="Keep the pods from being evicted by the cluster autoscaler (safe-to-evict false)."
    )

    # Pod
    topology_spread_constraints: list[dict[str, Any]] | None = Field(
        None, description="Pod topology spread constraints (core/v1 TopologySpreadConstraint), passed through."
    )
    pod_security_context: dict[str, Any] | None = Field(
        None, description="Pod security context (core/v1), merged over the restricted defaults."
    )
    security_context: dict[str, Any] | None = Field(
        None, description="Server container security context (core/v1), merged over the restricted defaults."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        None, description="Secrets for pulling the images (pod imagePullSecrets)."
    )
    env: list[dict[str, Any]] | None = Field(
        None, description="Environment variables of the server container (core/v1 EnvVar), added to ours."
    )
    command: list[str] | None = Field(None, description="Container entrypoint, replacing the image's.")
    args: list[str] | None = Field(
        None, description="Container arguments, replacing the generated llama-server arguments entirely."
    )
    container_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="Port the server listens on inside the pod (--port); default: endpoint.port."
    )
    bind_address: str | None = Field(None, description="Address the server binds to (--host); default 0.0.0.0.")
    probe_overrides: ProbeOverridesSpec | None = Field(
        None, description="Startup, liveness and readiness probes replacing the defaults."
    )
    skip_model_init: bool | None = Field(
        None,
        description="Do not stage the model in an init container: the image or a volume already has it at the "
        "cache path.",
    )
    extra_volumes: list[dict[str, Any]] | None = Field(
        None, description="Further pod volumes (core/v1 Volume), passed through."
    )
    extra_volume_mounts: list[dict[str, Any]] | None = Field(
        None, description="Further mounts of the server container (core/v1 VolumeMount), passed through."
    )

    # Routing, SLOs and other runtimes
    slo: SLOSpec | None = Field(None, description="Service-level objective.")
    vllm_config: VLLMConfig | None = Field(None, description="vLLM settings (runtime vllm, delivery operator).")
    sglang_config: SGLangConfig | None = Field(
        None, alias="sglangConfig", description="SGLang settings (runtime sglang, delivery operator)."
    )
    tgi_config: TGIConfig | None = Field(None, description="TGI settings (runtime tgi, delivery operator).")
    persona_plex_config: PersonaPlexConfig | None = Field(
        None, description="PersonaPlex settings (runtime personaplex, delivery operator)."
    )

    allow_weaker_security_context: bool | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: let podSecurityContext and securityContext weaken the restricted defaults "
        "(run as root, privilege escalation, added capabilities, a writable root, ...); the preview warns.",
    )
    hardware_profile: str | dict[str, Any] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: a hardware profile for this service (a name, or {extends: name, ...}); "
        "default: the stack's llmkube:hardware.",
    )
    multi_node: MultiNodeSpec | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only (upstream's multiNode serves vLLM): serve the model from several nodes with "
        "llama.cpp RPC: llama-server on the first, ggml-rpc-server on each other, each node's devices taking a "
        "share of the layers by memory. Delivery direct only; one replica.",
    )
    offload: OffloadMode | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: auto lets the planner pick the fastest placement that fits (gpuLayers, "
        "tensorSplit, moeCPULayers, moeCPUOffload, noKvOffload) and the hostMemory request; manual keeps the "
        "fields as written and checks them. Default: auto unless one of those fields or resources.hostMemory is "
        "set.",
    )

    api_key: ApiKeySpec | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: require this API key (a Secret mounted as a file, --api-key-file); a key held "
        "by Pulumi goes in llmkube:apiKeys instead. Delivery direct only.",
    )
    web_ui: bool | None = Field(
        None,
        alias="webUI",
        json_schema_extra=llmkube_only(),
        description="llmkube only: serve llama-server's web UI (--no-ui when false). Default: on for ClusterIP, "
        "off for NodePort and LoadBalancer.",
    )
    slots_endpoint: bool | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: serve /slots, which shows every slot's prompt (--no-slots when false). "
        "Default: on for ClusterIP, off for NodePort and LoadBalancer.",
    )
    router_models: list[NonEmpty] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: keys of llmkube:models served beside modelRef by a llamacpp-router service, "
        "each under its Model key as the model name clients send (modelRef's too). One model is loaded at a "
        "time (--models-max 1) and swapped on demand; each must fit the profile with the service's settings. "
        "Delivery direct only.",
    )

    def autoscaling_metrics(self) -> list[MetricSpec]:
        """The metrics the autoscaler follows (the operator's default when none are given); [] without autoscaling
        or while suspended (nothing scales a suspended service)."""
        if self.autoscaling is None or self.suspend:
            return []
        return self.autoscaling.effective_metrics()

    @property
    def exposed(self) -> bool:
        """Whether the Service reaches the server from outside the cluster (NodePort, LoadBalancer)."""
        return self.endpoint is not None and self.endpoint.type in EXPOSED_ENDPOINT_TYPES

    @property
    def web_ui_on(self) -> bool:
        """The web UI's effective setting: the spec's, else on unless exposed."""
        return self.web_ui if self.web_ui is not None else not self.exposed

    @property
    def slots_on(self) -> bool:
        """/slots' effective setting: the spec's, else on unless exposed."""
        return self.slots_endpoint if self.slots_endpoint is not None else not self.exposed

    @property
    def offload_mode(self) -> OffloadMode:
        """auto unless the service sets it, or sets any of the fields auto would decide."""
        if self.offload is not None:
            return self.offload
        explicit = offload_fields(self) or (self.resources is not None and self.resources.host_memory is not None)
        return "manual" if explicit else "auto"

    @property
    def serving_port(self) -> int:
        """The port the server listens on and the Service exposes."""
        return (self.endpoint.port if self.endpoint else None) or DEFAULT_PORT

    @model_validator(mode="after")
    def _quantized_v_needs_flash_attention(self) -> InferenceServiceSpec:
        v_type = self.cache_type_custom_v or self.cache_type_v
        if self.flash_attention is False and v_type in QUANTIZED_CACHE_TYPES:
            raise PydanticCustomError(
                "llmkube_rule",
                "cacheTypeV {v} with flashAttention false: llama.cpp refuses a quantized V cache without "
                "flash attention; set flashAttention true (or leave it unset) or use cacheTypeV f16",
                {"v": v_type},
            )
        return self


# The placement fields the planner's auto decision owns (beside resources.hostMemory), by attribute name.
OFFLOAD_FIELDS: Final = ("moe_cpu_offload", "moe_cpu_layers", "no_kv_offload", "gpu_layers", "tensor_split")


# Their JSON names, by attribute name.
OFFLOAD_ALIASES: Final = {name: InferenceServiceSpec.model_fields[name].alias or name for name in OFFLOAD_FIELDS}


def offload_fields(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The offload fields a spec sets, by their JSON names, in OFFLOAD_FIELDS order."""
    return {alias: getattr(spec, name) for name, alias in OFFLOAD_ALIASES.items() if getattr(spec, name) is not None}
