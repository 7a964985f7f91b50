"""The policy pack's rules as functions over registered properties (the real runtime: tests/e2e/test_policy_pack)."""

from __future__ import annotations

from typing import Any

from llmkube_components import policies

HF = "hf://bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf"


def svc(path: str = "llmkube:services.chat", **spec: Any) -> dict[str, Any]:
    return {"name": "chat", "namespace": "ai", "path": path, "spec": {"modelRef": "m", **spec}}


def model(**spec: Any) -> dict[str, Any]:
    return {"name": "m", "path": "llmkube:models.m", "spec": {"source": HF, **spec}}


def deployment(containers: list[dict[str, Any]], **pod: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": "ai", "labels": {"inference.llmkube.dev/service": "chat"}},
        "spec": {"template": {"spec": {"containers": containers, **pod}}},
    }


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_exposure_names_the_endpoint_path_and_a_key_clears_it() -> None:
    (message,) = policies.exposure(svc(endpoint={"type": "NodePort"}))
    assert message.startswith("llmkube:services.chat.endpoint.type: NodePort exposes the server without an API key")
    assert policies.exposure(svc(endpoint={"type": "NodePort"}, apiKey={"secretName": "k"})) == []
    assert policies.exposure(svc(endpoint={"type": "ClusterIP"})) == []


def test_routes_to_a_keyless_server_are_found_in_the_stack() -> None:
    keyless = deployment([{"name": "llama-server", "args": ["--port", "8080"]}])
    ingress = {
        "metadata": {"name": "web", "namespace": "ai"},
        "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "chat"}}}]}}]},
    }
    route = {"metadata": {"name": "r", "namespace": "ai"}, "spec": {"rules": [{"backendRefs": [{"name": "chat"}]}]}}
    found = policies.routed_exposure(
        [(policies.DEPLOYMENT_TYPE, keyless), (policies.INGRESS_TYPE, ingress), (policies.HTTPROUTE_TYPE, route)]
    )
    assert found == [
        "service chat (ai): Ingress ai/web routes to it without an API key; set an API key (llmkube:apiKeys.<service>, "
        "the apiKey argument, or apiKey.secretName)",
        "service chat (ai): HTTPRoute ai/r routes to it without an API key; set an API key (llmkube:apiKeys.<service>, "
        "the apiKey argument, or apiKey.secretName)",
    ]
    keyed = deployment([{"name": "llama-server", "args": ["--api-key-file", "/etc/llmkube/api-key/api-key"]}])
    assert policies.routed_exposure([(policies.DEPLOYMENT_TYPE, keyed), (policies.INGRESS_TYPE, ingress)]) == []


def test_integrity() -> None:
    assert [m.split(":")[0] + ":" + m.split(":")[1] for m in policies.integrity(model())] == ["llmkube:models.m.sha256"]
    assert policies.integrity(model(sha256="ab" * 32)) == []
    http = policies.integrity(model(source="http://mirror/x.gguf", sha256="ab" * 32))
    assert http == ["llmkube:models.m.source: plain http, which anyone on the way can change; use https"]
    assert policies.integrity(model(source="pvc://claim/x.gguf")) == []


def test_pinned_images() -> None:
    for rolling in (
        "ghcr.io/ggml-org/llama.cpp:server",
        "ghcr.io/ggml-org/llama.cpp:server-cuda13",
        "x/y:latest",
        "x/y",
    ):
        (message,) = policies.pinned_image(svc(image=rolling))
        assert message.startswith(f"llmkube:services.chat.image: {rolling}"), message
    assert (
        "ghcr.io/ggml-org/llama.cpp:server-cuda13-b<build>"
        in policies.pinned_image(svc(image="ghcr.io/ggml-org/llama.cpp:server-cuda13"))[0]
    )
    for pinned in ("ghcr.io/ggml-org/llama.cpp:server-cuda13-b6543", "x/y@sha256:" + "a" * 64, "x/y:1.2.3"):
        assert policies.pinned_image(svc(image=pinned)) == [], pinned


def test_gpu_budget_counts_replicas_and_the_autoscalers_maximum() -> None:
    def gpu_deployment(name: str, gpus: int, replicas: int | None = None) -> dict[str, Any]:
        d = deployment([{"name": "s", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}])
        d["metadata"] = {"name": name, "namespace": "ai"}
        if replicas is not None:
            d["spec"]["replicas"] = replicas
        return d

    hpa = {"metadata": {"namespace": "ai"}, "spec": {"scaleTargetRef": {"name": "b"}, "maxReplicas": 3}}
    resources = [
        (policies.DEPLOYMENT_TYPE, gpu_deployment("a", 2, 1)),
        (policies.DEPLOYMENT_TYPE, gpu_deployment("b", 1)),
        (policies.HPA_TYPE, hpa),
    ]
    (message,) = policies.gpu_budget(resources, 4)
    assert message.startswith("namespace ai: 5 GPUs requested (a 2, b 3), over maxGpus 4"), message
    assert policies.gpu_budget(resources, 5) == []
    assert policies.gpu_budget(resources, None) == []


def test_fit_and_speed() -> None:
    assert policies.fit(svc())[0].startswith("llmkube:services.chat: no plan at preview")
    planned = {**svc(), "plan": {"decodeTokensPerSecond": 12.5, "placement": "all on GPU"}}
    assert policies.fit(planned) == []
    assert policies.speed(planned, 20)[0].startswith("llmkube:services.chat: decodes about 12.5 tokens/s")
    assert policies.speed(planned, 10) == [] and policies.speed(planned, None) == []


def test_pod_security() -> None:
    assert policies.pod_security(deployment([{"name": "s", "securityContext": RESTRICTED}]), False) == []
    bad = deployment(
        [{"name": "s", "securityContext": {"privileged": True}}],
        volumes=[{"name": "m", "hostPath": {"path": "/srv/m.gguf"}}],
    )
    messages = policies.pod_security(bad, False)
    assert any("mounts the node's /srv/m.gguf (hostPath)" in m for m in messages)
    assert any("container s is privileged" in m for m in messages)
    assert any("lacks the restricted settings allowPrivilegeEscalation: false" in m for m in messages)
    assert not any("hostPath" in m for m in policies.pod_security(bad, True))


def test_allowed_sources() -> None:
    assert policies.allowed_source(model(), None, ["bartowski"]) == []
    (owner,) = policies.allowed_source(model(), None, ["ggml-org"])
    assert owner == "llmkube:models.m.source: Hugging Face organisation bartowski is not in allowedOwners (ggml-org)"
    (host,) = policies.allowed_source(model(source="https://mirror.lan/x.gguf"), ["huggingface.co"], None)
    assert host.startswith("llmkube:models.m.source: host mirror.lan is not in allowedHosts (huggingface.co)")


def test_every_rule_is_in_the_pack_with_its_level() -> None:
    import pulumi_policy

    pack_policies: list[Any] = []
    real = pulumi_policy.PolicyPack

    class Recording:
        def __init__(self, name: str, policies_: list[Any]) -> None:
            pack_policies.extend(policies_)

    pulumi_policy.PolicyPack = Recording  # type: ignore[misc, assignment]
    try:
        policies.policy_pack()
    finally:
        pulumi_policy.PolicyPack = real  # type: ignore[misc]
    assert [p.name for p in pack_policies] == [r.name for r in policies.RULES]
    assert len(policies.RULES) == 9
    levels = {p.name: p.enforcement_level for p in pack_policies}
    assert levels["llmkube-pinned-images"] == pulumi_policy.EnforcementLevel.ADVISORY
    assert levels["llmkube-integrity"] == pulumi_policy.EnforcementLevel.MANDATORY
