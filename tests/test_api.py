"""The typed API: names, enums, bounds, quantities and the messages bad input gets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from llmkube_components.api import InferenceServiceSpec, ModelSpec, parse_quantity
from llmkube_components.errors import ConfigError
from tests.stacks import load_stack

MODEL = {"source": "https://example.com/m.gguf"}


def errors_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack(config)
    return [str(p) for p in info.value.problems]


def one_service(**fields: Any) -> dict[str, Any]:
    return {"models": {"m": MODEL}, "services": {"qwen": {"modelRef": "m", **fields}}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("48Gi", Decimal(48 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("8", Decimal(8)),
        ("500m", Decimal("0.5")),
        ("1.5G", Decimal(1_500_000_000)),
        ("1e3", Decimal(1000)),
        ("64k", Decimal(64000)),
        (8, Decimal(8)),
    ],
)
def test_quantities_are_parsed_as_quantities(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_quantities_compare_by_value_not_text() -> None:
    assert parse_quantity("1Gi") > parse_quantity("1000Mi") > parse_quantity("1G")


@pytest.mark.parametrize("bad", ["48GB", "lots", "-1Gi", "1.2.3", ""])
def test_malformed_quantities_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"moeCpuOffload": True},
            "llmkube:services.qwen.moeCpuOffload: unknown field moeCpuOffload; did you mean moeCPUOffload?",
        ),
        ({"contextSize": 50}, "llmkube:services.qwen.contextSize: 50: input should be greater than or equal to 128"),
        (
            {"contextSize": 3_000_000},
            "llmkube:services.qwen.contextSize: 3000000: input should be less than or equal to 2097152",
        ),
        ({"parallelSlots": 65}, "llmkube:services.qwen.parallelSlots: 65: input should be less than or equal to 64"),
        ({"replicas": 11}, "llmkube:services.qwen.replicas: 11: input should be less than or equal to 10"),
        ({"batchSize": 0}, "llmkube:services.qwen.batchSize: 0: input should be greater than or equal to 1"),
        ({"moeCPULayers": -1}, "llmkube:services.qwen.moeCPULayers: -1: input should be greater than or equal to 0"),
        ({"cacheTypeK": "q9"}, "llmkube:services.qwen.cacheTypeK: 'q9': input should be 'f16', 'f32', 'q8_0', "),
        ({"mode": "chatty"}, "llmkube:services.qwen.mode: 'chatty': input should be 'chat', 'embedding' or 'rerank'"),
        (
            {"resources": {"hostMemory": "48GB"}},
            "llmkube:services.qwen.resources.hostMemory: '48GB' is not a Kubernetes quantity",
        ),
        (
            {"resources": {"hostMemory": "48"}},
            "llmkube:services.qwen.resources.hostMemory: '48' is 48 bytes; memory needs a suffix, e.g. 48Gi",
        ),
        (
            {"endpoint": {"nodePort": 30001}},
            "llmkube:services.qwen.endpoint: nodePort 30001 needs type NodePort or LoadBalancer",
        ),
        ({"endpoint": {"type": "NodePort", "nodePort": 80}}, "llmkube:services.qwen.endpoint.nodePort: 80: input"),
        (
            {"cacheTypeV": "q8_0", "flashAttention": False},
            "llmkube:services.qwen: cacheTypeV q8_0 with flashAttention false: llama.cpp refuses",
        ),
        (
            {"cacheTypeCustomV": "q4_0", "flashAttention": False},
            "llmkube:services.qwen: cacheTypeV q4_0 with flashAttention false",
        ),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "llmkube:services.qwen.autoscaling: minReplicas 5 is above maxReplicas 2",
        ),
        (
            {"modelCache": {"persistence": "Ephemeral", "claimName": "mine"}},
            "llmkube:services.qwen.modelCache: claimName 'mine' cannot be set when persistence is Ephemeral",
        ),
        ({"modelRef": "nope"}, "llmkube:services.qwen.modelRef: 'nope' names no model; models are: m"),
        ({"modelRef": "M_"}, "llmkube:services.qwen.modelRef: 'M_' names no model; did you mean m?"),
        ({"resources": {"gpu": 1}}, "llmkube:services.qwen.resources.gpu: 1 GPU requested, but the hardware profile"),
        (
            {"resources": {"hostMemory": "500Gi"}},
            "llmkube:services.qwen.resources.hostMemory: 500Gi (500.0 GiB) is more than the hardware profile cpu-only",
        ),
    ],
)
def test_bad_service_fields_name_path_value_and_what_is_allowed(fields: dict[str, Any], expected: str) -> None:
    errors = errors_of(one_service(**fields))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"delivery": "helm"}, "llmkube:delivery: 'helm': input should be 'direct' or 'operator'"),
        ({"namespace": "Bad_NS"}, "llmkube:namespace: 'Bad_NS' is not a DNS label"),
        ({"servics": {}}, "llmkube:servics: unknown field servics; did you mean services?"),
        ({"models": {"m": {"source": "ftp://x"}}}, "llmkube:models.m.source: 'ftp://x' is not an http(s)://, hf://"),
        ({"models": {"m": {**MODEL, "sha256": "abc"}}}, "llmkube:models.m.sha256: 'abc' is not 64 hexadecimal digits"),
        ({"models": {"m": {}}}, "llmkube:models.m.source: is required"),
        (
            {"models": {"m": {**MODEL, "hardware": {"gpu": {"count": 9}}}}},
            "llmkube:models.m.hardware.gpu.count: 9: input should be less than or equal to 8",
        ),
        (
            {"models": {"m": {**MODEL, "hardware": {"accelerator": "tpu"}}}},
            "llmkube:models.m.hardware.accelerator: 'tpu': input should be",
        ),
        (
            {"models": {"qwen_a": MODEL, "qwen-a": MODEL}},
            "llmkube:models.qwen-a: 'qwen-a' and 'qwen_a' both become the Kubernetes name 'qwen-a'; rename one",
        ),
        ({"models": {"9lives": MODEL}}, "llmkube:models.9lives: '9lives' does not make a Kubernetes name"),
        (
            {"hardware": "rtx4900"},
            "llmkube:hardware: 'rtx4900' is not a built-in hardware profile; did you mean rtx4090?",
        ),
        (
            {
                "services": {"q": {"modelRef": "m"}},
                "models": {"m": MODEL},
                "hardware": "cpu-only",
                "operator": {"x": 1},
            },
            "llmkube:operator.x: unknown field x",
        ),
    ],
)
def test_bad_stack_config_is_reported_with_its_path(config: dict[str, Any], expected: str) -> None:
    errors = errors_of(config)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(one_service(contextSize=50, parallelSlots=0, cacheTypeK="q9"))
    assert [e.split(":")[1] for e in errors] == [
        "services.qwen.cacheTypeK",
        "services.qwen.contextSize",
        "services.qwen.parallelSlots",
    ]


def test_wire_form_uses_llmkube_names_and_drops_unset_and_llmkube_only_fields() -> None:
    spec = InferenceServiceSpec.model_validate(
        {"modelRef": "m", "moeCPUOffload": True, "uBatchSize": 512, "hardwareProfile": "rtx4090"}
    )
    assert spec.wire() == {"modelRef": "m", "moeCPUOffload": True, "uBatchSize": 512}
    assert ModelSpec.model_validate({**MODEL, "sha256": "a" * 64}).wire() == {**MODEL, "sha256": "a" * 64}


def test_warnings_for_offload_without_memory_and_moot_layers() -> None:
    stack = load_stack(one_service(moeCPUOffload=True, moeCPULayers=10), plan=False)
    messages = [str(w) for w in stack.warnings]
    assert messages[0].startswith("llmkube:services.qwen: moeCPUOffload, moeCPULayers moves weights or KV cache")
    assert messages[1].startswith("llmkube:services.qwen.moeCPULayers: 10 has no effect: moeCPUOffload already")


def test_offload_with_host_memory_has_no_warning() -> None:
    # plan=False: this is about the config checks; the planner's own findings have their tests.
    assert load_stack(one_service(noKvOffload=True, resources={"hostMemory": "8Gi"}), plan=False).warnings == ()


def test_a_typo_does_not_hide_the_other_problems_of_its_object() -> None:
    errors = errors_of(one_service(moeCpuOffload=True, contextSize=50, endpoint={"prot": 80, "port": 0}))
    assert [e.split(":")[1] for e in errors] == [
        "services.qwen.contextSize",
        "services.qwen.endpoint.port",
        "services.qwen.endpoint.prot",
        "services.qwen.moeCpuOffload",
    ]
    assert "llmkube:services.qwen.endpoint.prot: unknown field prot; did you mean port?" in errors
