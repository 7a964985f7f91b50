"""runtime llamacpp-router with routerModels: several Models behind one llama-server router.

The API's checks, resolution, staging every model in the pod, the models preset (a ConfigMap mounted into the
server), the arguments, and the planner's check of each routed model. The real router on a rendered preset:
tests/e2e/test_llama_server_flags.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components import flags, workloads
from llmkube_components.errors import ConfigError
from llmkube_components.planner.plan import GiB
from tests.stacks import load_stack

SMALL = "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf"
BIG = "https://huggingface.co/ggml-org/Qwen3.6-35B-A3B-GGUF/resolve/main/Qwen3.6-35B-A3B-Q4_K_M.gguf"
MODELS: dict[str, Any] = {
    "small": {"source": SMALL},
    "big": {"source": BIG},
    "vision": {"source": "https://example.com/vl/vision.gguf", "mmproj": "mmproj-F16.gguf"},
}
ROUTER = {"modelRef": "small", "runtime": "llamacpp-router"}


def stack(service: dict[str, Any], *, plan: bool = False, hardware: Any = "cpu-only", **config: Any) -> Any:
    return load_stack(
        {"hardware": hardware, "models": MODELS, "services": {"s": {**ROUTER, **service}}, **config}, plan=plan
    )


def problems(service: dict[str, Any], **config: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        stack(service, **config)
    return [str(p) for p in info.value.problems]


# --- the API's checks (resolve) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "config", "expected"),
    [
        ({"runtime": "llamacpp", "routerModels": ["big"]}, {},
         "llmkube:services.s.routerModels: ['big'] needs runtime llamacpp-router, not llamacpp"),
        ({"runtime": None, "routerModels": ["big"]}, {},
         "llmkube:services.s.routerModels: ['big'] needs runtime llamacpp-router, not llamacpp"),
        ({"routerModels": ["bgi"]}, {}, "llmkube:services.s.routerModels[0]: 'bgi' names no model; did you mean big?"),
        ({"routerModels": ["big", "small"]}, {},
         "llmkube:services.s.routerModels[1]: 'small' is modelRef, which the router serves already"),
        ({"routerModels": ["big", "vision", "big"]}, {},
         "llmkube:services.s.routerModels[2]: 'big' is given twice; name each model once"),
        ({"routerModels": ["big"]}, {"delivery": "operator"},
         "llmkube:services.s.routerModels: ['big'] needs delivery direct"),
    ],
    ids=str,
)  # fmt: skip
def test_router_models_are_checked(service: dict[str, Any], config: dict[str, Any], expected: str) -> None:
    found = problems(service, **config)
    assert any(p.startswith(expected) for p in found), found


def test_router_models_need_non_empty_keys() -> None:
    assert problems({"routerModels": [""]}) == [
        "llmkube:services.s.routerModels[0]: '': string should have at least 1 character"
    ]


def test_router_models_resolve_to_the_final_models_in_order() -> None:
    service = stack({"routerModels": ["vision", "big"]}).services["s"]
    assert [m.key for m in service.router_models] == ["vision", "big"]
    assert service.router_models[0].spec.mmproj == "mmproj-F16.gguf"
    assert stack({}).services["s"].router_models == ()


# --- staging, the preset, the pod -----------------------------------------------------------------------------


def test_every_routed_model_is_staged_in_the_pod() -> None:
    service = stack({"routerModels": ["big", "vision"]}).services["s"]
    storage = workloads.model_storage(service)
    names = [c["name"] for c in storage.init_containers]
    assert names == ["model-cache-prep", "model-downloader", "router-model-0-downloader", "router-model-1-downloader"]
    # One cache volume for all of them, mounted once.
    assert [v["name"] for v in storage.volumes] == ["model-cache"]
    assert [m["mountPath"] for m in storage.mounts] == ["/models"]
    big, vision = (workloads.model_path(m.spec) for m in service.router_models)
    assert storage.router_paths == {"small": storage.model_path, "big": big, "vision": vision}
    assert storage.router_mmproj_paths == {"vision": vision.rsplit("/", 1)[0] + "/mmproj-F16.gguf"}
    downloader = storage.init_containers[2]["command"][-1]
    assert "Qwen3.6-35B-A3B-Q4_K_M.gguf" in downloader


def test_a_routed_model_on_another_claim_is_mounted_beside() -> None:
    models = {
        "small": {"source": "pvc://one/small.gguf"},
        "big": {"source": "pvc://two/big.gguf"},
    }
    loaded = load_stack(
        {"hardware": "cpu-only", "models": models, "services": {"s": {**ROUTER, "routerModels": ["big"]}}}, plan=False
    )
    storage = workloads.model_storage(loaded.services["s"])
    assert [v["name"] for v in storage.volumes] == ["model-source", "router-0-model-source"]
    assert [m["mountPath"] for m in storage.mounts] == ["/model-source", "/router-0/model-source"]
    assert storage.router_paths == {"small": "/model-source/small.gguf", "big": "/router-0/model-source/big.gguf"}


def test_the_preset_config_map_mount_and_args() -> None:
    service = stack({"routerModels": ["vision"]}).services["s"]
    storage = workloads.model_storage(service)
    built = workloads.service_workloads(service)
    kinds = [m["kind"] for m in built]
    assert kinds[:3] == ["ConfigMap", "Deployment", "Service"]
    config_map = built[0]
    assert config_map["metadata"]["name"] == "s-router"
    vision = storage.router_paths["vision"]
    assert config_map["data"] == {
        "models.ini": f"version = 1\n\n[small]\nmodel = {storage.model_path}\n\n[vision]\nmodel = {vision}\n"
        f"mmproj = {storage.router_mmproj_paths['vision']}\n"
    }
    pod = built[1]["spec"]["template"]["spec"]
    assert {"name": "router-preset", "configMap": {"name": "s-router", "defaultMode": 0o444}} in pod["volumes"]
    container = pod["containers"][0]
    assert {"name": "router-preset", "mountPath": "/etc/llmkube/router", "readOnly": True} in container["volumeMounts"]
    assert container["args"][:4] == ["--models-preset", "/etc/llmkube/router/models.ini", "--models-max", "1"]
    assert "--mmproj" not in container["args"] and "--model" not in container["args"]
    annotations = built[1]["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["inference.llmkube.dev/router-preset-sha256"]) == 64


def test_one_model_goes_through_the_preset_too_and_llamacpp_has_none() -> None:
    routed = stack({}).services["s"]
    assert workloads.router_config_map(routed)["data"]["models.ini"].count("[") == 1
    plain = stack({"runtime": "llamacpp"}).services["s"]
    assert workloads.router_config_map(plain) is None
    assert all(m["kind"] != "ConfigMap" for m in workloads.service_workloads(plain))


def test_a_draft_with_several_models_is_an_error() -> None:
    draft = {"speculativeDecoding": {"type": "draft", "draftModelRef": "vision"}}
    one, _ = workloads.workload_problems(stack(draft).services["s"])
    assert one == []
    several, _ = workloads.workload_problems(stack({**draft, "routerModels": ["big"]}).services["s"])
    assert [p.path for p in several] == ["services.s.speculativeDecoding.draftModelRef"]
    assert "passes -md on to each model instance" in several[0].message


def test_models_max_in_extra_args_is_warned() -> None:
    _, warnings = workloads.workload_problems(stack({"extraArgs": ["--models-max", "3"]}).services["s"])
    assert [w.path for w in warnings if "--models-max" in w.message] == ["services.s.extraArgs[0]"]
    assert flags.ROUTER_MODELS_MAX == 1


# --- the planner ----------------------------------------------------------------------------------------------


def test_a_routed_model_that_does_not_fit_is_an_error_with_the_numbers() -> None:
    found = problems({"routerModels": ["big"], "contextSize": 8192}, plan=True,
                     hardware={"extends": "cpu-only", "hostMemory": "16Gi"})  # fmt: skip
    (message,) = [p for p in found if "routerModels" in p]
    assert message.startswith(
        "llmkube:services.s.routerModels[0]: 'big', loaded in place of modelRef: does not fit the hardware profile "
        "cpu-only+custom ("
    )
    assert "GiB short)" in message
    # The service's own model fits: nothing at the service itself.
    assert not any(p.startswith("llmkube:services.s:") for p in found)


def test_the_host_memory_request_holds_the_largest_routed_model() -> None:
    hardware = {"extends": "cpu-only", "hostMemory": "128Gi"}
    alone = stack({"contextSize": 8192}, plan=True, hardware=hardware)
    routed = stack({"routerModels": ["big"], "contextSize": 8192}, plan=True, hardware=hardware)
    # The plan stays the modelRef model's; the request grows to the routed model's.
    assert routed.plans["s"].host_memory_request == alone.plans["s"].host_memory_request
    small_request = alone.services["s"].spec.resources.host_memory
    big_request = routed.services["s"].spec.resources.host_memory
    assert int(small_request.removesuffix("Gi")) < int(big_request.removesuffix("Gi"))
    assert int(big_request.removesuffix("Gi")) * GiB > 20 * GiB
