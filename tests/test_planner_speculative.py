"""Speculative decoding in the memory plan: a draft model's weights, KV cache and compute; the MTP layers and
their context; the recurrent state's rollback copies. Models are written by testkit/gguf_files.py (F32
weights) and read back as the planner reads them; the sizes are computed by hand from llama.cpp's rules
(llmkube_components/planner/memory.py cites them) and match what the real llama-server logs for the same
files (tests/e2e/test_llama_server_flags.py checks that)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkube_components.api import InferenceServiceSpec, ModelSpec
from llmkube_components.hardware import builtin_profiles
from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import (
    DRAFT,
    DRAFT_KV,
    HOST,
    KV_K,
    KV_V,
    RECURRENT_STATE,
    DraftModel,
    Placement,
    PlacementError,
    plan_memory,
)
from llmkube_components.planner.metadata import read_metadata
from llmkube_components.planner.plan import plan_service, server_settings
from testkit.gguf_files import write_dense, write_hybrid, write_hybrid_mtp

CTX = 1024
F16 = 2
HEAD_DIM, N_HEAD_KV = 32, 2  # the generators' defaults: 64 values of K (and of V) per token and layer


def facts_of(path: Path) -> ModelFacts:
    return ModelFacts.from_metadata(read_metadata(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelFacts]:
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "dense": facts_of(write_dense(folder / "dense.gguf")),
        "draft": facts_of(write_dense(folder / "draft.gguf", n_layer=1)),
        "hybrid": facts_of(write_hybrid(folder / "hybrid.gguf")),
        "mtp": facts_of(write_hybrid_mtp(folder / "mtp.gguf")),
    }


def kv_bytes(layers: int, cells: int = CTX, streams: int = 1) -> int:
    return 2 * layers * cells * streams * HEAD_DIM * N_HEAD_KV * F16  # K and V, f16


def total(plan: Any, category: str) -> int:
    return sum(d.bytes[category] for d in plan.devices)


def test_a_draft_model_adds_its_weights_kv_cache_and_compute(models: dict[str, ModelFacts]) -> None:
    base = plan_memory(models["dense"], Placement(), context_size=CTX)
    with_draft = plan_memory(models["dense"], Placement(), context_size=CTX, draft=DraftModel(models["draft"]))
    assert total(with_draft, DRAFT) == models["draft"].file_bytes
    # llama-server: "llama_kv_cache: size = 0.25 MiB (1024 cells, 1 layers, 4/1 seqs), K (f16) ... V (f16)".
    assert total(with_draft, DRAFT_KV) == kv_bytes(layers=1) == 262144
    assert total(with_draft, KV_K) + total(with_draft, KV_V) == total(base, KV_K) + total(base, KV_V)
    assert with_draft.host.total - base.host.total > total(with_draft, DRAFT) + total(with_draft, DRAFT_KV)
    assert any("the draft model" in note for note in with_draft.notes)


def test_the_draft_cache_has_the_main_context_and_its_own_types(models: dict[str, ModelFacts]) -> None:
    # The draft's cache is f16 whatever -ctk/-ctv say; --spec-draft-type-k/v set it. Its size is the main
    # context's after padding, over the same sequences (here 2 streams of 512 cells).
    draft = DraftModel(models["draft"], cache_type_k="q8_0", cache_type_v="q8_0")
    plan = plan_memory(
        models["dense"], Placement(), context_size=1000, parallel=2, cache_type_k="q8_0", cache_type_v="q8_0",
        draft=draft,
    )  # fmt: skip
    q8_row = 64 // 32 * 34  # 64 values in q8_0 blocks of 32 (34 bytes each)
    assert total(plan, DRAFT_KV) == 2 * 1 * 512 * 2 * q8_row
    f16 = plan_memory(models["dense"], Placement(), context_size=1000, parallel=2, draft=DraftModel(models["draft"]))
    assert total(f16, DRAFT_KV) == kv_bytes(layers=1, cells=512, streams=2)


def test_the_draft_follows_the_main_models_gpus_but_not_its_overrides(models: dict[str, ModelFacts]) -> None:
    placement = Placement(gpu_count=2, cpu_moe=True, no_kv_offload=False)
    plan = plan_memory(models["dense"], placement, context_size=CTX, draft=DraftModel(models["draft"]))
    assert plan.host[DRAFT] > 0  # token_embd stays on the CPU
    assert sum(plan.device(g).bytes[DRAFT] for g in ("gpu0", "gpu1")) > 0
    on_cpu = plan_memory(
        models["dense"], placement, context_size=CTX, draft=DraftModel(models["draft"], n_gpu_layers=0)
    )
    assert on_cpu.host[DRAFT] == models["draft"].file_bytes and on_cpu.host[DRAFT_KV] == kv_bytes(1)


def test_mtp_loads_the_mtp_layer_and_gives_it_a_kv_cache(models: dict[str, ModelFacts]) -> None:
    mtp = models["mtp"]
    assert mtp.nextn_layers == 1
    without = plan_memory(mtp, Placement(), context_size=CTX)
    with_mtp = plan_memory(mtp, Placement(), context_size=CTX, spec_types=["draft-mtp"])
    mtp_bytes = without.skipped
    assert mtp_bytes > 0 and with_mtp.skipped == 0
    assert total(with_mtp, "mtp") == mtp_bytes
    # llama-server: the MTP context's "llama_kv_cache: size = 0.25 MiB (1024 cells, 1 layers, 4/1 seqs)".
    assert total(with_mtp, DRAFT_KV) == kv_bytes(layers=1) == 262144
    # The main cache is unchanged (its 2 attention layers); the recurrent state keeps 3 rollback copies:
    # llama-server logs 0.13 MiB without speculation and 0.52 MiB with draft-mtp (4 x).
    assert total(with_mtp, KV_K) == total(without, KV_K)
    assert total(with_mtp, RECURRENT_STATE) == 4 * total(without, RECURRENT_STATE)
    five = plan_memory(mtp, Placement(), context_size=CTX, spec_types=["draft-mtp"], spec_n_max=5)
    assert total(five, RECURRENT_STATE) == 6 * total(without, RECURRENT_STATE)


def test_ngram_types_change_nothing(models: dict[str, ModelFacts]) -> None:
    base = plan_memory(models["hybrid"], Placement(), context_size=CTX)
    ngram = plan_memory(models["hybrid"], Placement(), context_size=CTX, spec_types=["ngram-simple"])
    assert ngram.devices == base.devices


def test_mtp_on_a_model_without_mtp_layers_is_refused(models: dict[str, ModelFacts]) -> None:
    with pytest.raises(PlacementError, match="needs the model's multi-token-prediction layers"):
        plan_memory(models["hybrid"], Placement(), context_size=CTX, spec_types=["draft-mtp"])


# --- through the service: the flag table says what the server runs with ----------------------------------------


def service(**fields: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"modelRef": "m", "contextSize": CTX, **fields})


MODEL = ModelSpec.model_validate({"source": "https://example.com/m.gguf"})


@pytest.mark.parametrize(
    ("fields", "draft", "expected"),
    [
        ({"speculativeDecoding": {"type": "mtp"}}, False, (("draft-mtp",), False)),
        ({"speculativeDecoding": {"type": "draft", "draftModelRef": "d"}}, True, (("draft-simple",), True)),
        ({"speculativeDecoding": {"type": "draft", "draftModelRef": "d"}}, False, (("draft-simple",), False)),
        ({"speculativeDecoding": {"type": "ngram-simple"}}, False, (("ngram-simple",), False)),
        ({"speculativeDecoding": {"type": "disabled"}}, False, ((), False)),
        ({"extraArgs": ["--spec-type", "ngram-mod,draft-mtp"]}, False, (("ngram-mod", "draft-mtp"), False)),
    ],
    ids=str,
)
def test_server_settings_read_the_speculative_flags(fields: dict[str, Any], draft: bool, expected: Any) -> None:
    settings = server_settings(service(**fields), MODEL, 0, draft=draft)
    assert (settings.spec_types, settings.draft) == expected


def test_draft_flags_in_extra_args_reach_the_plan() -> None:
    spec = service(
        speculativeDecoding={"type": "draft", "draftModelRef": "d", "nDraftMax": 6},
        extraArgs=["-ctkd", "q8_0", "--cache-type-v-draft", "q4_0", "-ngld", "2"],
    )
    settings = server_settings(spec, MODEL, 1, draft=True)
    assert (settings.draft_cache_type_k, settings.draft_cache_type_v, settings.draft_n_gpu_layers) == (
        "q8_0",
        "q4_0",
        2,
    )
    assert settings.spec_n_max == 6


def test_plan_service_counts_the_draft_and_reports_mtp_without_layers(models: dict[str, ModelFacts]) -> None:
    profile = builtin_profiles()["dual-rtx5060ti"]
    spec = service(speculativeDecoding={"type": "draft", "draftModelRef": "d"}, resources={"gpu": 1})
    plan, errors, _ = plan_service(
        "svc", spec, MODEL, models["dense"], profile, 1, "services.svc", None, models["draft"]
    )
    assert errors == [] and plan is not None
    assert plan.output()["byCategory"]["gpu0"][DRAFT_KV] == kv_bytes(1)
    alone, _, _ = plan_service("svc", spec, MODEL, models["dense"], profile, 1, "services.svc")
    assert alone is not None and DRAFT not in alone.output()["byCategory"][HOST]

    mtp = service(speculativeDecoding={"type": "mtp"})
    plan, errors, _ = plan_service("svc", mtp, MODEL, models["hybrid"], profile, 0, "services.svc")
    assert plan is None
    assert [p.path for p in errors] == ["services.svc"]
    assert "--spec-type draft-mtp needs the model's multi-token-prediction layers" in errors[0].message
