"""llmkube: Pulumi components for local LLM inference on Kubernetes (llama.cpp, hybrid GPU/CPU offload).

from llmkube_components import Platform, Model, InferenceService, Operator

The components (and Pulumi with them) load on first use, so that the tools below them (the CLI's planner,
the Args generator) run without importing Pulumi, and run even while the generated Args are being rewritten.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .components import (
        InferenceService,
        InferenceServiceArgs,
        Model,
        ModelArgs,
        Operator,
        OperatorArgs,
        Platform,
        PlatformArgs,
        ServiceOutputs,
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
    "ServiceOutputs",
]


def __getattr__(name: str) -> Any:
    if name == "ConfigError":
        from .errors import ConfigError

        return ConfigError
    if name in __all__:
        from . import components

        return getattr(components, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
