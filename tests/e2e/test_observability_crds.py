"""The Prometheus Operator's and KEDA's own CRDs, from their Go modules (tools/setup-crds), hold the fields the
observability builders render: PodMonitor and ServiceMonitor (monitoring.coreos.com/v1) for the metrics
scrape, ScaledObject (keda.sh/v1alpha1) for autoscaling, with the constraints the API server will enforce on
them (minimums, enums, required fields, the interval pattern).

Nothing here needs the cluster: it reads the CRD files that the cluster tests install.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.required import required
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e


def crd_folder() -> Path:
    result = subprocess.run([ROOT / "tools" / "setup-crds", "--installed"], capture_output=True, text=True)
    folder = result.stdout.strip() if result.returncode == 0 else None
    return Path(required(folder, "the CRDs of other projects are not fetched (tools/setup runs tools/setup-crds)"))


CRDS = crd_folder()
PODMONITOR = "podmonitors.monitoring.coreos.com"
SERVICEMONITOR = "servicemonitors.monitoring.coreos.com"
SCALEDOBJECT = "scaledobjects.keda.sh"
VERSIONS = {PODMONITOR: "v1", SERVICEMONITOR: "v1", SCALEDOBJECT: "v1alpha1"}


@functools.cache
def crd(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
    return loaded


def schema(name: str) -> dict[str, Any]:
    """The openAPIV3Schema of the version we render."""
    (version,) = [v for v in crd(name)["spec"]["versions"] if v["name"] == VERSIONS[name]]
    found: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return found


def field(name: str, path: str) -> dict[str, Any]:
    """The schema of ``path`` (``spec.endpoints[].port``: ``[]`` steps into an array's items) in CRD ``name``."""
    node = schema(name)
    for step in path.split("."):
        key, items = step.removesuffix("[]"), step.endswith("[]")
        assert key in node.get("properties", {}), f"{name} has no {path} (stopped at {key})"
        node = node["properties"][key]
        if items:
            assert node["type"] == "array", f"{name} {path}: {key} is not an array"
            node = node["items"]
    return node


@pytest.mark.parametrize(
    ("name", "group", "kind", "version"),
    [
        (PODMONITOR, "monitoring.coreos.com", "PodMonitor", "v1"),
        (SERVICEMONITOR, "monitoring.coreos.com", "ServiceMonitor", "v1"),
        (SCALEDOBJECT, "keda.sh", "ScaledObject", "v1alpha1"),
    ],
)
def test_the_crd_serves_the_group_kind_and_version_we_render(name: str, group: str, kind: str, version: str) -> None:
    definition = crd(name)
    assert definition["kind"] == "CustomResourceDefinition"
    assert definition["metadata"]["name"] == name
    assert definition["spec"]["group"] == group
    assert definition["spec"]["names"]["kind"] == kind
    assert definition["spec"]["scope"] == "Namespaced"
    served = {v["name"] for v in definition["spec"]["versions"] if v["served"]}
    assert version in served


@pytest.mark.parametrize(
    ("name", "path"),
    [
        (PODMONITOR, "spec.selector.matchLabels"),
        (PODMONITOR, "spec.namespaceSelector.matchNames"),
        (PODMONITOR, "spec.podMetricsEndpoints[].port"),
        (PODMONITOR, "spec.podMetricsEndpoints[].path"),
        (PODMONITOR, "spec.podMetricsEndpoints[].interval"),
        (PODMONITOR, "spec.podMetricsEndpoints[].relabelings[].sourceLabels"),
        (PODMONITOR, "spec.podMetricsEndpoints[].relabelings[].targetLabel"),
        (PODMONITOR, "spec.podMetricsEndpoints[].relabelings[].action"),
        (SERVICEMONITOR, "spec.selector.matchLabels"),
        (SERVICEMONITOR, "spec.namespaceSelector.matchNames"),
        (SERVICEMONITOR, "spec.endpoints[].port"),
        (SERVICEMONITOR, "spec.endpoints[].path"),
        (SERVICEMONITOR, "spec.endpoints[].interval"),
        (SERVICEMONITOR, "spec.endpoints[].scheme"),
        (SERVICEMONITOR, "spec.endpoints[].tlsConfig.insecureSkipVerify"),
        (SERVICEMONITOR, "spec.endpoints[].tlsConfig.serverName"),
        (SERVICEMONITOR, "spec.endpoints[].tlsConfig.ca"),
        (SERVICEMONITOR, "spec.endpoints[].authorization.type"),
        (SERVICEMONITOR, "spec.endpoints[].authorization.credentials.name"),
        (SERVICEMONITOR, "spec.endpoints[].authorization.credentials.key"),
        (SERVICEMONITOR, "spec.endpoints[].relabelings[].sourceLabels"),
        (SERVICEMONITOR, "spec.endpoints[].relabelings[].targetLabel"),
        (SCALEDOBJECT, "spec.scaleTargetRef.apiVersion"),
        (SCALEDOBJECT, "spec.scaleTargetRef.kind"),
        (SCALEDOBJECT, "spec.scaleTargetRef.name"),
        (SCALEDOBJECT, "spec.minReplicaCount"),
        (SCALEDOBJECT, "spec.maxReplicaCount"),
        (SCALEDOBJECT, "spec.pollingInterval"),
        (SCALEDOBJECT, "spec.cooldownPeriod"),
        (SCALEDOBJECT, "spec.triggers[].type"),
        (SCALEDOBJECT, "spec.triggers[].metadata"),
        (SCALEDOBJECT, "spec.triggers[].metricType"),
    ],
)
def test_the_schema_has_the_field_our_builders_render(name: str, path: str) -> None:
    assert field(name, path)


@pytest.mark.parametrize("name", [PODMONITOR, SERVICEMONITOR])
def test_monitors_take_lowercase_schemes_and_go_durations(name: str) -> None:
    endpoints = "spec.podMetricsEndpoints[]" if name == PODMONITOR else "spec.endpoints[]"
    assert field(name, f"{endpoints}.port")["type"] == "string"  # a port name, not a number
    assert field(name, f"{endpoints}.scheme")["enum"] == ["http", "https"]
    interval = re.compile(field(name, f"{endpoints}.interval")["pattern"])
    for accepted in ("15s", "1m", "1m30s", "500ms"):
        assert interval.fullmatch(accepted), accepted
    for refused in ("15", "1.5m", "15 s"):
        assert not interval.fullmatch(refused), refused
    assert "selector" in schema(name)["properties"]["spec"]["required"]


def test_service_monitor_authorization_reads_a_secret_and_bearer_token_file_is_deprecated() -> None:
    credentials = field(SERVICEMONITOR, "spec.endpoints[].authorization.credentials")
    assert credentials["required"] == ["key"]
    # v0.85 still has bearerTokenFile on ServiceMonitor endpoints (not on PodMonitor's), but deprecated.
    endpoint = field(SERVICEMONITOR, "spec.endpoints[]")["properties"]
    if "bearerTokenFile" in endpoint:
        assert "Deprecated: use `authorization` instead." in endpoint["bearerTokenFile"]["description"]
    assert "bearerTokenFile" not in field(PODMONITOR, "spec.podMetricsEndpoints[]")["properties"]


def test_scaled_object_bounds_its_replica_counts_and_intervals() -> None:
    spec = schema(SCALEDOBJECT)["properties"]["spec"]
    assert spec["required"] == ["scaleTargetRef", "triggers"]
    counts = ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod")
    bounds = {key: (spec["properties"][key]["type"], spec["properties"][key]["minimum"]) for key in counts}
    assert bounds["minReplicaCount"] == ("integer", 0)  # scale to zero is allowed
    assert bounds["maxReplicaCount"] == ("integer", 1)
    assert bounds["pollingInterval"] == ("integer", 1)
    assert bounds["cooldownPeriod"] == ("integer", 0)
    # The API server refuses minReplicaCount > maxReplicaCount (a CEL rule on spec).
    rules = [rule["rule"] for rule in spec.get("x-kubernetes-validations", [])]
    assert any("self.minReplicaCount <= " in rule for rule in rules)
    assert field(SCALEDOBJECT, "spec.scaleTargetRef")["required"] == ["name"]


def test_scaled_object_triggers_take_string_metadata_and_a_metric_type() -> None:
    triggers = field(SCALEDOBJECT, "spec.triggers")
    assert triggers["minItems"] == 1
    trigger = triggers["items"]
    assert sorted(trigger["required"]) == ["metadata", "type"]
    # Every metadata value is a string: a threshold is rendered as "5", not 5.
    assert field(SCALEDOBJECT, "spec.triggers[].metadata")["additionalProperties"] == {"type": "string"}
    metric_type = field(SCALEDOBJECT, "spec.triggers[].metricType")
    assert metric_type["type"] == "string"
    # The schema has no enum (KEDA checks the value itself): the builders must keep to these three.
    assert set(metric_type.get("enum", ["Value", "AverageValue", "Utilization"])) <= {
        "Value",
        "AverageValue",
        "Utilization",
    }
    for value in ("Value", "AverageValue", "Utilization"):
        assert value in metric_type["description"]
