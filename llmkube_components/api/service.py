"""InferenceService: one llama.cpp server for a Model (LLMKube ``inference.llmkube.dev/v1alpha1`` spec)."""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .base import (
    IMAGE_PATTERN,
    ApiModel,
    DnsSubdomain,
    Quantity,
    crd_default,
    llmkube_only,
)
from .core import Toleration
from .model import MAX_LAYERS

ServiceMode = Literal["chat", "embedding", "rerank"]
EndpointType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
CacheType = Literal["f16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
CachePersistence = Literal["Cached", "Ephemeral"]
MetricType = Literal["Pods", "Resource"]
OffloadMode = Literal["auto", "manual"]

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

    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            "!has(self.nodePort) || (has(self.type) && self.type != 'ClusterIP')",
            "nodePort needs type NodePort or LoadBalancer",
        ),
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


class MetricSpec(ApiModel):
    """A metric the autoscaler follows."""

    type: MetricType = Field(..., description="Pods (a per-pod custom metric) or Resource (cpu, memory).")
    name: str = Field(..., min_length=1, description="Metric name, e.g. llamacpp:requests_processing or cpu.")
    target_average_value: Quantity | None = Field(None, description="Target average value per pod.")
    target_average_utilization: int | None = Field(
        None, ge=1, le=100, description="Target average utilization in percent (Resource metrics)."
    )

    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            "has(self.targetAverageValue) != has(self.targetAverageUtilization)",
            "set exactly one of targetAverageValue and targetAverageUtilization",
        ),
    )

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

    min_replicas: int | None = Field(
        None, ge=1, le=10, description=f"Fewest replicas (1-10, default {DEFAULT_MIN_REPLICAS})."
    )
    max_replicas: int = Field(..., ge=1, le=100, description="Most replicas (1-100).")
    metrics: list[MetricSpec] | None = Field(
        None,
        description=f"Metrics to follow; default: {DEFAULT_AUTOSCALING_METRIC} averaging "
        f"{DEFAULT_AUTOSCALING_TARGET} per pod.",
    )

    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        ("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas"),
    )

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


class InferenceServiceSpec(ApiModel):
    """One llama.cpp server (Deployment + Service) serving a Model."""

    model_ref: str = Field(..., min_length=1, description="Name of the Model (a key of llmkube:models) to serve.")
    mode: ServiceMode | None = Field(None, description="chat (default), embedding or rerank.")
    replicas: int | None = Field(
        None,
        ge=0,
        le=10,
        json_schema_extra=crd_default(DEFAULT_REPLICAS),
        description=f"Pod replicas (0-10, default {DEFAULT_REPLICAS}).",
    )
    image: str | None = Field(
        None, pattern=IMAGE_PATTERN, description="llama.cpp server image; default: the hardware profile's."
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
    cache_type_custom_k: str | None = Field(
        None, min_length=1, description="Any K cache type llama.cpp knows; wins over cacheTypeK."
    )
    cache_type_custom_v: str | None = Field(
        None, min_length=1, description="Any V cache type llama.cpp knows; wins over cacheTypeV."
    )
    moe_cpu_offload: bool | None = Field(
        None, alias="moeCPUOffload", description="Keep all routed MoE expert weights in system RAM (--cpu-moe)."
    )
    moe_cpu_layers: int | None = Field(
        None,
        ge=0,
        le=MAX_LAYERS,
        alias="moeCPULayers",
        description="Keep the routed experts of the first N layers in system RAM (--n-cpu-moe N).",
    )
    no_kv_offload: bool | None = Field(None, description="Keep the KV cache in system RAM (--no-kv-offload).")
    no_warmup: bool | None = Field(None, description="Skip the warm-up run at start (--no-warmup).")
    tensor_overrides: list[str] | None = Field(
        None, description="Tensor placement rules, each passed as --override-tensor, e.g. 'exps=CPU'."
    )
    batch_size: int | None = Field(None, ge=1, le=16384, description="Logical batch size (--batch-size).")
    u_batch_size: int | None = Field(None, ge=1, le=16384, description="Physical batch size (--ubatch-size).")
    extra_args: list[str] | None = Field(
        None, description="Further llama-server arguments; a flag given here is not emitted a second time."
    )
    autoscaling: AutoscalingSpec | None = Field(None, description="Horizontal pod autoscaling.")
    model_cache: ModelCacheSpec | None = Field(None, description="Where the model file is kept.")
    hardware_profile: str | dict[str, Any] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: a hardware profile for this service (a name, or {extends: name, ...}); "
        "default: the stack's llmkube:hardware.",
    )
    offload: OffloadMode | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: auto lets the planner pick the fastest placement that fits (GPU layers, "
        "moeCPULayers, moeCPUOffload, noKvOffload) and the hostMemory request; manual keeps the fields as written "
        "and checks them. Default: auto unless moeCPUOffload, moeCPULayers, noKvOffload or resources.hostMemory "
        "is set.",
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
OFFLOAD_FIELDS: Final = ("moe_cpu_offload", "moe_cpu_layers", "no_kv_offload")


# Their JSON names, by attribute name.
OFFLOAD_ALIASES: Final = {name: InferenceServiceSpec.model_fields[name].alias or name for name in OFFLOAD_FIELDS}


def offload_fields(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The offload fields a spec sets, by their JSON names, in OFFLOAD_FIELDS order."""
    return {alias: getattr(spec, name) for name, alias in OFFLOAD_ALIASES.items() if getattr(spec, name) is not None}
