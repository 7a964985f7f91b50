"""Status: what the LLMKube controller writes back on Models and InferenceServices (delivery operator).

Typed as the operator v0.9.19 writes it, so the CRD's status schema takes every status write of the controller
(the phase enum and the condition shape are upstream's) and ``kubectl explain`` documents each field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel

ModelPhase = Literal["Pending", "Downloading", "Copying", "Ready", "Failed"]
InferenceServicePhase = Literal[
    "Pending", "Creating", "Progressing", "Ready", "WaitingForGPU", "Stopped", "Suspended", "Failed"
]
DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Int32 = Annotated[int, Field(json_schema_extra={"format": "int32"})]
Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]

# metav1.Condition's validation (apimachinery), which upstream's CRDs carry.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class Condition(ApiModel):
    """One observation of the resource's state (metav1.Condition)."""

    type: str = Field(
        ..., max_length=316, pattern=CONDITION_TYPE_PATTERN, description="Condition type, e.g. Available."
    )
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        None, json_schema_extra={"format": "int64"}, description="The generation the condition was set for."
    )
    last_transition_time: DateTime = Field(..., description="When the status last changed.")
    reason: str = Field(
        ..., min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN, description="Why, in one CamelCase word."
    )
    message: str = Field(..., max_length=32768, description="Why, in words.")


class GGUFMetadata(ApiModel):
    """What the controller read from the model file's GGUF header."""

    architecture: str | None = Field(None, description="Model architecture, e.g. qwen3moe.")
    context_length: Int64 | None = Field(None, description="Context length the model was trained with.")
    embedding_size: Int64 | None = Field(None, description="Embedding width.")
    file_version: Int32 | None = Field(None, description="GGUF file format version.")
    head_count: Int64 | None = Field(None, description="Attention heads.")
    layer_count: Int64 | None = Field(None, description="Transformer blocks.")
    license: str | None = Field(None, description="License named in the file.")
    model_name: str | None = Field(None, description="Model name in the file.")
    quantization: str | None = Field(None, description="Quantization of the weights.")
    tensor_count: Int64 | None = Field(None, description="Tensors in the file.")


class ModelStatus(ApiModel):
    """Observed state of a Model, written by the LLMKube controller."""

    phase: ModelPhase | None = Field(None, description="Lifecycle phase.")
    accelerator_ready: bool | None = Field(None, description="The requested accelerator is available.")
    cache_key: str | None = Field(None, description="Directory of the model in the shared cache.")
    conditions: list[Condition] | None = Field(None, description="Observations, one per condition type.")
    gguf: GGUFMetadata | None = Field(None, description="GGUF header of the model file.")
    last_revalidated: DateTime | None = Field(None, description="When the source was last checked for changes.")
    last_updated: DateTime | None = Field(None, description="When the status last changed.")
    path: str | None = Field(None, description="Where the model file is stored.")
    sha256: str | None = Field(None, description="SHA-256 of the staged file.")
    size: str | None = Field(None, description="Size of the model file, e.g. 21.2 GiB.")
    source_content_length: Int64 | None = Field(None, description="Content-Length of the source at the last check.")
    source_e_tag: str | None = Field(None, alias="sourceETag", description="ETag of the source at the last check.")
    staged_files: list[str] | None = Field(None, description="Files staged for a multi-file model.")


class AccelerationStatus(ApiModel):
    """Where the server's layers run, read from its log."""

    device: str | None = Field(None, description="Accelerator the layers run on.")
    layers_offloaded: Int32 | None = Field(None, description="Layers on the accelerator.")
    layers_total: Int32 | None = Field(None, description="Layers of the model.")


class GatewayStatus(ApiModel):
    """The route in front of the server."""

    auth_enabled: bool | None = Field(None, description="The route requires authentication.")
    endpoint: str | None = Field(None, description="URL of the route.")
    model_name: str | None = Field(None, description="Model name the route matches.")
    route_ready: bool | None = Field(None, description="The route is accepted by its Gateway.")


class InferenceServiceStatus(ApiModel):
    """Observed state of an InferenceService, written by the LLMKube controller."""

    phase: InferenceServicePhase | None = Field(None, description="Lifecycle phase.")
    acceleration: AccelerationStatus | None = Field(None, description="Where the layers run.")
    conditions: list[Condition] | None = Field(None, description="Observations, one per condition type.")
    desired_replicas: Int32 | None = Field(None, description="Pods wanted.")
    effective_priority: Int32 | None = Field(None, description="Priority value of spec.priority.")
    endpoint: str | None = Field(None, description="URL that inference requests go to.")
    gateway: GatewayStatus | None = Field(None, description="The route in front of the server.")
    last_updated: DateTime | None = Field(None, description="When the status last changed.")
    mode: str | None = Field(None, description="Serving mode in effect.")
    model_ready: bool | None = Field(None, description="The Model is Ready.")
    queue_position: Int32 | None = Field(None, description="Place in the GPU queue while waiting for GPUs.")
    ready_replicas: Int32 | None = Field(None, description="Pods ready to serve.")
    replicas: Int32 | None = Field(None, description="Pods running.")
    scheduling_message: str | None = Field(None, description="Why the pods are not scheduled, in words.")
    scheduling_status: str | None = Field(None, description="Scheduling state of the pods.")
    waiting_for: str | None = Field(None, description="What the service waits for.")
