"""Where a service's model lives in the pod, and how it gets there: the cache layout, the downloads, the
init-container scripts, and the volumes and mounts of each kind of cache.

The layout follows the operator (v0.9.19, internal/controller) so that both deliveries can share one cache:
a model lives in ``/models/<first 16 hex of sha256(spec.source)>/`` on a PVC named ``llmkube-model-cache``
(or ``<service>-model-cache`` per service, or the user's ``modelCache.claimName``). A model pinned by sha256
is the exception: its key covers the digests too (``ModelSource.pinned_cache_key``), so it is not shared.
"""

from __future__ import annotations

import math
import posixpath
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from ..api.model import ModelSpec
from ..api.stack import PER_SERVICE_CACHE_SUFFIX, SHARED_CACHE_PVC_NAME, CacheMode, Delivery
from ..meta import restricted_container_security_context
from ..resolve import ResolvedService, cache_kind
from ..sources import ModelSource, parse_source, sibling_url

Manifest = dict[str, Any]

MODELS_DIR: Final = "/models"
PVC_SOURCE_DIR: Final = "/model-source"  # where a pvc:// source is mounted (buildPVCStorageConfig)
HOST_MODEL_DIR: Final = "/host-model"  # where a local source is mounted for the copy (buildCachedStorageConfig)
# The operator's default --init-container-image, pinned by tag. Alpine-based: curl plus busybox sh and its
# applets (sha256sum, flock, stat, find, awk, mv and friends), all the scripts below need.
DOWNLOADER_IMAGE: Final = "docker.io/curlimages/curl:8.18.0"

# How the downloader behaves (the settings line of download_script; why, at _DOWNLOAD_PREAMBLE).
DOWNLOAD_ATTEMPTS: Final = 5  # attempts in a row that add no byte before a download gives up
RETRY_DELAY_SECONDS: Final = 10
CONNECT_TIMEOUT_SECONDS: Final = 30
STALL_BYTES_PER_SECOND: Final = 1024  # slower than this for STALL_SECONDS counts as a stalled connection
STALL_SECONDS: Final = 60
PROGRESS_SECONDS: Final = 30  # one progress line per this many seconds of downloading
STALE_TEMP_MINUTES: Final = 15  # a temporary file unmodified this long was left by a download that died

# The init containers' requests and limits. curl streams to disk and sha256sum reads in small blocks: both
# use a few MiB, and the pod's request is the larger of its init containers' and the sum of its containers',
# so the request adds nothing to the server's. The memory limit leaves room for the page cache the writes of
# a large file are charged to the container for (reclaimable, but a tight limit throttles writeback); one CPU
# keeps TLS at link speed and hashing tens of GB to a minute or two. Limits make the pod acceptable to a
# namespace whose LimitRange or ResourceQuota requires them.
INIT_CONTAINER_RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}

# How long Pulumi waits for a Deployment: its own default (10 minutes) for the image pull, the model load and
# the readiness probe, plus the model's download at the stack's downloadMbps with DOWNLOAD_HEADROOM.
ROLLOUT_FLOOR_SECONDS: Final = 600
DOWNLOAD_HEADROOM: Final = Fraction(3, 2)


# ---------------------------------------------------------------------------------------------------------
# Model sources and the cache layout
# ---------------------------------------------------------------------------------------------------------


def model_dir(model: ModelSpec, delivery: Delivery = "direct") -> str:
    """The directory the model's files are in, inside the pod: keyed by the source and (delivery direct) the
    files' digests; the operator keys by the source alone."""
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return posixpath.dirname(posixpath.join(PVC_SOURCE_DIR, source.path))
    pins = _sha256s(model, source) if delivery == "direct" else {}
    return posixpath.join(MODELS_DIR, source.pinned_cache_key(pins))


def _sha256s(model: ModelSpec, source: ModelSource) -> dict[str, str]:
    """The digest each pinned file must have, by its path in the model's directory, in lower case."""
    pins = {posixpath.normpath(rel): digest.lower() for rel, digest in (model.file_sha256 or {}).items()}
    if model.sha256:
        pins[source.file_name] = model.sha256.lower()
    return pins


def model_path(model: ModelSpec, delivery: Delivery = "direct") -> str:
    """The path of the model file llama-server loads: ``/models/<key>/<file>``, or on the pvc:// claim.

    The file keeps its upstream name: llama.cpp finds the other parts of a split GGUF by the first part's
    name (<prefix>-00001-of-0000N.gguf), and the name is all a path derived from the spec alone can use.
    (The operator renames a single file after its GGUF general.name once its controller has read the
    metadata; a cache filled by one delivery is found by the other through the shared directory, not the name.)
    """
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return posixpath.join(PVC_SOURCE_DIR, source.path)
    return posixpath.join(model_dir(model, delivery), source.file_name)


class Download(NamedTuple):
    """One file the downloader fetches: from ``url`` to ``path``, checked against ``sha256`` when given."""

    url: str
    path: str
    sha256: str | None = None


def downloads(model: ModelSpec) -> list[Download]:
    """What the downloader fetches for a model, main file first; empty for a pvc:// source.

    A local source is fetched with curl's file:// from where the Deployment mounts it (HOST_MODEL_DIR), so one
    script copies and downloads alike. Further files (spec.files, checked by ``checks.model_problems``) sit
    beside the main file upstream, each checked against its digest in spec.fileSha256 when it has one.
    """
    source = parse_source(model.source)
    if source.scheme == "pvc":
        return []
    directory = model_dir(model)
    pins = _sha256s(model, source)
    local = f"file://{HOST_MODEL_DIR}/{{}}"
    name = source.file_name
    result = [Download(source.url or local.format(quote(name)), posixpath.join(directory, name), pins.get(name))]
    for rel in model.files or []:
        rel = posixpath.normpath(rel)
        further = sibling_url(source.url, rel) if source.url else local.format(quote(rel))
        result.append(Download(further, posixpath.join(directory, rel), pins.get(rel)))
    return result


def rollout_timeout_minutes(model_bytes: int, download_mbps: int) -> int:
    """How long Pulumi may wait for a Deployment whose init container downloads ``model_bytes`` (0: none).

    Pulumi's await of a Deployment includes its init containers and gives up after 10 minutes by default: a
    21 GB model at 25 MB/s takes 14 minutes, and ``pulumi up`` would fail on a rollout that was on its way.
    """
    download = Fraction(model_bytes * 8, download_mbps * 10**6) * DOWNLOAD_HEADROOM
    return math.ceil((ROLLOUT_FLOOR_SECONDS + download) / 60)


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

# The downloader. Several pods share one cache (replicas, a scale-up, two services on one model, a rollout's
# old and new pod), and a download can die at any byte (eviction, OOM kill, node loss).
#
# fetch URL DEST [SHA256]: download URL to DEST unless DEST exists. The bytes land in DEST.part and are renamed
# onto DEST only when complete (and matching SHA256): the skip is a bare existence check, so a file published
# in place and cut short would count as cached forever. A cached file is not hashed again: it was checked when
# written, and its directory's key covers its digest (ModelSource.pinned_cache_key), so only a download
# checked against that digest ever published it; hashing tens of GB would slow every start.
# One pod downloads a file at a time: the others wait on an flock(2) of DEST.lock, then find DEST cached. So
# DEST.part has one writer, and the next holder resumes it (curl -C -) instead of starting over. The kernel
# drops a lock when its holder dies, and NFSv4 and CephFS hold flock across nodes; lock files stay (removing
# one lets a waiter hold a lock on a file a newcomer no longer sees). Where locking fails (an NFS mount with
# nolock), the pod downloads into a file of its own (DEST.tmp.<pod>), without resume, as before locks.
# sweep DEST: remove DEST.tmp.* not modified for $stale minutes: left by a download that died (older pods
# used these names), never by a live one, which writes at least every $stall seconds or gives up. A
# leftover's size counts against the volume until then, and enough of them fill it (curl: (23)).
# download URL FILE NAME: one curl per attempt, resuming FILE. curl's own --retry would throw away what the
# attempt received, so attempts are ours: a transient failure (timeouts, a stall, a cut connection, 408,
# 429, 5xx) is retried after $delay seconds while attempts add bytes; $attempts in a row without a byte give
# up; a 404 or a refused redirect fails at once. A stall is under $limit bytes/s for $stall seconds. A
# server that cannot resume (curl exit 33) is read afresh. An https source never follows a redirect to
# another protocol (--proto-redir =https): a plain-http hop would let anyone on the path swap the file.
# progress FILE HEADERS NAME: in the background while curl runs, every $every seconds: how far FILE is, as a
# percentage of the size the server announced (Content-Range of a resumed request, else the last response's
# Content-Length), or in MiB. Killed when curl ends; its sleep is killed with it and holds no pipe or lock.
_DOWNLOAD_PREAMBLE = """\
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
sweep() {
  for old in "$1".tmp.*; do
    if [ -f "$old" ] && [ -n "$(find "$old" -prune -mmin +"$stale")" ]; then
      rm -f "$old"
      echo "llmkube: removed $old, left by a download that died"
    fi
  done
}
progress() {
  nap=
  trap 'kill $nap 2>/dev/null; exit 0' TERM
  while :; do
    sleep "$every" >/dev/null 2>&1 &
    nap=$!
    wait "$nap" || true
    have=$(size "$1")
    total=$(awk -F ': *' '/^HTTP\\//{n = 0; r = 0} tolower($1) == "content-length" {n = $2 + 0}
      tolower($1) == "content-range" {sub(/.*\\//, "", $2); r = $2 + 0} END {print (r ? r : n) + 0}' "$2" \\
      2>/dev/null || echo 0)
    if [ "$total" -gt 0 ]; then
      echo "llmkube: $3: $((have * 100 / total))% of $((total >> 20)) MiB"
    else
      echo "llmkube: $3: $((have >> 20)) MiB so far"
    fi
  done
}
download() {
  url=$1 out=$2 name=$3 failures=0
  set -- --fail --location --no-progress-meter --connect-timeout "$connect" --speed-limit "$limit" \\
    --speed-time "$stall" --continue-at - --dump-header "$out.headers" --output "$out"
  case $url in
    [Hh][Tt][Tt][Pp][Ss]://*) set -- "$@" --proto-redir =https ;;
  esac
  while :; do
    before=$(size "$out")
    if [ "$before" -gt 0 ]; then
      echo "llmkube: resuming $url at byte $before"
    else
      echo "llmkube: downloading $url"
    fi
    progress "$out" "$out.headers" "$name" 9>&- &
    watcher=$!
    code=$(curl "$@" --write-out '%{http_code}' "$url") && rc=0 || rc=$?
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    rm -f "$out.headers"
    [ "$rc" -ne 0 ] || return 0
    case $rc/$code in
      33/*) rm -f "$out" ;;
      22/408 | 22/429 | 22/5?? | 6/* | 7/* | 18/* | 28/* | 35/* | 52/* | 55/* | 56/* | 92/*) ;;
      23/*)
        echo "llmkube: ERROR: could not write $out (curl exit 23): is the cache volume full?" >&2
        exit 1 ;;
      *)
        echo "llmkube: ERROR: could not download $url (curl exit $rc)" >&2
        exit 1 ;;
    esac
    if [ "$(size "$out")" -gt "$before" ]; then failures=0; else failures=$((failures + 1)); fi
    if [ "$failures" -ge "$attempts" ]; then
      echo "llmkube: ERROR: could not download $url: $attempts attempts in a row added nothing" \\
        "(curl exit $rc)" >&2
      exit 1
    fi
    echo "llmkube: $url was cut short (curl exit $rc); retrying in $delay s"
    sleep "$delay"
  done
}
fetch() {
  url=$1 dest=$2 want=${3:-}
  sweep "$dest"
  if [ -f "$dest" ]; then
    echo "llmkube: $dest is cached; skipping download"
    return 0
  fi
  part="$dest.part"
  exec 9>"$dest.lock"
  if ! flock -n 9; then
    echo "llmkube: waiting for another pod's download of $dest"
    if ! flock 9; then
      part="$dest.tmp.${POD_NAME:-$(cat /proc/sys/kernel/hostname)}"
      echo "llmkube: cannot lock $dest.lock on this volume; downloading into $part, without resume"
      rm -f "$part"
    fi
  fi
  if [ -f "$dest" ]; then
    echo "llmkube: $dest is cached (another pod downloaded it); skipping download"
    exec 9>&-
    return 0
  fi
  download "$url" "$part" "${dest##*/}"
  if [ -n "$want" ]; then
    echo "llmkube: checking the sha256 of $dest"
    got=$(sha256sum "$part" | cut -d ' ' -f 1)
    if [ "$got" != "$want" ]; then
      rm -f "$part"
      echo "llmkube: ERROR: sha256 mismatch for $url: expected $want, got $got; the download was discarded" >&2
      exit 1
    fi
    echo "llmkube: sha256 of $dest verified"
  fi
  # rename(2) is atomic: readers never see a partial file.
  mv "$part" "$dest"
  exec 9>&-
  echo "llmkube: saved $dest"
}
"""


def prepare_script(directories: Iterable[str]) -> str:
    """The cache-prep script: create each directory and check it is writable, or fail saying why."""
    return _PREPARE_PREAMBLE + "".join(f"prepare {shlex.quote(d)}\n" for d in directories)


def download_script(
    files: Iterable[Download],
    *,
    retry_delay: int = RETRY_DELAY_SECONDS,
    stall_seconds: int = STALL_SECONDS,
    progress_seconds: int = PROGRESS_SECONDS,
) -> str:
    """The downloader script: its settings, then one ``fetch`` line per file, values shell-quoted (sources are
    user input). The keyword arguments are for tests, which cannot wait minutes."""
    settings = {
        "attempts": DOWNLOAD_ATTEMPTS,
        "delay": retry_delay,
        "connect": CONNECT_TIMEOUT_SECONDS,
        "limit": STALL_BYTES_PER_SECOND,
        "stall": stall_seconds,
        "every": progress_seconds,
        "stale": STALE_TEMP_MINUTES,
    }
    header = "set -eu\n" + " ".join(f"{key}={value}" for key, value in settings.items()) + "\n"
    lines = []
    for f in files:
        args = [f.url, f.path] + ([f.sha256] if f.sha256 else [])
        lines.append("fetch " + " ".join(shlex.quote(a) for a in args) + "\n")
    return header + _DOWNLOAD_PREAMBLE + "".join(lines)


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
    draft_path: str | None = None  # speculativeDecoding's draft model (draftModelRef or draftModel)
    mmproj_path: str | None = None  # the Model's mmproj file
    mounts: list[Manifest] = field(default_factory=list)
    init_containers: list[Manifest] = field(default_factory=list)


def _init_container(name: str, image: str, script: str, mounts: list[Manifest]) -> Manifest:
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
        # The pod's own name keeps downloads into one cache apart where the volume takes no locks (see
        # _DOWNLOAD_PREAMBLE).
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": INIT_CONTAINER_RESOURCES,
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
