"""Where a service's model lives in the pod, and how it gets there: the cache layout, the downloads, the
init-container scripts, and the volumes and mounts of each kind of cache.

The layout follows the operator (v0.9.19, internal/controller) so that both deliveries can share one cache:
a model lives in ``/models/<first 16 hex of sha256(spec.source)>/`` on a PVC named ``llmkube-model-cache``
(or ``<service>-model-cache`` per service, or the user's ``modelCache.claimName``).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from ..api.model import ModelSpec
from ..api.stack import PER_SERVICE_CACHE_SUFFIX, SHARED_CACHE_PVC_NAME, CacheMode
from ..meta import restricted_container_security_context
from ..resolve import ResolvedService, cache_kind
from ..sources import parse_source, sibling_url

Manifest = dict[str, Any]

MODELS_DIR: Final = "/models"
PVC_SOURCE_DIR: Final = "/model-source"  # where a pvc:// source is mounted (buildPVCStorageConfig)
HOST_MODEL_DIR: Final = "/host-model"  # where a local source is mounted for the copy (buildCachedStorageConfig)
# The operator's default --init-container-image, pinned by tag. Alpine-based: curl plus busybox sh,
# sha256sum, mv and friends, all the scripts below need.
DOWNLOADER_IMAGE: Final = "docker.io/curlimages/curl:8.18.0"


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
