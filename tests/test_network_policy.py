"""The NetworkPolicy of each service: its port open only to whom the stack says, egress only for downloads."""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.errors import ConfigError
from llmkube_components.pipeline import platform
from llmkube_components.settings import Settings

OFFLINE = Settings(offline=True)
HF = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "catalog": "Llama-3.2-1B"}


def policy(model: dict[str, Any] = HF, service: dict[str, Any] | None = None, **stack: Any) -> Any:
    raw = {"models": {"m": model}, "services": {"chat": {"modelRef": "m", **(service or {})}}, **stack}
    return platform(raw, OFFLINE).services["chat"].network_policy


def test_by_default_only_pods_of_the_namespace_reach_the_port_and_egress_is_the_download() -> None:
    got = policy()
    assert got["apiVersion"] == "networking.k8s.io/v1" and got["kind"] == "NetworkPolicy"
    assert got["metadata"]["namespace"] == "llmkube"
    spec = got["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "chat", "inference.llmkube.dev/service": "chat"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}]
    assert spec["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 443}]},
    ]


def test_the_configured_peers_are_the_only_ones_let_in() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]
    got = policy(networkPolicy={"ingressFrom": peers}, service={"endpoint": {"port": 9000}})
    assert got["spec"]["ingress"] == [{"from": peers, "ports": [{"protocol": "TCP", "port": 9000}]}]
    assert policy(networkPolicy={"ingressFrom": []})["spec"]["ingress"] == []  # nobody


def test_a_peer_of_another_shape_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        policy(networkPolicy={"ingressFrom": [{"namespaces": ["x"]}]})
    assert "llmkube:networkPolicy.ingressFrom[0].namespaces" in str(info.value)


def test_an_exposed_service_is_open_on_its_port_only() -> None:
    got = policy(service={"endpoint": {"type": "LoadBalancer"}})
    assert got["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]


def test_the_egress_follows_the_urls_ports_and_nothing_to_download_means_no_egress() -> None:
    mirror = {"source": "http://mirror.lan:9000/models/q.gguf", "catalog": "Llama-3.2-1B"}
    assert policy(mirror)["spec"]["egress"][1] == {"ports": [{"protocol": "TCP", "port": 9000}]}
    on_claim = {"source": "pvc://models/q.gguf", "catalog": "Llama-3.2-1B"}
    assert policy(on_claim)["spec"]["egress"] == []


def test_a_stack_setting_turns_them_off() -> None:
    assert policy(networkPolicy={"enabled": False}) is None


def test_delivery_operator_gets_the_same_policy() -> None:
    assert policy(delivery="operator") == policy()


def test_a_standalone_service_takes_the_setting_as_an_argument() -> None:
    from llmkube_components import InferenceService, Model
    from tests.pulumi_program import RecordingMocks
    from tests.test_components import run

    peers = [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]

    def program() -> list[InferenceService]:
        model = Model("tiny", {"spec": HF})
        return [
            InferenceService(
                "on", {"spec": {"modelRef": "tiny"}, "model": model, "networkPolicy": {"ingressFrom": peers}}
            ),
            InferenceService(
                "off", {"spec": {"modelRef": "tiny"}, "model": model, "networkPolicy": {"enabled": False}}
            ),
        ]

    def check(_: Any, mocks: RecordingMocks) -> None:
        (got,) = [r for r in mocks.resources if r.kind == "NetworkPolicy"]
        assert got.object_name == "on" and got.inputs["spec"]["ingress"][0]["from"] == peers

    run({}, check, program)
