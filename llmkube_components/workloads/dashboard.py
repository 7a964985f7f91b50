"""The Grafana dashboard of a stack's services (observability.dashboard): a row per service with the llama-server
metrics that say how it is doing, in a ConfigMap that Grafana's dashboard sidecar loads.

Built with grafana_foundation_sdk (types generated from Grafana 11.6's dashboard schema), returned as plain dicts:
no Pulumi, no network, and the same input always gives byte-identical output.

Every query reads the llamacpp:* series of the pinned llama-server (tools/server/server-task.cpp,
``server_task_result_metrics::to_metrics``), named once in LLAMACPP_SERIES, and selects one service's pods by the
labels ``namespace`` and ``service``: our PodMonitor and ServiceMonitor promote ``service`` from the pod label
inference.llmkube.dev/service, as upstream LLMKube's chart does. llama-server exports no KV-cache usage and no
time-to-first-token series; the panels that stand in for them say so in their descriptions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from ..api.stack import DASHBOARD_FOLDER_ANNOTATION, DASHBOARD_LABEL, DASHBOARD_LABEL_VALUE, ObservabilitySettings
from ..meta import object_meta, recommended_labels, sorted_by_key

Manifest = dict[str, Any]
SeriesType = Literal["counter", "gauge"]

# The series the dashboard reads, as the pinned llama-server names and types them in /metrics.
PROMPT_TOKENS: Final = "llamacpp:prompt_tokens_total"  # processed prompt tokens, cached ones excluded
PROMPT_TOKENS_CACHED: Final = "llamacpp:prompt_tokens_cached_total"  # prompt tokens reused from the KV cache
PROMPT_SECONDS: Final = "llamacpp:prompt_seconds_total"
GENERATED_TOKENS: Final = "llamacpp:tokens_predicted_total"
GENERATION_SECONDS: Final = "llamacpp:tokens_predicted_seconds_total"
# The longest sequence (prompt + generation) any slot has held since the server started: a high-water mark that
# llama-server types as a counter.
LONGEST_SEQUENCE: Final = "llamacpp:n_tokens_max"
REQUESTS_PROCESSING: Final = "llamacpp:requests_processing"
REQUESTS_DEFERRED: Final = "llamacpp:requests_deferred"
# Busy slots per llama_decode() call, averaged since the server started.
BUSY_SLOTS_PER_DECODE: Final = "llamacpp:n_busy_slots_per_decode"

LLAMACPP_SERIES: Final[Mapping[str, SeriesType]] = MappingProxyType(
    {
        PROMPT_TOKENS: "counter",
        PROMPT_TOKENS_CACHED: "counter",
        PROMPT_SECONDS: "counter",
        GENERATED_TOKENS: "counter",
        GENERATION_SECONDS: "counter",
        LONGEST_SEQUENCE: "counter",
        REQUESTS_PROCESSING: "gauge",
        REQUESTS_DEFERRED: "gauge",
        BUSY_SLOTS_PER_DECODE: "gauge",
    }
)

DATASOURCE_VARIABLE: Final = "datasource"
RATE_INTERVAL: Final = "$__rate_interval"  # Grafana's: at least four scrape intervals, so rate() never sees one sample
TAGS: Final = ("llmkube", "llama.cpp")
REFRESH: Final = "30s"
TIME_FROM: Final = "now-1h"
TIME_TO: Final = "now"
TOKENS_PER_SECOND_UNIT: Final = "suffix: tokens/s"  # Grafana's custom unit: the value, then this text

# Grafana's grid is 24 columns wide. A service's row header is one unit high; its panels, two across and then
# three across, eight units high each.
GRID_COLUMNS: Final = 24
ROW_HEIGHT: Final = 1
PANEL_HEIGHT: Final = 8
PANEL_WIDTHS: Final = (12, 12, 8, 8, 8)

UID_MAX_LENGTH: Final = 40  # Grafana refuses longer dashboard uids
LABEL_VALUE_MAX_LENGTH: Final = 63  # the ConfigMap's name is also its app.kubernetes.io/instance label
CONFIG_MAP_SUFFIX: Final = "-dashboard"
DIGEST_LENGTH: Final = 8


@dataclass(frozen=True)
class DashboardService:
    """One service's row: its name and the figures its panels are drawn against."""

    name: str  # the service's Kubernetes name, the `service` label on its series
    context_per_slot: int | None  # tokens of context one slot holds (ctx-size / parallel); None: tokens only
    generation_estimate: float | None  # the planner's decode tokens/s, a line on the tokens/s panel; None: none


# ---------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------


def _bounded(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` characters, else its head and the first hex digits of its sha256: two
    long names that share a head still differ."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:DIGEST_LENGTH]
    return f"{name[: limit - DIGEST_LENGTH - 1].rstrip('-')}-{digest}"


def dashboard_uid(namespace: str) -> str:
    """The dashboard's uid: ``llmkube-<namespace>``, shortened with a digest past Grafana's 40 characters."""
    return _bounded(f"llmkube-{namespace}", UID_MAX_LENGTH)


def config_map_name(namespace: str) -> str:
    """The dashboard ConfigMap's name: ``llmkube-<namespace>-dashboard``, at most 63 characters (a label value)."""
    return _bounded(f"llmkube-{namespace}", LABEL_VALUE_MAX_LENGTH - len(CONFIG_MAP_SUFFIX)) + CONFIG_MAP_SUFFIX


def config_map_key(namespace: str) -> str:
    """The ConfigMap's data key, which the sidecar writes as the dashboard's file name."""
    return f"llmkube-{namespace}.json"


# ---------------------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------------------


def _selector(series: str, namespace: str, service: str) -> str:
    # Kubernetes names (DNS labels) need no escaping inside a PromQL string.
    return f'{series}{{namespace="{namespace}", service="{service}"}}'


def _rate(series: str, namespace: str, service: str) -> str:
    """The service's rate of a counter, summed over its pods."""
    return f"sum(rate({_selector(series, namespace, service)}[{RATE_INTERVAL}]))"


def _datasource() -> dashboard_models.DataSourceRef:
    """The Prometheus the user picks in the datasource variable; a fresh object each time, shared by no two."""
    return dashboard_models.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")


def _target(ref_id: str, legend: str, expr: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref_id).datasource(_datasource()).expr(expr).legend_format(legend).range()


def _panel(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery]) -> timeseries.Panel:
    """A time series panel with the settings every panel shares: the datasource variable, lightly filled lines
    from zero, a legend list under it and a tooltip with every series."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource())
        .unit(unit)
        .min(0)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.NONE)
        )
    )
    for target in targets:
        panel.with_target(target)
    return panel


# ---------------------------------------------------------------------------------------------------------
# The panels of a service's row, in their order on the grid
# ---------------------------------------------------------------------------------------------------------


def tokens_panel(namespace: str, service: DashboardService) -> timeseries.Panel:
    """Generated, prompt and cached prompt tokens per second; the planner's decode estimate as a dashed line."""
    description = (
        "Tokens per second over the service's pods: generated (decode), prompt tokens processed (prefill, "
        "cached ones excluded) and prompt tokens reused from the KV cache."
    )
    estimate = service.generation_estimate
    if estimate is not None:
        description += (
            f" The dashed line is the planner's decode estimate for one request, {estimate:.1f} tokens/s: the "
            "generated line sums every slot and pod, so it passes the line when requests run side by side."
        )
    panel = _panel(
        "Tokens per second",
        description,
        TOKENS_PER_SECOND_UNIT,
        [
            _target("A", "generated", _rate(GENERATED_TOKENS, namespace, service.name)),
            _target("B", "prompt", _rate(PROMPT_TOKENS, namespace, service.name)),
            _target("C", "prompt (cached)", _rate(PROMPT_TOKENS_CACHED, namespace, service.name)),
        ],
    )
    if estimate is not None:
        steps = [dashboard_models.Threshold(None, "transparent"), dashboard_models.Threshold(estimate, "orange")]
        panel.thresholds(
            dashboard_builders.ThresholdsConfig().mode(dashboard_models.ThresholdsMode.ABSOLUTE).steps(steps)
        ).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED)
        )
    return panel


def requests_panel(namespace: str, service: DashboardService) -> timeseries.Panel:
    """Requests being processed and requests waiting for a slot."""
    return _panel(
        "Requests",
        "Requests being processed (busy slots) and deferred (waiting for a free slot), summed over the service's "
        "pods. Deferred requests mean every slot is busy.",
        "short",
        [
            _target("A", "processing", f"sum({_selector(REQUESTS_PROCESSING, namespace, service.name)})"),
            _target("B", "deferred", f"sum({_selector(REQUESTS_DEFERRED, namespace, service.name)})"),
        ],
    )


def context_panel(namespace: str, service: DashboardService) -> timeseries.Panel:
    """The longest sequence a slot has held, as a share of one slot's context when that is known."""
    longest = f"max({_selector(LONGEST_SEQUENCE, namespace, service.name)})"
    caveat = (
        "llama.cpp exposes no KV-cache usage series, so this high-water mark (it only grows until a pod restarts) "
        "is the closest measure."
    )
    if service.context_per_slot is None:
        return _panel(
            "Longest sequence",
            f"The longest sequence (prompt + generation) a slot of the service's pods has held, in tokens. {caveat}",
            "short",
            [_target("A", "longest sequence", longest)],
        )
    return _panel(
        "Context use",
        "The longest sequence (prompt + generation) a slot of the service's pods has held, as a share of one "
        f"slot's context ({service.context_per_slot} tokens: ctx-size / parallel). {caveat} Near 100%, "
        "requests reach the end of their slot's context.",
        "percentunit",
        [_target("A", "longest sequence / slot context", f"{longest} / {service.context_per_slot}")],
    ).max(1)


def latency_panel(namespace: str, service: DashboardService) -> timeseries.Panel:
    """Prefill seconds per 1000 prompt tokens and decode seconds per generated token."""
    name = service.name
    prompt = f"1000 * {_rate(PROMPT_SECONDS, namespace, name)} / {_rate(PROMPT_TOKENS, namespace, name)}"
    generation = f"{_rate(GENERATION_SECONDS, namespace, name)} / {_rate(GENERATED_TOKENS, namespace, name)}"
    return _panel(
        "Prompt and generation time",
        "Seconds of prefill per 1000 prompt tokens and seconds of decode per generated token, over the service's "
        "pods. llama.cpp exposes no time-to-first-token series: a request's time to first token is about its "
        "uncached prompt tokens / 1000 x the prompt line, plus one generated token.",
        "s",
        [_target("A", "prompt, per 1K tokens", prompt), _target("B", "generation, per token", generation)],
    )


def batching_panel(namespace: str, service: DashboardService) -> timeseries.Panel:
    """Busy slots per decode call: how much the parallel slots batch."""
    return _panel(
        "Busy slots per decode",
        "Busy slots per llama_decode() call, averaged since each pod started and over the service's pods: how "
        "many requests a decode step serves at once (1: one at a time).",
        "short",
        [_target("A", "busy slots per decode", f"avg({_selector(BUSY_SLOTS_PER_DECODE, namespace, service.name)})")],
    )


PANELS: Final = (tokens_panel, requests_panel, context_panel, latency_panel, batching_panel)


# ---------------------------------------------------------------------------------------------------------
# The dashboard and its ConfigMap
# ---------------------------------------------------------------------------------------------------------


def _positions(top: int) -> list[dashboard_models.GridPos]:
    """The grid positions of a row's panels below ``top``: left to right, a new line when one is full."""
    positions = []
    x, y = 0, top
    for width in PANEL_WIDTHS:
        if x + width > GRID_COLUMNS:
            x, y = 0, y + PANEL_HEIGHT
        positions.append(dashboard_models.GridPos(h=PANEL_HEIGHT, w=width, x=x, y=y))
        x += width
    return positions


def dashboard(namespace: str, services: Sequence[DashboardService]) -> dict[str, Any]:
    """The Grafana dashboard JSON model: a Prometheus datasource variable and one expanded row per service,
    sorted by name. Panel ids count up from 1 in grid order."""
    names = [service.name for service in services]
    if len(set(names)) != len(names):
        raise ValueError(f"dashboard of namespace {namespace}: service names repeat: {sorted(names)}")
    builder = (
        dashboard_builders.Dashboard(f"llmkube: {namespace}")
        .uid(dashboard_uid(namespace))
        .description(f"llama-server metrics of the llmkube services in namespace {namespace}.")
        .tags(list(TAGS))
        .refresh(REFRESH)
        .time(TIME_FROM, TIME_TO)
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard_builders.DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus")
        )
    )
    panel_id, top = 0, 0
    for service in sorted(services, key=lambda s: s.name):
        panel_id += 1
        row_pos = dashboard_models.GridPos(h=ROW_HEIGHT, w=GRID_COLUMNS, x=0, y=top)
        builder.with_row(dashboard_builders.Row(service.name).id(panel_id).collapsed(False).grid_pos(row_pos))
        positions = _positions(top + ROW_HEIGHT)
        for make, position in zip(PANELS, positions, strict=True):
            panel_id += 1
            builder.with_panel(make(namespace, service).id(panel_id).grid_pos(position))
        top = max(pos.y + pos.h for pos in positions)
    model = builder.build()
    if model.panels is None:  # no services: an empty dashboard still lists its (no) panels
        model.panels = []
    loaded: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True))
    return loaded


def dashboard_config_map(
    namespace: str, services: Sequence[DashboardService], settings: ObservabilitySettings
) -> Manifest:
    """The ConfigMap that Grafana's dashboard sidecar loads (label grafana_dashboard: "1"), in
    observability.dashboardNamespace or the stack's namespace, in dashboardFolder's folder when that is set."""
    name = config_map_name(namespace)
    labels = sorted_by_key({**recommended_labels("llmkube", "dashboard", name), DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE})
    folder = settings.dashboard_folder
    annotations = {DASHBOARD_FOLDER_ANNOTATION: folder} if folder else None
    model = json.dumps(dashboard(namespace, services), sort_keys=True, indent=2)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(name, settings.dashboard_namespace or namespace, labels, annotations),
        "data": {config_map_key(namespace): model},
    }
