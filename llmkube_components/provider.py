"""The component provider: serves Platform, Model, InferenceService and Operator to every Pulumi language.

Pulumi runs it through the Python language host's plugin mode (``PulumiPlugin.yaml`` at the repository root,
entry point ``__main__.py``) for ``pulumi package add``, ``pulumi package get-schema`` and a YAML program's
``packages:``. The schema is inferred from the components' typed Args and Output annotations.
"""

from importlib import metadata

from pulumi.provider.experimental import component_provider_host

from .components import InferenceService, Model, Operator, Platform

NAME = "llmkube"
COMPONENTS = [Platform, Model, InferenceService, Operator]


def version() -> str:
    try:
        return metadata.version("llmkube-components")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0.0.0"


def serve() -> None:
    component_provider_host(components=list(COMPONENTS), name=NAME, version=version())
