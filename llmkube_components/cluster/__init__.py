"""The target cluster: which one the provider targets (kubeconfig), reading it (client), what fits (scheduling)."""

from .client import ClusterReader
from .kubeconfig import ClusterUnavailable, Connection, kubeconfig_target
from .scheduling import Node, Pod, Room, amount, pod_requests, why_unschedulable

__all__ = [
    "ClusterReader",
    "ClusterUnavailable",
    "Connection",
    "Node",
    "Pod",
    "Room",
    "amount",
    "kubeconfig_target",
    "pod_requests",
    "why_unschedulable",
]
