"""The Grafana dashboard builder (workloads.dashboard): schema validity, its PromQL, its layout, its ConfigMap."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import timeseries as timeseries_models
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

from llmkube_components.api.stack import ObservabilitySettings
from llmkube_components.workloads.dashboard import (
    LLAMACPP_SERIES,
    DashboardService,
    config_map_name,
    dashboard,
    dashboard_config_map,
    dashboard_uid,
)

# The panel types' and Prometheus queries' own models: without them the SDK decodes options and targets as
# untyped bags, and the round trip would prove nothing about them.
register_default_plugins()

K8S_VERSION = kubernetes_validate.latest_version()
NS = "ns"
CHAT = DashboardService("chat", 4096, 20.0)
EMBED = DashboardService("embed", None, None)
PANEL_TITLES = ["Tokens per second", "Requests", "Context use", "Prompt and generation time", "Busy slots per decode"]
# Grafana's own variable: the tests put a duration in its place, as Grafana does before it sends a query.
RATE_INTERVAL = "$__rate_interval"


def encoded(obj: Any) -> str:
    return json.dumps(obj, cls=JSONEncoder, sort_keys=True)


def rows(model: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels under it (the panels after a row, up to the next one, belong to it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in model["panels"]:
        if panel["type"] == "row":
            current = out.setdefault(panel["title"], [])
        else:
            current.append(panel)
    return out


def panel(model: dict[str, Any], service: str, title: str) -> dict[str, Any]:
    [found] = [p for p in rows(model)[service] if p["title"] == title]
    return found


def exprs(p: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in p["targets"]]


def selectors(expr: str) -> tuple[list[promql_parser.VectorSelector], list[str]]:
    """Every vector selector of ``expr``, and the series names of those inside a range (a rate's argument)."""
    found: list[promql_parser.VectorSelector] = []
    ranged: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            ranged.append(node.vector_selector.name or "")

    promql_parser.walk(promql_parser.parse(expr.replace(RATE_INTERVAL, "2m")), visit)
    return found, ranged


def overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    across = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
    return across and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


CASES = {
    "one": [CHAT],
    "two": [EMBED, CHAT],
    "none": [],
}


# --- schema ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("services", CASES.values(), ids=CASES.keys())
def test_the_model_round_trips_through_grafanas_schema_types(services: list[DashboardService]) -> None:
    model = dashboard(NS, services)
    assert encoded(Dashboard.from_json(model)) == encoded(model)
    for p in model["panels"]:
        kind = RowPanel if p["type"] == "row" else Panel
        assert encoded(kind.from_json(p)) == encoded(p), p["title"]


def test_panels_decode_as_typed_time_series_and_prometheus_queries() -> None:
    decoded = Dashboard.from_json(dashboard(NS, [CHAT]))
    assert decoded.panels is not None
    panels = [p for p in decoded.panels if isinstance(p, Panel)]
    assert len(panels) == 5
    for p in panels:
        assert p.type_val == "timeseries"
        assert isinstance(p.options, timeseries_models.Options)
        assert p.targets and all(isinstance(t, prometheus_models.Dataquery) for t in p.targets)


@pytest.mark.parametrize("services", CASES.values(), ids=CASES.keys())
def test_the_fields_grafana_requires(services: list[DashboardService]) -> None:
    model = dashboard(NS, services)
    assert model["uid"] == "llmkube-ns"
    assert model["title"] == "llmkube: ns"
    assert model["schemaVersion"] == 41  # Grafana 11.6's
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)) == 6 * len(services)
    assert ids == list(range(1, len(ids) + 1))
    positions = [p["gridPos"] for p in model["panels"]]
    for pos in positions:
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1
        assert pos["x"] + pos["w"] <= 24
    for i, a in enumerate(positions):
        for b in positions[i + 1 :]:
            assert not overlap(a, b), (a, b)


def test_dashboard_settings() -> None:
    model = dashboard(NS, [CHAT])
    assert model["tags"] == ["llmkube", "llama.cpp"]
    assert model["refresh"] == "30s"
    assert model["time"] == {"from": "now-1h", "to": "now"}
    [variable] = model["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    model = dashboard(NS, [CHAT, EMBED])
    source = {"type": "prometheus", "uid": "${datasource}"}
    queried = [p for p in model["panels"] if p["type"] != "row"]
    assert len(queried) == 10
    for p in queried:
        assert p["datasource"] == source
        assert p["targets"] and all(t["datasource"] == source for t in p["targets"])


# --- layout ----------------------------------------------------------------------------------------------------


def test_a_row_per_service_sorted_by_name_with_its_five_panels() -> None:
    model = dashboard(NS, [DashboardService("zeta", 2048, None), CHAT, EMBED])
    by_row = rows(model)
    assert list(by_row) == ["chat", "embed", "zeta"]
    for service, panels in by_row.items():
        titles = [p["title"] for p in panels]
        expected = PANEL_TITLES if service != "embed" else [*PANEL_TITLES[:2], "Longest sequence", *PANEL_TITLES[3:]]
        assert titles == expected, service
    row_positions = [p["gridPos"] for p in model["panels"] if p["type"] == "row"]
    assert row_positions == [{"h": 1, "w": 24, "x": 0, "y": y} for y in (0, 17, 34)]
    assert all(p["collapsed"] is False and p["panels"] == [] for p in model["panels"] if p["type"] == "row")
    assert [p["gridPos"] for p in by_row["embed"]] == [
        {"h": 8, "w": 12, "x": 0, "y": 18},
        {"h": 8, "w": 12, "x": 12, "y": 18},
        {"h": 8, "w": 8, "x": 0, "y": 26},
        {"h": 8, "w": 8, "x": 8, "y": 26},
        {"h": 8, "w": 8, "x": 16, "y": 26},
    ]


def test_repeated_service_names_are_refused() -> None:
    with pytest.raises(ValueError, match="service names repeat"):
        dashboard(NS, [CHAT, DashboardService("chat", None, None)])


# --- queries ---------------------------------------------------------------------------------------------------------


def sel(series: str, service: str = "chat") -> str:
    return f'{series}{{namespace="ns", service="{service}"}}'


def rate(series: str, service: str = "chat") -> str:
    return f"sum(rate({sel(series, service)}[$__rate_interval]))"


# fmt: off
EXPECTED_EXPRS = {
    "Tokens per second": [
        rate("llamacpp:tokens_predicted_total"),
        rate("llamacpp:prompt_tokens_total"),
        rate("llamacpp:prompt_tokens_cached_total"),
    ],
    "Requests": [f"sum({sel('llamacpp:requests_processing')})", f"sum({sel('llamacpp:requests_deferred')})"],
    "Context use": [f"max({sel('llamacpp:n_tokens_max')}) / 4096"],
    "Prompt and generation time": [
        f"1000 * {rate('llamacpp:prompt_seconds_total')} / {rate('llamacpp:prompt_tokens_total')}",
        f"{rate('llamacpp:tokens_predicted_seconds_total')} / {rate('llamacpp:tokens_predicted_total')}",
    ],
    "Busy slots per decode": [f"avg({sel('llamacpp:n_busy_slots_per_decode')})"],
}
# fmt: on


@pytest.mark.parametrize("title", list(EXPECTED_EXPRS))
def test_the_queries_of_each_panel(title: str) -> None:
    assert exprs(panel(dashboard(NS, [CHAT]), "chat", title)) == EXPECTED_EXPRS[title]


def test_every_query_parses_and_selects_its_rows_service_by_namespace_and_service() -> None:
    model = dashboard("prod", [CHAT, EMBED, DashboardService("rerank", 512, 3.5)])
    used: set[str] = set()
    for service, panels in rows(model).items():
        for p in panels:
            for expr in exprs(p):
                found, ranged = selectors(expr)
                assert found, expr
                for selector in found:
                    assert selector.name in LLAMACPP_SERIES, expr
                    matchers = selector.matchers.matchers
                    assert sorted((m.name, m.value) for m in matchers) == [("namespace", "prod"), ("service", service)]
                    assert all(m.op == promql_parser.MatchOp.Equal for m in matchers), expr
                    assert selector.matchers.or_matchers == []
                    used.add(selector.name or "")
                # rate() only over counters: a gauge's rate means nothing.
                assert all(LLAMACPP_SERIES[name] == "counter" for name in ranged), expr
    assert used == set(LLAMACPP_SERIES)  # the table names exactly what the dashboard reads


def test_the_series_table_as_the_pinned_server_types_it() -> None:
    assert dict(LLAMACPP_SERIES) == {
        "llamacpp:prompt_tokens_total": "counter",
        "llamacpp:prompt_tokens_cached_total": "counter",
        "llamacpp:prompt_seconds_total": "counter",
        "llamacpp:tokens_predicted_total": "counter",
        "llamacpp:tokens_predicted_seconds_total": "counter",
        "llamacpp:n_tokens_max": "counter",  # a high-water mark, but typed counter
        "llamacpp:requests_processing": "gauge",
        "llamacpp:requests_deferred": "gauge",
        "llamacpp:n_busy_slots_per_decode": "gauge",
    }
    with pytest.raises(TypeError):
        LLAMACPP_SERIES["llamacpp:other"] = "gauge"  # type: ignore[index]


# --- what the panels say ------------------------------------------------------------------------------------------


def test_the_planners_estimate_is_a_dashed_line_only_when_given() -> None:
    model = dashboard(NS, [CHAT, EMBED])
    with_line = panel(model, "chat", "Tokens per second")
    defaults = with_line["fieldConfig"]["defaults"]
    assert defaults["thresholds"] == {
        "mode": "absolute",
        "steps": [{"color": "transparent", "value": None}, {"color": "orange", "value": 20.0}],
    }
    assert defaults["custom"]["thresholdsStyle"] == {"mode": "dashed"}
    assert defaults["unit"] == "suffix: tokens/s"
    assert "the planner's decode estimate for one request, 20.0 tokens/s" in with_line["description"]
    without = panel(model, "embed", "Tokens per second")["fieldConfig"]["defaults"]
    assert "thresholds" not in without and "thresholdsStyle" not in without["custom"]
    assert "estimate" not in panel(model, "embed", "Tokens per second")["description"]


def test_context_use_is_a_share_of_one_slots_context_when_known() -> None:
    model = dashboard(NS, [CHAT, EMBED])
    share = panel(model, "chat", "Context use")
    assert share["fieldConfig"]["defaults"] | {"custom": None} == {
        "unit": "percentunit", "min": 0, "max": 1, "custom": None,
    }  # fmt: skip
    assert "(4096 tokens: ctx-size / parallel)" in share["description"]
    assert "llama.cpp exposes no KV-cache usage series" in share["description"]
    tokens = panel(model, "embed", "Longest sequence")
    assert exprs(tokens) == [f"max({sel('llamacpp:n_tokens_max', 'embed')})"]
    assert tokens["fieldConfig"]["defaults"]["unit"] == "short"
    assert "max" not in tokens["fieldConfig"]["defaults"]
    assert "llama.cpp exposes no KV-cache usage series" in tokens["description"]


def test_the_time_panel_explains_time_to_first_token() -> None:
    p = panel(dashboard(NS, [CHAT]), "chat", "Prompt and generation time")
    assert p["fieldConfig"]["defaults"]["unit"] == "s"
    assert "llama.cpp exposes no time-to-first-token series" in p["description"]
    assert "uncached prompt tokens / 1000 x the prompt line" in p["description"]
    assert [t["legendFormat"] for t in p["targets"]] == ["prompt, per 1K tokens", "generation, per token"]


# --- names -----------------------------------------------------------------------------------------------------------


def test_long_namespaces_get_bounded_distinct_names() -> None:
    a, b = "a" * 60 + "-one", "a" * 60 + "-two"
    assert dashboard_uid("llmkube") == "llmkube-llmkube"
    assert dashboard_uid("n" * 32) == "llmkube-" + "n" * 32  # exactly 40: kept
    assert len(dashboard_uid("n" * 33)) == 40
    assert len(dashboard_uid(a)) == 40 and dashboard_uid(a) != dashboard_uid(b)
    assert dashboard_uid(a).startswith("llmkube-aaaa")
    assert config_map_name("llmkube") == "llmkube-llmkube-dashboard"
    assert len(config_map_name(a)) == 63 and config_map_name(a).endswith("-dashboard")
    assert config_map_name(a) != config_map_name(b)
    assert dashboard(a, [CHAT])["uid"] == dashboard_uid(a)


# --- the ConfigMap ---------------------------------------------------------------------------------------------------


def test_the_config_map() -> None:
    settings = ObservabilitySettings.model_validate({"dashboard": True})
    manifest = dashboard_config_map(NS, [CHAT], settings)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "ConfigMap"
    assert manifest["metadata"] == {
        "name": "llmkube-ns-dashboard",
        "namespace": "ns",
        "labels": {
            "app.kubernetes.io/component": "dashboard",
            "app.kubernetes.io/instance": "llmkube-ns-dashboard",
            "app.kubernetes.io/managed-by": "pulumi",
            "app.kubernetes.io/name": "llmkube",
            "app.kubernetes.io/part-of": "llmkube",
            "grafana_dashboard": "1",
        },
    }
    assert list(manifest["data"]) == ["llmkube-ns.json"]
    text = manifest["data"]["llmkube-ns.json"]
    assert text == json.dumps(dashboard(NS, [CHAT]), sort_keys=True, indent=2)
    assert json.loads(text)["uid"] == "llmkube-ns"


def test_the_config_maps_namespace_and_folder() -> None:
    settings = ObservabilitySettings.model_validate(
        {"dashboard": True, "dashboardNamespace": "monitoring", "dashboardFolder": "LLM serving"}
    )
    manifest = dashboard_config_map(NS, [CHAT], settings)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    assert manifest["metadata"]["namespace"] == "monitoring"
    assert manifest["metadata"]["name"] == "llmkube-ns-dashboard"  # named after the stack's namespace
    assert manifest["metadata"]["annotations"] == {"grafana_folder": "LLM serving"}
    assert "annotations" not in dashboard_config_map(NS, [CHAT], ObservabilitySettings())["metadata"]


# --- determinism -------------------------------------------------------------------------------------------------


def test_the_same_input_gives_byte_identical_output() -> None:
    settings = ObservabilitySettings.model_validate({"dashboard": True, "dashboardFolder": "f"})
    first = dashboard_config_map(NS, [CHAT, EMBED], settings)
    second = dashboard_config_map(NS, [EMBED, CHAT], settings)  # the order given does not matter
    assert first == second
    assert json.dumps(first, sort_keys=True).encode() == json.dumps(second, sort_keys=True).encode()
    assert dashboard(NS, [CHAT, EMBED]) == dashboard(NS, [EMBED, CHAT])
    assert encoded(dashboard(NS, [CHAT])) == encoded(dashboard(NS, [CHAT]))
    assert dashboard(NS, [CHAT]) != dashboard(NS, [DashboardService("chat", 4096, 21.0)])
