"""The labels of a service's objects: the operator's four, the recommended app.kubernetes.io ones, and the
immutable selector subset. Every builder of the service's objects (objects, lifecycle, routing, network) takes
them from here, so a PodDisruptionBudget or an HTTPRoute selects exactly the pods the Deployment makes."""

from __future__ import annotations

from typing import Final

from ..meta import recommended_labels, sorted_by_key
from ..resolve import ResolvedService

RUNTIME: Final = "llamacpp"

# The selector is the immutable subset: a Deployment's selector cannot change after creation, so the model
# label (which changes when modelRef does) must stay out of it (operator issue #301).
LABEL_APP: Final = "app"
LABEL_MODEL: Final = "inference.llmkube.dev/model"
LABEL_SERVICE: Final = "inference.llmkube.dev/service"
LABEL_RUNTIME: Final = "inference.llmkube.dev/runtime"


def selector_labels(service: ResolvedService) -> dict[str, str]:
    """The Deployment's (immutable) selector and the Service's selector."""
    return {LABEL_APP: service.name, LABEL_SERVICE: service.name}


def service_labels(service: ResolvedService) -> dict[str, str]:
    """Labels of every object of a service: the operator's four plus the recommended app.kubernetes.io ones."""
    return sorted_by_key(
        {
            **recommended_labels("llama-server", "inference-server", service.name),
            **selector_labels(service),
            LABEL_MODEL: service.model.name,
            LABEL_RUNTIME: RUNTIME,
        }
    )


def common_labels(name: str, kind: str) -> dict[str, str]:
    """Recommended labels of an llmkube object that is not a workload (a custom resource, the namespace)."""
    return recommended_labels("llmkube", kind.lower(), name)
