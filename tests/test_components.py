"""The real Pulumi program (__main__.py) under Pulumi mocks, with each stack file's config.

Each test returns the Output it checks: under mocks, an assertion inside an apply that is not returned
would never run, and the test would pass whatever the program did.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest
import yaml

from llmkube_components import crds
from llmkube_components.errors import ConfigError
from tests.pulumi_program import (
    RecordingMocks,
    Registered,
    install_mocks,
    resolved,
    run_main,
    stack_config,
    stack_files,
    stack_name,
)

STACKS = [stack_name(p) for p in stack_files()]
SNAPSHOTS = Path(__file__).parent / "snapshots"
K8S_VERSION = kubernetes_validate.latest_version()


def manifests(mocks: RecordingMocks) -> list[dict[str, Any]]:
    """What the program would send to the cluster: every Kubernetes object, as the provider receives it."""
    return [_integral(r.inputs) for r in mocks.resources if r.type.startswith("kubernetes:")]


def _integral(value: Any) -> Any:
    # The mocks receive inputs through protobuf Structs, where every number is a float; the provider gets
    # the integers the program wrote. Undo that, so that validation and snapshots see what the cluster would.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def by_kind(mocks: RecordingMocks) -> Counter[str]:
    return Counter(r.kind for r in mocks.resources if r.type.startswith("kubernetes:"))


def components(mocks: RecordingMocks) -> list[Registered]:
    return [r for r in mocks.resources if r.type.startswith("llmkube:index:")]


def with_delivery(stack: str, delivery: str) -> dict[str, Any]:
    return {**stack_config(stack), "llmkube:delivery": delivery}


def run(config: dict[str, Any], check: Any, body: Any = run_main, secret_keys: tuple[str, ...] = ()) -> Any:
    """Run ``body`` (default: __main__.py) under mocks; return ``check(result, mocks)`` once all is registered."""
    mocks = install_mocks(config, secret_keys=secret_keys)
    created: list[pulumi.Resource] = []

    def collect(args: pulumi.ResourceTransformationArgs) -> None:
        created.append(args.resource)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(collect)
        result = body()
        # Resolves once the engine (here the mocks) has registered every resource the program created.
        everything = pulumi.Output.all(*[r.urn for r in created])
        # A component's outputs resolve once everything it registers is registered (Outputs in its arguments
        # can make that later than the resources created so far).
        return everything.apply(lambda _: resolved(result)).apply(lambda known: check(known, mocks))

    return program()


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("delivery", ["direct", "operator"])
def test_every_manifest_validates_against_kubernetes_and_our_crds(stack: str, delivery: str) -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        objects = manifests(mocks)
        assert objects, "the program registered no Kubernetes objects"
        for obj in objects:
            if obj["apiVersion"].startswith(crds.GROUP):
                assert crds.validate_custom_resource(obj["kind"], obj) == [], obj["metadata"]["name"]
            else:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)

    run(with_delivery(stack, delivery), check)


@pytest.mark.parametrize("stack", STACKS)
def test_direct_delivery_registers_the_llamacpp_workloads(stack: str) -> None:
    config = with_delivery(stack, "direct")
    services = config["llmkube:services"]

    def check(platform: Any, mocks: RecordingMocks) -> None:
        kinds = by_kind(mocks)
        assert kinds["Deployment"] == kinds["Service"] == len(services)
        assert kinds["CustomResourceDefinition"] == 0 and kinds["InferenceService"] == 0
        assert kinds["PersistentVolumeClaim"] == 1  # the namespace's shared model cache
        deployments = {r.object_name: r for r in mocks.resources if r.kind == "Deployment"}
        assert set(deployments) == set(services)
        for name, dep in deployments.items():
            container = dep.inputs["spec"]["template"]["spec"]["containers"][0]
            assert container["name"] == "llama-server"
            assert container["args"] == platform.services[name]["serverArgs"]
            assert dep.name == f"llmkube-{name}-deployment"
        comps = Counter(r.type for r in components(mocks))
        assert comps == Counter(
            {
                "llmkube:index:Platform": 1,
                "llmkube:index:Model": len(config["llmkube:models"]),
                "llmkube:index:InferenceService": len(services),
            }
        )

    run(config, check)


@pytest.mark.parametrize("stack", STACKS)
def test_operator_delivery_registers_crds_operator_and_custom_resources(stack: str) -> None:
    config = with_delivery(stack, "operator")

    def check(platform: Any, mocks: RecordingMocks) -> None:
        kinds = by_kind(mocks)
        assert kinds["Model"] == len(config["llmkube:models"])
        assert kinds["InferenceService"] == len(config["llmkube:services"])
        assert kinds["Deployment"] == 1  # the controller; the operator renders the llama.cpp workloads
        crd_names = {r.object_name for r in mocks.resources if r.kind == "CustomResourceDefinition"}
        assert {"models.inference.llmkube.dev", "inferenceservices.inference.llmkube.dev"} <= crd_names
        isvc = next(r for r in mocks.resources if r.kind == "InferenceService")
        assert isvc.inputs["apiVersion"] == "inference.llmkube.dev/v1alpha1"
        assert "hardwareProfile" not in isvc.inputs["spec"]

    run(config, check)


def test_reference_home_lab_hands_the_hybrid_offload_fields_to_the_operator() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        isvc = next(r for r in mocks.resources if r.kind == "InferenceService")
        spec = isvc.inputs["spec"]
        assert spec["contextSize"] == 90112
        assert (spec["cacheTypeK"], spec["cacheTypeV"]) == ("q8_0", "q8_0")
        assert spec["moeCPUOffload"] and spec["noKvOffload"] and spec["flashAttention"] and spec["jinja"]
        assert spec["resources"] == {"gpu": 2, "cpu": "8", "hostMemory": "48Gi"}
        assert spec["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda13"
        # The operator renders the llama-server arguments itself, so the stack claims none.
        assert "serverArgs" not in platform.services["qwen36-hybrid"]

    run(stack_config("dual-5060ti"), check)


def test_reference_home_lab_direct_renders_the_hybrid_offload_flags() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        args = platform.services["qwen36-hybrid"]["serverArgs"]
        for flag in ("--cpu-moe", "--no-kv-offload", "--jinja"):
            assert flag in args
        assert args[args.index("--flash-attn") + 1] == "on"
        assert args[args.index("--tensor-split") + 1] == "1,1"
        assert args[args.index("--ctx-size") + 1] == "90112"

    run(with_delivery("dual-5060ti", "direct"), check)


def test_stack_outputs_give_endpoint_base_url_and_client_config() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        out = platform.services["llama32-1b"]
        assert out["endpoint"] == "http://llama32-1b.llmkube.svc.cluster.local:8080"
        assert out["baseUrl"] == "http://llama32-1b.llmkube.svc.cluster.local:8080/v1"
        (provider,) = out["clientConfig"]["modelProviders"]["openai"]
        assert provider["baseUrl"] == out["baseUrl"] and provider["id"] == "llama32-1b"

    run(stack_config("dev"), check)


def _identity(manifest: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = manifest["metadata"]
    return manifest["apiVersion"], manifest["kind"], metadata.get("namespace", ""), metadata["name"]


@pytest.mark.parametrize("delivery", ["direct", "operator"])
def test_snapshot_of_the_reference_home_lab(delivery: str) -> None:
    # Catches unintended change in the large manifests; the behaviour itself is asserted by the tests above.
    path = SNAPSHOTS / f"dual-5060ti-{delivery}.yaml"

    def check(platform: Any, mocks: RecordingMocks) -> None:
        # The engine registers resources as their inputs resolve, in no fixed order: the snapshot is sorted.
        text = yaml.safe_dump_all(sorted(manifests(mocks), key=_identity), sort_keys=True)
        if os.environ.get("UPDATE_SNAPSHOTS") == "1":
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"no snapshot at {path}; run with UPDATE_SNAPSHOTS=1 once and review it"
        assert text == path.read_text(), f"{path.name} changed; review the diff, then UPDATE_SNAPSHOTS=1"

    run(with_delivery("dual-5060ti", delivery), check)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"llmkube:servics": {}}, "llmkube:servics: unknown field servics; did you mean services?"),
        (
            {"llmkube:services": {"q": {"modelRef": "llama32-1b", "contextSize": 50}}},
            "llmkube:services.q.contextSize: 50: input should be greater than or equal to 128",
        ),
        (
            {"llmkube:services": {"q": {"modelRef": "llama32-1b", "resources": {"gpu": 2}}}},
            "llmkube:services.q.resources.gpu: 2 GPUs requested, but the hardware profile cpu-only has no GPUs",
        ),
    ],
)
def test_bad_config_fails_the_program_with_its_path_and_no_resources(override: dict[str, Any], expected: str) -> None:
    error = preview_fails({**stack_config("dev"), **override})
    assert str(error).startswith(expected)
    assert isinstance(error, pulumi.RunError)  # printed by Pulumi without a stack trace


def preview_fails(config: dict[str, Any]) -> ConfigError:
    """The ConfigError the stack program fails with; nothing was registered with the Kubernetes provider."""
    mocks = install_mocks(config)

    @pulumi.runtime.test
    def program() -> None:
        run_main()

    with pytest.raises(ConfigError) as info:
        program()
    assert [r for r in mocks.resources if r.type.startswith("kubernetes:")] == []
    return info.value


def test_components_can_be_used_from_another_program() -> None:
    from llmkube_components import InferenceService, Model

    def user_program() -> InferenceService:
        model = Model("tiny", {"spec": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf"}, "namespace": "ai"})
        return InferenceService(
            "chat",
            {"spec": {"modelRef": "tiny", "contextSize": 4096}, "model": model, "hardware": "rtx4090"},
        )

    def check(svc: Any, mocks: RecordingMocks) -> None:
        dep = next(r for r in mocks.resources if r.kind == "Deployment")
        assert (dep.object_name, dep.inputs["metadata"]["namespace"]) == ("chat", "ai")
        pod = dep.inputs["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        # Without Platform there is no shared cache: the service brings a volume of its own and uses it.
        (pvc,) = [r for r in mocks.resources if r.kind == "PersistentVolumeClaim"]
        assert (pvc.object_name, pvc.inputs["metadata"]["namespace"]) == ("chat-model-cache", "ai")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == "chat-model-cache"
        assert svc.endpoint == "http://chat.ai.svc.cluster.local:8080"
        types = {r.type for r in mocks.resources}
        assert {"llmkube:index:Model", "llmkube:index:InferenceService"} <= types

    run({}, check, user_program)


def test_offload_warnings_reach_the_preview_log(caplog: pytest.LogCaptureFixture) -> None:
    config = {
        **stack_config("dev"),
        "llmkube:services": {"q": {"modelRef": "llama32-1b", "moeCPUOffload": True, "moeCPULayers": 4}},
    }

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert by_kind(mocks)["Deployment"] == 1  # a warning, not an error: the service still deploys

    with caplog.at_level("WARNING"):
        run(config, check)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("llmkube:services.q: moeCPUOffload, moeCPULayers moves weights") for w in warnings), (
        warnings
    )
    assert any(w.startswith("llmkube:services.q.moeCPULayers: 4 has no effect") for w in warnings), warnings


def test_stack_sizes_the_shared_model_cache() -> None:
    config = {**stack_config("dev"), "llmkube:modelCache": {"size": "500Gi", "storageClass": "fast-nvme"}}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        (pvc,) = [r for r in mocks.resources if r.kind == "PersistentVolumeClaim"]
        assert pvc.name == "llmkube-model-cache"
        assert pvc.inputs["spec"]["storageClassName"] == "fast-nvme"
        assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "500Gi"

    run(config, check)


@pytest.mark.parametrize("delivery", ["direct", "operator"])
def test_shared_cache_outlives_services_and_the_stack(delivery: str) -> None:
    # retain_on_delete: removing a service, or destroying the stack, leaves the cache volume and its models.
    options: dict[str, pulumi.ResourceOptions] = {}
    inputs: dict[str, dict] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts
        inputs[args.name] = args.props

    install_mocks({**stack_config("dev"), "llmkube:delivery": delivery})

    @pulumi.runtime.test
    def program() -> None:
        pulumi.runtime.register_stack_transformation(capture)
        run_main()

    program()
    # Deleting a namespace deletes its volumes (ours in direct, the operator's in operator), so it is kept.
    kept = ["llmkube-namespace"] + (["llmkube-model-cache"] if delivery == "direct" else [])
    for name in kept:
        assert options[name].retain_on_delete is True, name
        # A later stack adopts what an earlier one kept, even when another field manager wrote it.
        assert inputs[name]["metadata"]["annotations"]["pulumi.com/patchForce"] == "true", name
    assert ("llmkube-model-cache" in options) == (delivery == "direct"), sorted(options)
    workload = "llmkube-llama32-1b-deployment" if delivery == "direct" else "llmkube-llama32-1b-isvc"
    assert workload in options, sorted(options)
    assert not options[workload].retain_on_delete
    assert "annotations" not in (inputs[workload]["metadata"] or {})


def test_standalone_model_on_a_gpu_profile_tells_the_operator_its_gpus() -> None:
    from llmkube_components import Model

    def user_program() -> Model:
        return Model(
            "big",
            {"spec": {"source": "https://example.com/big.gguf"}, "hardware": "dual-rtx5060ti", "delivery": "operator"},
        )

    def check(model: Any, mocks: RecordingMocks) -> None:
        (cr,) = [r for r in mocks.resources if r.kind == "Model"]
        assert cr.inputs["spec"]["hardware"] == {
            "accelerator": "cuda",
            "gpu": {"enabled": True, "count": 2, "vendor": "nvidia"},
        }

    run({}, check, user_program)


def test_platform_args_has_every_stack_key() -> None:
    from llmkube_components.api import StackConfig
    from llmkube_components.components import PlatformArgs

    assert set(PlatformArgs.__annotations__) == {f.alias or n for n, f in StackConfig.model_fields.items()}


def test_the_plan_is_a_service_output_and_its_decision_reaches_the_deployment() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        plan = platform.services["llama32-1b"]["plan"]
        assert plan["mode"] == "auto" and plan["source"] == "catalog:Llama-3.2-1B"
        assert plan["bytes"]["host"] > 0 and plan["decodeTokensPerSecond"] > 0
        dep = next(r for r in mocks.resources if r.kind == "Deployment")
        requests = dep.inputs["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert requests["memory"] == plan["hostMemoryRequest"]  # the planned request, not the 4Gi limit

    run(stack_config("dev"), check)


def test_the_plan_table_is_logged_at_preview(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        run(stack_config("dual-5060ti"), lambda platform, mocks: None)
    tables = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan for qwen36-hybrid (manual)")]
    assert tables and "routed_expert" in tables[0] and "catalog estimate (Qwen3.6-35B-A3B)" in tables[0]


# --- Bugs found by the pipeline review, reproduced through the public interfaces ------------------------------


def test_per_service_caches_take_the_stacks_size_and_storage_class() -> None:
    cache = {"mode": "perService", "size": "500Gi", "storageClass": "fast-ssd"}
    config = {**stack_config("dev"), "llmkube:modelCache": cache}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        (pvc,) = [r for r in mocks.resources if r.kind == "PersistentVolumeClaim"]
        assert pvc.object_name == "llama32-1b-model-cache"
        assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "500Gi"
        assert pvc.inputs["spec"]["storageClassName"] == "fast-ssd"

    run(config, check)


@pytest.mark.parametrize("mode", ["shared", "perService"])
def test_a_model_cache_too_small_for_the_model_fails_the_preview(mode: str) -> None:
    # Llama-3.2-1B Q4_K_M is about 0.75 GiB of weights: a 100Mi cache cannot hold it.
    error = preview_fails({**stack_config("dev"), "llmkube:modelCache": {"mode": mode, "size": "100Mi"}})
    assert str(error).startswith("llmkube:modelCache.size: 100Mi is too small"), str(error)


def test_a_standalone_models_catalog_reaches_its_standalone_service(caplog: pytest.LogCaptureFixture) -> None:
    from llmkube_components import InferenceService, Model

    def user_program() -> InferenceService:
        # A file name no catalog entry recognises: only the catalog the user set can plan it (offline).
        spec = {"source": "https://example.com/models/my-finetune.gguf", "catalog": "Llama-3.2-1B"}
        model = Model("mine", {"spec": spec, "namespace": "ai"})
        return InferenceService("chat", {"spec": {"modelRef": "mine", "contextSize": 4096}, "model": model})

    def check(svc: Any, mocks: RecordingMocks) -> None:
        assert svc.plan is not None and svc.plan["source"] == "catalog:Llama-3.2-1B", svc.plan

    with caplog.at_level("WARNING"):
        run({}, check, user_program)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not [w for w in warnings if "catalog" in w], warnings


def test_per_service_caches_through_the_platform_component() -> None:
    from llmkube_components import Platform

    def user_program() -> Any:
        cache = {"mode": "perService", "size": "500Gi", "storageClass": "fast-ssd"}
        config = {k.removeprefix("llmkube:"): v for k, v in stack_config("dev").items() if k.startswith("llmkube:")}
        return Platform("llm", {**config, "modelCache": cache})  # type: ignore[typeddict-item]

    def check(platform: Any, mocks: RecordingMocks) -> None:
        (pvc,) = [r for r in mocks.resources if r.kind == "PersistentVolumeClaim"]
        assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "500Gi"
        assert pvc.inputs["spec"]["storageClassName"] == "fast-ssd"

    run({}, check, user_program)


def test_a_models_catalog_plans_it_through_the_stack_contract(caplog: pytest.LogCaptureFixture) -> None:
    model = {"source": "https://example.com/models/my-finetune.gguf", "catalog": "Llama-3.2-1B"}
    config = {**stack_config("dev"), "llmkube:models": {"llama32-1b": model}}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["llama32-1b"]["plan"]["source"] == "catalog:Llama-3.2-1B"

    with caplog.at_level("WARNING"):
        run(config, check)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "catalog" in r.getMessage()]


def test_a_bad_setting_fails_the_stack_program_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKUBE_NODE_CHECK", "sometimes")
    install_mocks(stack_config("dev"))

    @pulumi.runtime.test
    def program() -> None:
        run_main()

    with pytest.raises(pulumi.RunError) as info:  # printed by Pulumi without a stack trace
        program()
    assert str(info.value) == (
        "LLMKUBE_NODE_CHECK='sometimes' is neither true (1, true, yes, on) nor false (0, false, no, off)"
    )


def test_a_component_made_without_settings_reports_a_bad_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkube_components import Platform

    monkeypatch.setenv("LLMKUBE_OFFLINE", "perhaps")
    install_mocks({})

    @pulumi.runtime.test
    def program() -> None:
        Platform("llm", {"models": {}})

    with pytest.raises(pulumi.RunError) as info:
        program()
    assert str(info.value).startswith("LLMKUBE_OFFLINE='perhaps' is neither true")


def registered_options(config: dict[str, Any], body: Any = run_main) -> dict[str, pulumi.ResourceOptions]:
    """The options each resource was registered with, by Pulumi name (the mocks do not see them)."""
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts

    install_mocks(config)

    @pulumi.runtime.test
    def program() -> None:
        pulumi.runtime.register_stack_transformation(capture)
        body()

    program()
    return options


@pytest.mark.parametrize("mbps", [1, 10_000])
def test_pulumi_waits_for_a_deployment_as_long_as_its_model_downloads(mbps: int) -> None:
    # Pulumi's await of a Deployment includes its init containers and gives up after 10 minutes by default: a
    # rollout still downloading its model would fail `pulumi up`.
    from llmkube_components import pipeline, workloads
    from llmkube_components.settings import Settings

    config = {**stack_config("dev"), "llmkube:downloadMbps": mbps}
    raw = {k.removeprefix("llmkube:"): v for k, v in config.items() if k.startswith("llmkube:")}
    model_bytes = pipeline.load(raw, Settings(offline=True)).models["llama32-1b"].file_bytes
    minutes = workloads.rollout_timeout_minutes(model_bytes, mbps)
    assert minutes > 60 if mbps == 1 else minutes < 15
    options = registered_options(config)
    timeouts = options["llmkube-llama32-1b-deployment"].custom_timeouts
    assert timeouts is not None and (timeouts.create, timeouts.update) == (f"{minutes}m", f"{minutes}m")
    assert options["llmkube-llama32-1b-service"].custom_timeouts is None  # awaited as before


def test_a_standalone_service_waits_for_its_download_too() -> None:
    from llmkube_components import InferenceService, Model

    def user_program() -> None:
        model = Model("tiny", {"spec": {"source": "https://example.com/m.gguf", "catalog": "Llama-3.2-1B"}})
        InferenceService("chat", {"spec": {"modelRef": "tiny"}, "model": model, "downloadMbps": 1})

    timeouts = registered_options({}, user_program)["chat-deployment"].custom_timeouts
    assert timeouts is not None and timeouts.create is not None and int(timeouts.create.removesuffix("m")) > 60


def test_observability_objects_are_registered_under_the_platform() -> None:
    """llmkube:observability's objects reach the engine: the PodMonitor as a custom resource, the dashboard
    ConfigMap, and the KEDA ScaledObject in place of the HPA."""
    config = {
        **with_delivery("dev", "direct"),
        "llmkube:observability": {
            "podMonitor": True,
            "dashboard": True,
            "autoscaler": "keda",
            "prometheusUrl": "http://prometheus.monitoring.svc:9090",
        },
    }
    services = dict(config["llmkube:services"])
    first = sorted(services)[0]
    services[first] = {**services[first], "autoscaling": {"maxReplicas": 2}}
    config["llmkube:services"] = services

    def check(platform: Any, mocks: RecordingMocks) -> None:
        kinds = by_kind(mocks)
        assert kinds["PodMonitor"] == 1
        assert kinds["ScaledObject"] == 1
        assert kinds["HorizontalPodAutoscaler"] == 0
        monitor = next(r for r in mocks.resources if r.kind == "PodMonitor")
        assert monitor.type == "kubernetes:monitoring.coreos.com/v1:PodMonitor"
        dashboards = [
            r
            for r in mocks.resources
            if r.kind == "ConfigMap" and "grafana_dashboard" in r.inputs["metadata"]["labels"]
        ]
        assert len(dashboards) == 1
        scaled = next(r for r in mocks.resources if r.kind == "ScaledObject")
        assert scaled.inputs["spec"]["scaleTargetRef"]["name"] == first

    run(config, check)
