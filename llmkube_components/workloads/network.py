"""The NetworkPolicy of a service: who may reach llama-server's port, and where its pod may connect to.

A NetworkPolicy selects pods, not containers: the egress the model downloader needs (DNS and the ports of
its URLs) is open to the whole pod while it runs and after. A pod with nothing to download (a pvc:// or node
source) gets no egress at all. The kubelet's probes come from the node and are not filtered by the common
CNIs (Calico, Cilium, kube-router).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from ..api.stack import NetworkPolicySettings
from ..meta import object_meta
from ..resolve import ResolvedService
from .objects import selector_labels, service_labels
from .storage import downloads

Manifest = dict[str, Any]

DNS_PORT: Final = 53
DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def download_ports(service: ResolvedService) -> list[int]:
    """The TCP ports the downloader connects to: those of the model's URLs (none for file:// copies)."""
    ports = set()
    for download in downloads(service.model.spec):
        url = urlsplit(download.url)
        if url.scheme in DEFAULT_PORTS:
            ports.add(url.port or DEFAULT_PORTS[url.scheme])
    return sorted(ports)


def network_policy(service: ResolvedService, settings: NetworkPolicySettings) -> Manifest | None:
    """The service's NetworkPolicy (networking.k8s.io/v1), or None when the stack turns them off."""
    if not settings.enabled:
        return None
    port = [{"protocol": "TCP", "port": service.spec.serving_port}]
    if service.spec.exposed:
        # A NodePort or LoadBalancer is reached through the nodes, whose addresses a policy cannot name in
        # general (and the source is often rewritten to a node's): the port is open, the API key guards it.
        ingress: list[Manifest] = [{"ports": port}]
    else:
        peers = settings.ingress_from if settings.ingress_from is not None else [{"podSelector": {}}]
        ingress = [{"from": [dict(p) for p in peers], "ports": port}] if peers else []
    egress: list[Manifest] = []
    ports = download_ports(service)
    if ports:
        dns = [{"protocol": proto, "port": DNS_PORT} for proto in ("UDP", "TCP")]
        egress = [{"ports": dns}, {"ports": [{"protocol": "TCP", "port": p} for p in ports]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(service)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
