"""How a service's pods live and die: their priority (and the PriorityClasses it names), their protection from
voluntary evictions (a PodDisruptionBudget, the autoscalers' do-not-evict annotations).

The LLMKube operator (v0.9.19) does some of this differently, and the differences are deliberate:

- ``priority``: the operator always sets ``llmkube-<level>`` (default normal) and expects the PriorityClasses
  from its Helm chart. Delivery direct sets one only when the spec asks for a priority, and renders the classes
  it names, so a stack that never mentions priority keeps its manifests (and needs no cluster-scoped object).
- ``disruption``: the operator creates no PodDisruptionBudget; it annotates the pod ``karpenter.sh/do-not-disrupt``
  while it is not Ready, which needs a controller watching the pod. Delivery direct renders a static budget
  instead (pod_disruption_budget).
- ``evictionProtection``: the operator uses it in its Metal agent only; delivery direct gives it its plain
  meaning on Kubernetes, the cluster autoscaler's and Karpenter's do-not-evict annotations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ..api.service import DEFAULT_PRIORITY, Priority
from ..api.stack import Delivery
from ..meta import object_meta, recommended_labels, sorted_by_key
from ..resolve import ResolvedService
from .labels import selector_labels, service_labels

Manifest = dict[str, Any]

# The operator's PriorityClasses (config/manager/priority_classes.yaml), by level: the same names and values,
# so that a cluster with the operator's chart installed and a direct stack agree on every one of them.
PRIORITY_CLASS_PREFIX: Final = "llmkube-"
PRIORITY_VALUES: Final[dict[str, int]] = {
    "critical": 1_000_000,
    "high": 100_000,
    "normal": 10_000,
    "low": 1_000,
    "batch": 100,
}
# batch work waits for room instead of evicting anyone.
NON_PREEMPTING: Final = frozenset({"batch"})

# What the cluster autoscaler and Karpenter read before they take a node away from its pods.
EVICTION_PROTECTION_ANNOTATIONS: Final = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}


def priority_class_name_for(level: str) -> str:
    return PRIORITY_CLASS_PREFIX + level


def priority_level(service: ResolvedService, delivery: Delivery = "direct") -> Priority | None:
    """The llmkube PriorityClass level a service's pods use, or None when they use none of ours.

    A priorityClassName of the user's wins. Otherwise the spec's priority; with delivery operator the controller
    sets ``llmkube-normal`` even when the spec is silent, so that class must exist too.
    """
    spec = service.spec
    if spec.priority_class_name:
        return None
    if spec.priority is not None:
        return spec.priority
    return DEFAULT_PRIORITY if delivery == "operator" else None


def pod_priority_class_name(service: ResolvedService) -> str | None:
    """The pod's priorityClassName in delivery direct: the user's, else ``llmkube-<priority>`` when one is set."""
    if service.spec.priority_class_name:
        return service.spec.priority_class_name
    level = priority_level(service)
    return priority_class_name_for(level) if level is not None else None


def priority_class(level: str) -> Manifest:
    """The cluster-scoped PriorityClass (scheduling.k8s.io/v1) ``llmkube-<level>``.

    Cluster-scoped means shared: every stack (and the operator's chart) that uses a level names the same object.
    The values are fixed, so all of them write the same one; the Pulumi layer registers it once per stack,
    adopts an existing one and keeps it on delete, since another stack's pods may still name it (a pod whose
    PriorityClass is missing is refused at creation).
    """
    name = priority_class_name_for(level)
    manifest: Manifest = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": object_meta(name, labels=sorted_by_key(recommended_labels("llmkube", "priority-class", name))),
        "value": PRIORITY_VALUES[level],
        "globalDefault": False,
        "preemptionPolicy": "Never" if level in NON_PREEMPTING else "PreemptLowerPriority",
        "description": f"llmkube inference services of priority {level}",
    }
    return manifest


def priority_classes(levels: Iterable[str | None]) -> list[Manifest]:
    """The PriorityClasses of the levels given (None and repeats ignored), highest first."""
    wanted = {level for level in levels if level is not None}
    return [priority_class(level) for level in sorted(wanted, key=lambda lv: -PRIORITY_VALUES[lv])]


def eviction_annotations(service: ResolvedService) -> dict[str, str]:
    """The pod annotations that keep the cluster autoscaler and Karpenter from evicting it (evictionProtection)."""
    return dict(EVICTION_PROTECTION_ANNOTATIONS) if service.spec.eviction_protection else {}


def pod_disruption_budget(service: ResolvedService) -> Manifest | None:
    """The service's PodDisruptionBudget (policy/v1), or None when the spec asks for no disruption settings.

    A budget limits voluntary evictions (node drains, the cluster autoscaler, Karpenter), never crashes:

    - ``protectAlways``: maxUnavailable 0. No pod of the service is evicted; a drain of its node waits until
      someone deletes the pod or the budget (the preview warns).
    - otherwise: maxUnavailable 1, at most one pod down at a time. ``protectStartup`` (default true) adds
      unhealthyPodEvictionPolicy IfHealthyBudget: a pod still loading its model (not Ready) is evicted only
      while the others meet the budget; ``protectStartup: false`` lets such pods go at any time (AlwaysAllow).
      A single replica is not protected by this (one pod may always be down), which a static budget cannot
      change: the operator's startup protection needs its controller to follow each pod's readiness.
    """
    disruption = service.spec.disruption
    if disruption is None:
        return None
    spec: Manifest = {"selector": {"matchLabels": selector_labels(service)}}
    if disruption.protect_always:
        spec["maxUnavailable"] = 0
    else:
        spec["maxUnavailable"] = 1
        protect_startup = disruption.protect_startup is not False
        spec["unhealthyPodEvictionPolicy"] = "IfHealthyBudget" if protect_startup else "AlwaysAllow"
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": spec,
    }


def replicas(service: ResolvedService, default: int) -> int | None:
    """The Deployment's replica count: 0 when suspended, None (the autoscaler's) with autoscaling, else the spec's."""
    spec = service.spec
    if spec.suspend:
        return 0
    if spec.autoscaling is not None:
        return None
    return spec.replicas if spec.replicas is not None else default
