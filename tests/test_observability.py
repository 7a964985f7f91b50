"""llmkube:observability: the monitors, the scrape annotations, prometheus-adapter's rules, KEDA's ScaledObject and
the controller's monitor, what the checks refuse and warn about, and that a stack without it renders exactly what
it did before.

The builders run through the whole pipeline (``platform``, offline planning from the catalog), as a stack does;
every object is validated against Kubernetes' own schema where it is a built-in kind. The CRD kinds (PodMonitor,
ServiceMonitor, ScaledObject) are checked against the real CRDs on the local cluster (e2e).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llmkube_components.errors import ConfigError
from llmkube_components.pipeline import StackBuild, platform
from llmkube_components.settings import Settings
from llmkube_components.workloads import observability

K8S_VERSION = kubernetes_validate.latest_version()
OFFLINE = Settings(offline=True)
ROOT = Path(__file__).resolve().parent.parent
MODEL = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "catalog": "Llama-3.2-1B"}
KEDA_URL = "http://prometheus-operated.monitoring.svc:9090"


def raw_stack(
    observability_settings: Mapping[str, Any] | None = None,
    *,
    autoscaling: Mapping[str, Any] | None = None,
    delivery: str = "direct",
    services: tuple[str, ...] = ("chat",),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelRef": "m", "contextSize": 4096}
    if autoscaling is not None:
        spec["autoscaling"] = dict(autoscaling)
    raw: dict[str, Any] = {
        "delivery": delivery,
        "namespace": "ai",
        "hardware": "cpu-only",
        "models": {"m": MODEL},
        "services": {name: dict(spec) for name in services},
    }
    if observability_settings is not None:
        raw["observability"] = dict(observability_settings)
    return raw


def build(raw: Mapping[str, Any]) -> StackBuild:
    return platform(raw, OFFLINE)


def kinds(objects: Any) -> list[str]:
    return [m["kind"] for m in objects]


def problems_of(raw: Mapping[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        build(raw)
    return {p.path: p.message for p in caught.value.problems}


def warnings_of(raw: Mapping[str, Any]) -> dict[str, str]:
    return {w.path: w.message for w in build(raw).stack.warnings}


def all_manifests(built: StackBuild) -> list[dict[str, Any]]:
    out = [*built.namespace, *built.cache, *built.monitoring, *built.priority_classes]
    for service in built.services.values():
        out += service.workloads
        out += [m for m in (service.network_policy, service.custom_resource) if m is not None]
    if built.operator is not None:
        out += built.operator.manifests + built.operator.crds
    return out


# --- off means unchanged ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delivery", ["direct", "operator"])
def test_observability_off_or_empty_renders_the_same_manifests(delivery: str) -> None:
    scaled = {"maxReplicas": 3}
    without = all_manifests(build(raw_stack(None, autoscaling=scaled, delivery=delivery)))
    empty = all_manifests(build(raw_stack({}, autoscaling=scaled, delivery=delivery)))
    assert without == empty
    assert not build(raw_stack({}, autoscaling=scaled, delivery=delivery)).monitoring
    assert "HorizontalPodAutoscaler" in kinds(without)


def test_reference_stacks_render_no_monitoring() -> None:
    for path in sorted((ROOT / "stacks").glob("Pulumi.*.yaml")):
        config = yaml.safe_load(path.read_text())["config"]
        raw = {k.removeprefix("llmkube:"): v for k, v in config.items() if k.startswith("llmkube:")}
        if "observability" in raw:
            continue
        assert build(raw).monitoring == (), path.name


# --- scraping -----------------------------------------------------------------------------------------------------


def test_pod_monitor_selects_every_llama_server_pod_of_the_namespace_and_labels_the_series() -> None:
    built = build(raw_stack({"podMonitor": True, "scrapeInterval": "15s", "monitorLabels": {"release": "prom"}}))
    (monitor,) = built.monitoring
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["name"] == "llmkube-ai-inference"
    assert monitor["metadata"]["namespace"] == "ai"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    spec = monitor["spec"]
    assert spec["selector"] == {"matchExpressions": [{"key": "inference.llmkube.dev/service", "operator": "Exists"}]}
    assert spec["namespaceSelector"] == {"matchNames": ["ai"]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    targets = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert targets["job"]["replacement"] == "llmkube-inference"
    assert targets["service"]["sourceLabels"] == ["__meta_kubernetes_pod_label_inference_llmkube_dev_service"]
    assert targets["model"]["sourceLabels"] == ["__meta_kubernetes_pod_label_inference_llmkube_dev_model"]
    assert targets["namespace"]["sourceLabels"] == ["__meta_kubernetes_namespace"]
    # The pods it selects: the Deployment's template carries the label and names its port "http".
    deployment = next(m for m in built.services["chat"].workloads if m["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert "inference.llmkube.dev/service" in template["metadata"]["labels"]
    assert template["spec"]["containers"][0]["ports"][0]["name"] == "http"


def test_service_monitor_selects_the_services_by_their_label_and_port() -> None:
    built = build(raw_stack({"serviceMonitor": True}))
    (monitor,) = built.monitoring
    assert monitor["kind"] == "ServiceMonitor"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    service = next(m for m in built.services["chat"].workloads if m["kind"] == "Service")
    assert "inference.llmkube.dev/service" in service["metadata"]["labels"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]


def test_scrape_annotations_go_on_the_llama_server_pods_only() -> None:
    built = build(raw_stack({"scrapeAnnotations": True}))
    assert built.monitoring == ()
    deployment = next(m for m in built.services["chat"].workloads if m["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_two_ways_of_scraping_are_refused() -> None:
    problems = problems_of(raw_stack({"podMonitor": True, "serviceMonitor": True, "scrapeAnnotations": True}))
    assert "together with podMonitor" in problems["observability.serviceMonitor"]
    assert "together with podMonitor" in problems["observability.scrapeAnnotations"]
    assert "observability.podMonitor" not in problems


def test_bad_monitor_labels_and_interval_name_their_path() -> None:
    problems = problems_of(raw_stack({"podMonitor": True, "monitorLabels": {"bad key!": "x"}}))
    assert "label key" in problems["observability.monitorLabels.bad key!"]
    problems = problems_of(raw_stack({"podMonitor": True, "scrapeInterval": "30"}))
    assert "Prometheus duration" in problems["observability.scrapeInterval"]


# --- delivery operator: the controller's metrics --------------------------------------------------------------------


def test_operator_delivery_monitors_the_controller_over_https_and_binds_the_scraper() -> None:
    built = build(
        raw_stack(
            {"serviceMonitor": True, "prometheusServiceAccount": {"namespace": "monitoring", "name": "prometheus"}},
            delivery="operator",
        )
    )
    by_name = {m["metadata"]["name"]: m for m in built.monitoring}
    assert set(by_name) == {
        "llmkube-ai-inference",
        "llmkube-controller",
        "llmkube-metrics-reader-monitoring-prometheus",
    }
    controller = by_name["llmkube-controller"]
    assert built.operator is not None
    metrics_service = next(
        m
        for m in built.operator.manifests
        if m["kind"] == "Service" and m["metadata"]["name"].endswith("metrics-service")
    )
    assert controller["metadata"]["namespace"] == metrics_service["metadata"]["namespace"] == "llmkube-system"
    selector = controller["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    # No other Service of the install matches it.
    services = [m for m in built.operator.manifests if m["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services if selector.items() <= s["metadata"]["labels"].items()] == [
        metrics_service["metadata"]["name"]
    ]
    (endpoint,) = controller["spec"]["endpoints"]
    assert endpoint["port"] == metrics_service["spec"]["ports"][0]["name"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    binding = by_name["llmkube-metrics-reader-monitoring-prometheus"]
    reader = next(m for m in built.operator.manifests if m["metadata"]["name"] == binding["roleRef"]["name"])
    assert reader["kind"] == "ClusterRole"
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]
    kubernetes_validate.validate(binding, K8S_VERSION, strict=True)


def test_operator_delivery_refuses_pod_annotations_and_keda() -> None:
    problems = problems_of(
        raw_stack(
            {"scrapeAnnotations": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL},
            delivery="operator",
            autoscaling={"maxReplicas": 2},
        )
    )
    assert "controller makes the pods" in problems["observability.scrapeAnnotations"]
    assert "controller makes each service's HPA" in problems["observability.autoscaler"]


def test_scraper_binding_only_with_an_installed_operator() -> None:
    problems = problems_of(raw_stack({"prometheusServiceAccount": {"namespace": "monitoring", "name": "p"}}))
    assert "delivery operator" in problems["observability.prometheusServiceAccount"]


# --- prometheus-adapter ---------------------------------------------------------------------------------------------


def test_prometheus_adapter_rules_serve_each_pods_metric_once() -> None:
    custom = {
        "maxReplicas": 4,
        "metrics": [
            {"type": "Pods", "name": "llamacpp:requests_deferred", "targetAverageValue": "1"},
            {"type": "Resource", "name": "cpu", "targetAverageUtilization": 80},
        ],
    }
    raw = raw_stack({"podMonitor": True, "autoscaler": "prometheusAdapter"}, services=("chat", "code"))
    raw["services"]["chat"]["autoscaling"] = {"maxReplicas": 3}
    raw["services"]["code"]["autoscaling"] = custom
    built = build(raw)
    rules_map = next(m for m in built.monitoring if m["kind"] == "ConfigMap")
    assert rules_map["metadata"] == {
        "name": "llmkube-prometheus-adapter-rules",
        "namespace": "ai",
        "labels": rules_map["metadata"]["labels"],
    }
    kubernetes_validate.validate(rules_map, K8S_VERSION, strict=True)
    config = yaml.safe_load(rules_map["data"]["config.yaml"])
    queries = [r["seriesQuery"] for r in config["rules"]]
    assert queries == [
        'llamacpp:requests_deferred{namespace!="",pod!=""}',
        'llamacpp:requests_processing{namespace!="",pod!=""}',
    ]
    rule = config["rules"][1]
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
    assert rule["metricsQuery"] == "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
    # The HPAs stay, and name exactly the metrics the rules serve.
    hpas = [m for s in built.services.values() for m in s.workloads if m["kind"] == "HorizontalPodAutoscaler"]
    served = {q.split("{")[0] for q in queries}
    assert {m["pods"]["metric"]["name"] for h in hpas for m in h["spec"]["metrics"] if m["type"] == "Pods"} == served


def test_prometheus_adapter_namespace_and_name_are_the_users() -> None:
    raw = raw_stack(
        {
            "podMonitor": True,
            "autoscaler": "prometheusAdapter",
            "adapterNamespace": "monitoring",
            "adapterConfigMap": "r",
        },
        autoscaling={"maxReplicas": 2},
    )
    rules_map = next(m for m in build(raw).monitoring if m["kind"] == "ConfigMap")
    assert (rules_map["metadata"]["namespace"], rules_map["metadata"]["name"]) == ("monitoring", "r")


def test_an_autoscaler_with_nothing_to_scale_or_nothing_scraped_warns() -> None:
    warnings = warnings_of(raw_stack({"podMonitor": True, "autoscaler": "prometheusAdapter"}))
    assert "no service has autoscaling" in warnings["observability.autoscaler"]
    warnings = warnings_of(raw_stack({"autoscaler": "prometheusAdapter"}, autoscaling={"maxReplicas": 2}))
    assert "nothing here has the pods scraped" in warnings["observability.autoscaler"]
    assert "observability.autoscaler" not in warnings_of(
        raw_stack({"podMonitor": True, "autoscaler": "prometheusAdapter"}, autoscaling={"maxReplicas": 2})
    )


def test_an_hpa_on_a_custom_metric_without_an_adapter_warns_and_a_resource_metric_does_not() -> None:
    warnings = warnings_of(raw_stack({}, autoscaling={"maxReplicas": 2}))
    assert "follow custom metrics (llamacpp:requests_processing)" in warnings["observability.autoscaler"]
    assert "never scales" in warnings["observability.autoscaler"]
    cpu = {"maxReplicas": 2, "metrics": [{"type": "Resource", "name": "cpu", "targetAverageUtilization": 80}]}
    assert "observability.autoscaler" not in warnings_of(raw_stack({}, autoscaling=cpu))
    assert "observability.autoscaler" not in warnings_of(raw_stack({}))


def test_prometheus_adapter_with_only_resource_metrics_warns_that_no_rules_are_rendered() -> None:
    cpu = {"maxReplicas": 2, "metrics": [{"type": "Resource", "name": "cpu", "targetAverageUtilization": 80}]}
    raw = raw_stack({"podMonitor": True, "autoscaler": "prometheusAdapter"}, autoscaling=cpu)
    assert "no adapter rules are rendered" in warnings_of(raw)["observability.autoscaler"]
    assert [m["kind"] for m in build(raw).monitoring] == ["PodMonitor"]


# --- KEDA -----------------------------------------------------------------------------------------------------------


def test_keda_scaled_object_replaces_the_hpa_and_queries_the_services_series() -> None:
    raw = raw_stack(
        {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL},
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 3,
            "metrics": [
                {"type": "Pods", "name": "llamacpp:requests_processing", "targetAverageValue": "1500m"},
                {"type": "Resource", "name": "cpu", "targetAverageUtilization": 75},
            ],
        },
    )
    built = build(raw)
    objects = built.services["chat"].workloads
    assert "HorizontalPodAutoscaler" not in kinds(objects)
    (scaled,) = [m for m in objects if m["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == "chat"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    prometheus, cpu = spec["triggers"]
    assert prometheus == {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": KEDA_URL,
            "query": 'sum(llamacpp:requests_processing{namespace="ai",service="chat"})',
            "threshold": "1.5",
        },
    }
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "75"}}
    # Every trigger's metadata is strings only, as the CRD's schema requires.
    assert all(isinstance(v, str) for t in spec["triggers"] for v in t["metadata"].values())
    # The Deployment leaves its replicas to the autoscaler, as with an HPA.
    deployment = next(m for m in objects if m["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]


def test_keda_default_metric_and_thresholds() -> None:
    built = build(
        raw_stack({"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL}, autoscaling={"maxReplicas": 2})
    )
    scaled = next(m for m in built.services["chat"].workloads if m["kind"] == "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["query"].startswith("sum(llamacpp:requests_processing{")
    assert trigger["metadata"]["threshold"] == "2"
    assert scaled["spec"]["minReplicaCount"] == 1


@pytest.mark.parametrize(("quantity", "number"), [("2", "2"), ("500m", "0.5"), ("1.25", "1.25"), ("1k", "1000")])
def test_keda_threshold_is_the_quantity_as_a_plain_number(quantity: str, number: str) -> None:
    built = build(
        raw_stack(
            {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL},
            autoscaling={
                "maxReplicas": 2,
                "metrics": [{"type": "Pods", "name": "llamacpp:requests_processing", "targetAverageValue": quantity}],
            },
        )
    )
    scaled = next(m for m in built.services["chat"].workloads if m["kind"] == "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == number


def test_keda_needs_a_prometheus_url() -> None:
    problems = problems_of(raw_stack({"podMonitor": True, "autoscaler": "keda"}, autoscaling={"maxReplicas": 2}))
    assert "chat" in problems["observability.prometheusUrl"]
    problems = problems_of(raw_stack({"autoscaler": "keda", "prometheusUrl": "prometheus:9090"}))
    assert any(path.endswith("observability.prometheusUrl") for path in problems)


def test_scale_to_zero_needs_keda_and_a_metric_that_is_not_a_resource() -> None:
    problems = problems_of(raw_stack({"podMonitor": True}, autoscaling={"minReplicas": 0, "maxReplicas": 2}))
    assert "needs observability.autoscaler 'keda'" in problems["services.chat.autoscaling.minReplicas"]
    only_cpu = {
        "minReplicas": 0,
        "maxReplicas": 2,
        "metrics": [{"type": "Resource", "name": "cpu", "targetAverageUtilization": 80}],
    }
    problems = problems_of(
        raw_stack({"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL}, autoscaling=only_cpu)
    )
    assert "cannot scale up from zero" in problems["services.chat.autoscaling.minReplicas"]


def test_scale_to_zero_with_keda_warns_that_the_pods_own_series_cannot_wake_it() -> None:
    raw = raw_stack(
        {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL},
        autoscaling={"minReplicas": 0, "maxReplicas": 2},
    )
    warnings = warnings_of(raw)
    assert "nothing wakes the service" in warnings["services.chat.autoscaling.minReplicas"]


def test_a_wake_query_adds_a_trigger_that_only_activates_and_quiets_the_warning() -> None:
    wake = 'sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name=~".*chat.*"}[1m]))'
    raw = raw_stack(
        {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL, "wakeQueries": {"chat": wake}},
        autoscaling={"minReplicas": 0, "maxReplicas": 2},
    )
    built = build(raw)
    scaled = next(m for m in built.services["chat"].workloads if m["kind"] == "ScaledObject")
    pods, woken = scaled["spec"]["triggers"]
    assert pods["metadata"]["query"].startswith("sum(llamacpp:requests_processing{")
    assert woken["name"] == "wake"
    assert woken["metadata"]["query"] == wake
    assert woken["metadata"]["activationThreshold"] == "0"
    assert float(woken["metadata"]["threshold"]) >= 1e6
    assert "services.chat.autoscaling.minReplicas" not in {w.path for w in built.stack.warnings}


def test_wake_queries_name_a_scaled_service_under_keda() -> None:
    problems = problems_of(raw_stack({"wakeQueries": {"chat": "up"}}, autoscaling={"maxReplicas": 2}))
    assert "not 'keda'" in problems["observability.wakeQueries.chat"]
    keda = {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL}
    problems = problems_of(raw_stack({**keda, "wakeQueries": {"chta": "up"}}, autoscaling={"maxReplicas": 2}))
    assert "'chta' names no service; services are: chat" in problems["observability.wakeQueries.chta"]
    problems = problems_of(raw_stack({**keda, "wakeQueries": {"chat": "up"}}))
    assert "no autoscaling" in problems["observability.wakeQueries.chat"]


def test_min_replicas_zero_stays_out_of_the_crd() -> None:
    from llmkube_components import crds

    crd = next(c for c in crds.all_crds() if c["spec"]["names"]["kind"] == "InferenceService")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field = schema["properties"]["spec"]["properties"]["autoscaling"]["properties"]["minReplicas"]
    assert field["minimum"] == 1


def test_suspended_service_gets_no_scaled_object() -> None:
    raw = raw_stack(
        {"podMonitor": True, "autoscaler": "keda", "prometheusUrl": KEDA_URL}, autoscaling={"maxReplicas": 2}
    )
    raw["services"]["chat"]["suspend"] = True
    objects = build(raw).services["chat"].workloads
    assert "ScaledObject" not in kinds(objects)
    assert "HorizontalPodAutoscaler" not in kinds(objects)


# --- the dashboard's wiring -----------------------------------------------------------------------------------------


def test_dashboard_config_map_has_a_row_per_service_with_the_plans_context() -> None:
    raw = raw_stack(
        {"dashboard": True, "dashboardNamespace": "monitoring", "dashboardFolder": "LLM"}, services=("chat", "code")
    )
    built = build(raw)
    (config_map,) = built.monitoring
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "LLM"
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)
    text = next(iter(config_map["data"].values()))
    assert 'service=\\"chat\\"' in text and 'service=\\"code\\"' in text
    plan = built.services["chat"].plan
    assert plan is not None
    assert plan.chosen.memory.context_size >= 4096


def test_the_helpers_name_the_labels_the_monitors_set() -> None:
    assert observability.SERIES_LABELS["service"] == "inference.llmkube.dev/service"
    assert observability._pod_label("inference.llmkube.dev/service") == (
        "__meta_kubernetes_pod_label_inference_llmkube_dev_service"
    )
