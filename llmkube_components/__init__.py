"""llmkube: Pulumi components for local LLM inference on Kubernetes (llama.cpp, hybrid GPU/CPU offload).

from llmkube_components import Platform, Model, InferenceService, Operator
"""

from .components import (
    InferenceService,
    InferenceServiceArgs,
    Model,
    ModelArgs,
    Operator,
    OperatorArgs,
    Platform,
    PlatformArgs,
)
from .errors import ConfigError

__all__ = [
    "ConfigError",
    "InferenceService",
    "InferenceServiceArgs",
    "Model",
    "ModelArgs",
    "Operator",
    "OperatorArgs",
    "Platform",
    "PlatformArgs",
]
