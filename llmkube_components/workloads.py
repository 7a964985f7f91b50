"""Pure builders of the llama.cpp workloads the LLMKube operator would create for an InferenceService.

With delivery ``direct`` Pulumi registers what these functions return: the model cache PVC, the llama-server
Deployment (with the init containers that fetch the model), its Service and, with autoscaling, its
HorizontalPodAutoscaler. Everything here is a plain dict, built without Pulumi or network, and the same input
always gives byte-identical output.

The layout follows the operator (v0.9.19, internal/controller) so that both deliveries can share one cache:
a model lives in ``/models/<first 16 hex of sha256(spec.source)>/`` on a PVC named ``llmkube-model-cache``
(or ``<service>-model-cache`` per service, or the user's ``modelCache.claimName``), the Deployment is named
after the service and selects on ``app`` + ``inference.llmkube.dev/service`` only. Where we differ, the
difference is stated next to the code that makes it.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote

from .api.core import tolerates
from .api.model import ModelSpec
from .api.service import (
    DEFAULT_AUTOSCALING_METRIC,
    DEFAULT_AUTOSCALING_TARGET,
    DEFAULT_ENDPOINT_TYPE,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_REPLICAS,
    InferenceResources,
    MetricSpec,
)
from .api.stack import PER_SERVICE_CACHE_SUFFIX, SHARED_CACHE_PVC_NAME, CacheMode, CacheSettings, Delivery
from .hardware import gpu_resource_name
from .llamacpp import build_args
from .meta import (
    object_meta,
    recommended_labels,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from .resolve import ResolvedService, ResolvedStack, cache_kind
from .sources import parse_source, sibling_url

Manifest = dict[str, Any]
PodSecurityLevel = Literal["restricted", "baseline", "privileged"]

# ---------------------------------------------------------------------------------------------------------
# Facts shared with the operator (v0.9.19)
# ---------------------------------------------------------------------------------------------------------

MODELS_DIR: Final = "/models"
PVC_SOURCE_DIR: Final = "/model-source"  # where a pvc:// source is mounted (buildPVCStorageConfig)
HOST_MODEL_DIR: Final = "/host-model"  # where a local source is mounted for the copy (buildCachedStorageConfig)
# The operator's default --init-container-image, pinned by tag. Alpine-based: curl plus busybox sh,
# sha256sum, mv and friends, all the scripts below need.
DOWNLOADER_IMAGE: Final = "docker.io/curlimages/curl:8.18.0"
RUNTIME: Final = "llamacpp"
CONTAINER_NAME: Final = "llama-server"
PORT_NAME: Final = "http"
HEALTH_PATH: Final = "/health"

# Labels. The selector is the immutable subset: a Deployment's selector cannot change after creation, so the
# model label (which changes when modelRef does) must stay out of it (operator issue #301).
LABEL_APP: Final = "app"
LABEL_MODEL: Final = "inference.llmkube.dev/model"
LABEL_SERVICE: Final = "inference.llmkube.dev/service"
LABEL_RUNTIME: Final = "inference.llmkube.dev/runtime"
# Marks the namespace's shared cache PVC: it outlives every service, so the Pulumi layer registers it with
# retain_on_delete and removing a service never deletes tens of gigabytes of downloads.
SHARED_CACHE_ANNOTATION: Final = "inference.llmkube.dev/shared-model-cache"

# Who the pod runs as: a fixed numeric uid, because runAsNonRoot can only be enforced against a numeric user and
# llama.cpp's server images declare none (they would run as root). 65532 is the conventional "nonroot" uid of
# distroless images. fsGroup makes a freshly provisioned cache volume group-writable for it; OnRootMismatch
# skips the recursive chown of tens of gigabytes on every later start. The operator instead runs a root prep
# container that chowns the volume (for CSI drivers that ignore fsGroup, such as NFS and CephFS); that needs
# CAP_CHOWN, which the restricted Pod Security Standard forbids. We keep every container restricted and have the
# prep container fail with instructions where fsGroup is not applied.
# GPUs: NVIDIA's container toolkit opens its device nodes to any uid. AMD (/dev/kfd, /dev/dri) and Intel
# (/dev/dri) device nodes belong to the node's video/render groups, whose GIDs differ from host to host; such
# pods need those as supplemental groups, which no spec field carries yet (the operator leaves them to the
# user too, #1572).
POD_UID: Final = 65532
POD_GID: Final = 65532

# Probes (the operator's LlamaCppBackend.BuildProbes figures). llama-server answers /health with 503 while it
# loads the model; reading 21 GB from a network volume and warming the GPUs can take many minutes, so the
# startup probe allows 180 x 10 s = 30 minutes before the kubelet restarts the container. Liveness and
# readiness only start once it has passed.
STARTUP_PROBE: Final = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 180}
LIVENESS_PROBE: Final = {"periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 3}
READINESS_PROBE: Final = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}

DEFAULT_CACHE: Final = CacheSettings()

# Volume types the restricted Pod Security Standard allows (pod-security-admission, restrictedVolumes).
_RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


# ---------------------------------------------------------------------------------------------------------
# Model sources and the cache layout
# ---------------------------------------------------------------------------------------------------------


def model_dir(model: ModelSpec) -> str:
    """The directory the model's files are in, inside the pod."""
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return posixpath.dirname(posixpath.join(PVC_SOURCE_DIR, source.path))
    return posixpath.join(MODELS_DIR, source.cache_key)


def model_path(model: ModelSpec) -> str:
    """The path of the model file llama-server loads: ``/models/<key>/<file>``, or on the pvc:// claim.

    The file keeps its upstream name: llama.cpp finds the other parts of a split GGUF by the first part's
    name (<prefix>-00001-of-0000N.gguf), and the name is all a path derived from the spec alone can use.
    (The operator renames a single file after its GGUF general.name once its controller has read the
    metadata; a cache filled by one delivery is found by the other through the shared directory, not the name.)
    """
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return posixpath.join(PVC_SOURCE_DIR, source.path)
    return posixpath.join(model_dir(model), source.file_name)


class Download(NamedTuple):
    """One file the downloader fetches: from ``url`` to ``path``, checked against ``sha256`` when given."""

    url: str
    path: str
    sha256: str | None = None


def downloads(model: ModelSpec) -> list[Download]:
    """What the downloader fetches for a model, main file first; empty for a pvc:// source.

    A local source is fetched with curl's file:// from where the Deployment mounts it (HOST_MODEL_DIR), so one
    script copies and downloads alike. Further files (spec.files, checked by ``checks.model_problems``) sit
    beside the main file upstream.
    """
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return []
    directory = model_dir(model)
    name = source.file_name
    local = f"file://{HOST_MODEL_DIR}/{{}}"
    url = source.url or local.format(quote(name))
    sha = model.sha256.lower() if model.sha256 else None
    result = [Download(url, posixpath.join(directory, name), sha)]
    for rel in model.files or []:
        rel = posixpath.normpath(rel)
        further = sibling_url(source.url, rel) if source.url else local.format(quote(rel))
        result.append(Download(further, posixpath.join(directory, rel)))
    return result


# ---------------------------------------------------------------------------------------------------------
# Init container scripts
# ---------------------------------------------------------------------------------------------------------

# The scripts run under busybox sh in the downloader image, and under any POSIX sh in the tests. Their
# comments live here, not in the scripts, to keep the pod spec short.
#
# prepare DIR: the cache volume must be writable by the pod's uid. fsGroup makes it so wherever the storage
# driver applies fsGroup; some (NFS, CephFS with fsGroupPolicy None) do not, and the volume stays root-owned:
# say so and what to do, instead of a bare "Permission denied" from curl.
_PREPARE_PREAMBLE = """\
set -eu
prepare() {
  if ! mkdir -p "$1" || ! touch "$1/.llmkube-write-check"; then
    echo "llmkube: ERROR: cannot write to $1 as uid $(id -u), gid $(id -g): the volume ignores the pod's" \\
      "fsGroup; use a storage class whose driver applies fsGroup, or make the volume group-writable for" \\
      "gid $(id -g)" >&2
    exit 1
  fi
  rm -f "$1/.llmkube-write-check"
  echo "llmkube: $1 is ready"
}
"""

# fetch URL DEST [SHA256]: download URL to DEST unless DEST exists. The bytes land in a temporary file
# named after the pod (several pods share one cache: replicas, a scale-up, two services on one model, and a
# shared temp name let one pod publish another's half-written file) and are renamed onto DEST only when
# complete (and matching SHA256): the skip is a bare existence check, so a file
# published in place and cut short by an eviction or OOM kill would count as cached forever. A cached file is
# not hashed again: it was checked when written, and hashing tens of GB would slow every start. curl retries
# only transient failures (timeouts, 408, 429, 5xx); a 404 fails at once. Each start begins the download
# afresh, like the operator: resuming needs range support that not every server has.
_DOWNLOAD_PREAMBLE = """\
set -eu
fetch() {
  url=$1 dest=$2 want=${3:-}
  if [ -f "$dest" ]; then
    echo "llmkube: $dest is cached; skipping download"
    return 0
  fi
  tmp="$dest.tmp.${POD_NAME:-$(cat /proc/sys/kernel/hostname)}"
  rm -f "$tmp"
  echo "llmkube: downloading $url to $dest"
  if ! curl --fail --location --no-progress-meter --retry 5 --retry-delay 10 --output "$tmp" "$url"; then
    rm -f "$tmp"
    echo "llmkube: ERROR: could not download $url" >&2
    exit 1
  fi
  if [ -n "$want" ]; then
    got=$(sha256sum "$tmp" | cut -d ' ' -f 1)
    if [ "$got" != "$want" ]; then
      rm -f "$tmp"
      echo "llmkube: ERROR: sha256 mismatch for $url: expected $want, got $got; the download was discarded" >&2
      exit 1
    fi
    echo "llmkube: sha256 of $dest verified"
  fi
  # rename(2) is atomic: whichever complete copy lands last wins, and readers never see a partial file.
  mv "$tmp" "$dest"
  echo "llmkube: saved $dest"
}
"""


def prepare_script(directories: Iterable[str]) -> str:
    """The cache-prep script: create each directory and check it is writable, or fail saying why."""
    return _PREPARE_PREAMBLE + "".join(f"prepare {shlex.quote(d)}\n" for d in directories)


def download_script(files: Iterable[Download]) -> str:
    """The downloader script: one ``fetch`` line per file, values shell-quoted (sources are user input)."""
    lines = []
    for f in files:
        args = [f.url, f.path] + ([f.sha256] if f.sha256 else [])
        lines.append("fetch " + " ".join(shlex.quote(a) for a in args) + "\n")
    return _DOWNLOAD_PREAMBLE + "".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Model storage: which volume holds the cache, and how the model gets onto it
# ---------------------------------------------------------------------------------------------------------


def cache_claim_name(service: ResolvedService, cache_mode: CacheMode = "shared") -> str | None:
    """The PVC a service's cache lives on, or None for an emptyDir or a pvc:// source."""
    kind = cache_kind(service, cache_mode)
    if kind == "shared":
        return SHARED_CACHE_PVC_NAME
    if kind == "perService":
        return service.name + PER_SERVICE_CACHE_SUFFIX
    if kind == "claim":
        assert service.spec.model_cache is not None and service.spec.model_cache.claim_name is not None
        return service.spec.model_cache.claim_name
    return None


@dataclass
class ModelStorage:
    """What a model adds to the pod: volumes, the server's mounts, init containers, and the model path."""

    model_path: str
    volumes: list[Manifest] = field(default_factory=list)
    mounts: list[Manifest] = field(default_factory=list)
    init_containers: list[Manifest] = field(default_factory=list)


def _init_container(name: str, image: str, script: str, mounts: list[Manifest]) -> Manifest:
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
        # The pod's own name keeps concurrent downloads into one cache apart (see _DOWNLOAD_PREAMBLE).
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        # The init containers write only to the cache volume.
        "securityContext": restricted_container_security_context(read_only_root_filesystem=True),
        # curl and the scripts print their error to the log; make it the termination message too, so
        # `kubectl describe pod` shows why the download failed (operator issue #1437).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def model_storage(
    service: ResolvedService, *, cache_mode: CacheMode = "shared", downloader_image: str = DOWNLOADER_IMAGE
) -> ModelStorage:
    """The volumes, mounts and init containers that put a service's model at ``model_path``."""
    model = service.model.spec
    kind = cache_kind(service, cache_mode)
    if kind == "pvcSource":
        # Pre-staged on the user's claim: mounted read-only, nothing downloaded (buildPVCStorageConfig).
        claim = parse_source(model.source).claim
        return ModelStorage(
            model_path=model_path(model),
            volumes=[{"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            mounts=[{"name": "model-source", "mountPath": PVC_SOURCE_DIR, "readOnly": True}],
        )

    files = downloads(model)
    if kind == "ephemeral":
        empty_dir: Manifest = {}
        resources = service.spec.resources
        if resources is not None and resources.ephemeral_storage:
            # Bounded so that an overrun evicts this pod, not whatever else shares the node's disk.
            empty_dir["sizeLimit"] = resources.ephemeral_storage
        volume: Manifest = {"name": "model-storage", "emptyDir": empty_dir}
    else:
        volume = {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache_claim_name(service, cache_mode)}}
    volumes = [volume]
    cache_mount = {"name": volume["name"], "mountPath": MODELS_DIR}
    download_mounts = [cache_mount]

    source = parse_source(model.source)
    if source.local:
        # Like the operator: the file (or, for a multi-file model, its directory) is mounted from the node
        # and copied into the cache, so the server reads the cache like for any other source. hostPath makes
        # the namespace fall short of the baseline Pod Security Standard (see pod_security_level), and the
        # file must be readable by uid/gid 65532 on the node.
        local = source.path
        if model.files:
            host = {"path": posixpath.dirname(local), "type": "Directory"}
            mount_path = HOST_MODEL_DIR
        else:
            host = {"path": local, "type": "File"}
            mount_path = posixpath.join(HOST_MODEL_DIR, source.file_name)
        volumes.append({"name": "host-model", "hostPath": host})
        download_mounts = [cache_mount, {"name": "host-model", "mountPath": mount_path, "readOnly": True}]

    directories = sorted({posixpath.dirname(f.path) for f in files})
    return ModelStorage(
        model_path=model_path(model),
        volumes=volumes,
        mounts=[{**cache_mount, "readOnly": True}],
        init_containers=[
            _init_container("model-cache-prep", downloader_image, prepare_script(directories), [dict(cache_mount)]),
            _init_container("model-downloader", downloader_image, download_script(files), download_mounts),
        ],
    )


# ---------------------------------------------------------------------------------------------------------
# Labels, resources, scheduling
# ---------------------------------------------------------------------------------------------------------


def _sorted(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: mapping[key] for key in sorted(mapping)}


def selector_labels(service: ResolvedService) -> dict[str, str]:
    """The Deployment's (immutable) selector and the Service's selector."""
    return {LABEL_APP: service.name, LABEL_SERVICE: service.name}


def service_labels(service: ResolvedService) -> dict[str, str]:
    """Labels of every object of a service: the operator's four plus the recommended app.kubernetes.io ones."""
    return _sorted(
        {
            **recommended_labels("llama-server", "inference-server", service.name),
            **selector_labels(service),
            LABEL_MODEL: service.model.name,
            LABEL_RUNTIME: RUNTIME,
        }
    )


def common_labels(name: str, kind: str) -> dict[str, str]:
    """Recommended labels of an llmkube object that is not a workload (a custom resource, the namespace)."""
    return recommended_labels("llmkube", kind.lower(), name)


def gpu_resource(service: ResolvedService) -> str:
    """The extended resource the server's GPUs are requested as.

    The Model's hardware.gpu decides (its resourceName, else its vendor's device-plugin resource); the
    profile's GPU fills in what the Model leaves unset, and an unset vendor means NVIDIA, as in the operator.
    """
    hardware = service.model.spec.hardware
    gpu = hardware.gpu if hardware else None
    profile_gpu = service.profile.gpu
    vendor = (gpu.vendor if gpu else None) or (profile_gpu.vendor if profile_gpu else None) or "nvidia"
    override = gpu.resource_name if gpu else None
    if override is None and profile_gpu is not None and profile_gpu.vendor == vendor:
        override = profile_gpu.resource_name
    return gpu_resource_name(vendor, override)


def tolerations(service: ResolvedService) -> list[Manifest]:
    """The pod's tolerations: the GPU taint's (when the pod has GPUs and none tolerates it yet), then the spec's.

    The operator tolerates ``<resource>=present:NoSchedule`` (operator Equal); Exists tolerates that taint and
    the other values device-plugin setups use, so one toleration covers them all.
    """
    own = [t.wire() for t in service.spec.tolerations or []]
    if service.gpu_count == 0:
        return own
    key = gpu_resource(service)
    # Only an Exists toleration covers the taint whatever its value (the operator's "present", or another).
    taint = {"key": key, "effect": "NoSchedule"}
    if any(t.operator == "Exists" and tolerates(t.wire(), taint) for t in service.spec.tolerations or []):
        return own
    return [{"key": key, "operator": "Exists", "effect": "NoSchedule"}, *own]


def container_resources(service: ResolvedService) -> Manifest:
    """Requests and limits of the llama-server container.

    cpu and ephemeralStorage are request and limit. memory is the limit; the request is hostMemory when set
    (the RAM the planner counted on for offloaded experts and KV cache), else memory. GPUs are a limit only:
    for extended resources the request defaults to the limit.
    """
    resources = service.spec.resources or InferenceResources()
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if service.gpu_count:
        limits[gpu_resource(service)] = str(service.gpu_count)
    if resources.cpu:
        requests["cpu"] = limits["cpu"] = resources.cpu
    if resources.ephemeral_storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = resources.ephemeral_storage
    if resources.memory:
        limits["memory"] = resources.memory
    # (checks.memory_request_problems has made sure the request is not above the limit.)
    request_memory = resources.host_memory or resources.memory
    if request_memory:
        requests["memory"] = request_memory
    out: Manifest = {}
    if limits:
        out["limits"] = _sorted(limits)
    if requests:
        out["requests"] = _sorted(requests)
    return out


def _probe(port: str, timing: Mapping[str, int]) -> Manifest:
    return {"httpGet": {"path": HEALTH_PATH, "port": port}, **timing}


def port(service: ResolvedService) -> int:
    return service.spec.serving_port


def pod_security_context() -> Manifest:
    context = restricted_pod_security_context(run_as_user=POD_UID, run_as_group=POD_GID, fs_group=POD_GID)
    context["fsGroupChangePolicy"] = "OnRootMismatch"
    return _sorted(context)


# ---------------------------------------------------------------------------------------------------------
# The objects
# ---------------------------------------------------------------------------------------------------------


def server_args_for(service: ResolvedService) -> list[str]:
    """The llama-server arguments of a service, with the model path of its cache layout."""
    return build_args(service.spec, service.model.spec, model_path(service.model.spec), service.gpu_count)


def deployment(
    service: ResolvedService, *, cache_mode: CacheMode = "shared", downloader_image: str = DOWNLOADER_IMAGE
) -> Manifest:
    """The llama-server Deployment."""
    spec = service.spec
    storage = model_storage(service, cache_mode=cache_mode, downloader_image=downloader_image)
    labels = service_labels(service)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "args": build_args(service.spec, service.model.spec, storage.model_path, service.gpu_count),
        "ports": [{"name": PORT_NAME, "containerPort": port(service), "protocol": "TCP"}],
        "startupProbe": _probe(PORT_NAME, STARTUP_PROBE),
        "livenessProbe": _probe(PORT_NAME, LIVENESS_PROBE),
        "readinessProbe": _probe(PORT_NAME, READINESS_PROBE),
        "securityContext": restricted_container_security_context(),
        # llama-server prints why it died (CUDA init, out of memory loading the model) to its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": storage.mounts,
    }
    resources = container_resources(service)
    if resources:
        container["resources"] = resources

    pod: Manifest = {
        # llama-server never talks to the API server: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": storage.volumes,
    }
    if storage.init_containers:
        pod["initContainers"] = storage.init_containers
    if spec.node_selector:
        pod["nodeSelector"] = _sorted(spec.node_selector)
    pod_tolerations = tolerations(service)
    if pod_tolerations:
        pod["tolerations"] = pod_tolerations
    if spec.affinity:
        pod["affinity"] = spec.affinity
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name

    # User pod labels merge in, but ours win on a conflict: the selector must keep matching the pods, and the
    # operator resolves the same conflict the same way (mergePodLabels).
    template_meta: Manifest = {"labels": _sorted({**(spec.pod_labels or {}), **labels})}
    if spec.pod_annotations:
        template_meta["annotations"] = _sorted(spec.pod_annotations)

    if service.gpu_count:
        # A rolling update starts the new pod before stopping the old one, and the new pod cannot get the GPUs
        # the old one holds: the rollout would wait forever. Recreate frees them first.
        strategy: Manifest = {"type": "Recreate"}
    else:
        # The API server's defaults, written out: applying them makes them ours, so that a later switch to
        # Recreate (GPUs added) removes them; a leftover rollingUpdate block makes Recreate invalid.
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}

    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(service)},
        "strategy": strategy,
        "template": {"metadata": template_meta, "spec": pod},
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = spec.replicas if spec.replicas is not None else DEFAULT_REPLICAS
    # With autoscaling the HPA owns the replica count and the manifest leaves it out: a value here would be
    # re-applied by every `pulumi up` and undo the HPA's scaling (the operator, for the same reason, keeps
    # the live count on update). The API server starts a new Deployment at 1, and the HPA takes it from there.
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(service.name, service.namespace, labels),
        "spec": deployment_spec,
    }


def service_manifest(service: ResolvedService) -> Manifest:
    """The Service in front of the pods: ``<name>:<port>``, port named http."""
    endpoint = service.spec.endpoint
    service_port: Manifest = {"name": PORT_NAME, "port": port(service), "targetPort": PORT_NAME, "protocol": "TCP"}
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


def _metric(metric: MetricSpec) -> Manifest:
    if metric.target_average_utilization is not None:
        target: Manifest = {"type": "Utilization", "averageUtilization": metric.target_average_utilization}
    else:
        target = {"type": "AverageValue", "averageValue": metric.target_average_value}
    if metric.type == "Resource":
        return {"type": "Resource", "resource": {"name": metric.name, "target": target}}
    return {"type": "Pods", "pods": {"metric": {"name": metric.name}, "target": target}}


def hpa(service: ResolvedService) -> Manifest | None:
    """The HorizontalPodAutoscaler (autoscaling/v2) of a service, or None without autoscaling."""
    autoscaling = service.spec.autoscaling
    if autoscaling is None:
        return None
    # The models take their LLMKube (camelCase) names only.
    default = MetricSpec.model_validate(
        {"type": "Pods", "name": DEFAULT_AUTOSCALING_METRIC, "targetAverageValue": DEFAULT_AUTOSCALING_TARGET}
    )
    metrics = autoscaling.metrics or [default]
    min_replicas = autoscaling.min_replicas if autoscaling.min_replicas is not None else DEFAULT_MIN_REPLICAS
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(service.name, service.namespace, service_labels(service)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [_metric(m) for m in metrics],
        },
    }


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
        "metadata": object_meta(name, namespace, _sorted(labels), annotations),
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
    service: ResolvedService, *, cache: CacheSettings = DEFAULT_CACHE, downloader_image: str = DOWNLOADER_IMAGE
) -> list[Manifest]:
    """A service's objects in apply order: its own cache PVC (perService mode), Deployment, Service, HPA.

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
    manifests.append(deployment(service, cache_mode=cache.mode, downloader_image=downloader_image))
    manifests.append(service_manifest(service))
    autoscaler = hpa(service)
    if autoscaler is not None:
        manifests.append(autoscaler)
    return manifests


def shared_cache_manifests(stack: ResolvedStack) -> list[Manifest]:
    """The shared cache PVC of a stack's namespace (its modelCache settings) when a service uses it, else nothing."""
    cache = stack.config.model_cache
    if not any(cache_kind(s, cache.mode) == "shared" for s in stack.services.values()):
        return []
    return [shared_cache_pvc(stack.namespace, cache)]


# ---------------------------------------------------------------------------------------------------------
# The namespace and Pod Security
# ---------------------------------------------------------------------------------------------------------


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def pod_security_level(pod: Mapping[str, Any]) -> PodSecurityLevel:
    """The strictest Pod Security Standard a pod spec meets, for the pods these builders make.

    Checks what our pods can vary in (volumes, privilege, user, capabilities, seccomp), not every rule of the
    standard: a hostPath volume (a local model source) is privileged-only; restricted needs every container
    non-root, without privilege escalation, dropping ALL capabilities, under a RuntimeDefault seccomp profile.
    """
    containers = _containers(pod)
    if (
        any("hostPath" in v for v in pod.get("volumes", []))
        or any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        or any((c.get("securityContext") or {}).get("privileged") for c in containers)
    ):
        return "privileged"
    pod_context = pod.get("securityContext") or {}

    def restricted(container: Mapping[str, Any]) -> bool:
        context = container.get("securityContext") or {}
        capabilities = context.get("capabilities") or {}
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        return (
            context.get("allowPrivilegeEscalation") is False
            and "ALL" in capabilities.get("drop", [])
            and set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}
            and context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
            and context.get("runAsUser", pod_context.get("runAsUser")) != 0
            and seccomp in ("RuntimeDefault", "Localhost")
        )

    volume_types_ok = all(set(v) - {"name"} <= _RESTRICTED_VOLUME_TYPES for v in pod.get("volumes", []))
    if volume_types_ok and all(restricted(c) for c in containers):
        return "restricted"
    return "baseline"


_LEVELS: Final = ("restricted", "baseline", "privileged")


def namespace_pod_security(manifests: Iterable[Mapping[str, Any]]) -> PodSecurityLevel:
    """The level a namespace can enforce: the most permissive one any of its Deployments needs."""
    levels = [pod_security_level(m["spec"]["template"]["spec"]) for m in manifests if m.get("kind") == "Deployment"]
    return max(levels, key=_LEVELS.index, default="restricted")


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
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": object_meta(namespace, labels=_sorted(labels))}]


# ---------------------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------------------


def endpoint_url(service: ResolvedService) -> str:
    """The in-cluster URL of a service: ``http://<name>.<namespace>.svc.cluster.local:<port>``."""
    return f"http://{service.name}.{service.namespace}.svc.cluster.local:{port(service)}"


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
