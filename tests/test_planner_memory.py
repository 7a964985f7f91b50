"""Model facts and the memory plan, on synthetic GGUF metadata with hand-computed sizes.

Every model is built here from key-values and tensor infos (no files), with small shapes whose byte sizes
are worked out by hand below: F32 4 B per value, F16 2 B, Q8_0 34 B per block of 32, Q4_0 18 B per 32.
The llama.cpp rules the expectations follow are cited in llmkube_components/planner/{facts,memory}.py;
the KV, sliding-window and recurrent sizes were checked against llama-server's own accounting on small
models of the same architectures.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.hardware.profile import HardwareProfile
from llmkube_components.planner.facts import ModelFacts, ModelFactsError, TensorClass
from llmkube_components.planner.memory import (
    GPU_RUNTIME_OVERHEAD,
    HOST_GPU_RUNTIME_OVERHEAD,
    HOST_RUNTIME_OVERHEAD,
    REPACK,
    WEIGHT_CATEGORIES,
    MiB,
    Placement,
    PlacementError,
    Shortfall,
    layer_devices,
    parse_overrides,
    plan_memory,
)
from llmkube_components.planner.types import GGUFMetadata, TensorInfo

# ---------------------------------------------------------------------------------------------------------
# Synthetic models: n_embd 64, 2 heads of 32, 1 KV head (n_embd_k_gqa 32), vocabulary 256
# ---------------------------------------------------------------------------------------------------------

E, VOCAB = 64, 256

# Bytes, by hand. A Q8_0 row of 64 values is 2 blocks (68 B), of 32 values 1 block (34 B); Q4_0 rows of 64
# and 128 values are 2 and 4 blocks of 18 B.
TOKEN_EMBD = 256 * 2 * 18  # Q4_0 (64, 256): 256 rows of 64
OUTPUT = 256 * 2 * 34  # Q8_0 (64, 256)
OUTPUT_NORM = 64 * 4  # F32 (64,)
ATTENTION = 64 * 68 + 32 * 68 + 32 * 68 + 64 * 68  # Q8_0 attn_q (64,64), attn_k/v (64,32), attn_output (64,64)
NORMS = 2 * 64 * 4  # F32 attn_norm, ffn_norm
DENSE_FFN = 128 * 2 * 18 + 128 * 2 * 18 + 64 * 4 * 18  # Q4_0 ffn_gate/up (64,128), ffn_down (128,64)
ROUTER = 8 * 64 * 4  # F32 ffn_gate_inp (64, 8)
ROUTED = 32 * 8 * 68 + 32 * 8 * 68 + 64 * 8 * 34  # Q8_0 gate/up_exps (64,32,8), down_exps (32,64,8)
SHARED = 64 * 4 + 3 * 64 * 68  # F32 ffn_gate_inp_shexp (64,), Q8_0 gate/up/down_shexp (64,64)
# qwen35moe recurrent layer: Q8_0 attn_qkv (64,128), attn_gate (64,64), ssm_out (64,64); F32 ssm_conv1d
# (4,128), ssm_dt bias (4,), ssm_a (4,), ssm_beta/ssm_alpha (64,4), ssm_norm (16,).
RECURRENT = 128 * 68 + 64 * 68 + 64 * 68 + 128 * 4 * 4 + 4 * 4 + 4 * 4 + 2 * 4 * 64 * 4 + 16 * 4
# qwen35moe attention layer: Q8_0 attn_q (64,128) (query and gate), attn_k/v (64,32), attn_output (64,64);
# F32 attn_q_norm/attn_k_norm (32,).
HYBRID_ATTENTION = 128 * 68 + 32 * 68 + 32 * 68 + 64 * 68 + 2 * 32 * 4


def t(name: str, type_name: str, *shape: int) -> TensorInfo:
    return TensorInfo(name, type_name, shape)


def metadata(arch: str, fields: dict[str, Any], tensors: list[TensorInfo]) -> GGUFMetadata:
    keys = {f"{arch}.{k}": v for k, v in fields.items()}
    return GGUFMetadata(f"test://{arch}", {"general.architecture": arch, **keys}, tuple(tensors))


def base_fields(n_layer: int, **extra: Any) -> dict[str, Any]:
    return {
        "context_length": 32768,
        "embedding_length": E,
        "block_count": n_layer,
        "attention.head_count": 2,
        "attention.head_count_kv": 1,
        "attention.key_length": 32,
        "attention.value_length": 32,
        **extra,
    }


def io_tensors(tied: bool = False) -> list[TensorInfo]:
    out = [t("token_embd.weight", "Q4_0", E, VOCAB), t("output_norm.weight", "F32", E)]
    return out if tied else [*out, t("output.weight", "Q8_0", E, VOCAB)]


def attention(i: int) -> list[TensorInfo]:
    p = f"blk.{i}."
    return [
        t(p + "attn_norm.weight", "F32", E),
        t(p + "attn_q.weight", "Q8_0", E, 64),
        t(p + "attn_k.weight", "Q8_0", E, 32),
        t(p + "attn_v.weight", "Q8_0", E, 32),
        t(p + "attn_output.weight", "Q8_0", 64, E),
        t(p + "ffn_norm.weight", "F32", E),
    ]


def routed(i: int) -> list[TensorInfo]:
    p = f"blk.{i}."
    return [
        t(p + "ffn_gate_inp.weight", "F32", E, 8),
        t(p + "ffn_gate_exps.weight", "Q8_0", E, 32, 8),
        t(p + "ffn_up_exps.weight", "Q8_0", E, 32, 8),
        t(p + "ffn_down_exps.weight", "Q8_0", 32, E, 8),
    ]


def shared(i: int) -> list[TensorInfo]:
    p = f"blk.{i}."
    return [
        t(p + "ffn_gate_inp_shexp.weight", "F32", E),
        t(p + "ffn_gate_shexp.weight", "Q8_0", E, 64),
        t(p + "ffn_up_shexp.weight", "Q8_0", E, 64),
        t(p + "ffn_down_shexp.weight", "Q8_0", 64, E),
    ]


def dense(n_layer: int = 4, *, tied: bool = False, **fields: Any) -> ModelFacts:
    tensors = io_tensors(tied)
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [
            *attention(i),
            t(p + "ffn_gate.weight", "Q4_0", E, 128),
            t(p + "ffn_up.weight", "Q4_0", E, 128),
            t(p + "ffn_down.weight", "Q4_0", 128, E),
        ]
    return ModelFacts.from_metadata(metadata("llama", base_fields(n_layer, feed_forward_length=128, **fields), tensors))


MOE_FIELDS = {"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 32}


def moe(n_layer: int = 4) -> ModelFacts:
    tensors = io_tensors() + [x for i in range(n_layer) for x in (*attention(i), *routed(i))]
    return ModelFacts.from_metadata(metadata("qwen3moe", base_fields(n_layer, **MOE_FIELDS), tensors))


def moe_shared(n_layer: int = 4) -> ModelFacts:
    tensors = io_tensors() + [x for i in range(n_layer) for x in (*attention(i), *routed(i), *shared(i))]
    fields = base_fields(n_layer, expert_shared_feed_forward_length=64, **MOE_FIELDS)
    return ModelFacts.from_metadata(metadata("qwen2moe", fields, tensors))


SSM_FIELDS = {
    "ssm.conv_kernel": 4,
    "ssm.inner_size": 64,
    "ssm.state_size": 16,
    "ssm.group_count": 2,
    "ssm.time_step_rank": 4,
}
# Per recurrent layer and sequence, f32: n_embd_r = (4 - 1) * (64 + 2 * 2 * 16) = 384, n_embd_s = 16 * 64.
STATE_PER_SEQUENCE = (3 * (64 + 2 * 2 * 16) + 16 * 64) * 4


def hybrid(n_layer: int = 8, interval: int = 4, nextn: int = 0, **extra: Any) -> ModelFacts:
    """qwen35moe: layer i has attention KV iff (i + 1) % interval == 0, the others are gated delta-net layers."""
    tensors = io_tensors()
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [t(p + "attn_norm.weight", "F32", E), t(p + "post_attention_norm.weight", "F32", E)]
        if (i + 1) % interval == 0 or i >= n_layer - nextn:
            tensors += [
                t(p + "attn_q.weight", "Q8_0", E, 128),
                t(p + "attn_k.weight", "Q8_0", E, 32),
                t(p + "attn_v.weight", "Q8_0", E, 32),
                t(p + "attn_output.weight", "Q8_0", 64, E),
                t(p + "attn_q_norm.weight", "F32", 32),
                t(p + "attn_k_norm.weight", "F32", 32),
            ]
        else:
            tensors += [
                t(p + "attn_qkv.weight", "Q8_0", E, 128),
                t(p + "attn_gate.weight", "Q8_0", E, 64),
                t(p + "ssm_conv1d.weight", "F32", 4, 128),
                t(p + "ssm_dt.bias", "F32", 4),
                t(p + "ssm_a", "F32", 4),
                t(p + "ssm_beta.weight", "F32", E, 4),
                t(p + "ssm_alpha.weight", "F32", E, 4),
                t(p + "ssm_norm.weight", "F32", 16),
                t(p + "ssm_out.weight", "Q8_0", 64, E),
            ]
        tensors += [*routed(i), *shared(i)]
    fields = base_fields(
        n_layer,
        full_attention_interval=interval,
        nextn_predict_layers=nextn,
        expert_shared_feed_forward_length=64,
        **MOE_FIELDS,
        **SSM_FIELDS,
        **extra,
    )
    return ModelFacts.from_metadata(metadata("qwen35moe", fields, tensors))


def swa_model(arch: str = "gemma3", n_layer: int = 6, **extra: Any) -> ModelFacts:
    """Dense layers with 1 KV head of 64 (n_embd_k_gqa 64: 128 B per cell in f16)."""
    fields = base_fields(n_layer, feed_forward_length=128, **{"attention.key_length": 64, "attention.value_length": 64})
    fields.update(extra)
    tensors = io_tensors(tied=True) + [x for i in range(n_layer) for x in attention(i)]
    return ModelFacts.from_metadata(metadata(arch, fields, tensors))


def plan(facts: ModelFacts, placement: Placement | None = None, **kwargs: Any):
    kwargs.setdefault("context_size", 4096)
    return plan_memory(facts, placement or Placement(), **kwargs)


def profile(gpus: int, gpu_memory: str, host_memory: str) -> HardwareProfile:
    gpu = {"vendor": "nvidia", "product": "Test GPU", "count": gpus, "memory": gpu_memory, "memoryBandwidth": "448G"}
    return HardwareProfile.model_validate(
        {
            "name": "test",
            "gpu": gpu if gpus else None,
            "hostMemory": host_memory,
            "hostMemoryBandwidth": "89.6G",
            "cpuCores": 4,
            "reserved": {"gpuMemory": "0", "hostMemory": "1Gi"},
        }
    )


# ---------------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------------


def test_facts_of_a_dense_model() -> None:
    f = dense()
    assert (f.architecture, f.block_count, f.n_layer, f.n_embd, f.context_length, f.vocab_size) == (
        "llama",
        4,
        4,
        64,
        32768,
        256,
    )
    assert f.n_head_kv == (1, 1, 1, 1)
    assert f.has_attention_kv == (True,) * 4
    assert [f.n_embd_k_gqa(i) for i in range(4)] == [32] * 4
    assert f.ssm is None and f.expert_count == 0 and not any(f.is_swa)


def test_head_sizes_default_to_n_embd_over_heads() -> None:
    fields = base_fields(2)
    del fields["attention.key_length"], fields["attention.value_length"]
    f = ModelFacts.from_metadata(metadata("llama", fields, io_tensors()))
    assert (f.key_length, f.value_length) == (32, 32)  # 64 / 2 heads


def test_head_count_kv_per_layer() -> None:
    f = dense(**{"attention.head_count_kv": [1, 1, 2, 2]})
    assert [f.n_embd_k_gqa(i) for i in range(4)] == [32, 32, 64, 64]


def test_facts_of_moe_models() -> None:
    f, s = moe(), moe_shared()
    assert (f.expert_count, f.expert_used_count, f.expert_feed_forward_length) == (8, 2, 32)
    assert s.expert_shared_feed_forward_length == 64


def test_hybrid_layers_follow_the_full_attention_interval() -> None:
    f = hybrid()
    assert f.has_attention_kv == (False, False, False, True, False, False, False, True)
    assert f.recurrent_layers == (0, 1, 2, 4, 5, 6)
    assert f.recurrent_state_bytes_per_sequence == STATE_PER_SEQUENCE == 5632


def test_hybrid_recurrent_layers_array_wins_over_the_interval() -> None:
    flags = [True, False] * 4
    f = hybrid(**{"attention.recurrent_layers": flags})
    assert f.is_recurrent == tuple(flags)
    assert f.has_attention_kv == tuple(not x for x in flags)


def test_multi_token_prediction_layers_have_no_kv_and_are_not_loaded() -> None:
    f = hybrid(n_layer=9, nextn=1)  # blk.8 is the MTP layer (an attention layer)
    assert (f.block_count, f.n_layer) == (9, 8)
    assert f.has_attention_kv[8] is False and f.is_recurrent[8] is False
    assert f.classify("blk.8.attn_q.weight") == (TensorClass.MTP, 8)
    p = plan(f)
    mtp_bytes = sum(x.nbytes for x in f.tensors if x.name.startswith("blk.8."))
    assert p.skipped == mtp_bytes
    # The classes hold the file's loaded bytes; category repack is AMX's layout overhead on top (test_planner_repack).
    assert sum(d.weights - d[REPACK] for d in p.devices) == sum(x.nbytes for x in f.tensors) - mtp_bytes


@pytest.mark.parametrize(
    ("arch", "n_layer", "extra", "expected"),
    [
        # gemma3: period 6, the 6th layer is global (src/models/gemma3.cpp, load_swa_pattern(ml, 6)).
        ("gemma3", 6, {"attention.sliding_window": 128}, "SSSSSG"),
        ("gemma3", 6, {}, "GGGGGG"),  # no sliding_window: no SWA
        ("gemma3", 6, {"attention.sliding_window": 128, "attention.sliding_window_pattern": 3}, "SSGSSG"),
        # gpt-oss alternates, even layers slide (src/models/openai-moe.cpp, load_swa_pattern(ml, 2)).
        ("gpt-oss", 4, {"attention.sliding_window": 128}, "SGSG"),
        ("cohere2", 4, {"attention.sliding_window": 128}, "SSSG"),
        # An explicit per-layer array wins.
        (
            "gemma3",
            4,
            {"attention.sliding_window": 128, "attention.sliding_window_pattern": [False, True, True, False]},
            "GSSG",
        ),
        # Unknown architecture: full caches, with a note.
        ("llama", 4, {"attention.sliding_window": 128}, "GGGG"),
    ],
)
def test_sliding_window_layers(arch: str, n_layer: int, extra: dict[str, Any], expected: str) -> None:
    f = swa_model(arch, n_layer, **extra)
    assert "".join("S" if s else "G" for s in f.is_swa) == expected
    assert any("sliding-window layers are not modelled" in n for n in f.notes) == (arch == "llama")


@pytest.mark.parametrize(
    ("name", "cls", "layer"),
    [
        ("token_embd.weight", TensorClass.TOKEN_EMBD, None),
        ("output.weight", TensorClass.OUTPUT, None),
        ("output_norm.weight", TensorClass.OUTPUT, None),
        ("rope_freqs.weight", TensorClass.OTHER, None),
        ("blk.3.attn_q.weight", TensorClass.ATTENTION, 3),
        ("blk.3.attn_k_norm.weight", TensorClass.ATTENTION, 3),
        ("blk.3.attn_output.bias", TensorClass.ATTENTION, 3),
        ("blk.7.attn_qkv.weight", TensorClass.ATTENTION, 7),  # an attention layer's fused QKV
        ("blk.0.attn_qkv.weight", TensorClass.RECURRENT, 0),  # a recurrent layer's
        ("blk.0.attn_gate.weight", TensorClass.RECURRENT, 0),
        ("blk.0.ssm_conv1d.weight", TensorClass.RECURRENT, 0),
        ("blk.0.ssm_a", TensorClass.RECURRENT, 0),
        ("blk.0.ssm_dt.bias", TensorClass.RECURRENT, 0),
        ("blk.0.ssm_norm.weight", TensorClass.RECURRENT, 0),
        ("blk.1.ffn_gate_inp.weight", TensorClass.ROUTER, 1),
        ("blk.1.exp_probs_b.bias", TensorClass.ROUTER, 1),
        ("blk.1.ffn_gate_inp_shexp.weight", TensorClass.SHARED_EXPERT, 1),
        ("blk.1.ffn_down_shexp.weight", TensorClass.SHARED_EXPERT, 1),
        ("blk.1.ffn_gate_exps.weight", TensorClass.ROUTED_EXPERT, 1),
        ("blk.1.ffn_gate_up_exps.weight", TensorClass.ROUTED_EXPERT, 1),
        ("blk.1.ffn_down_exps.bias", TensorClass.ROUTED_EXPERT, 1),
        ("blk.2.ffn_up.weight", TensorClass.DENSE_FFN, 2),
        ("blk.2.attn_norm.weight", TensorClass.NORM, 2),
        ("blk.2.post_attention_norm.weight", TensorClass.NORM, 2),
        ("blk.2.ffn_norm.weight", TensorClass.NORM, 2),
    ],
)
def test_classify(name: str, cls: TensorClass, layer: int | None) -> None:
    assert hybrid().classify(name) == (cls, layer)


@pytest.mark.parametrize(
    ("arch", "drop", "extra", "message"),
    [
        ("qwen3moe", "block_count", {}, "qwen3moe.block_count is missing"),
        ("qwen3moe", "embedding_length", {}, "qwen3moe.embedding_length is missing"),
        ("qwen3moe", "context_length", {}, "qwen3moe.context_length is missing"),
        ("qwen3moe", "attention.head_count", {}, "qwen3moe.attention.head_count is missing"),
        ("qwen3moe", "expert_used_count", {}, "qwen3moe.expert_used_count is missing; a model with 8 experts"),
        ("qwen35moe", "ssm.state_size", SSM_FIELDS, "qwen35moe.ssm.state_size is missing (the recurrent layers"),
        ("rwkv7", "", {}, "architecture rwkv7 keeps recurrent state the planner does not model yet"),
        ("qwen3moe", "", {"attention.head_count_kv": [1, 1]}, "has 2 entries, expected one per block (4)"),
        ("qwen3moe", "", {"block_count": "four"}, "qwen3moe.block_count is 'four', expected a non-negative integer"),
    ],
)
def test_unusable_metadata_names_the_key(arch: str, drop: str, extra: dict[str, Any], message: str) -> None:
    fields = {**base_fields(4, **MOE_FIELDS), **extra}
    fields.pop(drop, None)
    with pytest.raises(ModelFactsError) as info:
        ModelFacts.from_metadata(metadata(arch, fields, io_tensors()))
    assert str(info.value).startswith(f"test://{arch}: ")
    assert message in str(info.value)


def test_missing_architecture() -> None:
    with pytest.raises(ModelFactsError, match=r"general\.architecture is missing"):
        ModelFacts.from_metadata(GGUFMetadata("x.gguf", {}, ()))


# ---------------------------------------------------------------------------------------------------------
# Weights by class
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            dense,
            {
                "token_embd": TOKEN_EMBD,
                "output": OUTPUT + OUTPUT_NORM,
                "attention": 4 * ATTENTION,
                "dense_ffn": 4 * DENSE_FFN,
                "norm": 4 * NORMS,
            },
        ),
        (
            moe,
            {
                "token_embd": TOKEN_EMBD,
                "output": OUTPUT + OUTPUT_NORM,
                "attention": 4 * ATTENTION,
                "router": 4 * ROUTER,
                "routed_expert": 4 * ROUTED,
                "norm": 4 * NORMS,
            },
        ),
        (
            moe_shared,
            {
                "token_embd": TOKEN_EMBD,
                "output": OUTPUT + OUTPUT_NORM,
                "attention": 4 * ATTENTION,
                "router": 4 * ROUTER,
                "routed_expert": 4 * ROUTED,
                "shared_expert": 4 * SHARED,
                "norm": 4 * NORMS,
            },
        ),
        (
            hybrid,
            {
                "token_embd": TOKEN_EMBD,
                "output": OUTPUT + OUTPUT_NORM,
                "attention": 2 * HYBRID_ATTENTION,
                "recurrent": 6 * RECURRENT,
                "router": 8 * ROUTER,
                "routed_expert": 8 * ROUTED,
                "shared_expert": 8 * SHARED,
                "norm": 8 * 2 * 64 * 4,  # attn_norm, post_attention_norm
            },
        ),
    ],
    ids=["dense", "moe", "moe-shared", "hybrid"],
)
def test_weights_by_class(model, expected: dict[str, int]) -> None:
    p = plan(model())  # CPU only: everything on the host
    assert {c: p.host[c] for c in WEIGHT_CATEGORIES if p.host[c] and c != REPACK} == expected
    assert p.host.weights - p.host[REPACK] == sum(expected.values())


# ---------------------------------------------------------------------------------------------------------
# KV cache, sliding window, recurrent state
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cache_type", "bytes_per_32"), [("f16", 64), ("q8_0", 34), ("q4_0", 18)])
@pytest.mark.parametrize(("context", "cells"), [(4096, 4096), (5000, 5120), (100, 256), (0, 32768)])
def test_kv_bytes_per_cache_type_and_context(cache_type: str, bytes_per_32: int, context: int, cells: int) -> None:
    # n_ctx padded to 256 (0: the trained context); 4 layers with n_embd_k_gqa = 32 values per cell.
    p = plan(dense(), context_size=context, cache_type_k=cache_type, cache_type_v=cache_type)
    assert p.kv_cells == cells
    assert p.host["kv_k"] == p.host["kv_v"] == 4 * cells * bytes_per_32


def test_k_and_v_cache_types_are_independent() -> None:
    p = plan(dense(), cache_type_k="q8_0", cache_type_v="q4_0")
    assert (p.host["kv_k"], p.host["kv_v"]) == (4 * 4096 * 34, 4 * 4096 * 18)


@pytest.mark.parametrize(
    ("context", "parallel", "kv_unified", "cells", "streams"),
    [
        (4096, None, None, 4096, 1),  # llama-server's auto: 4 sequences, one unified stream
        (4096, 1, None, 4096, 1),
        (4096, 2, None, 2048, 2),  # an explicit --parallel: one stream per sequence
        (5000, 3, None, 1792, 3),  # pad256(pad256(5000) / 3) = pad256(1706)
        (5000, 3, True, 5120, 1),  # --kv-unified
    ],
)
def test_kv_streams(context: int, parallel: int | None, kv_unified: bool | None, cells: int, streams: int) -> None:
    p = plan(dense(), context_size=context, parallel=parallel, kv_unified=kv_unified)
    assert (p.kv_cells, p.kv_streams) == (cells, streams)
    assert p.host["kv_k"] == 4 * cells * streams * 64


def test_kv_only_in_layers_with_attention_and_per_layer_widths() -> None:
    assert plan(hybrid()).host["kv_k"] == 2 * 4096 * 64  # layers 3 and 7 only
    p = plan(dense(**{"attention.head_count_kv": [1, 1, 2, 2]}))
    assert p.host["kv_k"] == p.host["kv_v"] == 4096 * 2 * (32 + 32 + 64 + 64)


def test_v_rows_are_padded_to_the_widest_layer_without_flash_attention() -> None:
    p = plan(dense(**{"attention.head_count_kv": [1, 1, 2, 2]}), flash_attn=False)
    assert p.host["kv_k"] == 4096 * 2 * (32 + 32 + 64 + 64)
    assert p.host["kv_v"] == 4096 * 2 * 64 * 4


@pytest.mark.parametrize(
    ("context", "parallel", "ubatch", "swa_cells", "kv_k"),
    [
        # SWA cells = pad256(min(cells, 128 * (unified ? 4 : 1) + ubatch));
        # 1 global layer, 5 SWA layers, 128 B per cell.
        (4096, None, 512, 1024, (4096 + 5 * 1024) * 128),
        (4096, None, 256, 768, (4096 + 5 * 768) * 128),
        (4096, 2, 512, 768, (2048 + 5 * 768) * 128 * 2),
        (512, None, 512, 512, (512 + 5 * 512) * 128),  # the window never exceeds the context
    ],
)
def test_sliding_window_layers_use_the_window(
    context: int, parallel: int | None, ubatch: int, swa_cells: int, kv_k: int
) -> None:
    p = plan(swa_model(**{"attention.sliding_window": 128}), context_size=context, parallel=parallel, ubatch=ubatch)
    assert p.swa_cells == swa_cells
    assert p.host["kv_k"] == p.host["kv_v"] == kv_k


@pytest.mark.parametrize(("parallel", "sequences"), [(None, 4), (1, 1), (2, 2), (8, 8)])
def test_recurrent_state_per_sequence(parallel: int | None, sequences: int) -> None:
    p = plan(hybrid(), parallel=parallel)
    assert p.host["recurrent_state"] == 6 * sequences * STATE_PER_SEQUENCE


# ---------------------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------------------


def layers_on(p, device: str) -> list[int]:
    return [i for i, d in enumerate(p.layer_devices[:-1]) if d == device]


def test_all_on_one_gpu() -> None:
    p = plan(moe(), Placement(gpu_count=1))
    assert p.layer_devices == ("gpu0",) * 5  # 4 layers and the output layer
    assert p.host.weights == TOKEN_EMBD  # the input layer always stays on the CPU
    gpu = p.device("gpu0")
    assert (gpu["output"], gpu["routed_expert"], gpu["kv_k"]) == (OUTPUT + OUTPUT_NORM, 4 * ROUTED, 4 * 4096 * 64)


@pytest.mark.parametrize(
    ("placement", "host_routed"),
    [
        (Placement(gpu_count=1), 0),
        (Placement(gpu_count=1, cpu_moe=True), 4 * ROUTED),
        (Placement(gpu_count=1, n_cpu_moe=2), 2 * ROUTED),  # layers 0 and 1
        (Placement(gpu_count=1, n_cpu_moe=9), 4 * ROUTED),
        (Placement(gpu_count=1, overrides=((r"blk\.3\.ffn_(up|down)_exps", "CPU"),)), 2 * 32 * 8 * 68),
        # The first matching rule wins: --cpu-moe comes before every --override-tensor.
        (Placement(gpu_count=1, cpu_moe=True, overrides=((r"blk\.0\.ffn_up_exps", "CUDA0"),)), 4 * ROUTED),
    ],
    ids=["none", "cpu-moe", "n-cpu-moe-2", "n-cpu-moe-9", "override", "cpu-moe-first"],
)
def test_routed_experts_on_the_host(placement: Placement, host_routed: int) -> None:
    p = plan(moe(), placement)
    assert p.host["routed_expert"] == host_routed
    assert p.device("gpu0")["routed_expert"] == 4 * ROUTED - host_routed
    assert p.host["attention"] == 0  # only the experts move


def test_n_cpu_moe_takes_the_first_layers() -> None:
    p = plan(moe(), Placement(gpu_count=1, n_cpu_moe=2))
    on_host = sorted(name for name, device in p.tensor_devices.items() if device == "host")
    assert on_host == [f"blk.{i}.ffn_{w}_exps.weight" for i in (0, 1) for w in ("down", "gate", "up")] + [
        "token_embd.weight"
    ]


def test_first_matching_override_wins() -> None:
    rules = parse_overrides([r"ffn_up_exps=CUDA1,_exps=CPU"])
    p = plan(moe(), Placement(gpu_count=2, overrides=rules))
    assert p.device("gpu1")["routed_expert"] == 4 * 32 * 8 * 68  # every ffn_up_exps
    assert p.host["routed_expert"] == 4 * (ROUTED - 32 * 8 * 68)
    assert p.device("gpu0")["routed_expert"] == 0


def test_no_kv_offload_keeps_kv_and_state_on_the_host() -> None:
    p = plan(hybrid(), Placement(gpu_count=1, no_kv_offload=True))
    assert (p.host["kv_k"], p.host["kv_v"], p.host["recurrent_state"]) == (2 * 4096 * 64, 2 * 4096 * 64, 6 * 4 * 5632)
    assert p.device("gpu0")["kv_k"] == p.device("gpu0")["recurrent_state"] == 0


@pytest.mark.parametrize(
    ("n_layer", "split", "gpu0", "gpu1"),
    [
        # Layer i (of n + 1, the output last) goes to the first GPU whose cumulative share exceeds i / (n + 1).
        (8, (1, 1), [0, 1, 2, 3, 4], [5, 6, 7, 8]),  # 0/9 .. 4/9 < 0.5
        (8, (3, 1), [0, 1, 2, 3, 4, 5, 6], [7, 8]),  # 6/9 < 0.75 <= 7/9
        (8, (), [0, 1, 2, 3, 4], [5, 6, 7, 8]),  # no split: equal shares
        (4, (1, 1), [0, 1, 2], [3, 4]),
        (4, (3, 1), [0, 1, 2, 3], [4]),  # the output layer on the last GPU
        (4, (0, 1), [], [0, 1, 2, 3, 4]),
        (7, (1, 1), [0, 1, 2, 3], [4, 5, 6, 7]),  # 4/8 == 0.5 goes to gpu1 (upper_bound)
    ],
)
def test_layers_across_two_gpus(n_layer: int, split: tuple[float, ...], gpu0: list[int], gpu1: list[int]) -> None:
    devices = layer_devices(n_layer, Placement(gpu_count=2, tensor_split=split))
    assert [i for i, d in enumerate(devices) if d == "gpu0"] == gpu0
    assert [i for i, d in enumerate(devices) if d == "gpu1"] == gpu1


def test_kv_follows_its_layer_across_gpus() -> None:
    p = plan(hybrid(), Placement(gpu_count=2, tensor_split=(1, 1)))  # layers 0-4 on gpu0, 5-7 on gpu1
    assert p.device("gpu0")["kv_k"] == p.device("gpu1")["kv_k"] == 4096 * 64  # layer 3, layer 7
    assert p.device("gpu0")["recurrent_state"] == 4 * 4 * 5632  # layers 0, 1, 2, 4
    assert p.device("gpu1")["recurrent_state"] == 2 * 4 * 5632  # layers 5, 6
    assert p.device("gpu1")["output"] == OUTPUT + OUTPUT_NORM


@pytest.mark.parametrize(
    ("n_gpu_layers", "expected"),
    [
        (99, ["gpu0"] * 5),
        (-1, ["gpu0"] * 5),
        (5, ["gpu0"] * 5),
        (4, ["host"] + ["gpu0"] * 4),  # the last 4 of 5 layers: layer 0 stays on the host
        (3, ["host"] * 2 + ["gpu0"] * 3),
        (1, ["host"] * 4 + ["gpu0"]),  # the output layer goes first
        (0, ["host"] * 5),
    ],
)
def test_n_gpu_layers_offloads_the_last_layers(n_gpu_layers: int, expected: list[str]) -> None:
    assert list(layer_devices(4, Placement(gpu_count=1, n_gpu_layers=n_gpu_layers))) == expected


def test_split_mode_none_uses_the_main_gpu_and_no_gpu_means_host() -> None:
    assert layer_devices(4, Placement(gpu_count=2, split_mode="none", main_gpu=1)) == ("gpu1",) * 5
    assert layer_devices(4, Placement(gpu_count=0, n_gpu_layers=99)) == ("host",) * 5


def test_split_mode_row_divides_matrices_but_not_experts() -> None:
    p = plan(moe(), Placement(gpu_count=2, split_mode="row", tensor_split=(1, 1)))
    assert p.device("gpu0")["attention"] == p.device("gpu1")["attention"] == 2 * ATTENTION
    assert p.device("gpu0")["routed_expert"] == 3 * ROUTED  # layers 0-2, as in layer mode
    assert p.device("gpu1")["routed_expert"] == ROUTED


@pytest.mark.parametrize(("n_gpu_layers", "output_on_gpu"), [(99, TOKEN_EMBD + OUTPUT_NORM), (0, OUTPUT_NORM)])
def test_tied_embeddings_are_copied_to_the_output_device(n_gpu_layers: int, output_on_gpu: int) -> None:
    p = plan(dense(tied=True), Placement(gpu_count=1, n_gpu_layers=n_gpu_layers))
    output = p.device("gpu0")["output"] + p.host["output"]
    assert output == output_on_gpu
    assert p.host["token_embd"] == TOKEN_EMBD


# ---------------------------------------------------------------------------------------------------------
# Estimates: compute buffers, runtime, prompt cache
# ---------------------------------------------------------------------------------------------------------


def test_compute_estimate_on_the_cpu() -> None:
    # Dense FFN phase 3 * 128 + 2 * 64 = 512 values per token (the widest), 512 tokens of f32; the f16 KQ
    # mask of 4096 cells x 512 tokens; the ubatch's embeddings; logits of 4 sequences (graph and output buffer).
    expected = 512 * 4 * 512 + 2 * 4096 * 512 + 4 * 512 * 64 + 2 * 4 * 256 * 4
    assert plan(dense()).host["compute"] == expected


def test_kq_scores_without_flash_attention() -> None:
    with_fa, without = plan(dense()), plan(dense(), flash_attn=False)
    # f32 mask instead of f16, plus 4096 x 512 x 2 heads of f32 scores
    assert without.host["compute"] - with_fa.host["compute"] == 2 * 4096 * 512 + 4 * 4096 * 512 * 2


# A tensor override that matches nothing: it moves no tensor, and (like any override) turns pipeline parallelism off.
NO_PIPELINE = (("^matches-nothing$", "CPU"),)


def test_op_offload_copies_one_layer_of_host_experts_to_the_first_gpu() -> None:
    base = plan(moe(), Placement(gpu_count=2, tensor_split=(1, 1), overrides=NO_PIPELINE))
    cpu_moe = plan(moe(), Placement(gpu_count=2, tensor_split=(1, 1), cpu_moe=True))
    assert cpu_moe.device("gpu0")["compute"] - base.device("gpu0")["compute"] == ROUTED
    assert cpu_moe.device("gpu1")["compute"] == base.device("gpu1")["compute"]


def test_pipeline_parallelism_keeps_copies_of_each_splits_inputs_on_every_device() -> None:
    # Several GPUs, every layer offloaded, layer split, KV offloaded, no overrides: ggml_backend_sched keeps four
    # copies of the inputs (measured on two rpc-server devices: 3 masks + 4 ubatches of hidden state).
    parallel = plan(dense(), Placement(gpu_count=2, tensor_split=(1, 1)))
    serial = plan(dense(), Placement(gpu_count=2, tensor_split=(1, 1), overrides=NO_PIPELINE))
    facts = dense()
    ubatch, cells = parallel.ubatch, parallel.kv_cells
    extra = 3 * 2 * ubatch * cells + 4 * 4 * ubatch * facts.n_embd  # f16 mask (flash attention), f32 hidden state
    for name in ("gpu0", "gpu1", "host"):
        assert parallel.device(name)["compute"] - serial.device(name)["compute"] == extra
    assert any("pipeline parallelism is on" in note for note in parallel.notes)
    assert not any("pipeline parallelism" in note for note in serial.notes)
    # One layer left on the CPU turns it off.
    partial = plan(dense(), Placement(gpu_count=2, tensor_split=(1, 1), n_gpu_layers=facts.block_count))
    assert not any("pipeline parallelism" in note for note in partial.notes)


def test_runtime_and_prompt_cache() -> None:
    p = plan(dense(), Placement(gpu_count=2))
    assert [g["runtime"] for g in p.gpus] == [GPU_RUNTIME_OVERHEAD] * 2
    assert p.host["runtime"] == HOST_RUNTIME_OVERHEAD + HOST_GPU_RUNTIME_OVERHEAD
    assert p.host["prompt_cache"] == 8192 * MiB  # llama-server's --cache-ram default
    assert plan(dense(), cache_ram_mib=0).host["prompt_cache"] == 0
    assert plan(dense()).host["runtime"] == HOST_RUNTIME_OVERHEAD


# ---------------------------------------------------------------------------------------------------------
# Fit and the table
# ---------------------------------------------------------------------------------------------------------


def test_fits_reports_each_short_device() -> None:
    p = plan(dense(), Placement(gpu_count=1), context_size=1 << 20)  # 1 GiB of KV alone: 4 x 2^20 x 64 x 2
    gpu_total = p.device("gpu0").total
    assert p.fits(profile(1, "1Gi", "64Gi")) == [Shortfall("gpu0", gpu_total, 1 << 30)]
    assert p.fits(profile(1, "4Gi", "64Gi")) == []
    # 8 GiB usable on the host: less than the 8 GiB prompt cache plus everything else
    assert p.fits(profile(1, "4Gi", "9Gi")) == [Shortfall("host", p.host.total, 8 << 30)]


def test_fits_counts_a_missing_gpu_as_no_memory() -> None:
    p = plan(dense(), Placement(gpu_count=2))
    assert [(s.device, s.usable) for s in p.fits(profile(1, "4Gi", "64Gi"))] == [("gpu1", 0)]


def test_shortfall_message() -> None:
    assert str(Shortfall("gpu0", 17 << 30, 15 << 30)) == "gpu0 needs 17.0 GiB, 15.0 GiB usable (2.0 GiB short)"


def test_table() -> None:
    p = plan(moe(), Placement(gpu_count=1, cpu_moe=True))
    lines = p.table().splitlines()
    assert lines[0].split() == ["gpu0", "host"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows)[-1] == "total"
    assert "routed_expert" in rows and "recurrent_state" not in rows
    assert rows["routed_expert"].split()[1] == "-"  # nothing on gpu0
    assert rows["prompt_cache"].split()[-2:] == ["8.00", "GiB"]
    assert rows["token_embd"].split()[-2:] == ["<0.1", "MiB"]  # 9 KiB is not nothing


# ---------------------------------------------------------------------------------------------------------
# What llama-server would refuse
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"cache_type_k": "q8_0"},
            "K cache type q8_0 with block size 32 does not divide n_embd_head_k=16",
        ),
        ({"cache_type_v": "q4_0", "flash_attn": False}, "quantized V cache (q4_0) requires flash attention"),
        ({"cache_type_k": "turbo3"}, "K cache type 'turbo3' is not a ggml type"),
        ({"parallel": 0}, "--parallel 0"),
    ],
)
def test_refused_cache_settings(kwargs: dict[str, Any], message: str) -> None:
    facts = dense(
        **{
            "attention.head_count": 4,
            "attention.head_count_kv": 2,
            "attention.key_length": 16,
            "attention.value_length": 16,
        }
    )
    with pytest.raises(PlacementError) as info:
        plan(facts, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        (Placement(gpu_count=2, overrides=(("exps", "CUDA2"),)), "the server has 2 GPU(s), so CUDA2 does not exist"),
        (Placement(gpu_count=1, overrides=(("exps", "GPU0"),)), "unknown buffer type 'GPU0'"),
        (Placement(gpu_count=1, overrides=(("exps(", "CPU"),)), "not a valid regex"),
        (Placement(gpu_count=2, split_mode="tensor"), "--split-mode tensor"),
        (Placement(gpu_count=1, n_cpu_moe=-1), "--n-cpu-moe -1 is negative"),
        (Placement(gpu_count=1, main_gpu=1), "--main-gpu 1"),
    ],
)
def test_refused_placements(placement: Placement, message: str) -> None:
    with pytest.raises(PlacementError) as info:
        plan(moe(), placement)
    assert message in str(info.value)


def test_parse_overrides() -> None:
    assert parse_overrides(["a=CPU,b=CUDA1", "c=d=CPU"]) == (("a", "CPU"), ("b", "CUDA1"), ("c", "d=CPU"))
    with pytest.raises(PlacementError, match="expected <tensor name regex>=<buffer type>"):
        parse_overrides(["exps"])
