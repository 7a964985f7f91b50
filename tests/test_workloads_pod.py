"""Delivery direct's rendering of the InferenceService's lifecycle, pod, GPU, gateway and SLO fields, and the
preview's errors and warnings about the fields a delivery cannot honour."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from llmkube_components import checks, pipeline, workloads
from llmkube_components.api.stack import NetworkPolicySettings
from llmkube_components.errors import ConfigError
from llmkube_components.hardware import builtin_profiles
from llmkube_components.resolve import ResolvedService, resolve_stack, validate_stack
from tests.pulumi_program import RecordingMocks, stack_config
from tests.test_components import manifests, registered_options, run
from tests.test_workloads import _profile, make_service, of_kind, pod_of, server

K8S_VERSION = kubernetes_validate.latest_version()
MODEL = {"source": "https://example.com/qwen.gguf"}


def problems_of(service: ResolvedService, delivery: str = "direct") -> dict[str, str]:
    return {p.path: p.message for p in checks.delivery_problems(service, delivery)}  # type: ignore[arg-type]


def stack_warnings(service: dict[str, Any], *, delivery: str = "direct", model: dict[str, Any] | None = None) -> dict:
    config = {
        "delivery": delivery,
        "hardware": "dual-rtx5060ti",
        "models": {"m": model or MODEL},
        "services": {"s": {"modelRef": "m", **service}},
    }
    return {p.path: p.message for p in resolve_stack(validate_stack(config)).warnings}


def workload_problems(service: ResolvedService) -> tuple[dict[str, str], dict[str, str]]:
    errors, warnings = workloads.workload_problems(service)
    return {p.path: p.message for p in errors}, {p.path: p.message for p in warnings}


def deployment_spec(service: ResolvedService) -> dict[str, Any]:
    return workloads.deployment(service)["spec"]


# ---------------------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "replicas", "hpa"),
    [
        ({"suspend": True, "replicas": 3}, 0, False),
        ({"suspend": True, "autoscaling": {"maxReplicas": 4}}, 0, False),
        ({"suspend": False, "replicas": 3}, 3, False),
        ({"autoscaling": {"maxReplicas": 4}}, None, True),
    ],
)
def test_suspend_scales_to_zero_and_drops_the_autoscaler(spec: dict[str, Any], replicas: int | None, hpa: bool) -> None:
    service = make_service(spec)
    assert deployment_spec(service).get("replicas") == replicas
    assert (workloads.hpa(service) is not None) is hpa
    kinds = [m["kind"] for m in workloads.service_workloads(service)]
    assert ("HorizontalPodAutoscaler" in kinds) is hpa


@pytest.mark.parametrize(("limit", "expected"), [(None, None), (0, 0), (5, 5)])
def test_revision_history_limit(limit: int | None, expected: int | None) -> None:
    spec = {} if limit is None else {"revisionHistoryLimit": limit}
    assert deployment_spec(make_service(spec)).get("revisionHistoryLimit") == expected


def test_rollout_force_is_accepted_and_wait_for_idle_needs_the_operator() -> None:
    assert problems_of(make_service({"rolloutPolicy": {"force": True}})) == {}
    waiting = make_service({"rolloutPolicy": {"waitForIdle": True, "idleTimeoutSeconds": 60}})
    message = problems_of(waiting)["services.qwen.rolloutPolicy.waitForIdle"]
    assert message.startswith("true needs delivery operator: only its controller watches llama-server's /slots")
    assert problems_of(waiting, "operator") == {}


@pytest.mark.parametrize("field", ["maxPodLifetimeSeconds", "maxPodLifetimeIdleTimeoutSeconds"])
def test_pod_lifetime_needs_the_operator(field: str) -> None:
    service = make_service({field: 3600})
    message = problems_of(service)[f"services.qwen.{field}"]
    assert message.startswith("3600 needs delivery operator: Kubernetes has no lifetime for a Deployment's pods")
    assert "activeDeadlineSeconds" not in str(workloads.deployment(service))
    assert problems_of(service, "operator") == {}


@pytest.mark.parametrize(
    ("disruption", "budget"),
    [
        (None, None),
        ({}, {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "IfHealthyBudget"}),
        ({"protectStartup": True}, {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "IfHealthyBudget"}),
        ({"protectStartup": False}, {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
        ({"protectAlways": True}, {"maxUnavailable": 0}),
    ],
)
def test_disruption_is_a_pod_disruption_budget(
    disruption: dict[str, Any] | None, budget: dict[str, Any] | None
) -> None:
    service = make_service({} if disruption is None else {"disruption": disruption})
    pdb = workloads.pod_disruption_budget(service)
    if budget is None:
        assert pdb is None
        assert "PodDisruptionBudget" not in [m["kind"] for m in workloads.service_workloads(service)]
        return
    assert pdb is not None
    assert pdb["metadata"]["name"] == "qwen" and pdb["metadata"]["namespace"] == "llmkube"
    assert pdb["spec"] == {"selector": {"matchLabels": workloads.selector_labels(service)}, **budget}
    assert of_kind(workloads.service_workloads(service), "PodDisruptionBudget") == pdb
    kubernetes_validate.validate(pdb, K8S_VERSION, strict=True)


def test_protect_always_warns_that_drains_wait() -> None:
    warnings = stack_warnings({"disruption": {"protectAlways": True}})
    assert warnings["services.s.disruption.protectAlways"].startswith("true renders a PodDisruptionBudget with")
    assert "services.s.disruption.protectAlways" not in stack_warnings({"disruption": {"protectStartup": True}})


@pytest.mark.parametrize(
    ("spec", "class_name"),
    [
        ({}, None),
        ({"priority": "high"}, "llmkube-high"),
        ({"priority": "batch"}, "llmkube-batch"),
        ({"priority": "high", "priorityClassName": "mine"}, "mine"),
        ({"priorityClassName": "mine"}, "mine"),
    ],
)
def test_priority_names_an_llmkube_priority_class(spec: dict[str, Any], class_name: str | None) -> None:
    assert pod_of(make_service(spec)).get("priorityClassName") == class_name


@pytest.mark.parametrize(
    ("level", "value", "preemption"),
    [
        ("critical", 1_000_000, "PreemptLowerPriority"),
        ("high", 100_000, "PreemptLowerPriority"),
        ("normal", 10_000, "PreemptLowerPriority"),
        ("low", 1_000, "PreemptLowerPriority"),
        ("batch", 100, "Never"),
    ],
)
def test_priority_classes_carry_the_operators_values(level: str, value: int, preemption: str) -> None:
    manifest = workloads.priority_class(level)
    assert manifest["metadata"]["name"] == f"llmkube-{level}" and "namespace" not in manifest["metadata"]
    assert (manifest["value"], manifest["preemptionPolicy"], manifest["globalDefault"]) == (value, preemption, False)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("spec", "delivery", "level"),
    [
        ({}, "direct", None),
        ({}, "operator", "normal"),  # the controller always names llmkube-normal
        ({"priority": "low"}, "direct", "low"),
        ({"priority": "low", "priorityClassName": "mine"}, "operator", None),
    ],
)
def test_priority_level(spec: dict[str, Any], delivery: str, level: str | None) -> None:
    assert workloads.priority_level(make_service(spec), delivery) == level  # type: ignore[arg-type]


def test_priority_classes_are_one_per_level_highest_first() -> None:
    names = [m["metadata"]["name"] for m in workloads.priority_classes(["low", None, "critical", "low"])]
    assert names == ["llmkube-critical", "llmkube-low"]


@pytest.mark.parametrize(
    ("spec", "annotations"),
    [
        ({}, None),
        ({"evictionProtection": False}, None),
        (
            {"evictionProtection": True},
            {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "karpenter.sh/do-not-disrupt": "true"},
        ),
        (  # the user's annotations win, as the operator's podAnnotations do
            {"evictionProtection": True, "podAnnotations": {"karpenter.sh/do-not-disrupt": "false", "a": "b"}},
            {
                "a": "b",
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                "karpenter.sh/do-not-disrupt": "false",
            },
        ),
    ],
)
def test_eviction_protection_annotations(spec: dict[str, Any], annotations: dict[str, str] | None) -> None:
    meta = deployment_spec(make_service(spec))["template"]["metadata"]
    assert meta.get("annotations") == annotations


# ---------------------------------------------------------------------------------------------------------
# Pod fields
# ---------------------------------------------------------------------------------------------------------


def test_topology_spread_constraints_default_to_the_services_pods() -> None:
    given = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    own = {**given, "labelSelector": {"matchLabels": {"team": "ml"}}}
    service = make_service({"topologySpreadConstraints": [given, own]})
    spread = pod_of(service)["topologySpreadConstraints"]
    assert spread == [{**given, "labelSelector": {"matchLabels": workloads.selector_labels(service)}}, own]


def test_image_pull_secrets_command_and_env() -> None:
    env = [{"name": "LLAMA_LOG_COLORS", "value": "0"}]
    service = make_service({"imagePullSecrets": [{"name": "regcred"}], "command": ["/app/llama-server"], "env": env})
    assert pod_of(service)["imagePullSecrets"] == [{"name": "regcred"}]
    container = server(service)
    assert container["command"] == ["/app/llama-server"]
    assert container["env"] == env
    assert container["args"] == workloads.server_args_for(service)  # command keeps the generated args
    assert "command" not in server(make_service()) and "env" not in server(make_service())


def test_env_may_not_take_over_our_names() -> None:
    service = make_service({"env": [{"name": "A", "value": "1"}, {"name": "POD_NAME", "value": "x"}]})
    (problem,) = workloads.overrides.env_problems(service, [{"name": "POD_NAME"}, {"name": "MODEL"}])
    assert str(problem) == (
        "llmkube:services.qwen.env[1]: 'POD_NAME' is set by llmkube itself (it sets MODEL, POD_NAME); "
        "choose another name"
    )
    assert workload_problems(service) == ({}, {})  # the server container sets no variable of its own today


def test_args_replace_the_generated_arguments_and_the_preview_says_so() -> None:
    service = make_service({"args": ["--model", "/models/x.gguf", "--port", "8080"]})
    assert server(service)["args"] == ["--model", "/models/x.gguf", "--port", "8080"]
    warning = stack_warnings({"args": ["--model", "/m.gguf"]})["services.s.args"]
    assert warning.startswith("replaces llama-server's generated arguments entirely: the planner's flags")


def test_container_port_is_the_pods_port_and_the_service_follows_it_by_name() -> None:
    service = make_service({"containerPort": 9000, "endpoint": {"port": 8080}})
    assert server(service)["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    port = workloads.service_manifest(service)["spec"]["ports"][0]
    assert (port["port"], port["targetPort"]) == (8080, "http")
    assert server(service)["readinessProbe"]["httpGet"]["port"] == "http"
    policy = workloads.network_policy(service, NetworkPolicySettings())
    assert policy is not None and policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_probe_overrides_replace_each_probe_given() -> None:
    startup = {"tcpSocket": {"port": "http"}, "periodSeconds": 30, "failureThreshold": 120}
    container = server(make_service({"probeOverrides": {"startup": startup}}))
    assert container["startupProbe"] == startup
    assert container["livenessProbe"] == server(make_service())["livenessProbe"]
    assert container["readinessProbe"] == server(make_service())["readinessProbe"]


def test_extra_volumes_and_mounts_are_appended() -> None:
    volume = {"name": "templates", "configMap": {"name": "chat-templates"}}
    mount = {"name": "templates", "mountPath": "/templates", "readOnly": True}
    service = make_service({"extraVolumes": [volume], "extraVolumeMounts": [mount]})
    pod = pod_of(service)
    assert pod["volumes"][-1] == volume and server(service)["volumeMounts"][-1] == mount
    assert pod["volumes"][:-1] == pod_of(make_service())["volumes"]
    assert workload_problems(service) == ({}, {})


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        (
            {"extraVolumes": [{"name": "model-cache", "emptyDir": {}}]},
            "services.qwen.extraVolumes[0].name",
            "'model-cache' is a volume of llmkube's (model-cache); choose another name",
        ),
        (
            {
                "extraVolumes": [{"name": "x", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "x", "mountPath": "/models"}],
            },
            "services.qwen.extraVolumeMounts[0].mountPath",
            "'/models' is (inside) a mount path of llmkube's (/models); mount elsewhere",
        ),
        (
            {"extraVolumeMounts": [{"name": "nowhere", "mountPath": "/x"}]},
            "services.qwen.extraVolumeMounts[0].name",
            "'nowhere' names no volume of the pod; add it to extraVolumes",
        ),
    ],
)
def test_extra_volumes_may_not_collide_with_ours(spec: dict[str, Any], path: str, message: str) -> None:
    errors, _ = workload_problems(make_service(spec))
    assert errors[path] == message


def test_security_contexts_merge_over_the_restricted_defaults() -> None:
    service = make_service(
        {"podSecurityContext": {"runAsUser": 1000, "fsGroup": 1000}, "securityContext": {"capabilities": {}}}
    )
    pod = pod_of(service)
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert server(service)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert workload_problems(service) == ({}, {})
    assert workloads.pod_security_level(pod) == "restricted"


@pytest.mark.parametrize(
    ("spec", "weakened", "level"),
    [
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem: true", "restricted"),
        ({"podSecurityContext": {"runAsUser": 0, "runAsNonRoot": False}}, "runAsUser: not 0", "baseline"),
        ({"securityContext": {"runAsNonRoot": False}}, "runAsNonRoot: true", "baseline"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation: false", "baseline"),
        ({"securityContext": {"capabilities": {"add": ["CHOWN"]}}}, "capabilities.add", "baseline"),
        ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "capabilities.add", "privileged"),
        ({"securityContext": {"privileged": True}}, "privileged: false", "privileged"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile", "privileged"),
    ],
)
def test_a_weaker_security_context_is_refused_unless_allowed(spec: dict[str, Any], weakened: str, level: str) -> None:
    errors, warnings = workload_problems(make_service(spec))
    (path,) = errors
    assert weakened in errors[path] and errors[path].endswith("or set allowWeakerSecurityContext: true to accept it")
    assert warnings == {}
    allowed = make_service({**spec, "allowWeakerSecurityContext": True})
    errors, warnings = workload_problems(allowed)
    assert errors == {} and weakened in warnings[path]
    # The namespace admits what its pods need, no more.
    (namespace,) = workloads.namespace_manifests("llmkube", workloads.service_workloads(allowed))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == level


def test_the_weakened_context_is_named_at_its_field() -> None:
    errors, _ = workload_problems(make_service({"securityContext": {"allowPrivilegeEscalation": True}}))
    assert list(errors) == ["services.qwen.securityContext"]
    both = make_service({"securityContext": {"privileged": True}, "podSecurityContext": {"runAsUser": 0}})
    errors, _ = workload_problems(both)
    assert list(errors) == ["services.qwen"] and errors["services.qwen"].startswith(
        "podSecurityContext and securityContext would"
    )


# ---------------------------------------------------------------------------------------------------------
# GPUs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_gpu", "profile", "resource"),
    [
        ({"vendor": "amd", "runtime": "vulkan"}, _profile("amd"), "devic.es/dri-render"),
        ({"vendor": "amd", "runtime": "rocm"}, _profile("amd"), "devic.es/dri-render"),
        ({"vendor": "amd"}, _profile("amd"), "amd.com/gpu"),
        ({"vendor": "amd", "runtime": "vulkan", "resourceName": "amd.com/gpu"}, _profile("amd"), "amd.com/gpu"),
        ({"vendor": "intel"}, _profile("intel"), "gpu.intel.com/i915"),
        ({"vendor": "nvidia", "runtime": "vulkan"}, _profile("nvidia"), "nvidia.com/gpu"),
        ({}, _profile("amd", "amd.com/gpu.shared"), "amd.com/gpu.shared"),  # the profile's default stays
    ],
)
def test_gpu_resource_follows_the_model_as_the_operator(model_gpu: dict[str, Any], profile: Any, resource: str) -> None:
    service = make_service({"resources": {"gpu": 1}}, {"hardware": {"gpu": model_gpu}}, profile)
    assert workloads.gpu_resource(service) == resource
    assert server(service)["resources"]["limits"] == {resource: "1"}


def test_toleration_key_overrides_the_gpu_taint() -> None:
    service = make_service(
        {"resources": {"gpu": 1}},
        {"hardware": {"gpu": {"tolerationKey": "gpu.example.com/dedicated"}}},
        _profile("nvidia"),
    )
    assert pod_of(service)["tolerations"] == [
        {"key": "gpu.example.com/dedicated", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_resource_claims_replace_the_device_plugin_gpu() -> None:
    claims = [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}, {"name": "fixed", "resourceClaimName": "mig"}]
    service = make_service(
        {"resources": {"gpu": 1}}, {"hardware": {"gpu": {"resourceClaims": claims}}}, _profile("nvidia")
    )
    pod = pod_of(service)
    assert pod["resourceClaims"] == claims
    assert server(service)["resources"] == {"claims": [{"name": "gpu"}, {"name": "fixed"}]}
    assert deployment_spec(service)["strategy"] == {"type": "Recreate"}
    kubernetes_validate.validate(workloads.deployment(service), K8S_VERSION, strict=True)
    # DRA alone, on a CPU profile: the claims still hold the GPUs across a rollout.
    cpu = make_service({}, {"hardware": {"gpu": {"resourceClaims": claims}}})
    assert deployment_spec(cpu)["strategy"] == {"type": "Recreate"} and "tolerations" not in pod_of(cpu)


def test_partitioned_gpu_sharing_requests_a_mig_slice() -> None:
    spec = {"resources": {"gpu": 1, "gpuSharing": {"mode": "partitioned", "profile": "1g.10gb"}}}
    service = make_service(spec, {"hardware": {"gpu": {"vendor": "nvidia"}}}, _profile("nvidia"))
    assert server(service)["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert problems_of(service) == {}
    shared = make_service({"resources": {"gpu": 1, "gpuSharing": {"mode": "shared"}}}, profile=_profile("nvidia"))
    assert server(shared)["resources"]["limits"] == {"nvidia.com/gpu": "1"}


@pytest.mark.parametrize(
    ("spec", "model_gpu", "delivery", "path", "message"),
    [
        (
            {"resources": {"gpu": 1, "gpuSharing": {"mode": "partitioned", "profile": "1g.10gb"}}},
            {"vendor": "amd"},
            "direct",
            "services.qwen.resources.gpuSharing.mode",
            "partitioned is NVIDIA's MIG; the GPU vendor is amd: use exclusive or shared",
        ),
        (
            {"resources": {"gpu": 1, "gpuSharing": {"mode": "partitioned", "profile": "1g10gb"}}},
            {},
            "direct",
            "services.qwen.resources.gpuSharing.profile",
            "'1g10gb' is not a MIG profile such as 1g.10gb (<compute>g.<memory>gb)",
        ),
        (
            {"resources": {"gpu": 2, "gpuSharing": {"mode": "partitioned", "profile": "1g.10gb"}}},
            {},
            "operator",
            "services.qwen.resources.gpuSharing.mode",
            "partitioned with 2 GPUs: the LLMKube operator (v0.9.19) fails a shared or partitioned service unless",
        ),
        (
            {"resources": {"gpu": 1, "gpuSharing": {"mode": "shared"}}},
            {},
            "operator",
            "services.qwen.resources.gpuSharing.mode",
            "shared needs the LLMKube operator's --gpu-sharing-shared-pool-selector",
        ),
    ],
)
def test_gpu_sharing_the_gpus_cannot_give_is_an_error(
    spec: dict[str, Any], model_gpu: dict[str, Any], delivery: str, path: str, message: str
) -> None:
    service = make_service(spec, {"hardware": {"gpu": model_gpu}}, _profile(model_gpu.get("vendor", "nvidia")))
    assert problems_of(service, delivery)[path].startswith(message)


def test_memory_limit_and_metal_fields_are_not_dropped_silently() -> None:
    warnings = stack_warnings(
        {"resources": {"gpu": 1, "gpuSharing": {"mode": "shared", "memoryLimitGiB": 8}, "gpuMemory": "8Gi"}},
        model={**MODEL, "hardware": {"memoryBudget": "24Gi", "memoryFraction": 0.5}},
    )
    assert warnings["services.s.resources.gpuSharing.memoryLimitGiB"].startswith(
        "8 is planned against but not enforced in delivery direct"
    )
    assert warnings["services.s.resources.gpuMemory"].startswith("8Gi is not used")
    assert warnings["models.m.hardware.memoryBudget"].startswith("24Gi is not used: only the LLMKube operator's Metal")
    assert warnings["models.m.hardware.memoryFraction"].startswith("0.5 is not used")
    metal = stack_warnings(
        {}, delivery="operator", model={**MODEL, "hardware": {"accelerator": "metal", "memoryFraction": 0.5}}
    )
    assert "models.m.hardware.memoryFraction" not in metal


# ---------------------------------------------------------------------------------------------------------
# Gateway and SLO
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway", "parent", "match"),
    [
        (
            {"gatewayRef": {"name": "ai"}},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai"},
            {"path": {"type": "PathPrefix", "value": "/"}},
        ),
        (
            {"gatewayRef": {"name": "ai", "namespace": "gateways"}, "modelName": "qwen3"},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai", "namespace": "gateways"},
            {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "qwen3"}]},
        ),
    ],
)
def test_gateway_is_an_http_route(gateway: dict[str, Any], parent: dict[str, Any], match: dict[str, Any]) -> None:
    service = make_service({"endpoint": {"port": 8081, "gateway": gateway}})
    route = workloads.http_route(service)
    assert route is not None and route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "qwen"
    assert route["spec"] == {
        "parentRefs": [parent],
        "rules": [
            {"matches": [match], "backendRefs": [{"group": "", "kind": "Service", "name": "qwen", "port": 8081}]}
        ],
    }
    assert of_kind(workloads.service_workloads(service), "HTTPRoute") == route


def test_a_disabled_gateway_renders_nothing() -> None:
    service = make_service({"endpoint": {"gateway": {"enabled": False, "gatewayRef": {"name": "ai"}}}})
    assert workloads.http_route(service) is None


@pytest.mark.parametrize(
    ("gateway_namespace", "peers"),
    [
        (None, [{"podSelector": {}}]),
        ("llmkube", [{"podSelector": {}}]),
        (
            "gateways",
            [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}],
        ),
    ],
)
def test_the_network_policy_admits_the_gateways_namespace(
    gateway_namespace: str | None, peers: list[dict[str, Any]]
) -> None:
    ref = {"name": "ai", **({"namespace": gateway_namespace} if gateway_namespace else {})}
    service = make_service({"endpoint": {"gateway": {"gatewayRef": ref}}})
    policy = workloads.network_policy(service, NetworkPolicySettings())
    assert policy is not None and policy["spec"]["ingress"][0]["from"] == peers


def test_availability_slo_is_a_pyrra_objective() -> None:
    service = make_service({"slo": {"objective": "99.5"}})
    slo = workloads.service_level_objective(service)
    assert slo is not None and (slo["apiVersion"], slo["kind"]) == ("pyrra.dev/v1alpha1", "ServiceLevelObjective")
    assert slo["metadata"]["name"] == "qwen-availability"
    assert slo["spec"] == {
        "target": "99.5",
        "window": "28d",
        "indicator": {"bool_gauge": {"metric": 'up{namespace="llmkube",service="qwen"}'}},
    }
    named = make_service({"slo": {"name": "chat-up", "objective": "99", "window": "7d"}})
    assert workloads.service_level_objective(named)["metadata"]["name"] == "chat-up"  # type: ignore[index]


def test_latency_slo_needs_a_histogram_llama_server_lacks() -> None:
    service = make_service({"slo": {"indicator": "latency", "objective": "99", "latencyThreshold": "2"}})
    assert workloads.service_level_objective(service) is None
    assert problems_of(service)["services.qwen.slo.indicator"].startswith("latency needs a request latency histogram")
    bad_name = make_service({"slo": {"name": "Not A Name", "objective": "99"}})
    assert "services.qwen.slo.name" in problems_of(bad_name)


# ---------------------------------------------------------------------------------------------------------
# Delivery operator: what the controller ignores or does differently
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "start"),
    [
        ("args", ["--foo"], "is ignored by the LLMKube operator for runtime llamacpp"),
        ("securityContext", {"runAsUser": 1000}, "replaces the LLMKube operator's defaults wholesale"),
        ("podSecurityContext", {"runAsUser": 1000}, "replaces the LLMKube operator's defaults wholesale"),
        ("evictionProtection", True, "is used by the LLMKube operator's Metal agent only"),
        ("disruption", {"protectAlways": True}, "makes no PodDisruptionBudget with the LLMKube operator"),
        ("containerPort", 9000, "9000: the LLMKube operator's Service targets endpoint.port (8080)"),
        ("slo", {"objective": "99"}, "is ignored by the operator llmkube installs"),
        ("endpoint", {"gateway": {"gatewayRef": {"name": "ai"}}}, "the LLMKube operator renders Envoy AI Gateway"),
        (
            "topologySpreadConstraints",
            [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}],
            "an entry without labelSelector is passed on as it is",
        ),
    ],
)
def test_operator_delivery_warns_about_what_the_controller_ignores(field: str, value: Any, start: str) -> None:
    warnings = stack_warnings({field: value}, delivery="operator")
    path = "services.s.endpoint.gateway" if field == "endpoint" else f"services.s.{field}"
    assert warnings[path].startswith(start), warnings
    if field not in ("args", "disruption"):  # delivery direct does what these fields say
        assert path not in stack_warnings({field: value})


def test_every_new_pod_field_renders_valid_kubernetes() -> None:
    service = make_service(
        {
            "resources": {"gpu": 1},
            "suspend": True,
            "revisionHistoryLimit": 2,
            "priority": "high",
            "evictionProtection": True,
            "disruption": {},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "imagePullSecrets": [{"name": "regcred"}],
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "command": ["llama-server"],
            "containerPort": 9000,
            "probeOverrides": {"liveness": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 30}},
            "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "podSecurityContext": {"runAsUser": 1000},
        },
        {"hardware": {"gpu": {"vendor": "nvidia", "tolerationKey": "gpu.example.com/pool"}}},
        builtin_profiles()["dual-rtx5060ti"],
    )
    built = [m for m in workloads.service_workloads(service) if not m["apiVersion"].startswith(("gateway.", "pyrra."))]
    for manifest in built + workloads.priority_classes(["high"]):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_nothing_changes_for_a_spec_without_the_new_fields() -> None:
    service = make_service()
    kinds = [m["kind"] for m in workloads.service_workloads(service)]
    assert kinds == ["Deployment", "Service"]
    pod = pod_of(service)
    for key in ("priorityClassName", "imagePullSecrets", "topologySpreadConstraints", "resourceClaims"):
        assert key not in pod
    assert "annotations" not in deployment_spec(service)["template"]["metadata"]


# ---------------------------------------------------------------------------------------------------------
# The pipeline and the components
# ---------------------------------------------------------------------------------------------------------


def _raw(services: dict[str, Any], delivery: str = "direct") -> dict[str, Any]:
    return {
        "delivery": delivery,
        "hardware": {"extends": "cpu-only", "nodes": 3},  # a node per service: each plans about 15 GiB of RAM
        "models": {"m": {**MODEL, "catalog": "Llama-3.2-1B"}},
        "services": {name: {"modelRef": "m", **spec} for name, spec in services.items()},
    }


def test_the_pipeline_reports_every_services_pod_problems_at_once() -> None:
    from llmkube_components.settings import Settings

    raw = _raw(
        {
            "a": {"securityContext": {"privileged": True}},
            "b": {"extraVolumeMounts": [{"name": "nowhere", "mountPath": "/x"}]},
        }
    )
    with pytest.raises(ConfigError) as info:
        pipeline.platform(raw, Settings(offline=True))
    assert {p.path for p in info.value.problems} == {
        "services.a.securityContext",
        "services.b.extraVolumeMounts[0].name",
    }


def test_the_pipeline_collects_priority_classes_and_warnings() -> None:
    from llmkube_components.settings import Settings

    raw = _raw(
        {
            "a": {
                "priority": "high",
                "securityContext": {"readOnlyRootFilesystem": False},
                "allowWeakerSecurityContext": True,
            },
            "b": {"priority": "high"},
            "c": {},
        }
    )
    built = pipeline.platform(raw, Settings(offline=True))
    assert [m["metadata"]["name"] for m in built.priority_classes] == ["llmkube-high"]
    assert [str(w) for w in built.services["a"].warnings] == [
        "llmkube:services.a.securityContext: securityContext weakens the server's restricted defaults "
        "(allowWeakerSecurityContext): it no longer has readOnlyRootFilesystem: true; the namespace's Pod Security "
        "level is lowered to admit it"
    ]
    operator = pipeline.platform({**raw, "delivery": "operator"}, Settings(offline=True))
    assert [m["metadata"]["name"] for m in operator.priority_classes] == ["llmkube-high", "llmkube-normal"]


def test_platform_registers_the_new_objects_and_keeps_priority_classes() -> None:
    config = copy.deepcopy(stack_config("dev"))
    (service,) = config["llmkube:services"].values()
    service.update({"priority": "low", "disruption": {}, "slo": {"objective": "99"}})
    service["endpoint"] = {"gateway": {"gatewayRef": {"name": "ai", "namespace": "gw"}}}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        kinds = {r.kind: r for r in mocks.resources if r.type.startswith("kubernetes:")}
        for kind in ("PriorityClass", "PodDisruptionBudget", "HTTPRoute", "ServiceLevelObjective"):
            assert kind in kinds, kind
        assert kinds["PriorityClass"].type == "kubernetes:scheduling.k8s.io/v1:PriorityClass"
        assert kinds["PriorityClass"].inputs["value"] == 1000
        assert kinds["PodDisruptionBudget"].type == "kubernetes:policy/v1:PodDisruptionBudget"
        priority_class = next(m for m in manifests(mocks) if m["kind"] == "PriorityClass")
        assert priority_class["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}

    run(config, check)

    options = registered_options(config)
    (name,) = [n for n in options if n.endswith("llmkube-low")]
    assert options[name].retain_on_delete is True
