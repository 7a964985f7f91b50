"""``llmkube:observability`` on the local control plane (tests/e2e/cluster.py): the real API server takes the
monitoring objects a direct stack renders, checked against the Prometheus Operator's and KEDA's own CRDs, and what
it holds fits together: the monitor selects the service's pods (or Service), its relabelings give their series the
labels the dashboard's, prometheus-adapter's and KEDA's queries select by, and the autoscaler scales the service's
Deployment.

The CRDs are PodMonitor, ServiceMonitor (Prometheus Operator v0.85.0) and ScaledObject (KEDA v2.21.0), from their
Go modules (tools/setup-crds); this module installs those three alone, and deletes them at the end. Neither the
Prometheus Operator nor KEDA runs here: what is shown is what the API server stores, not a scrape or a scaling.

How the objects get there: the real Pulumi engine (the CLI, our program, the Kubernetes provider), as
test_local_cluster_multi_node.py does, one stack up, checked and destroyed per case; each `pulumi up` takes about
15 s here. KWOK runs no container, so the small CPU service's pod is scheduled and marked Ready without
llama-server (tests/e2e/test_llama_server_metrics.py shows its /metrics). The kept namespace and cache claim go at
the end of the module.

- PodMonitor, dashboard and prometheus-adapter (autoscaler ``prometheusAdapter``): the PodMonitor, the dashboard's
  ConfigMap and the adapter's rules are accepted, and the HPA follows the metric the adapter's rule serves.
- ServiceMonitor and KEDA (autoscaler ``keda``, ``minReplicas: 0``): the ScaledObject is accepted in place of the
  HPA, with scale to zero and a Prometheus trigger on the service's series. Pulumi's await is no obstacle: the
  Deployment leaves its replicas to the autoscaler, so with no KEDA here the API server's default of one pod
  stands, and that pod runs as in the first case.
- Observability off and ``observability: {}`` render the same manifests (no cluster needed).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkube_components.pipeline import StackBuild, platform
from llmkube_components.settings import Settings
from tests.e2e.cluster import cluster_tools, delete_namespace, get, kubectl, ready
from tests.e2e.pulumi_project import ReconfiguredStack, copy_project, initialised_stack
from tests.e2e.required import required
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

cluster_tools()


def crd_folder() -> Path:
    result = subprocess.run([ROOT / "tools" / "setup-crds", "--installed"], capture_output=True, text=True)
    folder = result.stdout.strip() if result.returncode == 0 else None
    return Path(required(folder, "the CRDs of other projects are not fetched (tools/setup runs tools/setup-crds)"))


CRDS = crd_folder()
# This module's CRDs alone: test_direct_parity.py installs the Gateway API's from the same folder.
OBSERVABILITY_CRDS = (
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
    "scaledobjects.keda.sh",
)

NAMESPACE = "llmkube-observability-e2e"
STACK = "observability"
SERVICE = "tiny"
TINY = "https://h/Llama-3.2-1B-Instruct-Q4_K_M.gguf"  # planned offline from the catalog; nothing downloads it
METRIC = "llamacpp:requests_processing"  # the autoscaler's default metric: busy slots per pod
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
MONITOR = f"llmkube-{NAMESPACE}-inference"
DASHBOARD = f"llmkube-{NAMESPACE}-dashboard"
ADAPTER_RULES = "llmkube-prometheus-adapter-rules"
SERVICE_LABEL = "inference.llmkube.dev/service"
# The program plans from the catalog; the preview's node check stays off (a pod of the previous case may still be
# terminating).
ENV = {"LLMKUBE_OFFLINE": "1", "LLMKUBE_NODE_CHECK": "0"}
OFFLINE = Settings(offline=True)

PROMETHEUS_ADAPTER = {
    "podMonitor": True,
    "dashboard": True,
    "autoscaler": "prometheusAdapter",
    "monitorLabels": {"release": "kube-prometheus-stack"},
}
KEDA = {"serviceMonitor": True, "autoscaler": "keda", "prometheusUrl": PROMETHEUS}


def stack_config(observability: dict[str, Any] | None, min_replicas: int = 1) -> dict[str, Any]:
    """The stack's llmkube config (keys without the ``llmkube:`` prefix): one small autoscaled CPU service."""
    config: dict[str, Any] = {
        "delivery": "direct",
        "namespace": NAMESPACE,
        "hardware": "cpu-only",
        "models": {SERVICE: {"source": TINY}},
        "services": {
            SERVICE: {
                "modelRef": SERVICE,
                "contextSize": 4096,
                "autoscaling": {"minReplicas": min_replicas, "maxReplicas": 2},
            }
        },
    }
    if observability is not None:
        config["observability"] = observability
    return config


def manifests(build: StackBuild) -> list[dict[str, Any]]:
    """Every manifest a direct stack registers."""
    services = build.services.values()
    return [
        *build.namespace,
        *build.cache,
        *build.priority_classes,
        *build.monitoring,
        *(b.prefetch_job for b in build.models.values() if b.prefetch_job is not None),
        *(m for s in services for m in s.workloads),
        *(p for s in services for p in (s.network_policy, s.worker_network_policy) if p is not None),
    ]


# --- what the API server holds ------------------------------------------------------------------------------------


def label_selector(selector: dict[str, Any]) -> str:
    """A LabelSelector as kubectl's ``-l``: the API server itself says what a monitor selects."""
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        if operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            terms.append(f"{key} {operator.lower()} ({','.join(expression['values'])})")
    return ",".join(terms)


def selected(env: dict[str, str], kind: str, selector: dict[str, Any]) -> list[str]:
    items = get(env, kind, "-n", NAMESPACE, "-l", label_selector(selector))["items"]
    return sorted(i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp"))


def series_labels(relabelings: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, str]:
    """The target labels Prometheus's ``replace`` relabelings give a pod's series, from the discovery labels of the
    pod as the API server holds it (each pod label's name with every character outside [a-zA-Z0-9_] as _)."""
    discovered = {
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key): value
        for key, value in pod["metadata"]["labels"].items()
    }
    discovered["__meta_kubernetes_namespace"] = pod["metadata"]["namespace"]
    labels: dict[str, str] = {}
    for rule in relabelings:
        assert rule.get("action", "replace") == "replace", rule
        sources = rule.get("sourceLabels")
        labels[rule["targetLabel"]] = (
            ";".join(discovered.get(s, "") for s in sources) if sources else rule["replacement"]
        )
    return labels


def server_pod(env: dict[str, str]) -> dict[str, Any]:
    """The service's one pod, scheduled and Ready (Pulumi awaited its Deployment)."""
    pods = get(env, "pods", "-n", NAMESPACE, "-l", f"{SERVICE_LABEL}={SERVICE}")["items"]
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["nodeName"] == "kwok-cpu-only" and ready(pod), pod["status"]
    return pod


def port_names(pod: dict[str, Any]) -> set[str]:
    return {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def names(env: dict[str, str], kinds: str) -> set[str]:
    """``kind/name`` of what the namespace holds of ``kinds``."""
    return set(kubectl(env, "get", kinds, "-n", NAMESPACE, "-o", "name", "--ignore-not-found").split())


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crds(cluster: dict[str, str]) -> Iterator[tuple[str, ...]]:
    """The Prometheus Operator's and KEDA's CRDs, Established; deleted at the end, with any object left of them."""
    try:
        for name in OBSERVABILITY_CRDS:
            kubectl(cluster, "create", "-f", str(CRDS / f"{name}.yaml"))
        for name in OBSERVABILITY_CRDS:
            kubectl(cluster, "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        yield OBSERVABILITY_CRDS
    finally:
        for name in OBSERVABILITY_CRDS:
            kubectl(cluster, "delete", "crd", name, "--ignore-not-found", "--timeout=120s", check=False)


@pytest.fixture(scope="module")
def namespace(cluster: dict[str, str]) -> Iterator[str]:
    """The module's namespace, deleted at the end with all it holds, the kept cache claim's volume included."""
    yield NAMESPACE
    delete_namespace(cluster, NAMESPACE)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str], crds: tuple[str, ...], namespace: str
) -> Iterator[ReconfiguredStack]:
    """The stack, initialised; destroyed at the end of the module, before the namespace and the CRDs go."""
    project = copy_project(tmp_path_factory.mktemp("observability"))
    pods = f"{SERVICE_LABEL}={SERVICE}"
    with initialised_stack(project, cluster, STACK, ENV, stack_config(None), namespace=NAMESPACE, pods=pods) as state:
        yield state


@pytest.fixture
def observed(stack: ReconfiguredStack) -> Iterator[ReconfiguredStack]:
    """The stack, for one case: whatever a test deploys is destroyed after it, however it ends."""
    try:
        yield stack
    finally:
        stack.destroy()


# --- PodMonitor, dashboard, prometheus-adapter ------------------------------------------------------------------------


def test_the_api_server_takes_the_pod_monitor_dashboard_and_adapter_rules(observed: ReconfiguredStack) -> None:
    env = observed.cluster
    observed.up(stack_config(PROMETHEUS_ADAPTER))
    pod = server_pod(env)

    # The PodMonitor, where a kube-prometheus-stack Prometheus looks for monitors (its release label).
    monitor = get(env, "podmonitor", MONITOR, "-n", NAMESPACE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert selected(env, "pods", spec["selector"]) == [pod["metadata"]["name"]]
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and "http" in port_names(pod)
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"
    # Its relabelings give the pod's series the labels every query selects a service by.
    labels = series_labels(endpoint["relabelings"], pod)
    assert {"service", "namespace", "model", "runtime", "job"} <= set(labels), endpoint["relabelings"]
    assert labels["service"] == SERVICE
    assert labels["namespace"] == NAMESPACE
    assert labels["model"] == SERVICE
    assert labels["runtime"] == "llamacpp"
    assert labels["job"] == "llmkube-inference"
    matchers = f'namespace="{NAMESPACE}", service="{SERVICE}"'

    # The dashboard: a ConfigMap Grafana's sidecar loads, whose JSON has the service's row and queries its series.
    dashboard = get(env, "configmap", DASHBOARD, "-n", NAMESPACE)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (model,) = dashboard["data"].values()
    panels = json.loads(model)["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == [SERVICE]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs and all(matchers in e for e in exprs), exprs
    assert f"sum({METRIC}{{{matchers}}})" in exprs

    # prometheus-adapter's rules serve the HPA's metric per pod, under its own name.
    rules = get(env, "configmap", ADAPTER_RULES, "-n", NAMESPACE)
    (rule,) = yaml.safe_load(rules["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith(f"{METRIC}{{"), rule
    assert rule["name"] == {"matches": "^(.*)$", "as": "${1}"}
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}

    # The HPA scales the service's Deployment on that metric.
    hpa = get(env, "hpa", SERVICE, "-n", NAMESPACE)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVICE}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 2)
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == METRIC
    assert names(env, "scaledobjects,servicemonitors") == set()

    observed.destroy()
    held = names(env, "podmonitors,configmaps,hpa")
    assert not held & {
        f"podmonitor.monitoring.coreos.com/{MONITOR}",
        f"configmap/{DASHBOARD}",
        f"configmap/{ADAPTER_RULES}",
    }
    assert not any(h.startswith("horizontalpodautoscaler") for h in held), held


# --- ServiceMonitor and KEDA -----------------------------------------------------------------------------------------


def test_keda_scales_to_zero_in_place_of_the_hpa_and_the_service_monitor_is_taken(observed: ReconfiguredStack) -> None:
    env = observed.cluster
    observed.up(stack_config(KEDA, min_replicas=0))
    pod = server_pod(env)

    # The ScaledObject scales the Deployment from zero, on the service's busy slots as its series are labelled.
    scaled = get(env, "scaledobject", SERVICE, "-n", NAMESPACE)["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVICE}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 2)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert metadata["serverAddress"] == PROMETHEUS
    assert metadata["query"] == f'sum({METRIC}{{namespace="{NAMESPACE}",service="{SERVICE}"}})'
    assert metadata["threshold"] == "2"

    # No HPA at all: KEDA would make its own from the ScaledObject, and it does not run here.
    assert names(env, "hpa") == set()
    assert names(env, "podmonitors,configmaps") == {"configmap/kube-root-ca.crt"}
    # Nothing but the API server's default sets the replicas, so KEDA's HPA would own them alone: no field
    # manager (Pulumi's) holds spec.replicas, and a next `pulumi up` would not scale the service back.
    deployment = get(env, "deployment", SERVICE, "-n", NAMESPACE, "--show-managed-fields")
    assert deployment["spec"]["replicas"] == 1
    owners = [
        m["manager"] for m in deployment["metadata"]["managedFields"] if "f:replicas" in m["fieldsV1"].get("f:spec", {})
    ]
    assert owners == [], owners

    # The ServiceMonitor selects the service's Service, by a port it has, and labels the endpoint pod's series.
    monitor = get(env, "servicemonitor", MONITOR, "-n", NAMESPACE)["spec"]
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert selected(env, "services", monitor["selector"]) == [SERVICE]
    service = get(env, "service", SERVICE, "-n", NAMESPACE)
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    labels = series_labels(endpoint["relabelings"], pod)
    assert (labels["service"], labels["namespace"]) == (SERVICE, NAMESPACE)

    observed.destroy()
    assert names(env, "scaledobjects,servicemonitors") == set()


# --- observability off ---------------------------------------------------------------------------------------------


def test_observability_off_renders_what_an_empty_observability_does() -> None:
    off = platform(stack_config(None), OFFLINE)
    empty = platform(stack_config({}), OFFLINE)
    assert manifests(off) == manifests(empty)
    assert off.monitoring == ()
    assert [m["kind"] for m in off.services[SERVICE].workloads] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
