"""API keys: a key Pulumi holds (llmkube:apiKeys, the component's apiKey) or an existing Secret, mounted as a
file and passed as --api-key-file; the key stays secret everywhere but in its own Secret.

Under Pulumi's mocks: each test returns the Output it checks.
"""

from __future__ import annotations

import logging
from typing import Any

import pulumi
import pytest

from llmkube_components import components
from llmkube_components.errors import ConfigError
from llmkube_components.pipeline import platform
from llmkube_components.settings import Settings
from tests.pulumi_program import RecordingMocks
from tests.test_components import run

KEY = "sk-test-0123456789abcdef"
MODEL = {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf", "catalog": "Llama-3.2-1B"}
OFFLINE = Settings(offline=True)


def stack(**service: Any) -> dict[str, Any]:
    return {"models": {"m": MODEL}, "services": {"chat": {"modelRef": "m", **service}}}


def problems_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        platform(raw, OFFLINE)
    return str(info.value)


# --- bad input first -----------------------------------------------------------------------------------------


def test_api_key_in_extra_args_is_refused_without_echoing_it() -> None:
    for extra in (["--api-key", KEY], [f"--api-key={KEY}"], ["--api-key-file", "/tmp/k"]):
        text = problems_of(stack(extraArgs=extra))
        assert "llmkube:services.chat.extraArgs[0]" in text
        assert "llmkube:apiKeys.<service>" in text and "apiKey.secretName" in text
        assert KEY not in text


def test_a_key_for_no_service_names_the_services() -> None:
    text = problems_of({**stack(), "apiKeys": {"caht": KEY}})
    assert "llmkube:apiKeys.caht: 'caht' names no service; services are: chat" in text
    assert KEY not in text


def test_a_key_given_two_ways_is_refused() -> None:
    text = problems_of({**stack(apiKey={"secretName": "theirs"}), "apiKeys": {"chat": KEY}})
    assert "llmkube:apiKeys.chat: chat also names an existing Secret" in text


@pytest.mark.parametrize("how", ["pulumi", "secret"])
def test_delivery_operator_with_a_key_is_a_clear_error(how: str) -> None:
    raw = {**stack(), "delivery": "operator", "apiKeys": {"chat": KEY}}
    if how == "secret":
        raw = {**stack(apiKey={"secretName": "theirs"}), "delivery": "operator"}
    text = problems_of(raw)
    where = "llmkube:apiKeys.chat" if how == "pulumi" else "llmkube:services.chat.apiKey"
    assert f"{where}: an API key needs delivery direct" in text


def test_a_bad_secret_reference_is_refused_at_preview() -> None:
    text = problems_of(stack(apiKey={"secretName": "Not_A_Name", "secretKey": "a/b"}))
    assert "llmkube:services.chat.apiKey.secretName" in text
    assert "llmkube:services.chat.apiKey.secretKey" in text


def test_an_exposed_service_without_a_key_is_warned_about_with_its_path() -> None:
    warnings = [str(w) for w in platform(stack(endpoint={"type": "LoadBalancer"}), OFFLINE).stack.warnings]
    assert any(w.startswith("llmkube:services.chat.endpoint.type: LoadBalancer without an API key") for w in warnings)
    keyed = platform({**stack(endpoint={"type": "NodePort"}), "apiKeys": {"chat": KEY}}, OFFLINE)
    assert not [w for w in keyed.stack.warnings if "API key" in str(w)]


# --- what is built ---------------------------------------------------------------------------------------------


def test_an_existing_secret_is_mounted_read_only_and_passed_as_a_file() -> None:
    built = platform(stack(apiKey={"secretName": "team-key", "secretKey": "token"}), OFFLINE).services["chat"]
    assert [m["kind"] for m in built.workloads] == ["Deployment", "Service"]  # their Secret is not ours
    pod = built.workloads[0]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-key"]
    assert volume["secret"] == {
        "secretName": "team-key",
        "items": [{"key": "token", "path": "api-key"}],
        "defaultMode": 0o440,
    }
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "api-key", "mountPath": "/etc/llmkube/api-key", "readOnly": True} in mounts
    args = pod["containers"][0]["args"]
    assert args[args.index("--api-key-file") + 1] == "/etc/llmkube/api-key/api-key"
    assert built.api_key_secret == {"name": "team-key", "key": "token"}


def test_a_pulumi_key_never_reaches_the_build() -> None:
    built = platform({**stack(), "apiKeys": {"chat": KEY}}, OFFLINE)
    service = built.services["chat"]
    assert KEY not in repr(built)
    (secret,) = [m for m in service.workloads if m["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "chat-api-key" and "data" not in secret and "stringData" not in secret
    assert service.service.spec.document()["apiKey"] == {"secretName": "chat-api-key", "secretKey": "api-key"}


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The manifests the components hand to Pulumi, Outputs and all (the mocks would unwrap the secrets)."""
    seen: list[dict[str, Any]] = []
    real = components.register

    def spy(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> Any:
        seen.append(manifest)
        return real(name, manifest, opts)

    monkeypatch.setattr(components, "register", spy)
    return seen


def _secret_data(seen: list[dict[str, Any]]) -> pulumi.Output[Any]:
    (secret,) = [m for m in seen if m["kind"] == "Secret"]
    value = pulumi.Output.from_input(secret["stringData"])
    return pulumi.Output.all(value, pulumi.Output.from_input(value.is_secret()))


def test_the_stack_program_keeps_a_secret_config_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """pulumi config set --secret --path 'llmkube:apiKeys.chat': the key is secret, the rest stays readable."""
    seen = _captured(monkeypatch)
    config = {f"llmkube:{k}": v for k, v in stack().items()}
    config["llmkube:apiKeys"] = {"chat": KEY}

    def check(platform_: Any, mocks: RecordingMocks) -> Any:
        (dep,) = [r for r in mocks.resources if r.kind == "Deployment"]
        assert KEY not in repr(dep.inputs)
        assert KEY not in repr(platform_.outputs)
        assert platform_.services["chat"]["apiKeySecret"] == {"name": "chat-api-key", "key": "api-key"}
        return _secret_data(seen).apply(lambda got: _assert(got, [{"api-key": KEY}, True]))

    run(config, check, secret_keys=("llmkube:apiKeys",))


def test_the_component_key_argument_is_secret_even_when_given_in_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkube_components import InferenceService, Model

    seen = _captured(monkeypatch)

    def program() -> InferenceService:
        model = Model("tiny", {"spec": MODEL})
        return InferenceService("chat", {"spec": {"modelRef": "tiny"}, "model": model, "apiKey": KEY})

    def check(svc: Any, mocks: RecordingMocks) -> Any:
        (dep,) = [r for r in mocks.resources if r.kind == "Deployment"]
        args = dep.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--api-key-file" in args and KEY not in args
        assert svc.api_key_secret == {"name": "chat-api-key", "key": "api-key"}
        return _secret_data(seen).apply(lambda got: _assert(got, [{"api-key": KEY}, True]))

    run({}, check, program)


def test_a_plain_text_key_in_the_stack_file_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = {f"llmkube:{k}": v for k, v in stack().items()}
    config["llmkube:apiKeys"] = {"chat": KEY}
    run(config, lambda platform_, mocks: None)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("llmkube:apiKeys is in plain text in the stack file") for w in warnings), warnings
    assert not [w for w in warnings if KEY in w]


def test_no_key_leaves_the_workloads_as_they_were() -> None:
    built = platform(stack(), OFFLINE).services["chat"]
    assert [m["kind"] for m in built.workloads] == ["Deployment", "Service"]
    pod = built.workloads[0]["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if v["name"] == "api-key"]
    assert built.api_key_secret is None


def _assert(got: Any, expected: Any) -> None:
    assert got == expected


def test_any_other_secret_config_key_keeps_everything_built_from_it_secret() -> None:
    """The program used to read raw config and drop the secret marking: a secret key's value stays secret."""
    from llmkube_components.program import main

    config = {f"llmkube:{k}": v for k, v in stack().items()}

    def body() -> Any:
        platform_ = main()
        return pulumi.Output.from_input(platform_.services.is_secret())

    run(config, lambda secret, mocks: _assert(secret, True), body, secret_keys=("llmkube:services",))
    run(config, lambda secret, mocks: _assert(secret, False), body)


def test_a_key_map_given_as_one_secret_output_keeps_only_the_keys_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """From another language (YAML, through the provider) the whole map may arrive as one secret Output."""
    from llmkube_components import Platform

    seen = _captured(monkeypatch)

    def body() -> Any:
        platform_ = Platform("p", {**stack(), "apiKeys": pulumi.Output.secret({"chat": KEY})})  # type: ignore[typeddict-item]
        return pulumi.Output.all(platform_.services, pulumi.Output.from_input(platform_.services.is_secret()))

    def check(got: Any, mocks: RecordingMocks) -> Any:
        services, secret = got
        assert secret is False  # the rest of the stack stays readable
        assert services["chat"]["apiKeySecret"] == {"name": "chat-api-key", "key": "api-key"}
        (dep,) = [r for r in mocks.resources if r.kind == "Deployment"]
        assert "--api-key-file" in dep.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
        return _secret_data(seen).apply(lambda data: _assert(data, [{"api-key": KEY}, True]))

    run({}, check, body)
