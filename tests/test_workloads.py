"""The llama.cpp workload builders: cache layout, download scripts (run for real), Deployment, Service, HPA."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from llmkube_components import checks, workloads
from llmkube_components.api import InferenceServiceSpec, ModelSpec, StackConfig
from llmkube_components.api.stack import CacheSettings
from llmkube_components.errors import ConfigError, Problem
from llmkube_components.hardware import HardwareProfile, builtin_profiles
from llmkube_components.resolve import ResolvedModel, ResolvedService, ResolvedStack, cache_kind
from llmkube_components.sources import parse_source
from llmkube_components.workloads import Download

# The newest Kubernetes whose schemas kubernetes-validate ships; strict: unknown fields fail too.
K8S_VERSION = kubernetes_validate.latest_version()
GiB = 2**30
HTTP_SOURCE = "https://example.com/models/m.gguf"
HF_SOURCE = "hf://unsloth/Qwen3-GGUF/Qwen3-Q4_K_M.gguf"
NVIDIA_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _profile(vendor: str | None = None, resource_name: str | None = None) -> HardwareProfile:
    if vendor is None:
        return builtin_profiles()["cpu-only"]
    gpu: dict[str, Any] = {"vendor": vendor, "product": "GPU", "count": 2, "memory": "16Gi", "memoryBandwidth": "448G"}
    if resource_name:
        gpu["resourceName"] = resource_name
    return HardwareProfile.model_validate(
        {
            "name": f"{vendor}-box",
            "gpu": gpu,
            "hostMemory": "64Gi",
            "hostMemoryBandwidth": "89.6G",
            "cpuCores": 16,
        }
    )


def make_service(
    spec: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    profile: HardwareProfile | None = None,
    name: str = "qwen",
) -> ResolvedService:
    """A ResolvedService as resolve would make it: the effective spec carries the image (and GPUs if given)."""
    profile = profile or _profile()
    service_spec = InferenceServiceSpec.model_validate({"modelRef": "m", "image": profile.image, **(spec or {})})
    model_spec = ModelSpec.model_validate({"source": HTTP_SOURCE, **(model or {})})
    return ResolvedService(name, name, "llmkube", service_spec, ResolvedModel("m", "m", model_spec), profile)


def gpu_service(**spec: Any) -> ResolvedService:
    profile = builtin_profiles()["dual-rtx5060ti"]
    return make_service(
        {"resources": {"gpu": 2}, "tolerations": [t.wire() for t in profile.tolerations], **spec},
        {"hardware": {"gpu": {"vendor": "nvidia", "count": 2}}},
        profile,
    )


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def pod_of(service: ResolvedService, **options: Any) -> dict[str, Any]:
    return workloads.deployment(service, **options)["spec"]["template"]["spec"]


def server(service: ResolvedService) -> dict[str, Any]:
    (container,) = pod_of(service)["containers"]
    return container


def config_error(problems: list[Problem]) -> str:
    """The checks' problems as preview prints them."""
    return str(ConfigError(problems))


def cache_key(source: str) -> str:
    return parse_source(source).cache_key


def per_service(**fields: Any) -> CacheSettings:
    return CacheSettings.model_validate({"mode": "perService", **fields})


# ---------------------------------------------------------------------------------------------------------
# Cache layout: key, file name, URL
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key"),
    [
        # Literal digests (sha256 of the source string, first 16 hex), as the operator's cachekey.Compute.
        (HTTP_SOURCE, "9b68393bb9acd948"),
        (HF_SOURCE, "5b7a21444e99912f"),
        ("file:///data/models/m.gguf", "cc4e0ef8e9f446c6"),
        ("/data/models/m.gguf", "35a982cea5e10a0f"),
    ],
)
def test_cache_key_is_the_sha256_prefix_of_the_source(source: str, key: str) -> None:
    assert cache_key(source) == key


@pytest.mark.parametrize(
    ("source", "path"),
    [
        (HTTP_SOURCE, "/models/9b68393bb9acd948/m.gguf"),
        (HF_SOURCE, "/models/5b7a21444e99912f/Qwen3-Q4_K_M.gguf"),
        ("file:///data/models/m.gguf", "/models/cc4e0ef8e9f446c6/m.gguf"),
        ("/data/models/m.gguf", "/models/35a982cea5e10a0f/m.gguf"),
        ("pvc://weights/qwen/q4.gguf", "/model-source/qwen/q4.gguf"),
        ("https://example.com/get/Model%20Q4.gguf?download=true", None),
        ("https://example.com/models/", None),
    ],
)
def test_model_path(source: str, path: str | None) -> None:
    model = ModelSpec.model_validate({"source": source})
    if path is None:  # the key is the source's; the name comes from the URL path, or the operator's fallback
        name = "Model Q4.gguf" if "Q4" in source else "model.gguf"
        path = f"/models/{cache_key(source)}/{name}"
    assert workloads.model_path(model) == path


@pytest.mark.parametrize(
    ("source", "url"),
    [
        (HTTP_SOURCE, HTTP_SOURCE),
        ("http://10.0.0.5:8000/m.gguf", "http://10.0.0.5:8000/m.gguf"),
        (HF_SOURCE, "https://huggingface.co/unsloth/Qwen3-GGUF/resolve/main/Qwen3-Q4_K_M.gguf"),
        ("hf://org/repo@v2/sub/f.gguf", "https://huggingface.co/org/repo/resolve/v2/sub/f.gguf"),
    ],
)
def test_source_url(source: str, url: str) -> None:
    assert parse_source(source).url == url
    assert workloads.downloads(ModelSpec.model_validate({"source": source}))[0].url == url


@pytest.mark.parametrize("source", ["pvc://claim/m.gguf", "file:///m.gguf", "/m.gguf"])
def test_only_http_and_hf_sources_are_downloaded(source: str) -> None:
    assert parse_source(source).url is None


def test_hf_source_without_a_file_is_a_config_error() -> None:
    service = make_service(model={"source": "hf://org/repo"})
    message = config_error(checks.model_problems(service.model))
    assert message.startswith("llmkube:models.m.source: 'hf://org/repo' names no file")


def test_multi_file_model_downloads_beside_the_main_file() -> None:
    source = "https://example.com/q/Qwen-00001-of-00002.gguf?download=true"
    model = ModelSpec.model_validate({"source": source, "files": ["Qwen-00002-of-00002.gguf", "mmproj/p.gguf"]})
    key = cache_key(source)
    assert workloads.downloads(model) == [
        Download(source, f"/models/{key}/Qwen-00001-of-00002.gguf"),
        Download("https://example.com/q/Qwen-00002-of-00002.gguf", f"/models/{key}/Qwen-00002-of-00002.gguf"),
        Download("https://example.com/q/mmproj/p.gguf", f"/models/{key}/mmproj/p.gguf"),
    ]


DIGEST, OTHER_DIGEST = "ab" * 32, "cd" * 32


@pytest.mark.parametrize(
    ("pins", "key"),
    [
        ({}, "9b68393bb9acd948"),  # nothing pinned: the operator's key, so both deliveries share the download
        ({"sha256": DIGEST}, "9b7edbc5248026a0"),
        ({"sha256": DIGEST.upper()}, "9b7edbc5248026a0"),  # hex digits in either case are one digest
        ({"sha256": OTHER_DIGEST}, "9a3e5f7315106e3b"),  # the file changed upstream: not the old one's directory
        ({"sha256": DIGEST, "files": ["p2.gguf"], "fileSha256": {"p2.gguf": OTHER_DIGEST}}, "5c8e9085571429d0"),
        ({"sha256": DIGEST, "files": ["p2.gguf"]}, "9b7edbc5248026a0"),
    ],
)
def test_a_pinned_model_has_a_cache_directory_of_its_own(pins: dict[str, Any], key: str) -> None:
    # A cached file is never hashed again, so a directory may hold only files checked against the model's own
    # digests: an unpinned model of the same URL must not fill it, nor its files pass for checked ones.
    # (Literal keys: changing how they are made moves every cached model.)
    assert workloads.model_dir(ModelSpec.model_validate({"source": HTTP_SOURCE, **pins})) == f"/models/{key}"


def test_the_operator_keys_a_pinned_model_by_its_source_alone() -> None:
    # Delivery operator: where its controller puts the file (the Model component's cachePath says so).
    pinned = ModelSpec.model_validate({"source": HTTP_SOURCE, "sha256": DIGEST})
    assert workloads.model_path(pinned, "operator") == f"/models/{cache_key(HTTP_SOURCE)}/m.gguf"


def test_each_file_is_checked_against_its_own_digest() -> None:
    model = ModelSpec.model_validate(
        {
            "source": "https://example.com/q/Qwen-00001-of-00002.gguf",
            "sha256": DIGEST.upper(),
            "files": ["Qwen-00002-of-00002.gguf", "mmproj/p.gguf"],
            "fileSha256": {"Qwen-00002-of-00002.gguf": OTHER_DIGEST},
        }
    )
    assert [d.sha256 for d in workloads.downloads(model)] == [DIGEST, OTHER_DIGEST, None]


@pytest.mark.parametrize(
    ("model_bytes", "mbps", "minutes"),
    [
        (0, 100, 10),  # nothing to download (a pvc:// source, an unknown size): Pulumi's own 10 minutes
        (21 * 10**9, 200, 31),  # 21 GB at 25 MB/s: 14 minutes, 21 with headroom, plus the 10
        (21 * 10**9, 100, 52),
        (21 * 10**9, 10_000, 11),
        (1, 1, 11),  # rounded up to whole minutes
    ],
)
def test_the_rollout_wait_covers_the_download(model_bytes: int, mbps: int, minutes: int) -> None:
    assert workloads.rollout_timeout_minutes(model_bytes, mbps) == minutes


@pytest.mark.parametrize("bad", ["../x.gguf", "/etc/passwd", "a/../../x", ""])
def test_further_files_must_stay_in_the_model_directory(bad: str) -> None:
    service = make_service(model={"files": ["ok.gguf", bad]})
    message = config_error(checks.model_problems(service.model))
    assert message.startswith("llmkube:models.m.files[1]: ")


# ---------------------------------------------------------------------------------------------------------
# Where the cache lives
# ---------------------------------------------------------------------------------------------------------


def _claim(name: str) -> dict[str, Any]:
    return {"persistentVolumeClaim": {"claimName": name}}


@pytest.mark.parametrize(
    ("model_cache", "cache_mode", "kind", "volume", "pvcs"),
    [
        (None, "shared", "shared", _claim("llmkube-model-cache"), []),
        ({"persistence": "Cached"}, "shared", "shared", _claim("llmkube-model-cache"), []),
        (None, "perService", "perService", _claim("qwen-model-cache"), ["qwen-model-cache"]),
        ({"claimName": "mine"}, "perService", "claim", _claim("mine"), []),  # the user's claim wins
        ({"persistence": "Ephemeral"}, "shared", "ephemeral", {"emptyDir": {}}, []),
    ],
)  # fmt: skip
def test_cache_volume(
    model_cache: dict[str, Any] | None, cache_mode: str, kind: str, volume: dict[str, Any], pvcs: list[str]
) -> None:
    service = make_service({"modelCache": model_cache} if model_cache else {})
    manifests = workloads.service_workloads(service, cache=CacheSettings.model_validate({"mode": cache_mode}))
    assert cache_kind(service, cache_mode) == kind  # type: ignore[arg-type]
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "PersistentVolumeClaim"] == pvcs
    pod = of_kind(manifests, "Deployment")["spec"]["template"]["spec"]
    (cache,) = pod["volumes"]
    assert {k: v for k, v in cache.items() if k != "name"} == volume
    # The server reads the cache read-only; the init containers write it.
    assert pod["containers"][0]["volumeMounts"] == [{"name": cache["name"], "mountPath": "/models", "readOnly": True}]
    assert [c["name"] for c in pod["initContainers"]] == ["model-cache-prep", "model-downloader"]
    assert all(not m.get("readOnly") for c in pod["initContainers"] for m in c["volumeMounts"])


def test_ephemeral_cache_is_bounded_by_ephemeral_storage() -> None:
    service = make_service({"modelCache": {"persistence": "Ephemeral"}, "resources": {"ephemeralStorage": "30Gi"}})
    assert pod_of(service)["volumes"] == [{"name": "model-storage", "emptyDir": {"sizeLimit": "30Gi"}}]


def test_pvc_source_is_mounted_read_only_without_download() -> None:
    service = make_service(model={"source": "pvc://weights/qwen/q4.gguf"})
    manifests = workloads.service_workloads(service, cache=per_service())
    assert [m["kind"] for m in manifests] == ["Deployment", "Service"]  # no cache PVC: nothing is cached
    pod = pod_of(service)
    assert "initContainers" not in pod
    assert pod["volumes"] == [
        {"name": "model-source", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}}
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "model-source", "mountPath": "/model-source", "readOnly": True}
    ]
    assert pod["containers"][0]["args"][:2] == ["--model", "/model-source/qwen/q4.gguf"]


@pytest.mark.parametrize(
    ("source", "files", "host_path", "mount_path", "url"),
    [
        ("file:///data/m.gguf", None, {"path": "/data/m.gguf", "type": "File"}, "/host-model/m.gguf",
         "file:///host-model/m.gguf"),
        ("/data/m.gguf", ["m2.gguf"], {"path": "/data", "type": "Directory"}, "/host-model",
         "file:///host-model/m.gguf"),
    ],
)  # fmt: skip
def test_local_source_is_copied_from_a_host_path(
    source: str, files: list[str] | None, host_path: dict[str, str], mount_path: str, url: str
) -> None:
    service = make_service(model={"source": source, **({"files": files} if files else {})})
    pod = pod_of(service)
    assert {"name": "host-model", "hostPath": host_path} in pod["volumes"]
    downloader = pod["initContainers"][1]
    assert {"name": "host-model", "mountPath": mount_path, "readOnly": True} in downloader["volumeMounts"]
    key = cache_key(source)
    assert f"fetch {url} /models/{key}/m.gguf\n" in downloader["command"][2]
    # hostPath is beyond even the baseline standard: the namespace can only enforce privileged.
    assert workloads.pod_security_level(pod) == "privileged"


def test_shared_cache_is_marked_and_per_service_cache_is_not() -> None:
    shared = workloads.shared_cache_pvc("llmkube")
    own = workloads.service_workloads(make_service(), cache=per_service())
    assert workloads.is_shared_cache(shared)
    assert not any(workloads.is_shared_cache(m) for m in own)
    assert shared["metadata"]["name"] == "llmkube-model-cache"
    assert shared["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}}


def test_cache_pvc_size_class_and_access_mode_are_arguments() -> None:
    cache = CacheSettings.model_validate({"size": "500Gi", "storageClass": "nfs", "accessMode": "ReadWriteMany"})
    shared = workloads.shared_cache_pvc("ns", cache)
    assert shared["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "500Gi"}},
        "storageClassName": "nfs",
    }
    (pvc, *_) = workloads.service_workloads(make_service(), cache=per_service(size="40Gi", storageClass="ssd"))
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "40Gi"}},
        "storageClassName": "ssd",
    }


def test_cache_must_hold_the_models() -> None:
    # 21 GiB of model needs 21 x 1.06 = 22.3 GiB: the root reserve of ext4 is not ours to use.
    assert checks.minimum_cache_bytes([21 * GiB]) == 21 * GiB * 106 // 100 + 1  # rounded up
    assert checks.minimum_cache_bytes([100, 50]) == 159
    sizes = {"m": 21 * GiB}
    assert checks.cache_size_problems("23Gi", ["m"], sizes, "llmkube-model-cache") == []
    message = config_error(checks.cache_size_problems("22Gi", ["m"], sizes, "llmkube-model-cache"))
    assert message.startswith("llmkube:modelCache.size: 22Gi is too small for the 21.0 GiB of model files")
    assert "at least 22.3 GiB" in message
    # Per service: each volume holds its own service's model.
    stack = _stack(make_service(), cache=per_service(size="10Gi"))
    message = config_error(checks.planned_problems(stack, sizes))
    assert message.startswith(
        "llmkube:modelCache.size: 10Gi is too small for the 21.0 GiB of model files the cache "
        "qwen-model-cache must hold"
    )


def _stack(*services: ResolvedService, cache: CacheSettings | None = None) -> ResolvedStack:
    config = StackConfig.model_validate({}).model_copy(update={"model_cache": cache or CacheSettings()})
    return ResolvedStack(config, _profile(), {s.model.name: s.model for s in services}, {s.name: s for s in services})


def test_shared_cache_manifests_only_when_a_service_uses_it() -> None:
    ephemeral = make_service({"modelCache": {"persistence": "Ephemeral"}}, name="a")
    claimed = make_service({"modelCache": {"claimName": "mine"}}, name="b")
    on_pvc = make_service(model={"source": "pvc://w/m.gguf"}, name="c")
    assert workloads.shared_cache_manifests(_stack(ephemeral, claimed, on_pvc)) == []
    assert workloads.shared_cache_manifests(_stack(ephemeral, make_service(name="d"), cache=per_service())) == []
    (pvc,) = workloads.shared_cache_manifests(_stack(ephemeral, make_service(name="d")))
    assert workloads.is_shared_cache(pvc)
    small = _stack(make_service(name="d"), cache=CacheSettings.model_validate({"size": "1Gi"}))
    message = config_error(checks.planned_problems(small, {"m": 2 * GiB}))
    assert "1Gi is too small for the 2.0 GiB" in message


# ---------------------------------------------------------------------------------------------------------
# The scripts, run for real with /bin/sh, curl and sha256sum against a local HTTP server
# ---------------------------------------------------------------------------------------------------------

needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sh", "curl", "sha256sum", "flock")),
    reason="needs sh, curl, sha256sum and flock",
)
PAYLOAD = b"GGUF" + bytes(range(256)) * 64
HALF = len(PAYLOAD) // 2
STALLED_AT = 512  # little enough for curl's speed window to fall under the limit within its stall time
# Settings for scripts under test: no pause between attempts, a stall noticed within a second or two.
FAST: dict[str, Any] = {"retry_delay": 0, "stall_seconds": 1}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RangeHandler(_QuietHandler):
    """A server like a CDN's: byte ranges (``bytes=N-``) answered 206, every request's Range header recorded.
    With ``server.stall`` set, the first request gets STALLED_AT bytes and then nothing, on an open connection."""

    server: _Server

    def do_GET(self) -> None:
        self.server.ranges.append(self.headers.get("Range"))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        asked = self.headers.get("Range", "")
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked.startswith("bytes=") else 0
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.server.stall and len(self.server.ranges) == 1:
            self.wfile.write(data[start:STALLED_AT])
            self.wfile.flush()
            self.server.released.wait(30)  # until the test ends: only curl's stall timeout ends this request
            return
        self.wfile.write(data[start:])


class _Server(http.server.ThreadingHTTPServer):
    ranges: list[str | None]
    stall = False
    released: threading.Event


@contextlib.contextmanager
def serving(root: Path, handler: type[http.server.BaseHTTPRequestHandler], **attributes: Any) -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    httpd.ranges, httpd.released = [], threading.Event()
    for key, value in attributes.items():
        setattr(httpd, key, value)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.released.set()
        httpd.shutdown()
        httpd.server_close()


def url_of(httpd: http.server.HTTPServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    root.mkdir()
    (root / "m.gguf").write_bytes(PAYLOAD)
    (root / "part-2.gguf").write_bytes(PAYLOAD[::-1])
    return root


@pytest.fixture
def http_root(upstream: Path) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP on a free port, without byte ranges: (base URL, directory)."""
    with serving(upstream, _QuietHandler) as httpd:
        yield url_of(httpd), upstream


@pytest.fixture
def ranged(upstream: Path) -> Iterator[_Server]:
    """The same directory served with byte ranges (``url_of`` gives its URL)."""
    with serving(upstream, _RangeHandler) as httpd:
        yield httpd


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


def environment(path: str | None = None, pod: str = "pod-a", **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{path}:{os.environ['PATH']}" if path else os.environ["PATH"],
        "POD_NAME": pod,
        **extra,
    }


def run(script: str, path: str | None = None, pod: str = "pod-a", **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        env=environment(path, pod, **extra),
        timeout=60,
        check=False,
    )


Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start a script as a pod runs it, in a session of its own: killed whole (as a pod is) when the test ends."""
    started: list[subprocess.Popen[str]] = []

    def start(script: str, path: str | None = None, pod: str = "pod-a", **extra: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            ["/bin/sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(path, pod, **extra),
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        kill(process)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def kill(process: subprocess.Popen[str]) -> None:
    """Kill a started script with everything it started (curl, the progress loop), as a node kills a pod."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def read_until(process: subprocess.Popen[str], text: str, timeout: float = 30) -> list[str]:
    """The lines ``process`` prints up to the first that contains ``text``; fails after ``timeout`` seconds."""
    assert process.stdout is not None
    timer = threading.Timer(timeout, kill, [process])
    timer.start()
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if text in line:
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"{text!r} never came: {''.join(lines)}")


def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a condition another process brings about (it may take a moment); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def fake_curl(tmp_path: Path, body: str) -> str:
    """A directory holding a ``curl`` that runs ``body`` with $out and $headers set from its arguments."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "curl").write_text(
        "#!/bin/sh\n"
        'echo "$POD_NAME" >> "${CALLS:-/dev/null}"\n'
        "while [ $# -gt 0 ]; do\n"
        "  case $1 in --output) out=$2; shift ;; --dump-header) headers=$2; shift ;; esac\n"
        "  shift\n"
        "done\n" + body
    )
    (fake / "curl").chmod(0o755)
    return str(fake)


SHA = hashlib.sha256(PAYLOAD).hexdigest()
SHA_2 = hashlib.sha256(PAYLOAD[::-1]).hexdigest()


@needs_tools
def test_download_fetches_to_a_partial_name_then_renames(http_root: tuple[str, Path], cache: Path) -> None:
    url, _ = http_root
    dest = cache / "m.gguf"
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(dest), SHA)]))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == PAYLOAD
    # The lock stays: removing it would let a waiting pod and a newcomer each hold a lock of its own.
    assert sorted(p.name for p in cache.iterdir()) == ["m.gguf", "m.gguf.lock"]
    assert "sha256 of" in result.stdout and "verified" in result.stdout


@needs_tools
def test_temporary_files_of_dead_downloads_are_swept_and_live_ones_kept(
    http_root: tuple[str, Path], cache: Path
) -> None:
    # Earlier pods downloaded into <file>.tmp.<pod>; an evicted one left its file behind, and enough of them
    # filled the volume (curl: (23)). A pod still downloading keeps writing its own: that one must stay.
    url, _ = http_root
    dead, live = cache / "m.gguf.tmp.pod-evicted", cache / "m.gguf.tmp.pod-live"
    dead.write_bytes(b"half of it")
    live.write_bytes(b"a download under way")
    an_hour_ago = time.time() - 3600
    os.utime(dead, (an_hour_ago, an_hour_ago))
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(cache / "m.gguf"))]))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["m.gguf", "m.gguf.lock", "m.gguf.tmp.pod-live"]
    assert f"llmkube: removed {dead}, left by a download that died" in result.stdout


@needs_tools
def test_an_interrupted_download_resumes_where_it_stopped(ranged: _Server, cache: Path) -> None:
    (cache / "m.gguf.part").write_bytes(PAYLOAD[:HALF])  # what an evicted pod had received
    script = workloads.download_script([Download(f"{url_of(ranged)}/m.gguf", str(cache / "m.gguf"), SHA)])
    result = run(script)
    assert result.returncode == 0, result.stderr
    assert ranged.ranges == [f"bytes={HALF}-"]  # only the rest was asked for
    assert (cache / "m.gguf").read_bytes() == PAYLOAD
    assert f"resuming {url_of(ranged)}/m.gguf at byte {HALF}" in result.stdout


@needs_tools
def test_a_server_that_cannot_resume_is_read_afresh(http_root: tuple[str, Path], cache: Path) -> None:
    url, _ = http_root
    (cache / "m.gguf.part").write_bytes(b"x" * HALF)  # not the file's first half: only a fresh read is right
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(cache / "m.gguf"))], **FAST))
    assert result.returncode == 0, result.stderr
    assert (cache / "m.gguf").read_bytes() == PAYLOAD


@needs_tools
def test_a_stalled_download_is_cut_and_resumed(upstream: Path, cache: Path) -> None:
    # The first request gets a little of the file, then nothing on an open connection: without a stall timeout
    # curl would wait for ever, and so would the pod.
    with serving(upstream, _RangeHandler, stall=True) as httpd:
        script = workloads.download_script([Download(f"{url_of(httpd)}/m.gguf", str(cache / "m.gguf"), SHA)], **FAST)
        result = run(script)
    assert result.returncode == 0, result.stderr
    assert (cache / "m.gguf").read_bytes() == PAYLOAD
    assert f"{url_of(httpd)}/m.gguf was cut short (curl exit 28)" in result.stdout
    assert httpd.ranges == [None, f"bytes={STALLED_AT}-"]


@needs_tools
def test_an_interrupted_download_is_never_published(tmp_path: Path, cache: Path) -> None:
    # A curl that writes half the file and dies each time, as on a connection that keeps breaking.
    fake = fake_curl(tmp_path, 'printf half > "$out"\nexit 56\n')
    dest = cache / "m.gguf"
    result = run(workloads.download_script([Download("http://example.invalid/m.gguf", str(dest))], **FAST), fake)
    assert result.returncode == 1
    assert "llmkube: ERROR: could not download http://example.invalid/m.gguf: 5 attempts in a row" in result.stderr
    assert not dest.exists()
    assert (cache / "m.gguf.part").read_text() == "half"  # kept, for the next pod to resume


@needs_tools
def test_one_pod_downloads_while_the_others_wait(tmp_path: Path, cache: Path, start: Start) -> None:
    # Two pods (replicas, a scale-up, two services on one model) want the same file at once: one downloads
    # it, the other waits and finds it cached, instead of a second full download into the same volume.
    calls, release = tmp_path / "calls", tmp_path / "release"
    fake = fake_curl(
        tmp_path,
        'printf first-half > "$out"\n'
        f"while [ ! -e {release} ]; do sleep 0.02; done\n"
        'printf -- -second-half >> "$out"\n',
    )
    dest = cache / "m.gguf"
    script = workloads.download_script([Download("http://example.invalid/m.gguf", str(dest))])
    first = start(script, fake, "pod-a", CALLS=str(calls))
    until(lambda: calls.exists(), "the first pod's curl")
    second = start(script, fake, "pod-b", CALLS=str(calls))
    read_until(second, "waiting for another pod's download of")
    release.touch()
    assert [first.wait(30), second.wait(30)] == [0, 0]
    assert calls.read_text() == "pod-a\n"
    assert dest.read_text() == "first-half-second-half"
    assert "another pod downloaded it" in second.communicate()[0]


@needs_tools
def test_a_pod_that_dies_mid_download_frees_the_file_for_the_next_one(
    tmp_path: Path, cache: Path, ranged: _Server, upstream: Path, start: Start
) -> None:
    fake = fake_curl(tmp_path, f'head -c {HALF} {upstream / "m.gguf"} > "$out"\nsleep 30\n')
    dest = cache / "m.gguf"
    script = workloads.download_script([Download(f"{url_of(ranged)}/m.gguf", str(dest), SHA)])
    evicted = start(script, fake, "pod-a")
    until(lambda: (cache / "m.gguf.part").exists() and (cache / "m.gguf.part").stat().st_size == HALF, "half")
    kill(evicted)
    evicted.wait(30)
    result = run(script, pod="pod-b")
    assert result.returncode == 0, result.stderr
    assert ranged.ranges == [f"bytes={HALF}-"]
    assert dest.read_bytes() == PAYLOAD


@needs_tools
def test_a_volume_without_locks_still_downloads_safely(
    http_root: tuple[str, Path], tmp_path: Path, cache: Path
) -> None:
    # An NFS mount with nolock refuses flock: each pod then writes a file of its own, as before locks.
    url, _ = http_root
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "flock").write_text("#!/bin/sh\necho 'flock: No locks available' >&2\nexit 1\n")
    (fake / "flock").chmod(0o755)
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(cache / "m.gguf"), SHA)]), str(fake))
    assert result.returncode == 0, result.stderr
    assert f"downloading into {cache}/m.gguf.tmp.pod-a, without resume" in result.stdout
    assert (cache / "m.gguf").read_bytes() == PAYLOAD


@needs_tools
def test_progress_is_logged_while_curl_runs(tmp_path: Path, cache: Path, start: Start) -> None:
    release = tmp_path / "release"
    fake = fake_curl(
        tmp_path,
        "printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 4194304\\r\\n\\r\\n' > \"$headers\"\n"
        'head -c 2097152 /dev/zero > "$out"\n'
        f"while [ ! -e {release} ]; do sleep 0.02; done\n"
        'head -c 2097152 /dev/zero >> "$out"\n',
    )
    script = workloads.download_script(
        [Download("http://example.invalid/m.gguf", str(cache / "m.gguf"))], progress_seconds=1
    )
    process = start(script, fake)
    read_until(process, "llmkube: m.gguf: 50% of 4 MiB")
    release.touch()
    rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest
    assert rest.rstrip().endswith(f"llmkube: saved {cache}/m.gguf")


@needs_tools
def test_the_progress_loop_ends_with_curl(http_root: tuple[str, Path], cache: Path, start: Start) -> None:
    # The loop sleeps 30 s between lines: killed with curl, its sleep must go too, or it would outlive the
    # download holding the log pipe (and, in a pod, the lock) for up to 30 s.
    url, _ = http_root
    process = start(workloads.download_script([Download(f"{url}/m.gguf", str(cache / "m.gguf"))]))
    output = process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    until(lambda: not _alive_in_session(process.pid), "the progress loop's sleep to end", timeout=5)


def _alive_in_session(session: int) -> list[int]:
    """The processes of a session that still run (zombies do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@needs_tools
def test_download_skips_a_cached_file(http_root: tuple[str, Path], cache: Path) -> None:
    url, root = http_root
    dest = cache / "m.gguf"
    dest.write_bytes(b"cached")
    (root / "m.gguf").unlink()  # the server has nothing: a cached file must not be fetched again
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(dest), SHA)]))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == b"cached"
    assert f"llmkube: {dest} is cached; skipping download" in result.stdout


@needs_tools
def test_sha256_mismatch_fails_loudly_and_keeps_nothing(http_root: tuple[str, Path], cache: Path) -> None:
    url, _ = http_root
    result = run(workloads.download_script([Download(f"{url}/m.gguf", str(cache / "m.gguf"), "0" * 64)]))
    assert result.returncode == 1
    assert f"llmkube: ERROR: sha256 mismatch for {url}/m.gguf: expected {'0' * 64}, got {SHA}" in result.stderr
    assert [p.name for p in cache.iterdir()] == ["m.gguf.lock"]  # nor a part to resume: it would fail again


@needs_tools
def test_every_file_of_a_split_model_is_verified(http_root: tuple[str, Path], cache: Path) -> None:
    # Only the first file had a digest: a tampered second part went unnoticed.
    url, _ = http_root
    spec = {"source": f"{url}/m.gguf", "sha256": SHA, "files": ["part-2.gguf"]}
    tampered = ModelSpec.model_validate({**spec, "fileSha256": {"part-2.gguf": "0" * 64}})
    files = [f._replace(path=f.path.replace("/models/", f"{cache}/")) for f in workloads.downloads(tampered)]
    for f in files:
        Path(f.path).parent.mkdir(parents=True, exist_ok=True)
    result = run(workloads.download_script(files))
    assert result.returncode == 1
    assert f"sha256 mismatch for {url}/part-2.gguf: expected {'0' * 64}, got {SHA_2}" in result.stderr
    right = ModelSpec.model_validate({**spec, "fileSha256": {"part-2.gguf": SHA_2.upper()}})
    files = [f._replace(path=f.path.replace("/models/", f"{cache}/")) for f in workloads.downloads(right)]
    for f in files:
        Path(f.path).parent.mkdir(parents=True, exist_ok=True)
    result = run(workloads.download_script(files))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("verified") == 2


@needs_tools
def test_a_missing_file_fails_at_once(http_root: tuple[str, Path], cache: Path) -> None:
    url, _ = http_root
    result = run(workloads.download_script([Download(f"{url}/nope.gguf", str(cache / "m.gguf"))], retry_delay=60))
    assert result.returncode == 1  # not after retries: retry_delay=60 would outlast run()'s timeout
    assert f"could not download {url}/nope.gguf (curl exit 22)" in result.stderr
    assert [p.name for p in cache.iterdir()] == ["m.gguf.lock"]


@needs_tools
@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl for a test certificate")
def test_an_https_source_never_follows_a_redirect_to_http(
    http_root: tuple[str, Path], tmp_path: Path, cache: Path
) -> None:
    # A plain-http hop would let anyone on the path swap the file the https source promised.
    plain, _ = http_root
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Redirect(_QuietHandler):
        def do_GET(self) -> None:
            if self.path == "/to-http/m.gguf":
                self.send_response(302)
                self.send_header("Location", f"{plain}/m.gguf")
                self.end_headers()
            else:
                super().do_GET()

    with serving(tmp_path / "upstream", Redirect) as httpd:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        tls = url_of(httpd, "https")
        trusted = {"CURL_CA_BUNDLE": str(cert)}
        direct = run(workloads.download_script([Download(f"{tls}/m.gguf", str(cache / "ok.gguf"))]), **trusted)
        assert direct.returncode == 0, direct.stderr  # the certificate is trusted: only the redirect is refused
        refused = run(workloads.download_script([Download(f"{tls}/to-http/m.gguf", str(cache / "m.gguf"))]), **trusted)
    assert refused.returncode == 1
    assert f"could not download {tls}/to-http/m.gguf (curl exit 1)" in refused.stderr
    assert not (cache / "m.gguf").exists()


@needs_tools
def test_values_are_quoted_for_the_shell(tmp_path: Path) -> None:
    odd = tmp_path / "it's;$HOME`x`"
    odd.mkdir()
    (odd / "m.gguf").write_bytes(PAYLOAD)
    dest = odd / "a copy of it's $HOME.gguf"
    result = run(workloads.download_script([Download(f"file://{odd}/m.gguf", str(dest))]))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == PAYLOAD


@needs_tools
def test_prepare_creates_directories_and_explains_an_unwritable_volume(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    result = run(workloads.prepare_script([str(cache / "k1"), str(cache / "k1" / "sub")]))
    assert result.returncode == 0, result.stderr
    assert (cache / "k1" / "sub").is_dir()
    assert list((cache / "k1").iterdir()) == [cache / "k1" / "sub"]  # the write check leaves nothing behind
    # A path under a plain file cannot be created, whoever runs the test (root ignores permissions).
    (tmp_path / "file").write_text("")
    result = run(workloads.prepare_script([str(tmp_path / "file" / "k")]))
    assert result.returncode == 1
    assert "llmkube: ERROR: cannot write to" in result.stderr
    assert "fsGroup" in result.stderr


@needs_tools
def test_rendered_init_containers_fill_the_cache(http_root: tuple[str, Path], tmp_path: Path) -> None:
    """The exact scripts of a Deployment, with /models pointed at a temporary directory."""
    url, _ = http_root
    model = {"source": f"{url}/m.gguf", "sha256": SHA.upper(), "files": ["part-2.gguf"]}
    service = make_service(model={**model, "fileSha256": {"part-2.gguf": SHA_2}})
    cache = tmp_path / "models"
    for container in pod_of(service)["initContainers"]:
        result = run(container["command"][2].replace("/models/", f"{cache}/"))
        assert result.returncode == 0, (container["name"], result.stderr)
    directory = Path(workloads.model_dir(service.model.spec).replace("/models", str(cache)))
    assert (directory / "m.gguf").read_bytes() == PAYLOAD
    assert (directory / "part-2.gguf").read_bytes() == PAYLOAD[::-1]
    assert workloads.model_path(service.model.spec) == f"{workloads.model_dir(service.model.spec)}/m.gguf"


def test_init_containers_are_pinned_restricted_and_bounded() -> None:
    for container in pod_of(make_service())["initContainers"]:
        assert container["image"] == "docker.io/curlimages/curl:8.18.0"
        assert container["command"][:2] == ["sh", "-c"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        # A namespace whose LimitRange or ResourceQuota requires them would refuse the pod without.
        assert container["resources"] == {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
    pinned = pod_of(make_service(), downloader_image="registry.local/curl:8.18.0")["initContainers"]
    assert {c["image"] for c in pinned} == {"registry.local/curl:8.18.0"}


# ---------------------------------------------------------------------------------------------------------
# The Deployment
# ---------------------------------------------------------------------------------------------------------


def test_labels_and_selector() -> None:
    service = make_service({"podLabels": {"app": "mine", "inference.llmkube.dev/service": "x", "team": "ml"}})
    deployment = workloads.deployment(service)
    selector = {"app": "qwen", "inference.llmkube.dev/service": "qwen"}
    # The model label changes with modelRef, and a selector cannot change: it stays out.
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    labels = deployment["metadata"]["labels"]
    assert labels["inference.llmkube.dev/model"] == "m"
    assert labels["inference.llmkube.dev/runtime"] == "llamacpp"
    assert labels["app.kubernetes.io/instance"] == "qwen"
    template = deployment["spec"]["template"]["metadata"]["labels"]
    assert template == {**labels, "team": "ml"}  # user labels merge; ours win on app and service
    assert list(template) == sorted(template)
    assert workloads.service_manifest(service)["spec"]["selector"] == selector


def test_container_port_probes_and_args() -> None:
    container = server(make_service({"endpoint": {"port": 9000}}))
    assert container["name"] == "llama-server"
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 30 * 60  # minutes of model loading
    key = cache_key(HTTP_SOURCE)
    assert container["args"][:4] == ["--model", f"/models/{key}/m.gguf", "--port", "9000"]
    assert workloads.server_args_for(make_service({"endpoint": {"port": 9000}})) == container["args"]


@pytest.mark.parametrize(
    ("service", "strategy"),
    [
        (make_service(), {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        (gpu_service(), {"type": "Recreate"}),
    ],
)
def test_strategy_is_recreate_with_gpus(service: ResolvedService, strategy: dict[str, Any]) -> None:
    assert workloads.deployment(service)["spec"]["strategy"] == strategy


@pytest.mark.parametrize(
    ("model_gpu", "profile", "resource"),
    [
        ({"vendor": "nvidia"}, _profile("nvidia"), "nvidia.com/gpu"),
        ({"vendor": "amd"}, _profile("amd"), "amd.com/gpu"),
        ({"vendor": "intel"}, _profile("intel"), "gpu.intel.com/i915"),
        ({"vendor": "nvidia", "resourceName": "nvidia.com/mig-1g.10gb"}, _profile("nvidia"), "nvidia.com/mig-1g.10gb"),
        ({}, _profile("amd"), "amd.com/gpu"),  # the profile fills the vendor in
        ({}, _profile("nvidia", "nvidia.com/gpu.shared"), "nvidia.com/gpu.shared"),
        ({"vendor": "nvidia"}, _profile("nvidia", "nvidia.com/gpu.shared"), "nvidia.com/gpu.shared"),
        ({"vendor": "amd"}, _profile("nvidia", "nvidia.com/gpu.shared"), "amd.com/gpu"),  # not the other vendor's
        ({}, _profile(), "nvidia.com/gpu"),  # unset vendor means NVIDIA, as in the operator
    ],
)
def test_gpu_resource_name(model_gpu: dict[str, Any], profile: HardwareProfile, resource: str) -> None:
    service = make_service({"resources": {"gpu": 2}}, {"hardware": {"gpu": model_gpu}}, profile)
    assert workloads.gpu_resource(service) == resource
    container = server(service)
    assert container["resources"]["limits"] == {resource: "2"}
    assert "requests" not in container["resources"]  # an extended resource's request defaults to its limit
    assert pod_of(service)["tolerations"] == [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("tolerations", "expected"),
    [
        ([], [NVIDIA_TOLERATION]),
        ([NVIDIA_TOLERATION], [NVIDIA_TOLERATION]),  # the profile's: not added twice
        ([{"key": "nvidia.com/gpu", "operator": "Exists"}], [{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        ([{"operator": "Exists"}], [{"operator": "Exists"}]),  # tolerates every taint
        (
            [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
            [
                NVIDIA_TOLERATION,
                {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
            ],
        ),
        (
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}],
            [NVIDIA_TOLERATION, {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}],
        ),
        (
            [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
            [NVIDIA_TOLERATION, {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        ),
    ],
)
def test_gpu_toleration_is_added_once(tolerations: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    service = make_service({"resources": {"gpu": 1}, "tolerations": tolerations}, profile=_profile("nvidia"))
    assert pod_of(service)["tolerations"] == expected


def test_cpu_pods_get_no_gpu_toleration() -> None:
    assert "tolerations" not in pod_of(make_service())
    dedicated = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    assert pod_of(make_service({"tolerations": [dedicated]}))["tolerations"] == [dedicated]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, None),
        ({"memory": "48Gi"}, {"limits": {"memory": "48Gi"}, "requests": {"memory": "48Gi"}}),
        # No memory of its own: the plan's request plus max(10%, 2 GiB) is the limit, so a runaway cannot take the node.
        ({"hostMemory": "40Gi"}, {"limits": {"memory": "44Gi"}, "requests": {"memory": "40Gi"}}),
        ({"hostMemory": "3Gi"}, {"limits": {"memory": "5Gi"}, "requests": {"memory": "3Gi"}}),
        ({"hostMemory": "1000Mi"}, {"limits": {"memory": "3048Mi"}, "requests": {"memory": "1000Mi"}}),
        ({"memory": "56Gi", "hostMemory": "40Gi"}, {"limits": {"memory": "56Gi"}, "requests": {"memory": "40Gi"}}),
        (
            {"cpu": "8", "ephemeralStorage": "30Gi"},
            {
                "limits": {"cpu": "8", "ephemeral-storage": "30Gi"},
                "requests": {"cpu": "8", "ephemeral-storage": "30Gi"},
            },
        ),
    ],
)
def test_resources_host_memory_is_the_request(resources: dict[str, Any], expected: dict[str, Any] | None) -> None:
    container = server(make_service({"resources": resources}))
    assert container.get("resources") == expected


def test_host_memory_above_the_memory_limit_is_a_config_error() -> None:
    service = make_service({"resources": {"memory": "32Gi", "hostMemory": "40Gi"}})
    message = config_error(checks.memory_request_problems(service))
    assert message.startswith("llmkube:services.qwen.resources.hostMemory: 40Gi is more than resources.memory 32Gi")


def test_pod_scheduling_passthrough() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["desk"]}]}
                ]
            }
        }
    }
    service = make_service(
        {
            "nodeSelector": {"zone": "home", "disk": "nvme"},
            "affinity": affinity,
            "podAnnotations": {"b": "2", "a": "1"},
            "runtimeClassName": "nvidia",
            "priorityClassName": "llm",
        }
    )  # fmt: skip
    deployment = workloads.deployment(service)
    pod = deployment["spec"]["template"]["spec"]
    assert list(pod["nodeSelector"].items()) == [("disk", "nvme"), ("zone", "home")]
    assert pod["affinity"] == affinity
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "llm"
    assert list(deployment["spec"]["template"]["metadata"]["annotations"]) == ["a", "b"]


def test_pod_runs_restricted_as_a_fixed_non_root_user() -> None:
    pod = pod_of(gpu_service())
    assert pod["securityContext"] == {
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "runAsGroup": 65532,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,  # the real server runs so (tests/e2e/test_llama_server.py)
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert workloads.pod_security_level(pod) == "restricted"


@pytest.mark.parametrize(
    ("spec", "replicas"),
    [({}, 1), ({"replicas": 3}, 3), ({"replicas": 0}, 0), ({"replicas": 3, "autoscaling": {"maxReplicas": 4}}, None)],
)
def test_replicas_are_left_to_the_autoscaler(spec: dict[str, Any], replicas: int | None) -> None:
    assert workloads.deployment(make_service(spec))["spec"].get("replicas") == replicas


# ---------------------------------------------------------------------------------------------------------
# Service, HPA, endpoints
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "service_type", "port"),
    [
        (None, "ClusterIP", {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}),
        ({"port": 9000}, "ClusterIP", {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}),
        ({"type": "NodePort"}, "NodePort", {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}),
        ({"type": "NodePort", "nodePort": 30080}, "NodePort",
         {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}),
        ({"type": "LoadBalancer", "nodePort": 30081}, "LoadBalancer",
         {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "nodePort": 30081}),
    ],
)  # fmt: skip
def test_service_type_and_node_port(endpoint: dict[str, Any] | None, service_type: str, port: dict[str, Any]) -> None:
    service = workloads.service_manifest(make_service({"endpoint": endpoint} if endpoint else {}))
    assert service["metadata"]["name"] == "qwen"
    assert service["spec"]["type"] == service_type
    assert service["spec"]["ports"] == [port]


def test_endpoint_urls() -> None:
    service = make_service({"endpoint": {"port": 9000}})
    assert workloads.endpoint_url(service) == "http://qwen.llmkube.svc.cluster.local:9000"
    assert workloads.openai_base_url(service) == "http://qwen.llmkube.svc.cluster.local:9000/v1"
    assert workloads.endpoint_url(make_service()) == "http://qwen.llmkube.svc.cluster.local:8080"


def test_hpa_defaults() -> None:
    assert workloads.hpa(make_service()) is None
    hpa = workloads.hpa(make_service({"autoscaling": {"maxReplicas": 3}}))
    assert hpa is not None
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen"},
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "llamacpp:requests_processing"},
                    "target": {"type": "AverageValue", "averageValue": "2"},
                },
            }
        ],
    }


def test_hpa_metrics_from_the_spec() -> None:
    metrics = [
        {"type": "Resource", "name": "cpu", "targetAverageUtilization": 70},
        {"type": "Resource", "name": "memory", "targetAverageValue": "40Gi"},
        {"type": "Pods", "name": "llamacpp:requests_deferred", "targetAverageValue": "1"},
    ]
    hpa = workloads.hpa(make_service({"autoscaling": {"minReplicas": 2, "maxReplicas": 5, "metrics": metrics}}))
    assert hpa is not None
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
        {
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "40Gi"}},
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "llamacpp:requests_deferred"},
                "target": {"type": "AverageValue", "averageValue": "1"},
            },
        },
    ]


def test_service_workloads_order() -> None:
    service = make_service({"autoscaling": {"maxReplicas": 2}})
    assert [m["kind"] for m in workloads.service_workloads(service)] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    ]
    kinds = [m["kind"] for m in workloads.service_workloads(service, cache=per_service())]
    assert kinds == ["PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"]


# ---------------------------------------------------------------------------------------------------------
# Namespace and Pod Security
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("services", "delivery", "level"),
    [
        ([], "direct", "restricted"),
        ([make_service(), gpu_service()], "direct", "restricted"),
        ([make_service(), make_service(model={"source": "/data/m.gguf"}, name="local")], "direct", "privileged"),
        ([make_service()], "operator", "baseline"),  # the operator's cache prep runs as root with CHOWN
        ([make_service(model={"source": "/data/m.gguf"})], "operator", "privileged"),
    ],
)
def test_namespace_enforces_what_its_pods_meet(services: list[ResolvedService], delivery: str, level: str) -> None:
    built = [m for s in services for m in workloads.service_workloads(s)]
    (namespace,) = workloads.namespace_manifests("llmkube", built, delivery=delivery)  # type: ignore[arg-type]
    labels = namespace["metadata"]["labels"]
    assert namespace["metadata"]["name"] == "llmkube"
    assert labels["pod-security.kubernetes.io/enforce"] == level
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize(
    ("change", "level"),
    [
        (lambda pod: None, "restricted"),
        (lambda pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "baseline"),
        (lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(add=["CHOWN"]), "baseline"),
        (lambda pod: pod["securityContext"].update(runAsUser=0), "baseline"),
        (lambda pod: pod["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}), "baseline"),
        (lambda pod: pod.update(hostNetwork=True), "privileged"),
        (lambda pod: pod["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    ],
)
def test_pod_security_level(change: Any, level: str) -> None:
    pod = pod_of(make_service())
    change(pod)
    assert workloads.pod_security_level(pod) == level


# ---------------------------------------------------------------------------------------------------------
# Every manifest is valid Kubernetes, and the same input gives the same bytes
# ---------------------------------------------------------------------------------------------------------

SCENARIOS = {
    "cpu": lambda: workloads.service_workloads(make_service()),
    "gpu-autoscaled": lambda: workloads.service_workloads(
        gpu_service(
            autoscaling={
                "maxReplicas": 3,
                "metrics": [{"type": "Resource", "name": "cpu", "targetAverageUtilization": 60}],
            },
            endpoint={"type": "LoadBalancer", "nodePort": 30100},
            resources={"gpu": 2, "cpu": "8", "memory": "60Gi", "hostMemory": "48Gi", "ephemeralStorage": "2Gi"},
            podLabels={"team": "ml"},
            podAnnotations={"a": "b"},
            runtimeClassName="nvidia",
            priorityClassName="llm",
        )
    ),
    "per-service": lambda: workloads.service_workloads(make_service(model={"sha256": "A" * 64}), cache=per_service()),
    "claim": lambda: workloads.service_workloads(make_service({"modelCache": {"claimName": "mine"}})),
    "ephemeral": lambda: workloads.service_workloads(
        make_service({"modelCache": {"persistence": "Ephemeral"}, "resources": {"ephemeralStorage": "30Gi"}})
    ),
    "pvc-source": lambda: workloads.service_workloads(make_service(model={"source": "pvc://w/m.gguf"})),
    "local-multi-file": lambda: workloads.service_workloads(
        make_service(model={"source": "file:///data/m-00001-of-00002.gguf", "files": ["m-00002-of-00002.gguf"]})
    ),
    "hf-node-port": lambda: workloads.service_workloads(
        make_service({"endpoint": {"type": "NodePort", "nodePort": 30080}}, {"source": HF_SOURCE})
    ),
    "namespace-level": lambda: [
        *workloads.namespace_manifests("llmkube", workloads.service_workloads(make_service())),
        workloads.shared_cache_pvc("llmkube", CacheSettings.model_validate({"storageClass": "local-path"})),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_is_valid_kubernetes(scenario: str) -> None:
    for manifest in SCENARIOS[scenario]():
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_output_is_deterministic(scenario: str) -> None:
    first, second = SCENARIOS[scenario](), SCENARIOS[scenario]()
    assert json.dumps(first) == json.dumps(second)


def test_map_order_in_the_spec_does_not_change_the_output() -> None:
    a = make_service(
        {
            "nodeSelector": {"a": "1", "b": "2"},
            "podLabels": {"x": "1", "y": "2"},
            "podAnnotations": {"p": "1", "q": "2"},
        }
    )
    b = make_service(
        {
            "nodeSelector": {"b": "2", "a": "1"},
            "podLabels": {"y": "2", "x": "1"},
            "podAnnotations": {"q": "2", "p": "1"},
        }
    )
    assert json.dumps(workloads.service_workloads(a)) == json.dumps(workloads.service_workloads(b))


def test_a_local_source_is_mounted_from_the_path_as_written_like_the_operator() -> None:
    # The operator takes a file:// path as written (no percent-decoding): both deliveries mount the same path.
    service = make_service(model={"source": "file:///srv/my%20models/m.gguf"})
    host = next(v for v in pod_of(service)["volumes"] if v["name"] == "host-model")
    assert host["hostPath"] == {"path": "/srv/my%20models/m.gguf", "type": "File"}


def test_further_files_of_a_model_at_a_hosts_root_have_one_slash() -> None:
    model = ModelSpec.model_validate({"source": "https://example.com/m-00001-of-00002.gguf",
                                      "files": ["m-00002-of-00002.gguf"]})  # fmt: skip
    assert workloads.downloads(model)[1].url == "https://example.com/m-00002-of-00002.gguf"
