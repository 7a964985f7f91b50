"""The NetworkPolicy of a service: who may reach llama-server's port, and where its pod may connect to.

A NetworkPolicy selects pods, not containers: the egress the model downloader needs (DNS and the ports of
its URLs) is open to the whole pod while it runs and after. A pod with nothing to download (a pvc:// or node
source) gets no egress at all. The kubelet's probes come from the node and are not filtered by the common
CNIs (Calico, Cilium, kube-router).

A multi-node service's workers run ggml-rpc-server, which has no authentication: their own policy
(worker_network_policy) admits the service's llama-server pods on the RPC port and nothing else, and lets the
workers connect nowhere; llama-server's policy lets it reach them (and DNS, to find them).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from ..api.stack import NetworkPolicySettings
from ..errors import Problem, config_path
from ..meta import object_meta
from ..resolve import ResolvedService
from . import multinode
from .labels import workers_selector_labels
from .objects import selector_labels, server_port, service_labels
from .storage import downloads

Manifest = dict[str, Any]

DNS_PORT: Final = 53
# An s3:// source goes to AWS's endpoint over https unless its Secret names another (egressPorts opens that port).
DEFAULT_PORTS: Final = {"https": 443, "http": 80, "s3": 443}
# The workers' NetworkPolicy of a multi-node service: <service>-rpc-workers.
WORKER_POLICY_SUFFIX: Final = "-rpc-workers"


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
    workers = multinode.is_group(service)
    if ports or workers:
        egress.append({"ports": [{"protocol": proto, "port": DNS_PORT} for proto in ("UDP", "TCP")]})
    if ports:
        egress.append({"ports": [{"protocol": "TCP", "port": p} for p in ports]})
    if workers:
        egress.append(
            {"to": [{"podSelector": {"matchLabels": workers_selector_labels(service)}}], "ports": _rpc(service)}
        )
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


def _rpc(service: ResolvedService) -> list[Manifest]:
    return [{"protocol": "TCP", "port": multinode.rpc_port(service)}]


def worker_network_policy(service: ResolvedService, settings: NetworkPolicySettings) -> Manifest | None:
    """The NetworkPolicy ``<service>-rpc-workers`` of a multi-node service's workers: the RPC port open to the
    service's llama-server pods only, and no egress at all (ggml-rpc-server only answers). None for a single-node
    service, or when the stack turns policies off."""
    if not settings.enabled or not multinode.is_group(service):
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(service.name + WORKER_POLICY_SUFFIX, service.namespace, service_labels(service)),
        "spec": {
            "podSelector": {"matchLabels": workers_selector_labels(service)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": selector_labels(service)}}], "ports": _rpc(service)}],
            "egress": [],
        },
    }


def multi_node_warnings(service: ResolvedService, settings: NetworkPolicySettings) -> list[Problem]:
    """A multi-node service without NetworkPolicies: nothing keeps other pods off its workers' port."""
    if settings.enabled or not multinode.is_group(service):
        return []
    return [
        Problem(
            config_path(service.path, "multiNode"),
            f"its workers' ggml-rpc-server has no authentication, and with networkPolicy.enabled false any pod "
            f"that reaches port {multinode.rpc_port(service)} of a worker can read and overwrite the model's "
            "tensors there and run computations on the worker's devices; turn NetworkPolicies on where the CNI "
            "enforces them, or keep untrusted pods out of the cluster",
        )
    ]
