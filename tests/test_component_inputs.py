"""Components used from another Pulumi program: Outputs in (at any depth), typed Outputs out, a schema.

Under Pulumi's mocks, as the other component tests: each test returns the Output it checks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pulumi
import pytest

from llmkube_components import argsgen
from llmkube_components.errors import ConfigError
from tests.pulumi_program import RecordingMocks, install_mocks
from tests.test_components import run

SOURCE = "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf"
CATALOG = "Llama-3.2-1B"  # plans the file offline: no catalog entry recognises its name


def later(value: Any, *, secret: bool = False) -> pulumi.Output[Any]:
    """An Output as another resource would give it: known, but only once awaited."""
    return pulumi.Output.from_input(value).apply(lambda v: v) if not secret else pulumi.Output.secret(value)


def unknown() -> pulumi.Output[Any]:
    """An Output a preview cannot know (of a resource not yet created)."""
    loop = asyncio.get_event_loop()
    value: asyncio.Future[Any] = loop.create_future()
    value.set_result(None)
    known: asyncio.Future[bool] = loop.create_future()
    known.set_result(False)
    return pulumi.Output(set(), value, known)


def test_outputs_of_other_resources_flow_into_the_workloads() -> None:
    from llmkube_components import InferenceService, Model

    def program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": later(SOURCE), "catalog": CATALOG}, "namespace": later("team")})
        spec = {"modelRef": "tiny", "contextSize": later(4096), "nodeSelector": {"pool": later("gpu")}}
        return InferenceService("chat", {"spec": spec, "model": model})

    def check(svc: Any, mocks: RecordingMocks) -> None:
        (dep,) = [r for r in mocks.resources if r.kind == "Deployment"]
        assert dep.inputs["metadata"]["namespace"] == "team"  # the Model's namespace, from an Output
        pod = dep.inputs["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["pool"] == "gpu"
        args = pod["containers"][0]["args"]
        assert args[args.index("--ctx-size") + 1] == "4096"
        assert svc.endpoint == "http://chat.team.svc.cluster.local:8080"
        assert svc.namespace == "team" and svc.service_name == "chat"
        assert svc.server_args == args
        assert svc.plan["placement"]  # planned with the known values

    run({}, check, program)


def test_a_components_properties_are_its_validated_effective_spec() -> None:
    from llmkube_components import InferenceService, Model

    def program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": SOURCE, "catalog": CATALOG}, "namespace": "ai"})
        return InferenceService("chat", {"spec": {"modelRef": "tiny", "contextSize": later(2048)}, "model": model})

    def check(svc: Any, mocks: RecordingMocks) -> None:
        (component,) = [r for r in mocks.resources if r.type == "llmkube:index:InferenceService"]
        props = component.inputs
        assert props["spec"]["contextSize"] == 2048 and props["spec"]["modelRef"] == "tiny"
        assert props["model"]["source"] == SOURCE
        assert (props["namespace"], props["delivery"], props["hardware"]) == ("ai", "direct", "cpu-only")
        assert props["plan"]["placement"] == svc.plan["placement"]

    run({}, check, program)


def test_an_unknown_sizing_value_defers_the_plan_to_the_update(caplog: pytest.LogCaptureFixture) -> None:
    from llmkube_components import InferenceService, Model

    def program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": SOURCE}, "namespace": "ai"})
        return InferenceService("chat", {"spec": {"modelRef": "tiny", "contextSize": unknown()}, "model": model})

    mocks = install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        program()

    with caplog.at_level(logging.INFO):
        test()
    assert [r for r in mocks.resources if r.kind == "Deployment"] == []  # nothing half-planned
    deferred = [r.getMessage() for r in caplog.records if "deferred to the update" in r.getMessage()]
    assert deferred == [
        "InferenceService chat: plan and workloads deferred to the update: spec.contextSize not known until then"
    ]


def test_an_unknown_namespace_leaves_the_plan_to_be_made_at_preview(caplog: pytest.LogCaptureFixture) -> None:
    # Only where the pods go is unknown: the preview still plans; the workloads wait for the update.
    from llmkube_components import InferenceService, Model

    mocks = install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        model = Model("tiny", {"spec": {"source": SOURCE, "catalog": CATALOG}, "namespace": "ai"})
        spec = {"modelRef": "tiny", "contextSize": 4096, "podLabels": {"team": unknown()}}
        InferenceService("chat", {"spec": spec, "model": model, "namespace": unknown()})

    with caplog.at_level(logging.INFO):
        test()
    assert [r for r in mocks.resources if r.kind == "Deployment"] == []
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "InferenceService chat: workloads deferred to the update: spec.podLabels.team, namespace not known until then"
    ) in messages
    (table,) = [m for m in messages if m.startswith("plan for chat ")]
    assert "everything in system RAM" in table


def test_a_bad_value_from_an_output_fails_with_the_argument_path() -> None:
    from llmkube_components import InferenceService, Model

    def program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": SOURCE}, "namespace": "ai"})
        return InferenceService("chat", {"spec": {"modelRef": "tiny", "contextSize": later(-1)}, "model": model})

    mocks = install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        program()

    with pytest.raises(ConfigError) as info:
        test()
    assert str(info.value).startswith("InferenceService chat: spec.contextSize: -1: ")
    assert [r for r in mocks.resources if r.type.startswith("kubernetes:")] == []


def test_a_bad_model_argument_names_the_model_path() -> None:
    from llmkube_components import Model

    install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        Model("tiny", {"spec": {"source": "ftp://example.com/x.gguf"}})

    with pytest.raises(ConfigError) as info:
        test()
    assert str(info.value).startswith("Model tiny: spec.source: 'ftp://example.com/x.gguf'")


def test_secret_inputs_keep_the_outputs_secret() -> None:
    from llmkube_components import InferenceService, Model

    def program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": SOURCE}, "namespace": "ai"})
        return InferenceService(
            "chat", {"spec": {"modelRef": "tiny"}, "model": model, "namespace": later("x", secret=True)}
        )

    install_mocks({})

    @pulumi.runtime.test
    def test() -> pulumi.Output[Any]:
        svc = program()

        async def secrecy() -> list[bool]:
            return [await svc.endpoint.is_secret(), await svc.server_args.is_secret()]

        return pulumi.Output.from_input(asyncio.ensure_future(secrecy())).apply(
            lambda flags: _assert_equal(flags, [True, True])
        )

    test()


def _assert_equal(got: Any, expected: Any) -> None:
    assert got == expected


def test_the_model_argument_takes_a_model_spec_from_another_language() -> None:
    # What the component provider hands the constructor: plain dicts whose values may be Outputs.
    from llmkube_components import InferenceService

    def program() -> InferenceService:
        args: Any = {"spec": {"modelRef": "tiny"}, "model": {"source": later(SOURCE)}, "namespace": "ai"}
        return InferenceService("chat", args)

    def check(svc: Any, mocks: RecordingMocks) -> None:
        assert svc.endpoint == "http://chat.ai.svc.cluster.local:8080"
        (pvc,) = [r for r in mocks.resources if r.kind == "PersistentVolumeClaim"]
        assert pvc.object_name == "chat-model-cache"

    run({}, check, program)


def test_platform_takes_outputs_and_exposes_its_services_by_name() -> None:
    from llmkube_components import Platform

    def program() -> Platform:
        config: Any = {
            "namespace": later("team"),
            "models": {"tiny": {"source": later(SOURCE)}},
            "services": {"chat": {"modelRef": "tiny", "contextSize": 2048}},
        }
        return Platform("llm", config)

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.namespace == "team"
        assert platform.services["chat"]["endpoint"] == "http://chat.team.svc.cluster.local:8080"
        assert {r.kind for r in mocks.resources if r.inputs.get("metadata", {}).get("namespace") == "team"} >= {
            "Deployment",
            "Service",
            "PersistentVolumeClaim",
        }

    run({}, check, program)


def test_the_args_are_generated_from_the_typed_api() -> None:
    assert argsgen.main(["--check"]) == 0


def test_the_schema_is_inferred_with_every_component_and_description() -> None:
    from pulumi.provider.experimental.analyzer import Analyzer

    from llmkube_components import InferenceService, Model, Operator, Platform

    result = Analyzer("llmkube").analyze([Platform, Model, InferenceService, Operator])
    components = result["component_definitions"]
    assert set(components) == {"Platform", "Model", "InferenceService", "Operator"}
    assert set(components["InferenceService"].outputs) == {
        "endpoint", "baseUrl", "serviceName", "namespace", "clientConfig", "plan", "serverArgs", "scheduling",
        "apiKeySecret",
    }  # fmt: skip
    for component in components.values():
        assert component.description
        for name, prop in {**component.inputs, **component.outputs}.items():
            assert prop.description, f"{component.name}.{name} has no description"
    spec = result["type_definitions"]["InferenceServiceSpec"]
    assert all(p.description for p in spec.properties.values())
    assert spec.properties["contextSize"].description.startswith("Context window in tokens")


def _fails(context_size: Any) -> tuple[str, list[str]]:
    """The error of a 120B model on the cpu-only profile, and the Kubernetes kinds registered."""
    from llmkube_components import InferenceService, Model

    mocks = install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        model = Model("big", {"spec": {"source": SOURCE, "catalog": "gpt-oss-120b"}, "namespace": "ai"})
        spec = {"modelRef": "big", "contextSize": context_size}
        InferenceService("chat", {"spec": spec, "model": model, "hardware": "cpu-only"})

    with pytest.raises(ConfigError) as info:
        test()
    return str(info.value), [r.kind for r in mocks.resources if r.type.startswith("kubernetes:")]


def test_a_plan_that_does_not_fit_fails_the_update_as_it_fails_the_preview() -> None:
    # Known at preview (a plain value) or only at the update (an Output): the same message, nothing applied.
    plain_message, plain_kinds = _fails(131072)
    later_message, later_kinds = _fails(later(131072))
    assert "does not fit" in plain_message, plain_message
    assert later_message == plain_message
    assert plain_kinds == later_kinds == []


def test_plain_values_read_as_the_typed_api_reads_them() -> None:
    from llmkube_components import inputs
    from llmkube_components.spec_args import CacheType

    # Other languages' numbers reach the provider as floats; string enums are their strings.
    given = {"contextSize": 2048.0, "ratio": 0.5, "cacheTypeK": CacheType.Q8_0, "extraArgs": ("--jinja",)}
    assert inputs.plain(given) == {"contextSize": 2048, "ratio": 0.5, "cacheTypeK": "q8_0", "extraArgs": ["--jinja"]}
    assert type(inputs.plain(2048.0)) is int


def test_a_platform_with_an_unknown_namespace_is_planned_at_preview(caplog: pytest.LogCaptureFixture) -> None:
    from llmkube_components import Platform

    install_mocks({})

    @pulumi.runtime.test
    def test() -> None:
        config: Any = {
            "namespace": unknown(),
            "models": {"tiny": {"source": SOURCE, "catalog": CATALOG}},
            "services": {"chat": {"modelRef": "tiny", "contextSize": 2048, "image": unknown()}},
        }
        Platform("llm", config)

    with caplog.at_level(logging.INFO):
        test()
    messages = [r.getMessage() for r in caplog.records]
    assert "Platform llm: workloads deferred to the update: namespace, services.chat.image not known until then" in (
        messages
    )
    assert [m for m in messages if m.startswith("plan for chat ")]
