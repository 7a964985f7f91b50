"""Where a service's model lives in the pod, and how it gets there: the cache layout, the downloads, the
init-container scripts, and the volumes and mounts of each kind of cache.

The layout follows the operator (v0.9.19, internal/controller) so that both deliveries can share one cache:
a model lives in ``/models/<first 16 hex of sha256(spec.source)>/`` on a PVC named ``llmkube-model-cache``
(or ``<service>-model-cache`` per service, or the user's ``modelCache.claimName``). A model pinned by sha256
is the exception: its key covers the digests too (``ModelSource.pinned_cache_key``), so it is not shared.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, NamedTuple
from urllib.parse import quote

from ..api.model import DEFAULT_REFRESH_POLICY, ModelSpec, RefreshPolicy
from ..api.stack import PER_SERVICE_CACHE_SUFFIX, SHARED_CACHE_PVC_NAME, CacheMode, Delivery
from ..flags import is_router
from ..meta import restricted_container_security_context
from ..resolve import CacheKind, ResolvedService, cache_kind
from ..sources import ModelSource, is_url, parse_source

Manifest = dict[str, Any]

MODELS_DIR: Final = "/models"
PVC_SOURCE_DIR: Final = "/model-source"  # where a pvc:// source is mounted (buildPVCStorageConfig)
HOST_MODEL_DIR: Final = "/host-model"  # where a local source is mounted for the copy (buildCachedStorageConfig)
# The operator's default --init-container-image, pinned by tag. Alpine-based: curl plus busybox sh and its
# applets (sha256sum, flock, stat, find, awk, mv and friends), all the scripts below need.
DOWNLOADER_IMAGE: Final = "docker.io/curlimages/curl:8.18.0"
DRAFT_PREFIX: Final = "draft-"  # a draft model's init container, and a volume of its that collides (as upstream)
DRAFT_MOUNT_DIR: Final = "/draft"  # where a draft model's mount goes when its path is taken (as upstream)
# routerModels[i]'s init container is router-model-<i>-downloader; its volumes and mounts that collide are
# renamed and moved as a draft model's are, under router-<i>- and /router-<i>.
ROUTER_PREFIX: Final = "router-"

# How the downloader behaves (the settings line of download_script; why, at _DOWNLOAD_PREAMBLE).
DOWNLOAD_ATTEMPTS: Final = 5  # attempts in a row that add no byte before a download gives up
RETRY_DELAY_SECONDS: Final = 10
CONNECT_TIMEOUT_SECONDS: Final = 30
STALL_BYTES_PER_SECOND: Final = 1024  # slower than this for STALL_SECONDS counts as a stalled connection
STALL_SECONDS: Final = 60
PROGRESS_SECONDS: Final = 30  # one progress line per this many seconds of downloading
STALE_TEMP_MINUTES: Final = 15  # a temporary file unmodified this long was left by a download that died
CHECK_SECONDS: Final = 30  # refreshPolicy OnChange: longest wait for the source's answer before keeping the copy

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


class Layout(NamedTuple):
    """A model's files by their path in its directory: the model file, the further files, the mmproj file."""

    source: ModelSource
    main: str
    further: list[str]
    mmproj: str | None  # None without one
    mmproj_url: str | None  # an mmproj given as a URL (llmkube extension): where it comes from


def layout(model: ModelSpec) -> Layout:
    """Where each of a model's files sits in its directory.

    A source that names a file (a URL, a path) is the model file and ``files`` sit beside it; a repository
    (hf://org/repo, owner/name) or an s3:// prefix with files holds them all, and files[0] is the model file
    (as in the operator). An mmproj is a path in the same directory, or a URL staged there under its own name.
    """
    source = parse_source(model.source)
    files = [posixpath.normpath(rel) for rel in model.files or []]
    if source.names_directory(model.files):
        # A repository without files is reported by checks.model_problems; the fallback keeps builders total.
        main, further = (files[0], files[1:]) if files else (source.file_name, [])
    else:
        main, further = source.file_name, files
    mmproj = mmproj_url = None
    if model.mmproj and is_url(model.mmproj):
        companion = parse_source(model.mmproj)
        mmproj, mmproj_url = companion.file_name, companion.url
    elif model.mmproj:
        mmproj = posixpath.normpath(model.mmproj)
    return Layout(source, main, further, mmproj, mmproj_url)


def model_dir(model: ModelSpec, delivery: Delivery = "direct") -> str:
    """The directory the model's files are in, inside the pod: keyed by the source and (delivery direct) the
    files' digests and an mmproj's URL; the operator keys by the source alone."""
    files = layout(model)
    source = files.source
    if source.scheme == "pvc":
        return posixpath.dirname(posixpath.join(PVC_SOURCE_DIR, source.path))
    if delivery != "direct":
        return posixpath.join(MODELS_DIR, source.cache_key)
    companions = [files.mmproj_url] if files.mmproj_url else []
    return posixpath.join(MODELS_DIR, source.pinned_cache_key(_sha256s(model, files), companions))


def _sha256s(model: ModelSpec, files: Layout) -> dict[str, str]:
    """The digest each pinned file must have, by its path in the model's directory, in lower case."""
    pins = {}
    for key, digest in (model.file_sha256 or {}).items():
        # fileSha256 is keyed by the files entry as written; an mmproj URL by the URL.
        rel = files.mmproj if key == model.mmproj and files.mmproj_url else posixpath.normpath(key)
        pins[rel or key] = digest.lower()
    if model.sha256:
        pins[files.main] = model.sha256.lower()
    return pins


def model_path(model: ModelSpec, delivery: Delivery = "direct") -> str:
    """The path of the model file llama-server loads: ``/models/<key>/<file>``, or on the pvc:// claim.

    The file keeps its upstream name: llama.cpp finds the other parts of a split GGUF by the first part's
    name (<prefix>-00001-of-0000N.gguf), and the name is all a path derived from the spec alone can use.
    (The operator renames a single file after its GGUF general.name once its controller has read the
    metadata; a cache filled by one delivery is found by the other through the shared directory, not the name.)
    """
    files = layout(model)
    if files.source.scheme == "pvc":
        return posixpath.join(PVC_SOURCE_DIR, files.source.path)
    return posixpath.join(model_dir(model, delivery), files.main)


def companion_path(model: ModelSpec, rel: str) -> str:
    """Where a file of the model's directory (an mmproj, speculativeDecoding's draftModel) is in the pod."""
    return posixpath.join(model_dir(model), posixpath.normpath(rel))


def mmproj_path(model: ModelSpec) -> str | None:
    """Where the model's mmproj file is in the pod (--mmproj), or None without one."""
    mmproj = layout(model).mmproj
    return companion_path(model, mmproj) if mmproj else None


class Download(NamedTuple):
    """One file the downloader fetches: from ``url`` to ``path``, checked against ``sha256`` when given."""

    url: str
    path: str
    sha256: str | None = None


def downloads(model: ModelSpec) -> list[Download]:
    """What the downloader fetches for a model, main file first, the mmproj last; empty for a pvc:// source.

    A local source is fetched with curl's file:// from where the Deployment mounts it (HOST_MODEL_DIR), so one
    script copies and downloads alike. Further files (spec.files, checked by ``checks.model_problems``) sit
    beside the main file upstream (or in the repository, under the s3 prefix), each checked against its digest
    in spec.fileSha256 when it has one. An s3:// URL stays one: the script signs it for the endpoint it is given.
    """
    files = layout(model)
    source = files.source
    if source.scheme == "pvc":
        return []
    directory = model_dir(model)
    pins = _sha256s(model, files)

    def url(rel: str) -> str:
        if source.url is None:
            return f"file://{HOST_MODEL_DIR}/{quote(rel)}"
        return source.file_url(rel, model.files)

    main_url = url(files.main) if source.names_directory(model.files) or source.url is None else source.url
    result = [Download(main_url, posixpath.join(directory, files.main), pins.get(files.main))]
    result += [Download(url(rel), posixpath.join(directory, rel), pins.get(rel)) for rel in files.further]
    if files.mmproj and files.mmproj not in (files.main, *files.further):
        mmproj = files.mmproj_url or url(files.mmproj)
        result.append(Download(mmproj, posixpath.join(directory, files.mmproj), pins.get(files.mmproj)))
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
# download returns 1 after saying why, and its caller decides: a first download fails the pod, a refresh keeps
# the cached copy.
# request URL CURL-ARGS: curl for URL, printing the HTTP code. An s3://BUCKET/KEY URL goes path style (as the
# operator's) to $AWS_ENDPOINT_URL, else AWS's endpoint of $AWS_REGION (us-east-1 when unset), signed with
# SigV4 when the Secret (envFrom) gives AWS_ACCESS_KEY_ID; AWS_SESSION_TOKEN (temporary credentials, which the
# operator ignores) goes as x-amz-security-token; x-amz-content-sha256 is the empty payload's, which S3 requires
# and curl before 8.1 does not send. Unsigned without keys: a public bucket. HF_TOKEN, when the Secret gives
# one, goes to huggingface.co only (curl sends no Authorization header to a redirect's other host). Secrets
# are arguments of curl, never printed: no `set -x`, no -v, and messages name the s3:// URL, not the endpoint.
# refused URL: what to check when the server answered 400, 401 or 403.
# fingerprint HEADERS: the last response's ETag and size (Content-Range's total, else Content-Length).
# current URL DEST (refreshPolicy OnChange): whether DEST is still what URL serves, by a HEAD (signed, for s3)
# compared with DEST.source, what the download recorded: the ETag decides when both sides have one, else the
# size, as the operator's drift check. Without a record the answer becomes the baseline. A check that fails
# (network, a timeout of $check s) keeps the cached copy: a pod must start without its model's host. A file
# with a sha256 is never checked: its digest names the one file it may be.
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
request() {
  from=$1
  shift
  case $from in
    s3://*)
      region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
      endpoint=${AWS_ENDPOINT_URL:-https://s3.$region.amazonaws.com}
      target="${endpoint%/}/${from#s3://}"
      if [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
        set -- "$@" --aws-sigv4 "aws:amz:$region:s3" --user "$AWS_ACCESS_KEY_ID:${AWS_SECRET_ACCESS_KEY:-}" \\
          --header "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        if [ -n "${AWS_SESSION_TOKEN:-}" ]; then
          set -- "$@" --header "x-amz-security-token: $AWS_SESSION_TOKEN"
        fi
      fi ;;
    https://huggingface.co/*)
      target=$from
      if [ -n "${HF_TOKEN:-}" ]; then set -- "$@" --header "Authorization: Bearer $HF_TOKEN"; fi ;;
    *) target=$from ;;
  esac
  case $target in
    [Hh][Tt][Tt][Pp][Ss]://*) set -- "$@" --proto-redir =https ;;
  esac
  curl "$@" --write-out '%{http_code}' "$target"
}
refused() {
  case $1 in
    s3://*)
      if [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
        echo "the S3 endpoint refused the request: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY," \\
          "AWS_SESSION_TOKEN and AWS_REGION in the Secret of the model's sourceSecretRef, and that they may" \\
          "read the object"
      else
        echo "no AWS credentials were given and the object is not public: set the model's sourceSecretRef" \\
          "to a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
      fi ;;
    *) echo "the server refused access: the file may be private or gated" ;;
  esac
}
fingerprint() {
  awk -F ': *' '/^HTTP\\//{e = ""; n = 0; r = 0} {sub(/\\r$/, "")} tolower($1) == "etag" {e = $2}
    tolower($1) == "content-length" {n = $2 + 0}
    tolower($1) == "content-range" {sub(/.*\\//, "", $2); r = $2 + 0}
    END {print e; print (r ? r : n) + 0}' "$1" 2>/dev/null || true
}
record() {
  printf '%s\\n' "$2" > "$1.source.tmp" && mv "$1.source.tmp" "$1.source"
}
current() {
  url=$1 dest=$2
  code=$(request "$url" --head --fail --location --silent --show-error --connect-timeout "$connect" \\
    --max-time "$check" --dump-header "$dest.check" --output /dev/null) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ]; then
    rm -f "$dest.check"
    echo "llmkube: could not check $url for a change (curl exit $rc, HTTP $code); keeping the cached copy"
    return 0
  fi
  remote=$(fingerprint "$dest.check")
  rm -f "$dest.check"
  if [ ! -f "$dest.source" ]; then
    record "$dest" "$remote"
    echo "llmkube: recorded what $url is now; later starts compare against it"
    return 0
  fi
  kept=$(cat "$dest.source")
  old_etag=$(echo "$kept" | sed -n 1p) old_size=$(echo "$kept" | sed -n 2p)
  new_etag=$(echo "$remote" | sed -n 1p) new_size=$(echo "$remote" | sed -n 2p)
  if [ -n "$old_etag" ] && [ -n "$new_etag" ]; then
    [ "$old_etag" = "$new_etag" ] && return 0
  elif [ "${old_size:-0}" -gt 0 ] && [ "${new_size:-0}" -gt 0 ]; then
    [ "$old_size" = "$new_size" ] && return 0
  else
    echo "llmkube: $url gives nothing to compare (no ETag, no size); keeping the cached copy"
    return 0
  fi
  echo "llmkube: $url changed upstream (ETag $old_etag -> $new_etag, $old_size -> $new_size bytes)"
  return 1
}
download() {
  url=$1 out=$2 name=$3 failures=0 fetched=
  set -- --fail --location --no-progress-meter --connect-timeout "$connect" --speed-limit "$limit" \\
    --speed-time "$stall" --continue-at - --dump-header "$out.headers" --output "$out"
  while :; do
    before=$(size "$out")
    if [ "$before" -gt 0 ]; then
      echo "llmkube: resuming $url at byte $before"
    else
      echo "llmkube: downloading $url"
    fi
    progress "$out" "$out.headers" "$name" 9>&- &
    watcher=$!
    code=$(request "$url" "$@") && rc=0 || rc=$?
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    [ "$rc" -ne 0 ] || fetched=$(fingerprint "$out.headers")
    rm -f "$out.headers"
    [ "$rc" -ne 0 ] || return 0
    case $rc/$code in
      33/*) rm -f "$out" ;;
      22/408 | 22/429 | 22/5?? | 6/* | 7/* | 18/* | 28/* | 35/* | 52/* | 55/* | 56/* | 92/*) ;;
      23/*)
        echo "llmkube: ERROR: could not write $out (curl exit 23): is the cache volume full?" >&2
        return 1 ;;
      22/400 | 22/401 | 22/403)
        echo "llmkube: ERROR: could not download $url (curl exit $rc): HTTP $code, $(refused "$url")" >&2
        return 1 ;;
      22/*)
        echo "llmkube: ERROR: could not download $url (curl exit $rc): HTTP $code" >&2
        return 1 ;;
      *)
        echo "llmkube: ERROR: could not download $url (curl exit $rc)" >&2
        return 1 ;;
    esac
    if [ "$(size "$out")" -gt "$before" ]; then failures=0; else failures=$((failures + 1)); fi
    if [ "$failures" -ge "$attempts" ]; then
      echo "llmkube: ERROR: could not download $url: $attempts attempts in a row added nothing" \\
        "(curl exit $rc)" >&2
      return 1
    fi
    echo "llmkube: $url was cut short (curl exit $rc); retrying in $delay s"
    sleep "$delay"
  done
}
fetch() {
  url=$1 dest=$2 want=${3:-} again=
  sweep "$dest"
  if [ -f "$dest" ]; then
    if [ "$refresh" != OnChange ] || [ -n "$want" ] || current "$url" "$dest"; then
      echo "llmkube: $dest is cached; skipping download"
      return 0
    fi
    again=1
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
  if [ -f "$dest" ] && { [ -z "$again" ] || current "$url" "$dest" >/dev/null; }; then
    echo "llmkube: $dest is cached (another pod downloaded it); skipping download"
    exec 9>&-
    return 0
  fi
  if [ -n "$again" ]; then
    # A part left by an older download may hold bytes of the file before it changed.
    rm -f "$part"
    if ! download "$url" "$part" "${dest##*/}"; then
      echo "llmkube: could not download the new $url; keeping the cached copy"
      exec 9>&-
      return 0
    fi
  elif ! download "$url" "$part" "${dest##*/}"; then
    exit 1
  fi
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
  # rename(2) is atomic: readers never see a partial file, and a pod still reading the old one keeps it.
  mv "$part" "$dest"
  if [ "$refresh" = OnChange ]; then record "$dest" "$fetched"; fi
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
    refresh_policy: RefreshPolicy = DEFAULT_REFRESH_POLICY,
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
        "check": CHECK_SECONDS,
        "refresh": refresh_policy,
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
    # runtime llamacpp-router: every model it serves (modelRef's, then routerModels'), by the name clients send
    # (its Model key) -> its model file, and -> its mmproj file for those that have one.
    router_paths: dict[str, str] = field(default_factory=dict)
    router_mmproj_paths: dict[str, str] = field(default_factory=dict)
    mounts: list[Manifest] = field(default_factory=list)
    init_containers: list[Manifest] = field(default_factory=list)


def _init_container(name: str, image: str, script: str, mounts: list[Manifest], secret: str | None = None) -> Manifest:
    container: Manifest = {
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
    if secret is not None:
        # The whole Secret, as the operator's modelEnvFrom: its keys are the downloader's environment
        # (AWS_*, HF_TOKEN). Only here: the server never sees the source's credentials.
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return container


@dataclass
class _Staging:
    """One or more models' part of a pod: the volumes and mounts the server reads them from, the cache
    directories to prepare, and the downloaders that fill them (with the volumes only those mount)."""

    model_path: str
    volumes: list[Manifest] = field(default_factory=list)
    mounts: list[Manifest] = field(default_factory=list)
    cache_mounts: list[Manifest] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    downloaders: list[Manifest] = field(default_factory=list)
    download_volumes: list[Manifest] = field(default_factory=list)


def _staging(
    model: ModelSpec,
    kind: CacheKind,
    claim: str | None,
    *,
    size_limit: str | None = None,
    image: str = DOWNLOADER_IMAGE,
    name: str = "model-downloader",
) -> _Staging:
    """Where a model is read from in a cache of ``kind`` (on the PVC ``claim``), and the downloader filling it."""
    if kind == "pvcSource":
        # Pre-staged on the user's claim: mounted read-only, nothing downloaded (buildPVCStorageConfig).
        source_claim = parse_source(model.source).claim
        return _Staging(
            model_path(model),
            volumes=[{"name": "model-source", "persistentVolumeClaim": {"claimName": source_claim, "readOnly": True}}],
            mounts=[{"name": "model-source", "mountPath": PVC_SOURCE_DIR, "readOnly": True}],
        )
    if kind == "ephemeral":
        # Bounded so that an overrun evicts this pod, not whatever else shares the node's disk.
        volume: Manifest = {"name": "model-storage", "emptyDir": {"sizeLimit": size_limit} if size_limit else {}}
    else:
        volume = {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}
    cache_mount = {"name": volume["name"], "mountPath": MODELS_DIR}
    download_mounts = [dict(cache_mount)]
    download_volumes = []

    files = downloads(model)
    source = parse_source(model.source)
    if source.local:
        # Like the operator: the file (or, for a multi-file model, its directory) is mounted from the node
        # and copied into the cache, so the server reads the cache like for any other source. hostPath makes
        # the namespace fall short of the baseline Pod Security Standard (see pod_security_level), and the
        # file must be readable by uid/gid 65532 on the node.
        local = source.path
        if len(files) > 1:
            host = {"path": posixpath.dirname(local), "type": "Directory"}
            mount_path = HOST_MODEL_DIR
        else:
            host = {"path": local, "type": "File"}
            mount_path = posixpath.join(HOST_MODEL_DIR, source.file_name)
        download_volumes.append({"name": "host-model", "hostPath": host})
        download_mounts.append({"name": "host-model", "mountPath": mount_path, "readOnly": True})

    secret = model.source_secret_ref.name if model.source_secret_ref else None
    script = download_script(files, refresh_policy=model.refresh_policy or DEFAULT_REFRESH_POLICY)
    return _Staging(
        model_path(model),
        volumes=[volume],
        mounts=[{**cache_mount, "readOnly": True}],
        cache_mounts=[cache_mount],
        directories=sorted({posixpath.dirname(f.path) for f in files}),
        downloaders=[_init_container(name, image, script, download_mounts, secret)],
        download_volumes=download_volumes,
    )


def _service_staging(service: ResolvedService, cache_mode: CacheMode, image: str, name: str) -> _Staging:
    resources = service.spec.resources
    return _staging(
        service.model.spec,
        cache_kind(service, cache_mode),
        cache_claim_name(service, cache_mode),
        size_limit=resources.ephemeral_storage if resources is not None else None,
        image=image,
        name=name,
    )


def _with_draft(main: _Staging, draft: _Staging) -> tuple[_Staging, str]:
    """The main model's staging with a draft model's merged in, and where the server finds the draft.

    As the operator's mergeStorageConfigs: an identical volume or mount is shared (one cache PVC holds both
    models), a volume of the same name but other content is renamed draft-<name>, and a mount whose path the
    main model's takes moves under /draft (two pvc:// sources on different claims).
    """
    merged, relocate = _merged(main, draft, DRAFT_PREFIX, DRAFT_MOUNT_DIR)
    return merged, relocate(draft.model_path)


def _merged(main: _Staging, other: _Staging, prefix: str, mount_dir: str) -> tuple[_Staging, Callable[[str], str]]:
    """``main`` with ``other``'s staging merged in (see _with_draft), and where a file of ``other``'s is found
    in the pod: under ``mount_dir`` when its mount had to move."""
    known = {v["name"]: v for v in [*main.volumes, *main.download_volumes]}
    renamed = {
        v["name"]: prefix + v["name"]
        for v in [*other.volumes, *other.download_volumes]
        if v["name"] in known and known[v["name"]] != v
    }

    def rename(item: Manifest) -> Manifest:
        return {**item, "name": renamed.get(item["name"], item["name"])}

    def union(first: list[Manifest], second: Iterable[Manifest]) -> list[Manifest]:
        return first + [item for item in second if item not in first]

    taken = {m["mountPath"]: m for m in main.mounts}
    moves: dict[str, str] = {}
    mounts = []
    for mount in map(rename, other.mounts):
        if mount["mountPath"] in taken and taken[mount["mountPath"]] != mount:
            moved = mount_dir + mount["mountPath"]
            moves[mount["mountPath"]] = moved
            mount = {**mount, "mountPath": moved}
        mounts.append(mount)

    def relocate(path: str) -> str:
        for old, new in moves.items():
            if path.startswith(old + "/"):
                return new + path[len(old) :]
        return path

    downloaders = [{**d, "volumeMounts": [rename(m) for m in d["volumeMounts"]]} for d in other.downloaders]
    merged = _Staging(
        main.model_path,
        volumes=union(main.volumes, map(rename, other.volumes)),
        mounts=union(main.mounts, mounts),
        cache_mounts=union(main.cache_mounts, map(rename, other.cache_mounts)),
        directories=sorted({*main.directories, *other.directories}),
        downloaders=main.downloaders + downloaders,
        download_volumes=union(main.download_volumes, map(rename, other.download_volumes)),
    )
    return merged, relocate


def _storage(staging: _Staging, image: str, *, skip_init: bool = False) -> ModelStorage:
    """A staging as the pod's parts: the cache-prep container first, then each downloader."""
    if skip_init:
        # The user staged the files (a prefetch Job, a volume of theirs): the server reads the same paths.
        return ModelStorage(staging.model_path, volumes=staging.volumes, mounts=staging.mounts)
    init = [_init_container("model-cache-prep", image, prepare_script(staging.directories), staging.cache_mounts)]
    return ModelStorage(
        staging.model_path,
        volumes=staging.volumes + staging.download_volumes,
        mounts=staging.mounts,
        init_containers=(init if staging.directories else []) + staging.downloaders,
    )


def model_storage(
    service: ResolvedService, *, cache_mode: CacheMode = "shared", downloader_image: str = DOWNLOADER_IMAGE
) -> ModelStorage:
    """The volumes, mounts and init containers that put a service's model (and its mmproj, and its draft model)
    where the server reads them.

    skipModelInit leaves out every init container, as the operator; unlike the operator, which then passes an
    empty --model, the server still reads the model (and mmproj and draft) at their cache paths, so a cache
    filled ahead (a prefetch Job, another service) or a volume of the user's serves as it is.
    """
    model = service.model.spec
    staging = _service_staging(service, cache_mode, downloader_image, "model-downloader")
    draft_path = None
    speculative = service.spec.speculative_decoding
    if service.draft is not None:
        draft = _service_staging(
            dataclasses.replace(service, model=service.draft), cache_mode, downloader_image, "draft-model-downloader"
        )
        staging, draft_path = _with_draft(staging, draft)
    elif speculative is not None and speculative.draft_model:
        # A file of the served Model's files (checks.service_problems makes sure it is one).
        draft_path = companion_path(model, speculative.draft_model)
    router_paths: dict[str, str] = {}
    router_mmproj_paths: dict[str, str] = {}
    if is_router(service.spec):
        router_paths[service.model.key] = staging.model_path
        own_mmproj = mmproj_path(model)
        if own_mmproj:
            router_mmproj_paths[service.model.key] = own_mmproj
    for index, routed in enumerate(service.router_models):
        # Each routed model is staged as a draft model is: its own downloader, the same cache volume.
        name = f"{ROUTER_PREFIX}model-{index}-downloader"
        other = _service_staging(dataclasses.replace(service, model=routed), cache_mode, downloader_image, name)
        staging, relocate = _merged(staging, other, f"{ROUTER_PREFIX}{index}-", f"/{ROUTER_PREFIX}{index}")
        router_paths[routed.key] = relocate(other.model_path)
        routed_mmproj = mmproj_path(routed.spec)
        if routed_mmproj:
            router_mmproj_paths[routed.key] = relocate(routed_mmproj)
    storage = _storage(staging, downloader_image, skip_init=bool(service.spec.skip_model_init))
    storage.draft_path = draft_path
    storage.mmproj_path = mmproj_path(model)
    storage.router_paths = router_paths
    storage.router_mmproj_paths = router_mmproj_paths
    return storage


def model_staging_pod(model: ModelSpec, claim: str, *, downloader_image: str = DOWNLOADER_IMAGE) -> ModelStorage:
    """The init containers and volumes that fill the cache PVC ``claim`` with a model, as a service's pod
    would (prefetch): the same scripts, locks and checks, so a pod that starts later finds the files cached."""
    return _storage(_staging(model, "shared", claim, image=downloader_image), downloader_image)
