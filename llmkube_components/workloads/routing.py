"""What sits in front of and above a service's Service: a Gateway API route to it (endpoint.gateway) and its
service-level objective (slo), both custom resources of other projects' CRDs (Gateway API, Pyrra), which the
cluster must have.

The LLMKube operator (v0.9.19) renders Envoy AI Gateway objects (Backend, AIServiceBackend, AIGatewayRoute) for
endpoint.gateway; delivery direct renders the portable Gateway API HTTPRoute, which every Gateway implementation
reads, Envoy AI Gateway's included. The header match keeps Envoy AI Gateway's convention (x-ai-eg-model, the
header its router sets from the request body's model), so one Gateway can send each model to its own service.
"""

from __future__ import annotations

from typing import Any, Final

from ..api.service import DEFAULT_SLO_INDICATOR, DEFAULT_SLO_WINDOW
from ..meta import object_meta
from ..resolve import ResolvedService
from .labels import service_labels

Manifest = dict[str, Any]

GATEWAY_API_GROUP: Final = "gateway.networking.k8s.io"
MODEL_HEADER: Final = "x-ai-eg-model"


def http_route(service: ResolvedService) -> Manifest | None:
    """The HTTPRoute (gateway.networking.k8s.io/v1) from endpoint.gateway's Gateway to the service, or None.

    One rule to the Service's port: requests whose ``x-ai-eg-model`` header is gateway.modelName when that is
    set, else every request (path prefix /). A Gateway in another namespace must admit routes from this one
    (its listeners' allowedRoutes).
    """
    endpoint = service.spec.endpoint
    gateway = endpoint.gateway if endpoint is not None else None
    if gateway is None or not gateway.on:
        return None
    parent: Manifest = {"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": gateway.gateway_ref.name}
    if gateway.gateway_ref.namespace:
        parent["namespace"] = gateway.gateway_ref.namespace
    if gateway.model_name:
        match: Manifest = {"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": gateway.model_name}]}
    else:
        match = {"path": {"type": "PathPrefix", "value": "/"}}
    backend = {"group": "", "kind": "Service", "name": service.name, "port": service.spec.serving_port}
    return {
        "apiVersion": f"{GATEWAY_API_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {"parentRefs": [parent], "rules": [{"matches": [match], "backendRefs": [backend]}]},
    }


def slo_name(service: ResolvedService) -> str:
    slo = service.spec.slo
    assert slo is not None
    return slo.name or f"{service.name}-{slo.indicator or DEFAULT_SLO_INDICATOR}"


def service_level_objective(service: ResolvedService) -> Manifest | None:
    """The Pyrra ServiceLevelObjective (pyrra.dev/v1alpha1) of an availability slo, or None.

    llama-server exports no per-request status or latency metrics (its /metrics has counters of tokens and
    requests in flight, no status codes and no histogram), so the only honest availability is the operator's:
    the share of Prometheus scrapes that found the server up, ``up{namespace, service}``, as Pyrra's bool gauge.
    It needs a scrape of the service's pods that carries the service label (a ServiceMonitor of the Prometheus
    Operator does). The latency indicator is refused at preview in delivery direct (checks).
    """
    slo = service.spec.slo
    if slo is None or (slo.indicator or DEFAULT_SLO_INDICATOR) != "availability":
        return None
    metric = f'up{{namespace="{service.namespace}",service="{service.name}"}}'
    return {
        "apiVersion": "pyrra.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": object_meta(slo_name(service), service.namespace, service_labels(service)),
        "spec": {
            "target": slo.objective,
            "window": slo.window or DEFAULT_SLO_WINDOW,
            "indicator": {"bool_gauge": {"metric": metric}},
        },
    }
