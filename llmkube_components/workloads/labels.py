"""The labels of a service's objects: the operator's four, the recommended app.kubernetes.io ones, and the
immutable selector subset. Every builder of the service's objects (objects, lifecycle, routing, network,
multinode) takes them from here, so a PodDisruptionBudget or an HTTPRoute selects exactly the pods the Deployment
makes.

A multi-node service (multiNode) adds its workers, ranks 1.., each a Deployment and a headless Service named
``<service>-rpc-<rank>``. Their pods must never match the service's selector (its Service would send requests to a
ggml-rpc-server), so they carry neither its ``app`` value nor ``inference.llmkube.dev/service``: each selects on
``app: <service>-rpc-<rank>`` and the group label, which every member's pod (llama-server's too) carries.
"""

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
# multiNode (llmkube only): every pod of a group carries the group (its service's name) and its rank in it.
LABEL_GROUP: Final = "inference.llmkube.dev/group"
LABEL_RANK: Final = "inference.llmkube.dev/rank"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
WORKER_COMPONENT: Final = "rpc-worker"
WORKER_PROGRAM: Final = "ggml-rpc-server"


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


def worker_name(service: ResolvedService, rank: int) -> str:
    """The name of a multi-node worker's Deployment and headless Service (rank 1..size-1)."""
    return f"{service.name}-rpc-{rank}"


def member_labels(service: ResolvedService, rank: int) -> dict[str, str]:
    """What every pod of a multi-node group carries: the group (the pods' anti-affinity selects on it) and the
    member's rank (0: llama-server)."""
    return {LABEL_GROUP: service.name, LABEL_RANK: str(rank)}


def worker_selector_labels(service: ResolvedService, rank: int) -> dict[str, str]:
    """A worker Deployment's (immutable) selector and its headless Service's: that worker's pods only."""
    return {LABEL_APP: worker_name(service, rank), LABEL_GROUP: service.name}


def workers_selector_labels(service: ResolvedService) -> dict[str, str]:
    """The pods of all of a group's workers (its NetworkPolicy selects them): not llama-server's."""
    return {LABEL_COMPONENT: WORKER_COMPONENT, LABEL_GROUP: service.name}


def worker_labels(service: ResolvedService, rank: int) -> dict[str, str]:
    """Labels of a worker's objects and pods: the recommended ones (component rpc-worker, instance: the service),
    its selector, its rank, and the model and runtime labels of the service."""
    return sorted_by_key(
        {
            **recommended_labels(WORKER_PROGRAM, WORKER_COMPONENT, service.name),
            **worker_selector_labels(service, rank),
            LABEL_RANK: str(rank),
            LABEL_MODEL: service.model.name,
            LABEL_RUNTIME: RUNTIME,
        }
    )
