"""The newer Model and service fields of the cache layout: bare repository ids and hf:// repositories with files,
s3:// sources, mmproj, speculative decoding's draft model, refreshPolicy OnChange (its script run for real
against a local HTTP server), skipModelInit, and the prefetch Job."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from llmkube_components import checks, workloads
from llmkube_components.api import ModelSpec, StackConfig
from llmkube_components.api.stack import CacheSettings
from llmkube_components.resolve import ResolvedModel, ResolvedService, ResolvedStack, resolve_stack
from llmkube_components.sources import SourceError, parse_source
from llmkube_components.workloads import Download
from llmkube_components.workloads.prefetch import prefetch_job
from llmkube_components.workloads.storage import layout
from tests import test_workloads
from tests.test_workloads import K8S_VERSION, PAYLOAD, config_error, make_service, needs_tools, pod_of, run, server

# The local HTTP server and cache directory of the download script tests.
upstream, http_root, cache = test_workloads.upstream, test_workloads.http_root, test_workloads.cache

HF = "https://huggingface.co"
DIGEST = "ab" * 32


def model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate(fields)


def key_of(source: str) -> str:
    return parse_source(source).cache_key


# ---------------------------------------------------------------------------------------------------------
# Sources: bare repository ids, hf:// repositories, s3://
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "url", "name"),
    [
        ("unsloth/Qwen3-GGUF/Qwen3-Q4_K_M.gguf", f"{HF}/unsloth/Qwen3-GGUF/resolve/main/Qwen3-Q4_K_M.gguf",
         "Qwen3-Q4_K_M.gguf"),
        ("unsloth/Qwen3-GGUF/sub/q.gguf", f"{HF}/unsloth/Qwen3-GGUF/resolve/main/sub/q.gguf", "q.gguf"),
        ("s3://weights/qwen/q4.gguf", "s3://weights/qwen/q4.gguf", "q4.gguf"),
        ("s3://weights/my model+1.gguf", "s3://weights/my%20model%2B1.gguf", "my model+1.gguf"),
    ],
)  # fmt: skip
def test_bare_ids_and_s3_sources_name_a_file(source: str, url: str, name: str) -> None:
    parsed = parse_source(source)
    assert (parsed.url, parsed.file_name, parsed.repository, parsed.downloaded) == (url, name, False, True)
    downloaded = workloads.downloads(model(source=source))
    assert downloaded == [Download(url, f"/models/{key_of(source)}/{name}")]


@pytest.mark.parametrize("source", ["unsloth/Qwen3-GGUF", "hf://unsloth/Qwen3-GGUF"])
def test_a_repository_with_files_fetches_each_from_it(source: str) -> None:
    # As the operator's multi-file staging: files[0] is the model file.
    spec = model(source=source, files=["Q4/q-00001-of-00002.gguf", "Q4/q-00002-of-00002.gguf"], sha256=DIGEST)
    directory = workloads.model_dir(spec)
    assert workloads.downloads(spec) == [
        Download(f"{HF}/unsloth/Qwen3-GGUF/resolve/main/Q4/q-00001-of-00002.gguf",
                 f"{directory}/Q4/q-00001-of-00002.gguf", DIGEST),
        Download(f"{HF}/unsloth/Qwen3-GGUF/resolve/main/Q4/q-00002-of-00002.gguf",
                 f"{directory}/Q4/q-00002-of-00002.gguf"),
    ]  # fmt: skip
    assert workloads.model_path(spec) == f"{directory}/Q4/q-00001-of-00002.gguf"
    assert workloads.model_path(spec, "operator") == f"/models/{key_of(source)}/Q4/q-00001-of-00002.gguf"


def test_an_s3_source_with_files_is_their_prefix() -> None:
    spec = model(source="s3://weights/qwen/", files=["q-1.gguf", "q-2.gguf"])
    directory = f"/models/{key_of('s3://weights/qwen/')}"
    assert workloads.downloads(spec) == [
        Download("s3://weights/qwen/q-1.gguf", f"{directory}/q-1.gguf"),
        Download("s3://weights/qwen/q-2.gguf", f"{directory}/q-2.gguf"),
    ]


@pytest.mark.parametrize(
    ("source", "files", "message"),
    [
        ("unsloth/Qwen3-GGUF", None, "'unsloth/Qwen3-GGUF' names no file; llama.cpp loads one GGUF file: write "
         "owner/name/<file>.gguf (or hf://<org>/<repo>/<file>.gguf), or list the repository's files in files"),
        ("hf://org/repo", None, "'hf://org/repo' names no file"),
        ("s3://weights/q.gguf", ["q2.gguf"], "'s3://weights/q.gguf' names a file, but with files an s3:// source "
         "is the prefix they are under"),
        ("s3://Weights_1/q.gguf", None, "'s3://Weights_1/q.gguf': 'Weights_1' is not an S3 bucket name"),
        ("s3://weights", None, "'s3://weights' names no object; write s3://<bucket>/<key>"),
    ],
)  # fmt: skip
def test_sources_that_name_no_model_file_are_preview_errors(source: str, files: list[str] | None, message: str) -> None:
    service = make_service(model={"source": source, **({"files": files} if files else {})})
    assert config_error(checks.model_problems(service.model)).startswith("llmkube:models.m.source: ")
    assert message in config_error(checks.model_problems(service.model))


def test_an_unknown_scheme_names_the_ones_there_are() -> None:
    with pytest.raises(SourceError, match="use a path, a repository id, file://, http\\(s\\)://, hf://, s3://"):
        parse_source("ftp://example.com/m.gguf")
    with pytest.raises(SourceError, match="is neither a URL, an absolute path, nor a repository id"):
        parse_source("../etc/x.gguf")
    assert parse_source("S3://weights/q.gguf").url == "s3://weights/q.gguf"  # schemes are case-insensitive


# ---------------------------------------------------------------------------------------------------------
# mmproj
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "url", "rel"),
    [
        # A path: beside the model file upstream, as a further file.
        ({"source": "https://example.com/q/m.gguf", "mmproj": "mmproj-f16.gguf"},
         "https://example.com/q/mmproj-f16.gguf", "mmproj-f16.gguf"),
        ({"source": "org/repo", "files": ["m.gguf"], "mmproj": "vision/mmproj.gguf"},
         f"{HF}/org/repo/resolve/main/vision/mmproj.gguf", "vision/mmproj.gguf"),
        ({"source": "s3://weights/q", "files": ["m.gguf"], "mmproj": "mmproj.gguf"},
         "s3://weights/q/mmproj.gguf", "mmproj.gguf"),
        # A URL (llmkube extension): staged under its own name.
        ({"source": "https://example.com/q/m.gguf", "mmproj": "hf://org/vision/mm.gguf"},
         f"{HF}/org/vision/resolve/main/mm.gguf", "mm.gguf"),
    ],
)  # fmt: skip
def test_mmproj_is_staged_beside_the_model(fields: dict[str, Any], url: str, rel: str) -> None:
    spec = model(**fields, fileSha256={fields["mmproj"]: DIGEST})
    directory = workloads.model_dir(spec)
    assert workloads.downloads(spec)[-1] == Download(url, f"{directory}/{rel}", DIGEST)
    service = make_service(model={**fields, "fileSha256": {fields["mmproj"]: DIGEST}})
    assert checks.model_problems(service.model) == []
    args = server(service)["args"]
    assert args[args.index("--mmproj") + 1] == f"{directory}/{rel}"


def test_an_mmproj_already_in_files_is_downloaded_once() -> None:
    spec = model(source="org/repo", files=["m.gguf", "mmproj.gguf"], mmproj="mmproj.gguf")
    assert [d.url.rsplit("/", 1)[1] for d in workloads.downloads(spec)] == ["m.gguf", "mmproj.gguf"]


def test_an_mmproj_url_gets_its_own_cache_directory() -> None:
    # Two models of one source with different projectors of the same name must not share the file.
    a = model(source="https://example.com/m.gguf", mmproj="https://a.example/mmproj.gguf")
    b = model(source="https://example.com/m.gguf", mmproj="https://b.example/mmproj.gguf")
    assert len({workloads.model_dir(a), workloads.model_dir(b), workloads.model_dir(model(source=a.source))}) == 3


@pytest.mark.parametrize(
    ("mmproj", "message"),
    [
        ("../mm.gguf", "'../mm.gguf' must be a path relative to the model's directory"),
        ("file:///srv/mm.gguf", "an mmproj URL is downloaded beside the model"),
        ("https://example.com/m.gguf", "would be staged as m.gguf, the model file's own name"),
    ],
)
def test_mmproj_problems(mmproj: str, message: str) -> None:
    service = make_service(model={"source": "https://example.com/q/m.gguf", "mmproj": mmproj})
    assert config_error(checks.model_problems(service.model)).startswith("llmkube:models.m.mmproj: ")
    assert message in config_error(checks.model_problems(service.model))


# ---------------------------------------------------------------------------------------------------------
# Speculative decoding's draft model
# ---------------------------------------------------------------------------------------------------------

DRAFT = {"type": "draft", "draftModelRef": "small"}


def with_draft(draft_source: str, model_fields: dict[str, Any] | None = None, **spec: Any) -> ResolvedService:
    service = make_service({"speculativeDecoding": DRAFT, **spec}, model=model_fields)
    draft = ResolvedModel("small", "small", model(source=draft_source, sourceSecretRef={"name": "draft-secret"}))
    return dataclasses.replace(service, draft=draft)


def test_a_draft_model_ref_is_downloaded_into_its_own_cache_directory() -> None:
    service = with_draft("s3://weights/small/d.gguf")
    pod = pod_of(service)
    assert [c["name"] for c in pod["initContainers"]] == [
        "model-cache-prep",
        "model-downloader",
        "draft-model-downloader",
    ]
    prep, main, draft = pod["initContainers"]
    draft_dir = f"/models/{key_of('s3://weights/small/d.gguf')}"
    assert f"prepare {draft_dir}\n" in prep["command"][2]
    assert f"fetch s3://weights/small/d.gguf {draft_dir}/d.gguf\n" in draft["command"][2]
    # Each downloader gets its own model's Secret; the shared cache is one volume.
    assert draft["envFrom"] == [{"secretRef": {"name": "draft-secret"}}] and "envFrom" not in main
    assert [v["name"] for v in pod["volumes"]] == ["model-cache"]
    args = server(service)["args"]
    assert args[args.index("-md") + 1] == f"{draft_dir}/d.gguf"
    kubernetes_validate.validate(workloads.deployment(service), K8S_VERSION, strict=True)


def test_draft_and_model_on_different_claims_do_not_collide() -> None:
    service = with_draft("pvc://small-claim/d.gguf", {"source": "pvc://big-claim/m.gguf"})
    pod = pod_of(service)
    assert pod["volumes"] == [
        {"name": "model-source", "persistentVolumeClaim": {"claimName": "big-claim", "readOnly": True}},
        {"name": "draft-model-source", "persistentVolumeClaim": {"claimName": "small-claim", "readOnly": True}},
    ]
    assert server(service)["volumeMounts"][:2] == [
        {"name": "model-source", "mountPath": "/model-source", "readOnly": True},
        {"name": "draft-model-source", "mountPath": "/draft/model-source", "readOnly": True},
    ]
    assert workloads.model_storage(service).draft_path == "/draft/model-source/d.gguf"
    assert "initContainers" not in pod


def test_a_draft_model_file_is_one_of_the_models_files() -> None:
    spec = {"speculativeDecoding": {"type": "draft", "draftModel": "draft/d.gguf"}}
    service = make_service(spec, model={"files": ["draft/d.gguf"]})
    assert checks.service_problems(service) == []
    args = server(service)["args"]
    assert args[args.index("-md") + 1] == f"{workloads.model_dir(service.model.spec)}/draft/d.gguf"
    unlisted = make_service(spec)
    assert config_error(checks.service_problems(unlisted)).startswith(
        "llmkube:services.qwen.speculativeDecoding.draftModel: 'draft/d.gguf' is not in models.m.files (none): "
        "list it there"
    )


# ---------------------------------------------------------------------------------------------------------
# skipModelInit
# ---------------------------------------------------------------------------------------------------------


def test_skip_model_init_reads_the_cache_without_downloading() -> None:
    service = with_draft("https://example.com/d.gguf", skipModelInit=True)
    pod = pod_of(service)
    assert "initContainers" not in pod
    assert pod["volumes"] == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "llmkube-model-cache"}}]
    args = server(service)["args"]
    assert args[args.index("--model") + 1] == workloads.model_path(service.model.spec)
    assert args[args.index("-md") + 1] == f"/models/{key_of('https://example.com/d.gguf')}/d.gguf"


def test_skip_model_init_on_an_empty_dir_is_a_preview_error() -> None:
    service = make_service({"skipModelInit": True, "modelCache": {"persistence": "Ephemeral"}})
    assert config_error(checks.service_problems(service)).startswith(
        "llmkube:services.qwen.skipModelInit: true with modelCache.persistence Ephemeral"
    )


def test_a_local_source_without_init_gets_no_host_path() -> None:
    pod = pod_of(make_service({"skipModelInit": True}, model={"source": "/srv/m.gguf"}))
    assert workloads.pod_security_level(pod) == "restricted"


# ---------------------------------------------------------------------------------------------------------
# The prefetch Job
# ---------------------------------------------------------------------------------------------------------


def test_the_prefetch_job_fills_the_shared_cache_like_a_pod() -> None:
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    fields = {"source": "s3://weights/q/m.gguf", "sha256": DIGEST, "sourceSecretRef": {"name": "s3"},
              "prefetch": True, "prefetchTolerations": [toleration]}  # fmt: skip
    job = prefetch_job(ResolvedModel("m", "m", model(**fields)), "llmkube")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["metadata"]["name"] == "m-prefetch"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "model-prefetch"
    assert job["metadata"]["labels"]["inference.llmkube.dev/model"] == "m"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["tolerations"] == [toleration]
    assert pod["restartPolicy"] == "Never"
    assert workloads.pod_security_level(pod) == "restricted"
    # Exactly a service's init containers on the same PVC: the service finds the files where it looks.
    service = make_service(model=fields)
    assert pod["initContainers"] == pod_of(service)["initContainers"]
    assert pod["volumes"] == pod_of(service)["volumes"]


def _stack_of(models: dict[str, Any], cache: dict[str, Any] | None = None) -> ResolvedStack:
    raw = {
        "hardware": "cpu-only",
        "models": models,
        "services": {"s": {"modelRef": next(iter(models))}},
        "modelCache": cache or {},
    }
    return resolve_stack(StackConfig.model_validate(raw))


@pytest.mark.parametrize(
    ("source", "cache", "message"),
    [
        ("https://example.com/m.gguf", {"mode": "perService"}, "true, but modelCache.mode is perService: prefetch "
         "fills the shared cache llmkube-model-cache, which no service of this stack reads"),
        ("pvc://claim/m.gguf", None, "true, but 'pvc://claim/m.gguf' is not downloaded"),
    ],
)  # fmt: skip
def test_prefetch_problems(source: str, cache: dict[str, Any] | None, message: str) -> None:
    stack = _stack_of({"m": {"source": source, "prefetch": True}}, cache)
    assert config_error(checks.prefetch_problems(stack)).startswith(f"llmkube:models.m.prefetch: {message}")
    assert checks.prefetch_problems(_stack_of({"m": {"source": "https://example.com/m.gguf", "prefetch": True}})) == []


# ---------------------------------------------------------------------------------------------------------
# refreshPolicy OnChange
# ---------------------------------------------------------------------------------------------------------


def test_on_change_with_every_file_pinned_is_a_preview_warning() -> None:
    stack = _stack_of({"m": {"source": "https://example.com/m.gguf", "sha256": DIGEST, "refreshPolicy": "OnChange"}})
    (warning,) = [w for w in stack.warnings if w.path == "models.m.refreshPolicy"]
    assert "OnChange has no effect: sha256 pins the model's files" in warning.message


def test_the_refresh_policy_reaches_the_script() -> None:
    on_change = pod_of(make_service(model={"refreshPolicy": "OnChange"}))["initContainers"][1]["command"][2]
    assert " refresh=OnChange\n" in on_change
    assert " refresh=IfNotPresent\n" in pod_of(make_service())["initContainers"][1]["command"][2]


@needs_tools
def test_on_change_fetches_a_file_again_when_its_size_changed(http_root: tuple[str, Path], cache: Path) -> None:
    # A plain file server sends no ETag: the size decides, as in the operator's drift check.
    url, root = http_root
    dest = cache / "m.gguf"
    script = workloads.download_script([Download(f"{url}/m.gguf", str(dest))], refresh_policy="OnChange")
    assert run(script).returncode == 0
    assert (cache / "m.gguf.source").read_text() == f"\n{len(PAYLOAD)}\n"
    same = run(script)
    assert f"{dest} is cached; skipping download" in same.stdout
    (root / "m.gguf").write_bytes(PAYLOAD + b"more")
    changed = run(script)
    assert changed.returncode == 0, changed.stderr
    assert f"{url}/m.gguf changed upstream" in changed.stdout
    assert dest.read_bytes() == PAYLOAD + b"more"
    (root / "m.gguf").unlink()  # the check now fails (404): the cached copy serves
    gone = run(script)
    assert gone.returncode == 0, gone.stderr
    assert "keeping the cached copy" in gone.stdout
    assert dest.read_bytes() == PAYLOAD + b"more"


@needs_tools
def test_on_change_never_checks_a_pinned_file(http_root: tuple[str, Path], cache: Path) -> None:
    url, root = http_root
    dest = cache / "m.gguf"
    dest.write_bytes(b"cached")
    (root / "m.gguf").unlink()
    script = workloads.download_script([Download(f"{url}/m.gguf", str(dest), "0" * 64)], refresh_policy="OnChange")
    result = run(script)
    assert result.returncode == 0 and "could not check" not in result.stdout
    assert not (cache / "m.gguf.source").exists()


def test_layout_of_a_split_model() -> None:
    files = layout(model(source="https://example.com/m-1.gguf", files=["./m-2.gguf"]))
    assert (files.main, files.further, files.mmproj) == ("m-1.gguf", ["m-2.gguf"], None)


@pytest.mark.parametrize("cache_mode", ["shared", "perService"])
def test_per_service_cache_still_builds(cache_mode: str) -> None:
    service = with_draft("https://example.com/d.gguf")
    manifests = workloads.service_workloads(service, cache=CacheSettings.model_validate({"mode": cache_mode}))
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
