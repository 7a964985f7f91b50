"""The orchestrator: each stage runs once, builders once per service, for Platform and standalone components
alike; settings come from the edge."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmkube_components import llamacpp, pipeline, workloads
from llmkube_components.errors import ConfigError
from llmkube_components.planner import plan, stack
from llmkube_components.settings import Settings
from llmkube_components.workloads import objects
from tests.pulumi_program import RecordingMocks, stack_config
from tests.test_components import run

TWO_SERVICES = {
    **stack_config("dev"),
    "llmkube:services": {
        "chat": {"modelRef": "llama32-1b", "contextSize": 4096},
        "code": {"modelRef": "llama32-1b", "contextSize": 8192, "autoscaling": {"maxReplicas": 2}},
    },
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts of every builder and planner entry point, as the pipeline reaches them."""
    counts: Counter[str] = Counter()

    def count(module: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    count(workloads, "service_workloads")  # as the pipeline calls it
    count(workloads, "namespace_manifests")
    for name in ("deployment", "service_manifest", "hpa", "build_args"):  # as service_workloads calls them
        count(objects, name)
    count(llamacpp, "build_args")
    count(stack, "plan_service")
    count(stack, "model_facts")
    count(plan, "server_settings")
    return counts


@pytest.mark.parametrize("delivery", ["direct", "operator"])
def test_each_builder_runs_once_per_service(calls: Counter[str], delivery: str) -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert set(platform.services) == {"chat", "code"}

    run({**TWO_SERVICES, "llmkube:delivery": delivery}, check)
    assert calls["service_workloads"] == calls["deployment"] == calls["service_manifest"] == 2
    assert calls["hpa"] == 2  # one of them autoscaled: built once, None for the other
    assert calls["build_args"] == 2  # the Deployment's arguments are the serverArgs output, not built again
    assert calls["namespace_manifests"] == 1
    assert calls["plan_service"] == 2  # one plan per service
    assert calls["model_facts"] == 1  # one model, its facts read once


def test_the_planner_reads_the_flag_table_not_rendered_arguments(calls: Counter[str]) -> None:
    pipeline.load({k.removeprefix("llmkube:"): v for k, v in TWO_SERVICES.items() if k.startswith("llmkube:")},
                  Settings(offline=True))  # fmt: skip
    assert calls["server_settings"] > 0
    assert calls["build_args"] == 0  # planning renders no command line
    assert calls["deployment"] == 0


def test_a_standalone_service_gets_the_same_checks() -> None:
    from llmkube_components import InferenceService, Model

    def user_program() -> Any:
        model = Model("tiny", {"spec": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf"}})
        return InferenceService("chat", {"spec": {"modelRef": "tiny", "extraArgs": ["--port", "9"]}, "model": model})

    with pytest.raises(ConfigError) as info:
        run({}, lambda svc, mocks: None, user_program)
    assert str(info.value).startswith("InferenceService chat: spec.extraArgs[0]: '--port' would move the server off")


# --- settings: one object from the edge, one rule for booleans ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("1", True), ("true", True), ("YES", True), ("on", True),
     ("0", False), ("false", False), ("No", False), ("off", False)],
)  # fmt: skip
def test_every_boolean_setting_reads_the_same(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {"LLMKUBE_NODE_CHECK": value, "LLMKUBE_OFFLINE": value}
    settings = Settings.from_env(environ)
    assert settings.node_check is expected  # default on
    assert settings.offline is (expected and value not in (None, ""))  # default off


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"LLMKUBE_METADATA_TIMEOUT": "2.5", "LLMKUBE_CACHE_DIR": "/tmp/x", "LLMKUBE_GGUF_REVALIDATE": "1"}
    )
    assert (settings.metadata_timeout, settings.cache_dir, settings.revalidate) == (2.5, Path("/tmp/x"), True)
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LLMKUBE_OFFLINE": "maybe"}, "LLMKUBE_OFFLINE='maybe' is neither true"),
        ({"LLMKUBE_METADATA_TIMEOUT": "soon"}, "LLMKUBE_METADATA_TIMEOUT='soon' is not a number of seconds"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(environ)


# --- found in review: each reproduced here first ---------------------------------------------------------------

GOOD = "https://example.com/models/Llama-3.2-1B-Instruct-Q4_K_M.gguf"


def test_a_bad_source_on_a_model_no_service_uses_is_a_config_error() -> None:
    raw = {"models": {"m": {"source": GOOD}, "u": {"source": "hf://org/repo"}}, "services": {"s": {"modelRef": "m"}}}
    with pytest.raises(ConfigError) as info:
        pipeline.platform(raw, Settings(offline=True))
    assert str(info.value).startswith("llmkube:models.u.source: 'hf://org/repo' names no file")
    with pytest.raises(ConfigError):
        pipeline.standalone_model("u", {"spec": {"source": "hf://org/repo"}})


def test_a_request_above_its_limit_is_reported_beside_the_planners_findings() -> None:
    raw = {"models": {"m": {"source": GOOD}}, "services": {"s": {"modelRef": "m", "contextSize": 131072,
           "resources": {"hostMemory": "10Gi", "memory": "8Gi"}}}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        pipeline.load(raw, Settings(offline=True))
    paths = [p.path for p in info.value.problems]
    assert "services.s.resources.hostMemory" in paths
    assert any("is more than resources.memory 8Gi" in p.message for p in info.value.problems), info.value.problems


def test_the_cache_size_is_reported_beside_the_planners_findings() -> None:
    raw = {"modelCache": {"size": "100Mi"}, "models": {"m": {"source": GOOD}},
           "services": {"s": {"modelRef": "m", "contextSize": 8192, "resources": {"hostMemory": "1Gi"}}}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        pipeline.load(raw, Settings(offline=True))
    paths = {p.path for p in info.value.problems}
    assert {"modelCache.size", "services.s.resources.hostMemory"} <= paths, info.value.problems


@pytest.mark.parametrize("extra", [["-c"], ["--ctx-size", "--jinja"], ["-ot"]])
def test_a_table_flag_without_its_value_in_extra_args_is_a_config_error(extra: list[str]) -> None:
    raw = {"models": {"m": {"source": GOOD}}, "services": {"s": {"modelRef": "m", "extraArgs": extra}}}
    with pytest.raises(ConfigError) as info:
        pipeline.load(raw, Settings(offline=True))
    assert str(info.value).startswith(f"llmkube:services.s.extraArgs[0]: {extra[0]!r} needs a value"), info.value
