"""Pure builders of what makes a stack observable (``llmkube:observability``) and its autoscaling metrics real.

llama-server exports its ``llamacpp:*`` series on ``/metrics`` (``--metrics``, on by default). This module renders
what gets them to Prometheus and from there to the autoscaler:

- scraping, one of: a Prometheus Operator PodMonitor for the namespace's llama-server pods, a ServiceMonitor
  through their Services, or the ``prometheus.io/*`` pod annotations a Prometheus without the operator reads.
  The monitors put the labels ``service``, ``namespace``, ``model`` and ``runtime`` on every series (from the
  pods' labels, both deliveries' pods carry them), as upstream LLMKube's chart does, so the dashboard
  (dashboard.py), the KEDA queries and a user's own queries select a service the same way;
- delivery operator: a ServiceMonitor for the controller's HTTPS ``/metrics`` (it authorizes every scrape
  through the API server, so the scraper's ServiceAccount may be bound to its metrics-reader role here);
- the autoscaler's metrics (``observability.autoscaler``): ``prometheusAdapter`` adds a ConfigMap of
  prometheus-adapter rules that serve each Pods metric of the services' HPAs as a custom metric; ``keda``
  renders a KEDA ScaledObject per service instead of the HPA (KEDA makes and owns its own HPA), with a
  Prometheus trigger per Pods metric, which is what lets ``minReplicas`` be 0.

Everything here is a plain dict; the checks that refuse a combination that cannot work live in checks.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import yaml

from ..api.base import parse_quantity
from ..api.service import DEFAULT_MIN_REPLICAS, MetricSpec
from ..api.stack import ObservabilitySettings
from ..meta import object_meta, recommended_labels, sorted_by_key
from ..resolve import ResolvedService
from .labels import LABEL_MODEL, LABEL_RUNTIME, LABEL_SERVICE, service_labels

Manifest = dict[str, Any]

MONITORING_API: Final = "monitoring.coreos.com/v1"
KEDA_API: Final = "keda.sh/v1alpha1"
METRICS_PATH: Final = "/metrics"
# The job label of every llama-server series, whichever monitor scraped it (upstream's chart pins the same).
INFERENCE_JOB: Final = "llmkube-inference"
CONTROLLER_JOB: Final = "llmkube-controller"
# The labels every llama-server series carries, and the pod labels (or namespace) they come from.
SERIES_LABELS: Final = {
    "service": LABEL_SERVICE,
    "model": LABEL_MODEL,
    "runtime": LABEL_RUNTIME,
}
SCRAPE_ANNOTATION: Final = "prometheus.io/scrape"
SCRAPE_PORT_ANNOTATION: Final = "prometheus.io/port"
SCRAPE_PATH_ANNOTATION: Final = "prometheus.io/path"
# The file prometheus-adapter reads its rules from (its --config; the Helm chart's rules.existing mounts it).
ADAPTER_CONFIG_KEY: Final = "config.yaml"
# How often KEDA asks Prometheus (its default).
KEDA_POLLING_SECONDS: Final = 30
# How long KEDA waits after the last activity before scaling to zero (its default is 300 s): a model that takes
# minutes to load should not be dropped between two requests of one conversation.
KEDA_COOLDOWN_SECONDS: Final = 600
# A wake trigger's scaling target: far above any request rate, so that it asks for one replica and no more.
WAKE_THRESHOLD: Final = "1000000"


def _pod_label(label: str) -> str:
    """Prometheus's discovery label of a pod label (every character outside [a-zA-Z0-9_] becomes _)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() or c == "_" else "_" for c in label)


def _relabelings(job: str) -> list[Manifest]:
    """The job, then service/model/runtime from the pod's labels and namespace from its namespace."""
    rules: list[Manifest] = [{"action": "replace", "targetLabel": "job", "replacement": job}]
    rules += [
        {"action": "replace", "sourceLabels": [_pod_label(label)], "targetLabel": target}
        for target, label in SERIES_LABELS.items()
    ]
    rules.append({"action": "replace", "sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace"})
    return rules


def _monitor_meta(name: str, namespace: str, settings: ObservabilitySettings) -> Manifest:
    labels = {**recommended_labels("llmkube", "monitoring", name), **(settings.monitor_labels or {})}
    return object_meta(name, namespace, sorted_by_key(labels))


def monitor_name(namespace: str) -> str:
    """The PodMonitor's or ServiceMonitor's name: one per stack namespace."""
    return f"llmkube-{namespace}-inference"


def _selector() -> Manifest:
    # Every llama-server pod (and Service) of either delivery carries the service label; a multi-node group's
    # workers do not (they export no metrics), nor does anything else in the namespace.
    return {"matchExpressions": [{"key": LABEL_SERVICE, "operator": "Exists"}]}


def _monitor(kind: str, endpoints: str, namespace: str, port_name: str, settings: ObservabilitySettings) -> Manifest:
    return {
        "apiVersion": MONITORING_API,
        "kind": kind,
        "metadata": _monitor_meta(monitor_name(namespace), namespace, settings),
        "spec": {
            "selector": _selector(),
            "namespaceSelector": {"matchNames": [namespace]},
            endpoints: [
                {
                    "port": port_name,
                    "path": METRICS_PATH,
                    "interval": settings.scrape_interval,
                    "relabelings": _relabelings(INFERENCE_JOB),
                }
            ],
        },
    }


def pod_monitor(namespace: str, port_name: str, settings: ObservabilitySettings) -> Manifest:
    """The PodMonitor of a namespace's llama-server pods: their ``port_name`` port's /metrics."""
    return _monitor("PodMonitor", "podMetricsEndpoints", namespace, port_name, settings)


def service_monitor(namespace: str, port_name: str, settings: ObservabilitySettings) -> Manifest:
    """The ServiceMonitor of a namespace's llama-server Services: each endpoint pod's /metrics."""
    return _monitor("ServiceMonitor", "endpoints", namespace, port_name, settings)


def scrape_annotations(port: int) -> dict[str, str]:
    """The pod annotations a Prometheus without the operator discovers llama-server's /metrics by."""
    return {SCRAPE_ANNOTATION: "true", SCRAPE_PORT_ANNOTATION: str(port), SCRAPE_PATH_ANNOTATION: METRICS_PATH}


def controller_service_monitor(
    namespace: str, selector: Mapping[str, str], port_name: str, settings: ObservabilitySettings
) -> Manifest:
    """The ServiceMonitor of the LLMKube controller's metrics Service (delivery operator): the Service in
    ``namespace`` that ``selector`` matches, its ``port_name`` port.

    Its /metrics is HTTPS with a self-signed certificate and authorizes each scrape through the API server:
    Prometheus sends its ServiceAccount's token, which needs the controller's metrics-reader role
    (controller_metrics_binding).
    """
    name = "llmkube-controller"
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": _monitor_meta(name, namespace, settings),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [
                {
                    "port": port_name,
                    "path": METRICS_PATH,
                    "scheme": "https",
                    "interval": settings.scrape_interval,
                    "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                    "tlsConfig": {"insecureSkipVerify": True},
                    "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": CONTROLLER_JOB}],
                }
            ],
        },
    }


def controller_metrics_binding(reader_role: str, settings: ObservabilitySettings) -> Manifest | None:
    """Binds the Prometheus ServiceAccount (observability.prometheusServiceAccount) to the controller's
    metrics-reader ClusterRole, or None when none is given."""
    account = settings.prometheus_service_account
    if account is None:
        return None
    name = f"llmkube-metrics-reader-{account.namespace}-{account.name}"[:253]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": object_meta(name, None, recommended_labels("llmkube", "monitoring", name[:63].rstrip("-."))),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader_role},
        "subjects": [{"kind": "ServiceAccount", "name": account.name, "namespace": account.namespace}],
    }


# --- autoscaling ------------------------------------------------------------------------------------------------


def autoscaling_metrics(service: ResolvedService) -> list[MetricSpec]:
    """The metrics a service's autoscaler follows (the operator's default when none are given); [] without
    autoscaling or while suspended."""
    return service.spec.autoscaling_metrics()


def min_replicas(service: ResolvedService) -> int:
    autoscaling = service.spec.autoscaling
    if autoscaling is None or autoscaling.min_replicas is None:
        return DEFAULT_MIN_REPLICAS
    return autoscaling.min_replicas


def pods_metric_names(services: Iterable[ResolvedService]) -> list[str]:
    """The Pods metrics (custom, per pod) the services' autoscalers follow, each once, sorted."""
    return sorted({m.name for s in services for m in autoscaling_metrics(s) if m.type == "Pods"})


def adapter_rule(metric: str) -> Manifest:
    """A prometheus-adapter rule that serves ``metric`` per pod and namespace under its own name."""
    return {
        "seriesQuery": f'{metric}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^(.*)$", "as": "${1}"},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    }


def adapter_config_map(namespace: str, metrics: Sequence[str], settings: ObservabilitySettings) -> Manifest | None:
    """prometheus-adapter's rules for ``metrics`` (observability.autoscaler prometheusAdapter), or None when no
    service's autoscaler follows a Pods metric."""
    if not metrics:
        return None
    name = settings.adapter_config_map
    config = {"rules": [adapter_rule(m) for m in metrics]}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            name, settings.adapter_namespace or namespace, recommended_labels("llmkube", "prometheus-adapter", name)
        ),
        "data": {ADAPTER_CONFIG_KEY: yaml.safe_dump(config, sort_keys=True, default_flow_style=False)},
    }


def _number(quantity: str) -> str:
    """A Kubernetes quantity as the plain decimal KEDA's thresholds take ("500m" -> "0.5")."""
    value = parse_quantity(quantity)
    text = format(value.normalize(), "f") if value != value.to_integral_value() else str(int(value))
    return text if value != Decimal(0) else "0"


def series_selector(service: ResolvedService) -> str:
    """The label matchers of a service's series, as the monitors label them."""
    return f'namespace="{service.namespace}",service="{service.name}"'


def keda_trigger(service: ResolvedService, metric: MetricSpec, prometheus_url: str) -> Manifest:
    """A KEDA trigger for one autoscaling metric: Prometheus for a Pods metric (the sum over the service's pods,
    which KEDA divides by the replicas as the HPA's AverageValue does), cpu or memory for a Resource metric."""
    if metric.type == "Resource":
        if metric.target_average_utilization is not None:
            return {
                "type": metric.name,
                "metricType": "Utilization",
                "metadata": {"value": str(metric.target_average_utilization)},
            }
        return {
            "type": metric.name,
            "metricType": "AverageValue",
            "metadata": {"value": _number(str(metric.target_average_value))},
        }
    return {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": prometheus_url,
            "query": f"sum({metric.name}{{{series_selector(service)}}})",
            "threshold": _number(str(metric.target_average_value)),
        },
    }


def wake_trigger(query: str, prometheus_url: str) -> Manifest:
    """A trigger that wakes a service from zero when ``query`` is above 0 and never scales it further: KEDA
    activates on activationThreshold, and a threshold no query reaches keeps its replica wish at one."""
    return {
        "type": "prometheus",
        "name": "wake",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": prometheus_url,
            "query": query,
            "threshold": WAKE_THRESHOLD,
            "activationThreshold": "0",
        },
    }


def scaled_object(service: ResolvedService, settings: ObservabilitySettings) -> Manifest | None:
    """The KEDA ScaledObject that scales a service's Deployment (observability.autoscaler keda), or None without
    autoscaling or while suspended. checks.py makes sure prometheusUrl is set when it is needed."""
    autoscaling = service.spec.autoscaling
    metrics = autoscaling_metrics(service)
    if autoscaling is None or not metrics:
        return None
    url = settings.prometheus_url or ""
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicaCount": min_replicas(service),
            "maxReplicaCount": autoscaling.max_replicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            "cooldownPeriod": KEDA_COOLDOWN_SECONDS,
            "triggers": [keda_trigger(service, m, url) for m in metrics]
            + ([wake_trigger(wake, url)] if (wake := (settings.wake_queries or {}).get(service.key)) else []),
        },
    }


def stack_monitoring(
    namespace: str,
    port_name: str,
    services: Sequence[ResolvedService],
    settings: ObservabilitySettings,
) -> list[Manifest]:
    """The stack's own monitoring objects in its namespace: its monitor, and prometheus-adapter's rules."""
    out: list[Manifest] = []
    if settings.pod_monitor:
        out.append(pod_monitor(namespace, port_name, settings))
    if settings.service_monitor:
        out.append(service_monitor(namespace, port_name, settings))
    if settings.autoscaler == "prometheusAdapter":
        rules = adapter_config_map(namespace, pods_metric_names(services), settings)
        if rules is not None:
            out.append(rules)
    return out


def annotations_for(settings: ObservabilitySettings, port: int) -> Mapping[str, str]:
    """The scrape annotations of a llama-server pod when the stack asks for them, else none."""
    return scrape_annotations(port) if settings.scrape_annotations else {}
