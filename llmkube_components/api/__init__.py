"""The typed LLMKube API: one home for field names, enums and bounds."""

from .base import ApiModel, Quantity, normalize_name, parse_quantity
from .core import Toleration
from .model import GPUShardingSpec, GPUSpec, HardwareSpec, ModelResources, ModelSpec
from .service import (
    QUANTIZED_CACHE_TYPES,
    AutoscalingSpec,
    EndpointSpec,
    InferenceResources,
    InferenceServiceSpec,
    MetricSpec,
    ModelCacheSpec,
    MultiNodeMember,
    MultiNodeSpec,
)
from .stack import OperatorSettings, StackConfig

__all__ = [
    "QUANTIZED_CACHE_TYPES",
    "ApiModel",
    "AutoscalingSpec",
    "EndpointSpec",
    "GPUShardingSpec",
    "GPUSpec",
    "HardwareSpec",
    "InferenceResources",
    "InferenceServiceSpec",
    "MetricSpec",
    "ModelCacheSpec",
    "ModelResources",
    "ModelSpec",
    "MultiNodeMember",
    "MultiNodeSpec",
    "OperatorSettings",
    "Quantity",
    "StackConfig",
    "Toleration",
    "normalize_name",
    "parse_quantity",
]
