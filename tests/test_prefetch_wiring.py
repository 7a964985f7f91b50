"""A Model's prefetch Job in a stack (delivery direct): registered with the shared cache it fills, validated as
Kubernetes takes it, not awaited; refused where there is no shared cache to fill."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from llmkube_components import pipeline
from llmkube_components.errors import ConfigError
from llmkube_components.settings import Settings
from tests.pulumi_program import RecordingMocks
from tests.test_components import K8S_VERSION, manifests, run, with_delivery


def prefetching(stack: str = "dev") -> dict[str, Any]:
    config = with_delivery(stack, "direct")
    models = config["llmkube:models"]
    first = next(iter(models))
    models[first] = {**models[first], "prefetch": True}
    return config


def test_a_prefetching_model_registers_its_job_after_the_shared_cache() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        objects = manifests(mocks)
        jobs = [o for o in objects if o["kind"] == "Job"]
        assert len(jobs) == 1
        job = jobs[0]
        assert job["metadata"]["name"].endswith("-prefetch")
        assert job["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in job["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"llmkube-model-cache"}
        assert any(
            o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "llmkube-model-cache" for o in objects
        )

    run(prefetching(), check)


def test_without_prefetch_no_job() -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert not [o for o in manifests(mocks) if o["kind"] == "Job"]

    run(with_delivery("dev", "direct"), check)


def test_prefetch_alone_keeps_the_shared_cache() -> None:
    # A model nobody serves yet, prefetched ahead: the cache it fills is registered all the same.
    raw = {
        "models": {"m": {"source": "https://example.com/m-Q4_K_M.gguf", "catalog": "Llama-3.2-1B", "prefetch": True}}
    }
    built = pipeline.platform(raw, Settings(offline=True))
    assert [m["metadata"]["name"] for m in built.cache] == ["llmkube-model-cache"]
    assert built.models["m"].prefetch_job is not None


def test_a_model_component_alone_cannot_prefetch() -> None:
    with pytest.raises(ConfigError) as err:
        pipeline.standalone_model("m", {"spec": {"source": "https://example.com/m.gguf", "prefetch": True}})
    assert "llmkube:models.m.prefetch: true, but a Model component on its own has no shared model cache" in str(
        err.value
    )


def test_the_rollout_waits_for_the_draft_models_download_too() -> None:
    qwen = {
        "source": "https://example.com/Qwen3.6-35B-A3B-Q4_K_M.gguf",
        "catalog": "Qwen3.6-35B-A3B",
        "sha256": "a" * 64,
    }
    draft = {"source": "https://example.com/Llama-3.2-1B-Instruct-Q4_K_M.gguf", "catalog": "Llama-3.2-1B"}
    service: dict[str, Any] = {"modelRef": "qwen", "contextSize": 4096}
    raw = {"hardware": "dual-rtx5060ti", "downloadMbps": 10, "models": {"qwen": qwen, "draft": draft}}
    alone = pipeline.platform({**raw, "services": {"s": service}}, Settings(offline=True))
    drafted = {**service, "speculativeDecoding": {"type": "draft", "draftModelRef": "draft"}}
    with_draft = pipeline.platform({**raw, "services": {"s": drafted}}, Settings(offline=True))
    before, after = alone.services["s"].rollout_minutes, with_draft.services["s"].rollout_minutes
    assert before is not None and after is not None and after > before
