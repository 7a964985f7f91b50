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

import hashlib
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from .api.base import format_bytes, parse_quantity
from .api.core import Toleration
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
from .api.stack import DEFAULT_CACHE_ACCESS_MODE, DEFAULT_CACHE_SIZE, CacheMode
from .errors import ConfigError, config_path
from .hardware import gpu_resource_name
from .llamacpp import server_args
from .meta import (
    object_meta,
    recommended_labels,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from .resolve import ResolvedService, ResolvedStack

Manifest = dict[str, Any]
PodSecurityLevel = Literal["restricted", "baseline", "privileged"]

# ---------------------------------------------------------------------------------------------------------
# Facts shared with the operator (v0.9.19)
# ---------------------------------------------------------------------------------------------------------

SHARED_CACHE_PVC_NAME: Final = "llmkube-model-cache"  # model_storage.go ModelCachePVCName
PER_SERVICE_CACHE_SUFFIX: Final = "-model-cache"  # model_storage.go modelCachePVCName, perService mode
MODELS_DIR: Final = "/models"
PVC_SOURCE_DIR: Final = "/model-source"  # where a pvc:// source is mounted (buildPVCStorageConfig)
HOST_MODEL_DIR: Final = "/host-model"  # where a local source is mounted for the copy (buildCachedStorageConfig)
CACHE_KEY_LENGTH: Final = 16  # pkg/cachekey Compute: first 16 hex characters of sha256(source)
FALLBACK_FILE_NAME: Final = "model.gguf"  # the operator's legacy name, for a URL that ends in '/'
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

# ext4 keeps 5% of a volume for root by default and the pod runs as non-root; ~1% more goes to metadata.
CACHE_HEADROOM: Final = Decimal("1.06")

# Volume types the restricted Pod Security Standard allows (pod-security-admission, restrictedVolumes).
_RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


# ---------------------------------------------------------------------------------------------------------
# Model sources and the cache layout
# ---------------------------------------------------------------------------------------------------------


def cache_key(source: str) -> str:
    """The cache directory name of a model: the first 16 hex digits of sha256 of ``source`` as written."""
    return hashlib.sha256(source.encode()).hexdigest()[:CACHE_KEY_LENGTH]


def is_local_source(source: str) -> bool:
    # Case-insensitive scheme, like the operator (URL schemes are case-insensitive, RFC 3986 3.1).
    return source.lower().startswith("file://") or source.startswith("/")


def _local_path(source: str) -> str:
    return source[len("file://") :] if source.lower().startswith("file://") else source


def _pvc_source(source: str) -> tuple[str, str]:
    """pvc://claim/path/to/file -> (claim, path/to/file)."""
    claim, _, path = source[len("pvc://") :].partition("/")
    return claim, path


def source_url(source: str) -> str:
    """The URL the downloader fetches: http(s) as written, ``hf://org/repo[@rev]/file`` on huggingface.co.

    Raises ValueError for sources that are not downloaded (pvc://, file://, absolute paths) and for an hf://
    source that names no file.
    """
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")):
        return source
    if lowered.startswith("hf://"):
        org, _, rest = source[len("hf://") :].partition("/")
        repo, _, file = rest.partition("/")
        repo, _, revision = repo.partition("@")
        if not (org and repo and file):
            raise ValueError(f"{source!r} names no file; write hf://<org>/<repo>/<file>.gguf")
        # hf://org/repo@rev/file pins a revision the way the operator's hf:// repo sources do.
        return f"https://huggingface.co/{org}/{repo}/resolve/{revision or 'main'}/{file}"
    raise ValueError(f"{source!r} is not downloaded: only http(s):// and hf:// sources are")


def _file_name(source: str, path: str = "") -> str:
    # The file keeps its upstream name: llama.cpp finds the other parts of a split GGUF by the first part's
    # name (<prefix>-00001-of-0000N.gguf), and the name is all a path derived from the spec alone can use.
    # (The operator renames a single file after its GGUF general.name once its controller has read the
    # metadata; a cache filled by one delivery is found by the other through the shared directory, not the name.)
    if source.lower().startswith("pvc://"):
        file = _pvc_source(source)[1]
    elif is_local_source(source):
        file = _local_path(source)
    else:
        try:
            file = unquote(urlsplit(source_url(source)).path)
        except ValueError as exc:
            raise ConfigError.at(config_path(path, "source"), str(exc)) from None
    return posixpath.basename(file) or FALLBACK_FILE_NAME


def model_dir(model: ModelSpec) -> str:
    """The directory the model's files are in, inside the pod."""
    if model.source.lower().startswith("pvc://"):
        return posixpath.dirname(posixpath.join(PVC_SOURCE_DIR, _pvc_source(model.source)[1]))
    return posixpath.join(MODELS_DIR, cache_key(model.source))


def model_path(model: ModelSpec, path: str = "") -> str:
    """The path of the model file llama-server loads: ``/models/<key>/<file>``, or on the pvc:// claim.

    ``path`` is the model's config path (``models.<key>``), for the error about an hf:// source without a file.
    """
    if model.source.lower().startswith("pvc://"):
        return posixpath.join(PVC_SOURCE_DIR, _pvc_source(model.source)[1])
    return posixpath.join(model_dir(model), _file_name(model.source, path))


class Download(NamedTuple):
    """One file the downloader fetches: from ``url`` to ``path``, checked against ``sha256`` when given."""

    url: str
    path: str
    sha256: str | None = None


def _further_files(model: ModelSpec, path: str) -> list[str]:
    """The model's further files (spec.files), checked: relative paths inside the model's directory."""
    files: list[str] = []
    for i, rel in enumerate(model.files or []):
        normal = posixpath.normpath(rel) if rel else ""
        if not rel or rel.startswith("/") or normal == "." or normal.startswith("../") or normal == "..":
            raise ConfigError.at(
                f"{path}.files[{i}]",
                f"{rel!r} must be a path relative to the model file's directory, without '..'",
            )
        files.append(normal)
    return files


def downloads(model: ModelSpec, path: str = "") -> list[Download]:
    """What the downloader fetches for a model, main file first; empty for a pvc:// source.

    ``path`` is the model's config path, for errors. A local source is fetched with curl's file:// from where
    the Deployment mounts it (HOST_MODEL_DIR), so one script copies and downloads alike.
    """
    source = model.source
    if source.lower().startswith("pvc://"):
        return []
    directory = model_dir(model)
    name = _file_name(source, path)
    if is_local_source(source):
        base = f"file://{HOST_MODEL_DIR}"
        url = f"{base}/{quote(name)}"
    else:
        url = source_url(source)
        parts = urlsplit(url)
        # Further files sit beside the main file upstream; a query string belongs to the main file only.
        base = f"{parts.scheme}://{parts.netloc}{posixpath.dirname(parts.path)}"
    sha = model.sha256.lower() if model.sha256 else None
    result = [Download(url, posixpath.join(directory, name), sha)]
    for rel in _further_files(model, path):
        result.append(Download(f"{base}/{quote(rel)}", posixpath.join(directory, rel)))
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

CacheKind = Literal["shared", "perService", "claim", "ephemeral", "pvcSource"]


def cache_kind(service: ResolvedService, cache_mode: CacheMode = "shared") -> CacheKind:
    """Where a service keeps its model.

    A pvc:// source is mounted as it is (no cache). Otherwise ``modelCache.claimName`` wins (the user's PVC,
    which we never create), then ``persistence: Ephemeral`` (an emptyDir, downloaded on every start), then the
    namespace-wide ``cache_mode``: one shared PVC (the operator's default) or one PVC per service.
    """
    if service.model.spec.source.lower().startswith("pvc://"):
        return "pvcSource"
    cache = service.spec.model_cache
    if cache is not None and cache.claim_name:
        return "claim"
    if cache is not None and cache.persistence == "Ephemeral":
        return "ephemeral"
    return cache_mode


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
        claim, _ = _pvc_source(model.source)
        return ModelStorage(
            model_path=model_path(model),
            volumes=[{"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            mounts=[{"name": "model-source", "mountPath": PVC_SOURCE_DIR, "readOnly": True}],
        )

    files = downloads(model, service.model.path)
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

    if is_local_source(model.source):
        # Like the operator: the file (or, for a multi-file model, its directory) is mounted from the node
        # and copied into the cache, so the server reads the cache like for any other source. hostPath makes
        # the namespace fall short of the baseline Pod Security Standard (see pod_security_level), and the
        # file must be readable by uid/gid 65532 on the node.
        local = _local_path(model.source)
        if model.files:
            host = {"path": posixpath.dirname(local), "type": "Directory"}
            mount_path = HOST_MODEL_DIR
        else:
            host = {"path": local, "type": "File"}
            mount_path = posixpath.join(HOST_MODEL_DIR, _file_name(model.source))
        volumes.append({"name": "host-model", "hostPath": host})
        download_mounts = [cache_mount, {"name": "host-model", "mountPath": mount_path, "readOnly": True}]

    directories = sorted({posixpath.dirname(f.path) for f in files})
    return ModelStorage(
        model_path=model_path(model, service.model.path),
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


def _tolerates(toleration: Toleration, key: str, effect: str) -> bool:
    """Whether a toleration already tolerates every taint ``key`` with ``effect`` (any value)."""
    if toleration.effect not in (None, effect):
        return False
    if toleration.key in (None, ""):
        return toleration.operator == "Exists"  # an empty key with Exists tolerates every taint
    return toleration.key == key and toleration.operator == "Exists"


def tolerations(service: ResolvedService) -> list[Manifest]:
    """The pod's tolerations: the GPU taint's (when the pod has GPUs and none tolerates it yet), then the spec's.

    The operator tolerates ``<resource>=present:NoSchedule`` (operator Equal); Exists tolerates that taint and
    the other values device-plugin setups use, so one toleration covers them all.
    """
    own = [t.wire() for t in service.spec.tolerations or []]
    if service.gpu_count == 0:
        return own
    key = gpu_resource(service)
    if any(_tolerates(t, key, "NoSchedule") for t in service.spec.tolerations or []):
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
    request_memory = resources.host_memory or resources.memory
    if request_memory:
        requests["memory"] = request_memory
    if (
        resources.host_memory
        and resources.memory
        and parse_quantity(resources.host_memory) > parse_quantity(resources.memory)
    ):
        raise ConfigError.at(
            config_path(service.path, "resources", "hostMemory"),
            f"{resources.host_memory} is more than resources.memory {resources.memory}, the container's memory "
            "limit: Kubernetes refuses a request above its limit; raise memory or lower hostMemory",
        )
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
    return server_args(service, model_path(service.model.spec, service.model.path))


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
        "args": server_args(service, storage.model_path),
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


def minimum_cache_bytes(model_bytes: Iterable[int]) -> int:
    """The smallest cache that holds these model files: their sum plus CACHE_HEADROOM for the filesystem."""
    return int((Decimal(sum(model_bytes)) * CACHE_HEADROOM).to_integral_value(rounding=ROUND_CEILING))


def _check_cache_size(size: str, needed_bytes: int, what: str, path: str) -> None:
    if needed_bytes <= 0:
        return
    minimum = minimum_cache_bytes([needed_bytes])
    if parse_quantity(size) < minimum:
        raise ConfigError.at(
            path,
            f"the model cache {what} of {size} is too small for the {format_bytes(needed_bytes)} of model files "
            f"it must hold; it needs at least {format_bytes(minimum)} (6% more, for the filesystem's root "
            "reserve and metadata); give a larger cache size",
        )


def shared_cache_pvc(
    namespace: str,
    *,
    size: str = DEFAULT_CACHE_SIZE,
    storage_class: str | None = None,
    access_mode: str = DEFAULT_CACHE_ACCESS_MODE,
    needed_bytes: int = 0,
) -> Manifest:
    """The namespace's shared model cache PVC, ``llmkube-model-cache``, annotated as shared (is_shared_cache).

    ``needed_bytes`` is the size of the model files it will hold, when known (the planner reads it from the
    GGUF files); a ``size`` below that plus headroom is a ConfigError.
    """
    _check_cache_size(size, needed_bytes, SHARED_CACHE_PVC_NAME, "")
    return _pvc(
        SHARED_CACHE_PVC_NAME,
        namespace,
        recommended_labels("llmkube", "model-cache", SHARED_CACHE_PVC_NAME),
        size=size,
        storage_class=storage_class,
        access_mode=access_mode,
        annotations={SHARED_CACHE_ANNOTATION: "true"},
    )


def is_shared_cache(manifest: Mapping[str, Any]) -> bool:
    """Whether a manifest is a shared model cache: the Pulumi layer retains it on delete."""
    annotations = manifest.get("metadata", {}).get("annotations") or {}
    return manifest.get("kind") == "PersistentVolumeClaim" and annotations.get(SHARED_CACHE_ANNOTATION) == "true"


def service_workloads(
    service: ResolvedService,
    *,
    cache_mode: CacheMode = "shared",
    cache_size: str = DEFAULT_CACHE_SIZE,
    storage_class: str | None = None,
    model_bytes: int = 0,
    downloader_image: str = DOWNLOADER_IMAGE,
) -> list[Manifest]:
    """A service's objects in apply order: its own cache PVC (perService mode), Deployment, Service, HPA.

    The shared cache PVC is not among them (see shared_cache_pvc): it belongs to the namespace. ``cache_size``
    and ``storage_class`` size the per-service PVC; ``model_bytes`` (when known) checks that it fits.
    """
    manifests: list[Manifest] = []
    if cache_kind(service, cache_mode) == "perService":
        name = service.name + PER_SERVICE_CACHE_SUFFIX
        _check_cache_size(cache_size, model_bytes, name, config_path(service.path, "modelCache"))
        # RWO: the volume binds on the node the pod schedules to, which is the point of this mode (#728).
        manifests.append(
            _pvc(
                name,
                service.namespace,
                service_labels(service),
                size=cache_size,
                storage_class=storage_class,
                access_mode="ReadWriteOnce",
            )
        )
    manifests.append(deployment(service, cache_mode=cache_mode, downloader_image=downloader_image))
    manifests.append(service_manifest(service))
    autoscaler = hpa(service)
    if autoscaler is not None:
        manifests.append(autoscaler)
    return manifests


def shared_cache_manifests(
    stack: ResolvedStack,
    *,
    cache_mode: CacheMode = "shared",
    size: str = DEFAULT_CACHE_SIZE,
    storage_class: str | None = None,
    access_mode: str = DEFAULT_CACHE_ACCESS_MODE,
    model_bytes: Mapping[str, int] | None = None,
) -> list[Manifest]:
    """The shared cache PVC of a stack's namespace when one of its services uses it, else nothing.

    ``model_bytes`` maps model names to file sizes, when known; the models of the services on the shared
    cache must fit.
    """
    users = [s for s in stack.services.values() if cache_kind(s, cache_mode) == "shared"]
    if not users:
        return []
    sizes = model_bytes or {}
    needed = sum(sizes.get(name, 0) for name in sorted({s.model.name for s in users}))
    return [
        shared_cache_pvc(
            stack.namespace, size=size, storage_class=storage_class, access_mode=access_mode, needed_bytes=needed
        )
    ]


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
    namespace: str, services: Iterable[ResolvedService] = (), *, delivery: Literal["direct", "operator"] = "direct"
) -> list[Manifest]:
    """The Namespace, labelled to enforce the strictest Pod Security Standard all its services' pods meet.

    Our own pods are restricted unless a model comes from a node path (hostPath: privileged). The operator's
    pods need baseline: its cache-prep container runs as root and adds CHOWN and FOWNER (model_storage.go,
    cachePrepInitContainer). Warnings and audit always follow restricted, so a namespace that must allow
    more still says what falls short.
    """
    level = namespace_pod_security(deployment(s) for s in services)
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
