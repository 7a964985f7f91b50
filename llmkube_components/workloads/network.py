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
from .objects import selector_labels, server_port, service_labels
from .storage import downloads

Manifest = dict[str, Any]

DNS_PORT: Final = 53
# An s3:// source goes to AWS's endpoint over https unless its Secret names another (egressPorts opens that port).
DEFAULT_PORTS: Final = {"https": 443, "http": 80, "s3": 443}


def download_ports(service: ResolvedService, settings: NetworkPolicySettings | None = None) -> list[int]:
    """The TCP ports the downloaders connect to: those of the model's and the draft model's URLs (none for file://
    copies), and the stack's egressPorts when anything is downloaded."""
    ports: set[int] = set()
    models = [service.model.spec] + ([service.draft.spec] if service.draft else [])
    fetched = [d for m in models for d in downloads(m)]
    if any(urlsplit(d.url).scheme != "file" for d in fetched) and settings is not None:
        ports.update(settings.egress_ports or ())
    for download in fetched:
        url = urlsplit(download.url)
        if url.scheme in DEFAULT_PORTS:
            ports.add(url.port or DEFAULT_PORTS[url.scheme])
    return sorted(ports)


def gateway_peer(service: ResolvedService) -> Manifest | None:
    """The peer an endpoint.gateway route's traffic comes from: the Gateway's namespace, when it is another one.

    A Gateway of the service's own namespace is covered by the default peers (the namespace's pods). Some
    implementations run their proxies in a namespace of their own rather than the Gateway's (Envoy Gateway's
    default is envoy-gateway-system): those must be named in networkPolicy.ingressFrom.
    """
    endpoint = service.spec.endpoint
    gateway = endpoint.gateway if endpoint is not None else None
    if gateway is None or not gateway.on:
        return None
    namespace = gateway.gateway_ref.namespace
    if not namespace or namespace == service.namespace:
        return None
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def network_policy(service: ResolvedService, settings: NetworkPolicySettings) -> Manifest | None:
    """The service's NetworkPolicy (networking.k8s.io/v1), or None when the stack turns them off."""
    if not settings.enabled:
        return None
    # The pod's port: a policy filters traffic after the Service has translated its port to the container's.
    port = [{"protocol": "TCP", "port": server_port(service)}]
    if service.spec.exposed:
        # A NodePort or LoadBalancer is reached through the nodes, whose addresses a policy cannot name in
        # general (and the source is often rewritten to a node's): the port is open, the API key guards it.
        ingress: list[Manifest] = [{"ports": port}]
    else:
        given = settings.ingress_from if settings.ingress_from is not None else [{"podSelector": {}}]
        peers: list[Any] = [dict(p) for p in given]
        gateway = gateway_peer(service)
        if gateway is not None and gateway not in peers:
            peers.append(gateway)
        ingress = [{"from": peers, "ports": port}] if peers else []
    egress: list[Manifest] = []
    ports = download_ports(service, settings)
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
