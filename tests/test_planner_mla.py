"""Multi-head latent attention (issue 14) in the memory plan: the latent K-only cache and the cache types
llama-server accepts for it (planner.memory's docstring, "KV cache and recurrent state").

Metadata-only facts shaped like DeepSeek V3 / Kimi K2 (61 layers, kv_lora_rank 512 + 64 rope dimensions, one
KV head, a multi-token-prediction block) and like GLM-4.7-Flash (47 layers, the same latent); the real server
checks the same rules on a small generated deepseek2 model (tests/e2e/test_planner_mla.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.planner.facts import ModelFacts, ModelFactsError
from llmkube_components.planner.memory import (
    DRAFT_KV,
    KV_K,
    KV_V,
    Placement,
    PlacementError,
    plan_memory,
)
from llmkube_components.planner.types import GGUFMetadata, TensorInfo

CTX = 4096
KV_LORA_RANK, ROPE = 512, 64


def mla_facts(
    arch: str = "deepseek2", *, n_layer: int = 61, nextn: int = 1, kv_lora_rank: int = KV_LORA_RANK, rope: int = ROPE,
    **extra: Any,
) -> ModelFacts:  # fmt: skip
    """Key-values as llama.cpp's converter writes an MLA model (DeepseekV2Model.set_gguf_parameters): the cache's
    head sizes in key_length/value_length, the decompressed ones in key_length_mla/value_length_mla."""
    fields = {
        "context_length": 163840,
        "embedding_length": 7168,
        "block_count": n_layer + nextn,
        "nextn_predict_layers": nextn,
        "attention.head_count": 128,
        "attention.head_count_kv": 1,
        "attention.key_length": kv_lora_rank + rope,
        "attention.value_length": kv_lora_rank,
        "attention.key_length_mla": 128 + rope,
        "attention.value_length_mla": 128,
        "attention.kv_lora_rank": kv_lora_rank,
        "attention.q_lora_rank": 1536,
        "rope.dimension_count": rope,
        "feed_forward_length": 18432,
        "expert_count": 256,
        "expert_used_count": 8,
        "expert_feed_forward_length": 2048,
        **extra,
    }
    tensors = [
        TensorInfo("token_embd.weight", "Q4_K", (7168, 129280)),
        TensorInfo("output.weight", "Q6_K", (7168, 129280)),
    ]
    tensors += [
        TensorInfo(f"blk.{i}.attn_kv_a_mqa.weight", "Q4_K", (7168, kv_lora_rank + rope)) for i in range(n_layer)
    ]
    keys = {f"{arch}.{k}": v for k, v in fields.items()}
    return ModelFacts.from_metadata(
        GGUFMetadata(f"test://{arch}", {"general.architecture": arch, **keys}, tuple(tensors))
    )


def kv(facts: ModelFacts, **kwargs: Any) -> dict[str, int]:
    plan = plan_memory(facts, Placement(), context_size=CTX, parallel=1, **kwargs)
    return {c: sum(d[c] for d in plan.devices) for c in (KV_K, KV_V, DRAFT_KV)}


# --- the latent cache -----------------------------------------------------------------------------------------


def test_facts_of_an_mla_model() -> None:
    f = mla_facts()
    assert f.is_mla and (f.n_layer, f.nextn_layers) == (61, 1)
    assert (f.head_k(0), f.head_v(0)) == (576, 512)  # kv_lora_rank + rope, kv_lora_rank
    assert (f.n_embd_k_gqa(0), f.n_embd_v_gqa(0)) == (576, 0)  # one latent "head", no V tensor


@pytest.mark.parametrize(
    ("cache_type", "flash_attn", "row"),
    [("f16", True, 576 * 2), ("f16", False, 576 * 2), ("q8_0", True, 576 // 32 * 34)],
)
def test_the_cache_keeps_the_latent_k_only(cache_type: str, flash_attn: bool, row: int) -> None:
    # llama_kv_cache: has_v = !is_mla, with or without flash attention (v_trans); the MTP layer has no cache
    # in the main context. DeepSeek V3 at f16: 61 x 576 x 2 bytes = 68.6 KiB per token.
    got = kv(mla_facts(), cache_type_k=cache_type, cache_type_v=cache_type, flash_attn=flash_attn)
    assert got == {KV_K: 61 * row * CTX, KV_V: 0, DRAFT_KV: 0}


def test_a_model_without_the_mla_keys_is_plain_multi_head_attention() -> None:
    # An older conversion (attn_kv_b, no key_length_mla): 128 heads of 192 (K) and 128 (V) per layer.
    f = mla_facts(
        nextn=0, **{"attention.key_length": 192, "attention.value_length": 128, "attention.head_count_kv": 128,
                    "attention.key_length_mla": 0, "attention.value_length_mla": 0},
    )  # fmt: skip
    assert not f.is_mla
    assert kv(f) == {KV_K: 61 * 128 * 192 * 2 * CTX, KV_V: 61 * 128 * 128 * 2 * CTX, DRAFT_KV: 0}


# --- the cache types llama-server accepts -----------------------------------------------------------------------


@pytest.mark.parametrize("cache_type", ["f16", "bf16", "q8_0", "q4_0", "q5_1", "iq4_nl"])
def test_equal_k_and_v_types_are_accepted(cache_type: str) -> None:
    assert kv(mla_facts(), cache_type_k=cache_type, cache_type_v=cache_type)[KV_K] > 0


@pytest.mark.parametrize(("k", "v"), [("q8_0", "f16"), ("f16", "q8_0"), ("q4_0", "q8_0"), ("bf16", "f16")])
def test_different_k_and_v_types_are_refused_naming_the_flags(k: str, v: str) -> None:
    # llama_init_from_model: "model does not support different K (q8_0) and V (f16) cache types".
    with pytest.raises(PlacementError) as info:
        kv(mla_facts(), cache_type_k=k, cache_type_v=v)
    assert str(info.value) == (
        f"--cache-type-k {k} with --cache-type-v {v}: test://deepseek2 uses multi-head latent attention, whose V "
        "cache is a view of the K cache, and llama-server refuses different K and V cache types for it; set both "
        f"to the same type (e.g. --cache-type-v {k})"
    )


def test_different_k_and_v_types_are_fine_without_mla() -> None:
    plain = mla_facts(nextn=0, **{"attention.key_length_mla": 0, "attention.value_length_mla": 0})
    assert kv(plain, cache_type_k="q8_0", cache_type_v="f16")[KV_V] > 0


def test_a_quantized_latent_cache_needs_flash_attention() -> None:
    # The V type is the K type, so a quantized K cache is a quantized V cache (llama_init_from_model).
    with pytest.raises(PlacementError, match=r"quantized V cache \(q8_0\) requires flash attention"):
        kv(mla_facts(), cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=False)


@pytest.mark.parametrize(
    ("kv_lora_rank", "rope", "message"),
    [
        # K = 80: the block size 32 of q8_0 does not divide it.
        (64, 16, "K cache type q8_0 with block size 32 does not divide n_embd_head_k=80"),
        # K = 64 divides, V = kv_lora_rank = 48 does not: llama.cpp checks n_embd_head_v as well.
        (48, 16, "V cache type q8_0 with block size 32 does not divide n_embd_head_v=48"),
    ],
)
def test_the_block_size_rule_applies_to_the_latent_head_sizes(kv_lora_rank: int, rope: int, message: str) -> None:
    f = mla_facts(kv_lora_rank=kv_lora_rank, rope=rope)
    with pytest.raises(PlacementError, match=message):
        kv(f, cache_type_k="q8_0", cache_type_v="q8_0")


def test_the_mtp_context_checks_the_draft_cache_types() -> None:
    # DeepSeek V3's MTP block: --spec-type draft-mtp makes a second context on the same weights whose cache
    # types are --spec-draft-type-k/v; llama_init_from_model checks it like the main one.
    f = mla_facts()
    ok = kv(f, spec_types=["draft-mtp"], draft_cache_type_k="q8_0", draft_cache_type_v="q8_0")
    assert ok[DRAFT_KV] == 1 * (576 // 32 * 34) * CTX  # the MTP layer's latent cache only
    with pytest.raises(PlacementError) as info:
        kv(f, spec_types=["draft-mtp"], draft_cache_type_k="q8_0", draft_cache_type_v="f16")
    assert str(info.value).startswith("--spec-draft-type-k q8_0 with --spec-draft-type-v f16: ")


@pytest.mark.parametrize("arch", ["deepseek32", "glm-dsa"])
def test_sparse_attention_architectures_are_refused(arch: str) -> None:
    # llama_kv_cache_dsa: an indexer key cache beside the latent one, not modelled.
    with pytest.raises(ModelFactsError, match=f"architecture {arch} keeps a sparse-attention indexer cache"):
        mla_facts(arch)
