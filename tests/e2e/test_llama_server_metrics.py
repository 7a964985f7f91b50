"""The real llama-server's /metrics against what the dashboard and the autoscaler read (issue 16).

The server runs on the arguments our builder renders for a default service (they end in --metrics), with only
--model, --port and --host pointed at this machine, and answers one completion. Its /metrics must then export every
series of LLAMACPP_SERIES with the type the table gives, every series a dashboard query selects, and the
autoscaler's default metric as a gauge, and the token counters must have counted the completion. Missing server:
a failure in CI, a skip elsewhere (tests/e2e/required.py).
"""

from __future__ import annotations

import json
import re

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmkube_components.api.model import ModelSpec
from llmkube_components.api.service import DEFAULT_AUTOSCALING_METRIC, InferenceServiceSpec
from llmkube_components.llamacpp import build_args
from llmkube_components.workloads.dashboard import (
    GENERATED_TOKENS,
    LLAMACPP_SERIES,
    PROMPT_TOKENS,
    DashboardService,
    dashboard,
)
from testkit import gguf_files
from testkit.llama_server import LlamaServer, free_port, localize, require_server

pytestmark = pytest.mark.e2e

SERVER = require_server()

MODEL_PATH = "/models/m.gguf"  # what the builder renders; replaced by the generated file
PROMPT = "Hello world, this is a prompt"
GENERATE = 8
# A sample line of the text format: name, optional labels, value.
SAMPLE_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})? (\S+)")


def exported(text: str) -> dict[str, tuple[str, float]]:
    """Series name -> (type, value), with the names exactly as the server writes them.

    prometheus_client parses the text and gives the types, but turns counters into OpenMetrics form (family
    llamacpp:prompt_tokens, samples llamacpp:n_tokens_max_total): Prometheus stores the names as written, so
    those are read from the sample lines and their family looked up by either form.
    """
    families = {family.name: family for family in text_string_to_metric_families(text)}
    out: dict[str, tuple[str, float]] = {}
    for line in text.splitlines():
        match = SAMPLE_LINE.match(line)
        if line.startswith("#") or match is None:
            continue
        name, value = match[1], float(match[2])
        family = families.get(name) or families[name.removesuffix("_total")]
        assert name not in out, f"{name} exported twice"
        out[name] = (family.type, value)
    return out


def query_series(expr: str) -> set[str]:
    """The series names of every vector selector of a dashboard query."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or "")

    promql_parser.walk(promql_parser.parse(expr.replace("$__rate_interval", "2m")), visit)
    return names


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, float]]:
    folder = tmp_path_factory.mktemp("metrics")
    model = gguf_files.write_dense(folder / "m.gguf", weight_type="F16")  # F16: see test_llama_server.py
    spec = InferenceServiceSpec.model_validate({"modelRef": "m"})
    rendered = build_args(spec, ModelSpec.model_validate({"source": "https://example.com/m.gguf"}), MODEL_PATH, 0)
    assert rendered[-1] == "--metrics", rendered
    with LlamaServer(SERVER, localize(rendered, model, free_port()), folder / "llama-server.log") as srv:
        # ignore_eos: the generated model's EOS must not end the completion before it has generated anything.
        body = {"prompt": PROMPT, "n_predict": GENERATE, "ignore_eos": True}
        status, answer = srv.post("/completion", body)
        assert status == 200, answer
        assert json.loads(answer)["tokens_predicted"] == GENERATE
        status, text = srv.get("/metrics")
        assert status == 200, text
    print("llama-server /metrics:\n" + text)
    return exported(text)


def test_every_series_of_the_table_is_exported_with_its_type(metrics: dict[str, tuple[str, float]]) -> None:
    types = {name: metrics[name][0] for name in LLAMACPP_SERIES if name in metrics}
    assert types == dict(LLAMACPP_SERIES), sorted(metrics)


def test_every_dashboard_query_selects_exported_series(metrics: dict[str, tuple[str, float]]) -> None:
    model = dashboard("ns", [DashboardService("svc", 4096, 20.0)])
    queries = [target["expr"] for panel in model["panels"] for target in panel.get("targets", [])]
    assert len(queries) == 9
    selected = set().union(*(query_series(expr) for expr in queries))
    assert selected and selected <= set(metrics), selected - set(metrics)


def test_the_autoscalers_default_metric_is_an_exported_gauge(metrics: dict[str, tuple[str, float]]) -> None:
    assert metrics[DEFAULT_AUTOSCALING_METRIC][0] == "gauge"
    assert metrics[DEFAULT_AUTOSCALING_METRIC][1] == 0  # the completion has finished


def test_the_completion_was_counted(metrics: dict[str, tuple[str, float]]) -> None:
    assert metrics[GENERATED_TOKENS][1] == GENERATE
    assert metrics[PROMPT_TOKENS][1] > 0
