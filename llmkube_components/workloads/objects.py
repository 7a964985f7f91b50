"""Pure builders of the llama.cpp workloads the LLMKube operator would create for an InferenceService.

With delivery ``direct`` Pulumi registers what these functions return: the model cache PVC, the llama-server
Deployment (with the init containers that fetch the model), its Service and, with autoscaling, its
HorizontalPodAutoscaler; a multi-node service's workers (multinode) join them. Everything here is a plain dict,
built without Pulumi or network, and the same input always gives byte-identical output.

The layout follows the operator (v0.9.19, internal/controller) so that both deliveries can share one cache:
a model lives in ``/models/<first 16 hex of sha256(spec.source)>/`` on a PVC named ``llmkube-model-cache``
(or ``<service>-model-cache`` per service, or the user's ``modelCache.claimName``), the Deployment is named
after the service and selects on ``app`` + ``inference.llmkube.dev/service`` only. Where we differ, the
difference is stated next to the code that makes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..api.core import tolerates
from ..api.model import GPUSpec
from ..api.service import (
    DEFAULT_ENDPOINT_TYPE,
    DEFAULT_REPLICAS,
    InferenceResources,
    MetricSpec,
)
from ..api.stack import (
    PER_SERVICE_CACHE_SUFFIX,
    SHARED_CACHE_PVC_NAME,
    CacheMode,
    CacheSettings,
    Delivery,
    ObservabilitySettings,
)
from ..errors import Problem
from ..flags import (
    API_KEY_DIR,
    API_KEY_FILE,
    ROUTER_PRESET_DIR,
    ROUTER_PRESET_FILE,
    ROUTER_PRESET_KEY,
    RoutedModel,
    bind_address_problems,
    is_router,
    listen_port,
    router_models_max_warnings,
    router_preset,
    router_problems,
)
from ..flags import speculative_problems as speculative_no_op_warnings
from ..hardware import gpu_resource_name
from ..llamacpp import build_args
from ..meta import object_meta, recommended_labels, sorted_by_key
from ..resolve import ResolvedService, ResolvedStack, cache_kind
from . import lifecycle, multinode, overrides, routing
from . import observability as observability_objects
from .labels import common_labels, selector_labels, service_labels
from .overrides import memory_limit_for, pod_security_context_of, server_security_context
from .podsecurity import namespace_pod_security
from .storage import DOWNLOADER_IMAGE, ModelStorage, model_storage

Manifest = dict[str, Any]

CONTAINER_NAME: Final = "llama-server"
PORT_NAME: Final = "http"
HEALTH_PATH: Final = "/health"

# Marks the namespace's shared cache PVC: it outlives every service, so the Pulumi layer registers it with
# retain_on_delete and removing a service never deletes tens of gigabytes of downloads.
SHARED_CACHE_ANNOTATION: Final = "inference.llmkube.dev/shared-model-cache"

# runtime llamacpp-router: the ConfigMap <service>-router holds the models preset, and the pod template carries
# its digest, so that a change of the preset alone (skipModelInit: no downloader changes with it) restarts the
# pods: llama-server reads the file once, at start.
ROUTER_CONFIG_MAP_SUFFIX: Final = "-router"
ROUTER_PRESET_ANNOTATION: Final = "inference.llmkube.dev/router-preset-sha256"

# Probes (the operator's LlamaCppBackend.BuildProbes figures). llama-server answers /health with 503 while it
# loads the model; reading 21 GB from a network volume and warming the GPUs can take many minutes, so the
# startup probe allows 180 x 10 s = 30 minutes before the kubelet restarts the container. Liveness and
# readiness only start once it has passed.
STARTUP_PROBE: Final = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 180}
LIVENESS_PROBE: Final = {"periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 3}
READINESS_PROBE: Final = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}

DEFAULT_CACHE: Final = CacheSettings()
DEFAULT_OBSERVABILITY: Final = ObservabilitySettings()


# ---------------------------------------------------------------------------------------------------------
# Resources, scheduling
# ---------------------------------------------------------------------------------------------------------

# AMD GPUs driven through Vulkan or ROCm's render nodes are advertised by the generic device plugin
# (devic.es) as render devices, not as amd.com/gpu (the operator's GPUResourceName does the same).
DRI_RENDER_RESOURCE: Final = "devic.es/dri-render"
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"


def _model_gpu(service: ResolvedService) -> GPUSpec | None:
    hardware = service.model.spec.hardware
    return hardware.gpu if hardware else None


def gpu_vendor(service: ResolvedService) -> str:
    """The GPU vendor: the Model's, else the profile's, else NVIDIA (the operator's default)."""
    gpu = _model_gpu(service)
    profile_gpu = service.profile.gpu
    return (gpu.vendor if gpu else None) or (profile_gpu.vendor if profile_gpu else None) or "nvidia"


def gpu_resource(service: ResolvedService) -> str:
    """The extended resource the server's GPUs are requested as.

    As the operator: a partitioned gpuSharing's MIG profile (``nvidia.com/mig-<profile>``), else the Model's
    hardware.gpu resourceName, else ``devic.es/dri-render`` for AMD through Vulkan or ROCm, else the vendor's
    device-plugin resource. The profile's GPU fills in what the Model leaves unset (its resource name for the
    same vendor), and an unset vendor means NVIDIA.
    """
    gpu = _model_gpu(service)
    sharing = service.spec.resources.gpu_sharing if service.spec.resources else None
    if sharing is not None and sharing.mode == "partitioned" and sharing.profile:
        return MIG_RESOURCE_PREFIX + sharing.profile
    profile_gpu = service.profile.gpu
    vendor = gpu_vendor(service)
    override = gpu.resource_name if gpu else None
    if override is None and vendor == "amd" and gpu is not None and gpu.runtime in ("vulkan", "rocm"):
        override = DRI_RENDER_RESOURCE
    if override is None and profile_gpu is not None and profile_gpu.vendor == vendor:
        override = profile_gpu.resource_name
    return gpu_resource_name(vendor, override)


def resource_claims(service: ResolvedService) -> list[Manifest]:
    """The pod's Dynamic Resource Allocation claims (the Model's hardware.gpu.resourceClaims), as written."""
    gpu = _model_gpu(service)
    return [claim.wire() for claim in (gpu.resource_claims if gpu else None) or []]


def has_gpus(service: ResolvedService) -> bool:
    """Whether the pod holds GPUs: device-plugin ones or DRA claims."""
    return service.gpu_count > 0 or bool(resource_claims(service))


def tolerations(service: ResolvedService) -> list[Manifest]:
    """The pod's tolerations: the GPU taint's (when the pod has GPUs and none tolerates it yet), then the spec's.

    The operator tolerates ``<resource>=present:NoSchedule`` (operator Equal); Exists tolerates that taint and
    the other values device-plugin setups use, so one toleration covers them all. The key is the Model's
    hardware.gpu.tolerationKey, else the GPU resource name.
    """
    own = [t.wire() for t in service.spec.tolerations or []]
    if service.gpu_count == 0:
        return own
    gpu = _model_gpu(service)
    key = (gpu.toleration_key if gpu else None) or gpu_resource(service)
    # Only an Exists toleration covers the taint whatever its value (the operator's "present", or another).
    taint = {"key": key, "effect": "NoSchedule"}
    if any(t.operator == "Exists" and tolerates(t.wire(), taint) for t in service.spec.tolerations or []):
        return own
    return [{"key": key, "operator": "Exists", "effect": "NoSchedule"}, *own]


def container_resources(service: ResolvedService) -> Manifest:
    """Requests and limits of the llama-server container.

    cpu and ephemeralStorage are request and limit. memory is the limit; the request is hostMemory when set
    (the RAM the planner counted on for offloaded experts and KV cache), else memory. Without a memory of its
    own, the limit is the request plus headroom (memory_limit_for). GPUs are a limit only: for extended
    resources the request defaults to the limit. GPUs from DRA claims are the claims instead (no limit).
    """
    resources = service.spec.resources or InferenceResources()
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    claims = resource_claims(service)
    if service.gpu_count and not claims:
        limits[gpu_resource(service)] = str(service.gpu_count)
    if resources.cpu:
        requests["cpu"] = limits["cpu"] = resources.cpu
    if resources.ephemeral_storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = resources.ephemeral_storage
    # (checks.memory_request_problems has made sure the request is not above the limit.)
    request_memory = resources.host_memory or resources.memory
    if resources.memory:
        limits["memory"] = resources.memory
    elif request_memory:
        limits["memory"] = memory_limit_for(request_memory)
    if request_memory:
        requests["memory"] = request_memory
    out: Manifest = {}
    if claims:
        out["claims"] = [{"name": claim["name"]} for claim in claims]
    if limits:
        out["limits"] = sorted_by_key(limits)
    if requests:
        out["requests"] = sorted_by_key(requests)
    return out


def _probe(port: str, timing: Mapping[str, int]) -> Manifest:
    return {"httpGet": {"path": HEALTH_PATH, "port": port}, **timing}


# ---------------------------------------------------------------------------------------------------------
# The objects
# ---------------------------------------------------------------------------------------------------------


def server_args_for(service: ResolvedService, storage: ModelStorage | None = None) -> list[str]:
    """The llama-server arguments of a service, with the paths of its cache layout (the model, a draft model,
    a multimodal projector). A multi-node service's arguments name its workers (--rpc) and split the model over their
    devices and its own GPUs (device_count, which is its own GPUs alone without workers)."""
    storage = storage or model_storage(service)
    return build_args(
        service.spec,
        service.model.spec,
        storage.model_path,
        service.device_count,
        draft_path=storage.draft_path,
        mmproj_path=storage.mmproj_path,
        router_preset_path=ROUTER_PRESET_FILE if is_router(service.spec) else None,
        rpc_servers=multinode.rpc_servers(service),
    )


def routed_models(storage: ModelStorage) -> list[RoutedModel]:
    """The models a llamacpp-router service serves (modelRef's first, then routerModels'), as the pod sees them."""
    return [
        RoutedModel(name, path, storage.router_mmproj_paths.get(name)) for name, path in storage.router_paths.items()
    ]


def router_preset_text(service: ResolvedService, storage: ModelStorage | None = None) -> str | None:
    """The --models-preset file of a llamacpp-router service (flags.router_preset); None for other runtimes."""
    if not is_router(service.spec):
        return None
    return router_preset(routed_models(storage or model_storage(service)))


def router_config_map(service: ResolvedService, storage: ModelStorage | None = None) -> Manifest | None:
    """The ConfigMap <service>-router with a llamacpp-router service's models preset; None for other runtimes."""
    text = router_preset_text(service, storage)
    if text is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(service.name + ROUTER_CONFIG_MAP_SUFFIX, service.namespace, service_labels(service)),
        "data": {ROUTER_PRESET_KEY: text},
    }


def server_port(service: ResolvedService) -> int:
    """The port llama-server listens on in its pod: containerPort, else the Service's port (endpoint.port)."""
    return listen_port(service.spec)


def server_env(service: ResolvedService) -> list[Manifest]:
    """The environment llmkube gives the server container itself, before the spec's env (none at present: the
    server is configured by its arguments); a spec env entry may not take over one of these names."""
    return []


def _own_volumes(service: ResolvedService, storage: ModelStorage) -> tuple[list[Manifest], list[Manifest]]:
    """Our volumes and the server container's mounts of them: the model storage's, and the API key's."""
    volumes = list(storage.volumes)
    mounts = list(storage.mounts)
    api_key = service.spec.api_key
    if api_key is not None:
        # Read-only to the pod's group (fsGroup) only; llama-server reads it once, at start: a new key reaches
        # running pods with their next restart.
        key_file = API_KEY_FILE.removeprefix(API_KEY_DIR + "/")
        volumes.append(
            {
                "name": "api-key",
                "secret": {
                    "secretName": api_key.secret_name,
                    "items": [{"key": api_key.secret_key, "path": key_file}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    if is_router(service.spec):
        volumes.append(
            {
                "name": "router-preset",
                "configMap": {"name": service.name + ROUTER_CONFIG_MAP_SUFFIX, "defaultMode": 0o444},
            }
        )
        mounts.append({"name": "router-preset", "mountPath": ROUTER_PRESET_DIR, "readOnly": True})
    return volumes, mounts


def _probes(service: ResolvedService) -> Manifest:
    """startupProbe, livenessProbe and readinessProbe: ours, each replaced by probeOverrides' when it gives one."""
    overrides = service.spec.probe_overrides
    probes = {
        "startupProbe": (overrides.startup if overrides else None) or _probe(PORT_NAME, STARTUP_PROBE),
        "livenessProbe": (overrides.liveness if overrides else None) or _probe(PORT_NAME, LIVENESS_PROBE),
        "readinessProbe": (overrides.readiness if overrides else None) or _probe(PORT_NAME, READINESS_PROBE),
    }
    return probes


def _topology_spread(service: ResolvedService) -> list[Manifest]:
    """The spec's topologySpreadConstraints; one without a labelSelector counts the service's own pods (without
    one it would count none and spread nothing)."""
    selector = {"matchLabels": selector_labels(service)}
    return [
        {**c, "labelSelector": selector} if "labelSelector" not in c else dict(c)
        for c in service.spec.topology_spread_constraints or []
    ]


def deployment(
    service: ResolvedService,
    *,
    cache_mode: CacheMode = "shared",
    downloader_image: str = DOWNLOADER_IMAGE,
    observability: ObservabilitySettings = DEFAULT_OBSERVABILITY,
) -> Manifest:
    """The llama-server Deployment (with the scrape annotations when observability.scrapeAnnotations asks)."""
    spec = service.spec
    storage = model_storage(service, cache_mode=cache_mode, downloader_image=downloader_image)
    labels = service_labels(service)
    volumes, mounts = _own_volumes(service, storage)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        # args replace the generated arguments entirely (the preview warns that the planner's flags are unused).
        "args": list(spec.args) if spec.args is not None else server_args_for(service, storage),
        "ports": [{"name": PORT_NAME, "containerPort": server_port(service), "protocol": "TCP"}],
        **_probes(service),
        "securityContext": server_security_context(service),
        # llama-server prints why it died (CUDA init, out of memory loading the model) to its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*mounts, *(spec.extra_volume_mounts or [])],
    }
    if spec.command is not None:
        container["command"] = list(spec.command)
    env = [*server_env(service), *(spec.env or [])]
    if env:
        container["env"] = env
    resources = container_resources(service)
    if resources:
        container["resources"] = resources

    pod: Manifest = {
        # llama-server never talks to the API server: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context_of(service),
        "containers": [container],
        "volumes": [*volumes, *(spec.extra_volumes or [])],
    }
    # A multi-node service's pod waits for its workers last, once the model is in place.
    init_containers = [*storage.init_containers, *multinode.head_init_containers(service, downloader_image)]
    if init_containers:
        pod["initContainers"] = init_containers
    node_selector = multinode.member_node_selector(service, 0, spec.node_selector)
    if node_selector:
        pod["nodeSelector"] = node_selector
    pod_tolerations = tolerations(service)
    if pod_tolerations:
        pod["tolerations"] = pod_tolerations
    affinity = multinode.member_affinity(service, spec.affinity)
    if affinity:
        pod["affinity"] = affinity
    if spec.topology_spread_constraints:
        pod["topologySpreadConstraints"] = _topology_spread(service)
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    priority_class_name = lifecycle.pod_priority_class_name(service)
    if priority_class_name:
        pod["priorityClassName"] = priority_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]
    claims = resource_claims(service)
    if claims:
        pod["resourceClaims"] = claims

    # User pod labels merge in, but ours win on a conflict: the selector must keep matching the pods, and the
    # operator resolves the same conflict the same way (mergePodLabels). User annotations win over ours (the
    # eviction protection's), as the operator's do.
    template_meta: Manifest = {
        "labels": sorted_by_key({**(spec.pod_labels or {}), **labels, **multinode.head_pod_labels(service)})
    }
    annotations = {
        **lifecycle.eviction_annotations(service),
        **multinode.layout_annotation(service),
        **observability_objects.annotations_for(observability, server_port(service)),
        **(spec.pod_annotations or {}),
    }
    preset = router_preset_text(service, storage)
    if preset is not None:
        annotations[ROUTER_PRESET_ANNOTATION] = hashlib.sha256(preset.encode()).hexdigest()
    if annotations:
        template_meta["annotations"] = sorted_by_key(annotations)

    if has_gpus(service):
        # A rolling update starts the new pod before stopping the old one, and the new pod cannot get the GPUs
        # the old one holds: the rollout would wait forever. Recreate frees them first.
        strategy: Manifest = {"type": "Recreate"}
    elif multinode.is_group(service):
        # Each worker serves one llama-server at a time: a new pod started beside the old one would wait on
        # workers the old one holds, never become ready, and the rollout would never stop the old one.
        strategy = {"type": "Recreate"}
    else:
        # The API server's defaults, written out: applying them makes them ours, so that a later switch to
        # Recreate (GPUs added) removes them; a leftover rollingUpdate block makes Recreate invalid.
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}

    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(service)},
        "strategy": strategy,
        "template": {"metadata": template_meta, "spec": pod},
    }
    # With autoscaling the HPA owns the replica count and the manifest leaves it out: a value here would be
    # re-applied by every `pulumi up` and undo the HPA's scaling (the operator, for the same reason, keeps
    # the live count on update). The API server starts a new Deployment at 1, and the HPA takes it from there.
    # suspend: 0, and no HPA (hpa()), as the operator deletes it while suspended.
    replicas = lifecycle.replicas(service, DEFAULT_REPLICAS)
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    if spec.revision_history_limit is not None:
        deployment_spec["revisionHistoryLimit"] = spec.revision_history_limit
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(service.name, service.namespace, labels),
        "spec": deployment_spec,
    }


def workload_problems(
    service: ResolvedService, *, cache_mode: CacheMode = "shared", downloader_image: str = DOWNLOADER_IMAGE
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about what the spec's pod fields do to ours (overrides): an env name, volume name or
    mount path of ours taken over, a mount of no volume, securityContexts weaker than our defaults."""
    storage = model_storage(service, cache_mode=cache_mode, downloader_image=downloader_image)
    volumes, mounts = _own_volumes(service, storage)
    errors = overrides.env_problems(service, server_env(service))
    errors += overrides.volume_problems(service, volumes, mounts)
    weak_errors, warnings = overrides.security_problems(
        service, server_security_context(service), pod_security_context_of(service)
    )
    errors += router_problems(service.spec, routed_models(storage), service.path)
    warnings += speculative_no_op_warnings(service.spec, service.path)
    warnings += router_models_max_warnings(service.spec, service.path)
    warnings += bind_address_problems(service.spec, service.path)
    errors += multinode.group_problems(service)
    return errors + weak_errors, warnings


def service_manifest(service: ResolvedService) -> Manifest:
    """The Service in front of the pods: ``<name>:<port>``, port named http."""
    endpoint = service.spec.endpoint
    service_port: Manifest = {
        "name": PORT_NAME,
        "port": service.spec.serving_port,
        # The container's port by name: containerPort when the spec sets one, else the same port.
        "targetPort": PORT_NAME,
        "protocol": "TCP",
    }
    service_type = (endpoint.type if endpoint is not None else None) or DEFAULT_ENDPOINT_TYPE
    # The API only admits nodePort with type NodePort or LoadBalancer; both allocate node ports. (The operator
    # drops it for LoadBalancer; we keep what the user asked for.)
    if endpoint is not None and endpoint.node_port is not None:
        service_port["nodePort"] = endpoint.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {"type": service_type, "selector": selector_labels(service), "ports": [service_port]},
    }


def api_key_secret(service: ResolvedService) -> Manifest | None:
    """The Secret of a key Pulumi holds (llmkube:apiKeys), without its value: the component adds that, as a
    secret Output, so that the key never passes through a builder, a plan or a log."""
    if not service.managed_api_key or service.spec.api_key is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(service.spec.api_key.secret_name, service.namespace, service_labels(service)),
        "type": "Opaque",
    }


def _metric(metric: MetricSpec) -> Manifest:
    if metric.target_average_utilization is not None:
        target: Manifest = {"type": "Utilization", "averageUtilization": metric.target_average_utilization}
    else:
        target = {"type": "AverageValue", "averageValue": metric.target_average_value}
    if metric.type == "Resource":
        return {"type": "Resource", "resource": {"name": metric.name, "target": target}}
    return {"type": "Pods", "pods": {"metric": {"name": metric.name}, "target": target}}


def hpa(service: ResolvedService) -> Manifest | None:
    """The HorizontalPodAutoscaler (autoscaling/v2) of a service, or None without autoscaling or while suspended
    (an HPA would scale the suspended Deployment back up to minReplicas)."""
    autoscaling = service.spec.autoscaling
    metrics = observability_objects.autoscaling_metrics(service)
    if autoscaling is None or not metrics:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": observability_objects.min_replicas(service),
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [_metric(m) for m in metrics],
        },
    }


def autoscaler(
    service: ResolvedService, observability: ObservabilitySettings = DEFAULT_OBSERVABILITY
) -> Manifest | None:
    """What scales a service: its HPA, or (observability.autoscaler keda) the KEDA ScaledObject that makes one."""
    if observability.autoscaler == "keda":
        return observability_objects.scaled_object(service, observability)
    return hpa(service)


def _pvc(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    *,
    size: str,
    storage_class: str | None,
    access_mode: str,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    spec: Manifest = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        # Unset means the cluster's default class (WaitForFirstConsumer with most topology-aware
        # provisioners, so the volume is created where the pod schedules).
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(name, namespace, sorted_by_key(labels), annotations),
        "spec": spec,
    }


def shared_cache_pvc(namespace: str, cache: CacheSettings = DEFAULT_CACHE) -> Manifest:
    """The namespace's shared model cache PVC, ``llmkube-model-cache``, annotated as shared (is_shared_cache)."""
    return _pvc(
        SHARED_CACHE_PVC_NAME,
        namespace,
        recommended_labels("llmkube", "model-cache", SHARED_CACHE_PVC_NAME),
        size=cache.size,
        storage_class=cache.storage_class,
        access_mode=cache.access_mode,
        annotations={SHARED_CACHE_ANNOTATION: "true"},
    )


def is_shared_cache(manifest: Mapping[str, Any]) -> bool:
    """Whether a manifest is a shared model cache: the Pulumi layer retains it on delete."""
    annotations = manifest.get("metadata", {}).get("annotations") or {}
    return manifest.get("kind") == "PersistentVolumeClaim" and annotations.get(SHARED_CACHE_ANNOTATION) == "true"


def service_workloads(
    service: ResolvedService,
    *,
    cache: CacheSettings = DEFAULT_CACHE,
    downloader_image: str = DOWNLOADER_IMAGE,
    observability: ObservabilitySettings = DEFAULT_OBSERVABILITY,
) -> list[Manifest]:
    """A service's objects in apply order: its own cache PVC (perService mode), its API key's Secret (a key
    Pulumi holds), its models preset's ConfigMap (runtime llamacpp-router), Deployment, Service, each worker's
    Service and Deployment (multiNode), and those the spec asks for: HPA (or KEDA's ScaledObject with
    observability.autoscaler keda), PodDisruptionBudget, HTTPRoute (endpoint.gateway), Pyrra
    ServiceLevelObjective (slo).

    The shared cache PVC is not among them (see shared_cache_pvc): it belongs to the namespace. ``cache`` is
    the stack's modelCache: its mode, and the size and storage class of a per-service PVC.
    """
    manifests: list[Manifest] = []
    if cache_kind(service, cache.mode) == "perService":
        # RWO: the volume binds on the node the pod schedules to, which is the point of this mode (#728).
        manifests.append(
            _pvc(
                service.name + PER_SERVICE_CACHE_SUFFIX,
                service.namespace,
                service_labels(service),
                size=cache.size,
                storage_class=cache.storage_class,
                access_mode="ReadWriteOnce",
            )
        )
    key_secret = api_key_secret(service)
    if key_secret is not None:
        manifests.append(key_secret)
    preset = router_config_map(
        service, model_storage(service, cache_mode=cache.mode, downloader_image=downloader_image)
    )
    if preset is not None:
        manifests.append(preset)
    manifests.append(
        deployment(service, cache_mode=cache.mode, downloader_image=downloader_image, observability=observability)
    )
    manifests.append(service_manifest(service))
    # After llama-server's own (the first Deployment of the list is the server's).
    manifests += multinode.worker_manifests(service)
    for extra in (
        autoscaler(service, observability),
        lifecycle.pod_disruption_budget(service),
        routing.http_route(service),
        routing.service_level_objective(service),
    ):
        if extra is not None:
            manifests.append(extra)
    return manifests


def shared_cache_manifests(stack: ResolvedStack) -> list[Manifest]:
    """The shared cache PVC of a stack's namespace (its modelCache settings) when a service uses it or a Model's
    prefetch Job fills it, else nothing."""
    cache = stack.config.model_cache
    prefetched = cache.mode == "shared" and any(m.spec.prefetch for m in stack.models.values())
    if not prefetched and not any(cache_kind(s, cache.mode) == "shared" for s in stack.services.values()):
        return []
    return [shared_cache_pvc(stack.namespace, cache)]


# ---------------------------------------------------------------------------------------------------------
# The namespace and Pod Security
# ---------------------------------------------------------------------------------------------------------
def namespace_manifests(
    namespace: str, workloads: Iterable[Manifest] = (), *, delivery: Delivery = "direct"
) -> list[Manifest]:
    """The Namespace, labelled to enforce the strictest Pod Security Standard all its services' pods meet.

    ``workloads`` are the services' built objects (service_workloads); their Deployments' pods decide.

    Our own pods are restricted unless a model comes from a node path (hostPath: privileged). The operator's
    pods need baseline: its cache-prep container runs as root and adds CHOWN and FOWNER (model_storage.go,
    cachePrepInitContainer). Warnings and audit always follow restricted, so a namespace that must allow
    more still says what falls short.
    """
    level = namespace_pod_security(workloads)
    if delivery == "operator" and level == "restricted":
        level = "baseline"
    labels = {
        **common_labels(namespace, "namespace"),
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "latest",
    }
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": object_meta(namespace, labels=sorted_by_key(labels))}]


# ---------------------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------------------


def endpoint_url(service: ResolvedService) -> str:
    """The in-cluster URL of a service: ``http://<name>.<namespace>.svc.cluster.local:<port>``."""
    return f"http://{service.name}.{service.namespace}.svc.cluster.local:{service.spec.serving_port}"


def openai_base_url(service: ResolvedService) -> str:
    """The OpenAI-compatible base URL clients configure: the endpoint with ``/v1``."""
    return f"{endpoint_url(service)}/v1"


def client_config(service: ResolvedService) -> dict[str, Any]:
    """A ready-to-paste OpenAI provider entry, in the shape of Qwen Code's ``modelProviders`` setting.

    llama-server serves one model and ignores the model name a client sends, so the service name is the id.
    It needs no key unless started with --api-key; the envKey is there because clients insist on one.
    """
    return {
        "modelProviders": {
            "openai": [
                {
                    "id": service.name,
                    "name": f"{service.name} ({service.model.name}, llmkube)",
                    "baseUrl": openai_base_url(service),
                    "envKey": "LLMKUBE_API_KEY",
                }
            ]
        }
    }
