"""The memory plan of generated GGUF files, checked against byte counts worked out by hand from their dims.

Each model is written by testkit/gguf_files.py (F32 weights, so a weight is 4 B per value), read back with
``read_metadata`` and ``ModelFacts.from_metadata``, and planned with ``plan_memory``. The expectations below
are computed from the writer's dimensions alone, never from the planner, following llama.cpp's rules as
cited in llmkube_components/planner/memory.py (the tree vendored in llama-cpp-python 0.3.36):

- context (src/llama-context.cpp): ``n_ctx = pad256(ctx)``; with ``--parallel P`` (not unified) each of P
  streams has ``pad256(n_ctx / P)`` cells; llama-server's auto parallel is 4 sequences in one unified stream.
- KV bytes (src/llama-kv-cache.cpp): per attention layer, ``cells x streams`` rows of ``n_head_kv x head_dim``
  values for K and again for V (flash attention on, so V rows are the layer's own width); f16 is 2 B a
  value, q8_0 34 B per block of 32 values.
- sliding-window layers (src/llama-kv-cache-iswa.cpp):
  ``pad256(min(cells, n_swa * (unified ? n_seq : 1) + n_ubatch))`` cells per stream, n_ubatch 512.
- recurrent layers (llama_model::create_memory, src/llama-memory-recurrent.cpp): ``max(1, n_seq)`` cells
  of f32 state, ``(conv_kernel - 1) * conv_channels + state_size * inner_size`` values per layer.
- weights: token_embd stays on the CPU; every block and the output layer go to the one GPU with all layers
  offloaded; ``--cpu-moe`` moves ``ffn_{gate,up,down}_exps`` to the CPU; ``--no-kv-offload`` keeps the KV
  cache and recurrent state on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import (
    HOST,
    KV_K,
    KV_V,
    RECURRENT_STATE,
    WEIGHT_CATEGORIES,
    Placement,
    plan_memory,
)
from llmkube_components.planner.metadata import read_metadata
from testkit.gguf_files import write_dense, write_hybrid, write_moe, write_sliding_window
from tests.stacks import load_stack

F32 = 4  # bytes per F32 weight value
GPU0 = "gpu0"
ONE_GPU = Placement(gpu_count=1)  # --n-gpu-layers 99: every block and the output layer on gpu0
ONE_GPU_CPU_MOE = Placement(gpu_count=1, cpu_moe=True)
ONE_GPU_NO_KV = Placement(gpu_count=1, no_kv_offload=True)
ONE_GPU_CPU_MOE_NO_KV = Placement(gpu_count=1, cpu_moe=True, no_kv_offload=True)
CPU_ONLY = Placement(gpu_count=0)


def kv_row(values: int, cache_type: str) -> int:
    """Bytes of one cache row of ``values`` values: f16 2 B each, q8_0 34 B per block of 32."""
    if cache_type == "f16":
        return values * 2
    assert cache_type == "q8_0" and values % 32 == 0
    return values // 32 * 34


# ---------------------------------------------------------------------------------------------------------
# The models, by hand (the writers' default dims unless given; every tensor F32)
# ---------------------------------------------------------------------------------------------------------

# Shared by all: n_embd 64, head_dim 32, vocabulary 512. token_embd (64, 512) on the CPU; output.weight
# (64, 512) and output_norm (64,) in the output layer.
E, HD, VOCAB = 64, 32, 512
TOKEN_EMBD = E * VOCAB * F32  # 131072
OUTPUT = (E * VOCAB + E) * F32  # 131328

# Dense qwen3: 2 layers, 4 heads, 2 KV heads, n_ff 128. Per layer: attn_q (64, 128), attn_k/v (64, 64),
# attn_output (128, 64), attn_q_norm/k_norm (32,); attn_norm, ffn_norm (64,); ffn_gate/up (64, 128), ffn_down
# (128, 64).
DENSE = {"n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 128}
DENSE_ATTENTION = 2 * (E * HD * 4 + 2 * E * HD * 2 + HD * 4 * E + 2 * HD) * F32  # 2 * 24640 * 4 = 197120
DENSE_NORM = 2 * 2 * E * F32  # 1024
DENSE_FFN = 2 * 3 * E * 128 * F32  # 196608
DENSE_KV_VALUES = 2 * HD  # n_head_kv * head_dim per token and layer: 64

# MoE qwen3moe: 2 layers, 4 heads, 2 KV heads, 8 experts of n_ff_exp 32. Per layer: attention as the dense
# model's; attn_norm, ffn_norm; ffn_gate_inp (64, 8); ffn_gate/up_exps (64, 32, 8), ffn_down_exps (32, 64, 8).
MOE = {"n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_expert": 8, "n_ff_exp": 32}
MOE_ATTENTION = DENSE_ATTENTION
MOE_NORM = 2 * 2 * E * F32  # 1024
MOE_ROUTER = 2 * E * 8 * F32  # 4096
MOE_ROUTED = 2 * 3 * E * 32 * 8 * F32  # n_layer * 3 * n_embd * n_ff_exp * n_expert * 4 = 393216
MOE_KV_VALUES = 2 * HD  # 64

# MoE with a shared expert, qwen2moe: 2 layers, 2 heads (head_dim * n_head must be n_embd), 1 KV head,
# 8 experts of 32, shared expert n_ff_shexp 64. Per layer: attn_q (64, 64), attn_k/v (64, 32), attn_output
# (64, 64), no q/k norms; attn_norm, ffn_norm; router and routed experts as above; ffn_gate_inp_shexp (64,),
# ffn_gate/up_shexp (64, 64), ffn_down_shexp (64, 64).
SHARED = {"n_layer": 2, "n_head": 2, "n_head_kv": 1, "n_expert": 8, "n_ff_exp": 32, "shared_expert": True}
SHARED_ATTENTION = 2 * (E * HD * 2 + 2 * E * HD * 1 + HD * 2 * E) * F32  # 2 * 12288 * 4 = 98304
SHARED_NORM = 2 * 2 * E * F32
SHARED_ROUTER = 2 * E * 8 * F32
SHARED_ROUTED = 2 * 3 * E * 32 * 8 * F32  # 393216
SHARED_SHEXP = 2 * (E + 3 * E * 64) * F32  # 2 * 12352 * 4 = 98816
SHARED_KV_VALUES = 1 * HD  # 32: one q8_0 block

# Hybrid qwen35moe: 8 layers, full_attention_interval 4, so layers 3 and 7 ((i + 1) % 4 == 0) have attention
# and a KV cache, layers 0-2 and 4-6 are gated-delta-net layers with recurrent state. 4 heads, 2 KV heads;
# ssm conv_kernel 4, state_size 16, group_count 2, time_step_rank 4: key_dim 16 * 2 = 32, value_dim (inner)
# 16 * 4 = 64, conv channels 2 * 32 + 64 = 128.
HYBRID = {"n_layer": 8, "full_attention_interval": 4, "n_head": 4, "n_head_kv": 2, "n_expert": 8, "n_ff_exp": 32}
HYBRID_KV_LAYERS, HYBRID_RECURRENT_LAYERS = 2, 6
KEY_DIM, VALUE_DIM, CONV, DT, STATE = 16 * 2, 16 * 4, 4, 4, 16
CONV_CH = 2 * KEY_DIM + VALUE_DIM  # 128
# Attention layers: attn_q (64, 256) (query and gate), attn_k/v (64, 64), attn_output (128, 64), q/k norms (32,).
HYBRID_ATTENTION = (
    HYBRID_KV_LAYERS * (E * 2 * HD * 4 + 2 * E * HD * 2 + HD * 4 * E + 2 * HD) * F32
)  # 2 * 32832 * 4 = 262656
# Recurrent layers: attn_qkv (64, 128), attn_gate (64, 64), ssm_conv1d (4, 128), ssm_dt.bias (4,), ssm_a (4,),
# ssm_beta/ssm_alpha (64, 4), ssm_norm (16,), ssm_out (64, 64).
HYBRID_RECURRENT = (
    HYBRID_RECURRENT_LAYERS
    * (E * CONV_CH + E * VALUE_DIM + CONV * CONV_CH + DT + DT + 2 * E * DT + STATE + VALUE_DIM * E)
    * F32
)  # 6 * 17432 * 4 = 418368
HYBRID_NORM = 8 * 2 * E * F32  # attn_norm, post_attention_norm: 4096
HYBRID_ROUTER = 8 * E * 8 * F32  # 16384
HYBRID_ROUTED = 8 * 3 * E * 32 * 8 * F32  # 1572864
HYBRID_SHEXP = 8 * (E + 3 * E * 32) * F32  # ffn_gate_inp_shexp (64,), gate/up/down_shexp n_ff_shexp 32: 198656
HYBRID_KV_VALUES = 2 * HD  # 64
# Per recurrent layer and sequence: conv state (conv_kernel - 1) x conv channels, delta-net state
# state_size x inner_size, f32.
HYBRID_STATE = ((CONV - 1) * CONV_CH + STATE * VALUE_DIM) * F32  # (384 + 1024) * 4 = 5632

# Sliding window gemma3: 6 layers, window 128, pattern 6: layers 0-4 (il % 6 < 5) slide, layer 5 is global.
# 4 heads, 2 KV heads, n_ff 128. Per layer: attention as the dense model's; attn_norm, post_attention_norm,
# ffn_norm, post_ffw_norm; ffn_gate/up/down.
SWA = {"n_layer": 6, "sliding_window": 128, "sliding_window_pattern": 6, "n_head": 4, "n_head_kv": 2, "n_ff": 128}
SWA_LAYERS, GLOBAL_LAYERS, WINDOW = 5, 1, 128
SWA_ATTENTION = 6 * (E * HD * 4 + 2 * E * HD * 2 + HD * 4 * E + 2 * HD) * F32  # 591360
SWA_NORM = 6 * 4 * E * F32  # 6144
SWA_FFN = 6 * 3 * E * 128 * F32  # 589824
SWA_KV_VALUES = 2 * HD  # 64
UBATCH = 512  # min(n_ctx, --batch-size 2048, --ubatch-size 512) for every context here


def pad256(n: int) -> int:
    return -(-n // 256) * 256


def swa_cells(cells: int, window: int, n_seq: int, unified: bool) -> int:
    """src/llama-kv-cache-iswa.cpp: pad256(min(size_base, n_swa * (unified ? n_seq_max : 1) + n_ubatch))."""
    return pad256(min(cells, window * (n_seq if unified else 1) + UBATCH))


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    write: Callable[[Path], Path]
    placement: Placement
    context_size: int
    parallel: int | None
    cache_type: str  # K and V
    # device -> category -> bytes; every weight, KV and recurrent-state category not listed must be 0.
    expected: dict[str, dict[str, int]] = field(default_factory=dict)


def dense(p: Path) -> Path:
    return write_dense(p / "dense.gguf", **DENSE)


def moe(p: Path) -> Path:
    return write_moe(p / "moe.gguf", **MOE)


def moe_shared(p: Path) -> Path:
    return write_moe(p / "moe-shared.gguf", **SHARED)


def hybrid(p: Path) -> Path:
    return write_hybrid(p / "hybrid.gguf", **HYBRID)


def sliding(p: Path) -> Path:
    return write_sliding_window(p / "swa.gguf", **SWA)


def dense_weights() -> dict[str, int]:
    return {"attention": DENSE_ATTENTION, "norm": DENSE_NORM, "dense_ffn": DENSE_FFN, "output": OUTPUT}


def moe_weights(*, routed: bool) -> dict[str, int]:
    w = {"attention": MOE_ATTENTION, "norm": MOE_NORM, "router": MOE_ROUTER, "output": OUTPUT}
    return {**w, "routed_expert": MOE_ROUTED} if routed else w


def shared_weights(*, routed: bool) -> dict[str, int]:
    w = {
        "attention": SHARED_ATTENTION,
        "norm": SHARED_NORM,
        "router": SHARED_ROUTER,
        "shared_expert": SHARED_SHEXP,
        "output": OUTPUT,
    }
    return {**w, "routed_expert": SHARED_ROUTED} if routed else w


def hybrid_weights(*, routed: bool) -> dict[str, int]:
    w = {
        "attention": HYBRID_ATTENTION,
        "recurrent": HYBRID_RECURRENT,
        "norm": HYBRID_NORM,
        "router": HYBRID_ROUTER,
        "shared_expert": HYBRID_SHEXP,
        "output": OUTPUT,
    }
    return {**w, "routed_expert": HYBRID_ROUTED} if routed else w


def swa_weights() -> dict[str, int]:
    return {"attention": SWA_ATTENTION, "norm": SWA_NORM, "dense_ffn": SWA_FFN, "output": OUTPUT}


def kv(total_cells_per_layer: int, layers: int, values: int, cache_type: str) -> dict[str, int]:
    """K and V bytes: cells (x streams) x layers x one row of n_head_kv x head_dim values, for each."""
    n = total_cells_per_layer * layers * kv_row(values, cache_type)
    return {KV_K: n, KV_V: n}


def swa_kv(full_cells: int, window_cells: int, cache_type: str) -> dict[str, int]:
    """Global layers with full_cells, sliding layers with window_cells (both already times streams)."""
    n = (GLOBAL_LAYERS * full_cells + SWA_LAYERS * window_cells) * kv_row(SWA_KV_VALUES, cache_type)
    return {KV_K: n, KV_V: n}


CASES = [
    # --- dense --------------------------------------------------------------------------------------------
    pytest.param(
        # --parallel 1: one stream of pad256(4096 / 1) = 4096 cells; 2 layers x 64 values x 2 B.
        Case(
            write=dense,
            placement=ONE_GPU,
            context_size=4096,
            parallel=1,
            cache_type="f16",
            expected={
                GPU0: {**dense_weights(), **kv(4096, 2, DENSE_KV_VALUES, "f16")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="dense-gpu-f16",
    ),
    pytest.param(
        # --parallel 2: 2 streams of 2048 cells; q8_0 rows of 64 values are 2 blocks, 68 B.
        Case(
            write=dense,
            placement=ONE_GPU_NO_KV,
            context_size=4096,
            parallel=2,
            cache_type="q8_0",
            expected={
                GPU0: dense_weights(),
                HOST: {"token_embd": TOKEN_EMBD, **kv(2 * 2048, 2, DENSE_KV_VALUES, "q8_0")},
            },
        ),
        id="dense-gpu-no-kv-offload-q8_0",
    ),
    pytest.param(
        # No GPU, auto parallel: one unified stream of pad256(3000) = 3072 cells.
        Case(
            write=dense,
            placement=CPU_ONLY,
            context_size=3000,
            parallel=None,
            cache_type="f16",
            expected={HOST: {"token_embd": TOKEN_EMBD, **dense_weights(), **kv(3072, 2, DENSE_KV_VALUES, "f16")}},
        ),
        id="dense-cpu-auto-parallel",
    ),
    # --- MoE ----------------------------------------------------------------------------------------------
    pytest.param(
        Case(
            write=moe,
            placement=ONE_GPU,
            context_size=4096,
            parallel=1,
            cache_type="f16",
            expected={
                GPU0: {**moe_weights(routed=True), **kv(4096, 2, MOE_KV_VALUES, "f16")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="moe-gpu-f16",
    ),
    pytest.param(
        # --cpu-moe: the routed experts (and only they; the router stays) go to the CPU.
        Case(
            write=moe,
            placement=ONE_GPU_CPU_MOE,
            context_size=4096,
            parallel=1,
            cache_type="q8_0",
            expected={
                GPU0: {**moe_weights(routed=False), **kv(4096, 2, MOE_KV_VALUES, "q8_0")},
                HOST: {"token_embd": TOKEN_EMBD, "routed_expert": MOE_ROUTED},
            },
        ),
        id="moe-cpu-moe-q8_0",
    ),
    pytest.param(
        Case(
            write=moe,
            placement=ONE_GPU_CPU_MOE_NO_KV,
            context_size=8192,
            parallel=2,
            cache_type="f16",
            expected={
                GPU0: moe_weights(routed=False),
                HOST: {"token_embd": TOKEN_EMBD, "routed_expert": MOE_ROUTED, **kv(2 * 4096, 2, MOE_KV_VALUES, "f16")},
            },
        ),
        id="moe-cpu-moe-no-kv-offload-f16",
    ),
    # --- MoE with a shared expert ------------------------------------------------------------------------
    pytest.param(
        Case(
            write=moe_shared,
            placement=ONE_GPU,
            context_size=4096,
            parallel=1,
            cache_type="f16",
            expected={
                GPU0: {**shared_weights(routed=True), **kv(4096, 2, SHARED_KV_VALUES, "f16")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="moe-shared-gpu-f16",
    ),
    pytest.param(
        # --cpu-moe leaves ffn_*_shexp on the GPU (the regex wants _exps or _chexps); q8_0 rows of 32 values are
        # one 34 B block.
        Case(
            write=moe_shared,
            placement=ONE_GPU_CPU_MOE,
            context_size=4096,
            parallel=1,
            cache_type="q8_0",
            expected={
                GPU0: {**shared_weights(routed=False), **kv(4096, 2, SHARED_KV_VALUES, "q8_0")},
                HOST: {"token_embd": TOKEN_EMBD, "routed_expert": SHARED_ROUTED},
            },
        ),
        id="moe-shared-cpu-moe-q8_0",
    ),
    # --- hybrid -------------------------------------------------------------------------------------------
    pytest.param(
        # --parallel 2: KV in the 2 attention layers, 2 streams of 2048 cells; state in the 6 recurrent
        # layers for max(1, 2) = 2 sequences.
        Case(
            write=hybrid,
            placement=ONE_GPU,
            context_size=4096,
            parallel=2,
            cache_type="f16",
            expected={
                GPU0: {
                    **hybrid_weights(routed=True),
                    **kv(2 * 2048, HYBRID_KV_LAYERS, HYBRID_KV_VALUES, "f16"),
                    RECURRENT_STATE: HYBRID_RECURRENT_LAYERS * HYBRID_STATE * 2,
                },
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="hybrid-gpu-parallel-2-f16",
    ),
    pytest.param(
        # --parallel 3: 3 streams of pad256(4096 / 3 = 1365) = 1536 cells; 3 sequences of state; all on the CPU.
        Case(
            write=hybrid,
            placement=ONE_GPU_CPU_MOE_NO_KV,
            context_size=4096,
            parallel=3,
            cache_type="q8_0",
            expected={
                GPU0: hybrid_weights(routed=False),
                HOST: {
                    "token_embd": TOKEN_EMBD,
                    "routed_expert": HYBRID_ROUTED,
                    **kv(3 * 1536, HYBRID_KV_LAYERS, HYBRID_KV_VALUES, "q8_0"),
                    RECURRENT_STATE: HYBRID_RECURRENT_LAYERS * HYBRID_STATE * 3,
                },
            },
        ),
        id="hybrid-cpu-moe-no-kv-offload-parallel-3-q8_0",
    ),
    pytest.param(
        # Auto parallel: 4 sequences in one unified stream of 4096 cells; 4 sequences of state.
        Case(
            write=hybrid,
            placement=ONE_GPU,
            context_size=4096,
            parallel=None,
            cache_type="f16",
            expected={
                GPU0: {
                    **hybrid_weights(routed=True),
                    **kv(4096, HYBRID_KV_LAYERS, HYBRID_KV_VALUES, "f16"),
                    RECURRENT_STATE: HYBRID_RECURRENT_LAYERS * HYBRID_STATE * 4,
                },
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="hybrid-gpu-auto-parallel-f16",
    ),
    # --- sliding window -----------------------------------------------------------------------------------
    pytest.param(
        # --parallel 1: global layer 4096 cells; sliding layers pad256(min(4096, 128 * 1 + 512)) = 768.
        Case(
            write=sliding,
            placement=ONE_GPU,
            context_size=4096,
            parallel=1,
            cache_type="f16",
            expected={
                GPU0: {**swa_weights(), **swa_kv(4096, swa_cells(4096, WINDOW, 1, False), "f16")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="swa-gpu-f16",
    ),
    pytest.param(
        # Auto parallel (unified, 4 sequences): sliding layers pad256(min(4096, 128 * 4 + 512)) = 1024.
        Case(
            write=sliding,
            placement=ONE_GPU,
            context_size=4096,
            parallel=None,
            cache_type="q8_0",
            expected={
                GPU0: {**swa_weights(), **swa_kv(4096, swa_cells(4096, WINDOW, 4, True), "q8_0")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="swa-gpu-auto-parallel-q8_0",
    ),
    pytest.param(
        # --parallel 2 (not unified): 2 streams of 2048 cells; sliding 768 per stream (n_swa counted once).
        Case(
            write=sliding,
            placement=ONE_GPU_NO_KV,
            context_size=4096,
            parallel=2,
            cache_type="q8_0",
            expected={
                GPU0: swa_weights(),
                HOST: {"token_embd": TOKEN_EMBD, **swa_kv(2 * 2048, 2 * swa_cells(2048, WINDOW, 2, False), "q8_0")},
            },
        ),
        id="swa-no-kv-offload-parallel-2-q8_0",
    ),
    pytest.param(
        # A context below the window plus a ubatch: every layer gets the whole 512 cells.
        Case(
            write=sliding,
            placement=ONE_GPU,
            context_size=512,
            parallel=1,
            cache_type="f16",
            expected={
                GPU0: {**swa_weights(), **swa_kv(512, swa_cells(512, WINDOW, 1, False), "f16")},
                HOST: {"token_embd": TOKEN_EMBD},
            },
        ),
        id="swa-gpu-small-context",
    ),
]

CHECKED = (*WEIGHT_CATEGORIES, KV_K, KV_V, RECURRENT_STATE)


def test_hand_computed_constants() -> None:
    # The sliding-window cell counts the cases rely on, spelled out.
    assert swa_cells(4096, 128, 1, False) == 768
    assert swa_cells(4096, 128, 4, True) == 1024
    assert swa_cells(2048, 128, 2, False) == 768
    assert swa_cells(512, 128, 1, False) == 512
    assert kv_row(64, "q8_0") == 68 and kv_row(32, "q8_0") == 34 and kv_row(64, "f16") == 128
    assert HYBRID_STATE == 5632


@pytest.mark.parametrize("case", CASES)
def test_plan_of_generated_file(case: Case, tmp_path: Path) -> None:
    path = case.write(tmp_path)
    facts = ModelFacts.from_metadata(read_metadata(path))
    plan = plan_memory(
        facts,
        case.placement,
        context_size=case.context_size,
        parallel=case.parallel,
        cache_type_k=case.cache_type,
        cache_type_v=case.cache_type,
    )
    names = {d.name for d in plan.devices}
    assert names == {HOST, *(f"gpu{i}" for i in range(case.placement.gpu_count))}
    got = {d.name: {c: d[c] for c in CHECKED if d[c]} for d in plan.devices}
    want = {name: {c: n for c, n in case.expected.get(name, {}).items() if n} for name in names}
    assert got == want
    # Nothing lost or invented: the weights on all devices add up to the file's tensor data.
    assert sum(d.weights for d in plan.devices) == sum(t.nbytes for t in facts.tensors)


def test_load_stack_plans_the_kv_cache_of_a_local_file(tmp_path: Path) -> None:
    path = dense(tmp_path)
    stack = load_stack(
        {
            "hardware": "cpu-only",
            "allowHostPath": True,
            "models": {"m": {"source": str(path)}},
            "services": {"s": {"modelRef": "m", "contextSize": 4096}},
        }
    )
    memory = stack.plans["s"].chosen.memory
    # No --parallel: llama-server's 4 sequences in one unified stream of 4096 cells; f16 K in 2 layers of
    # 2 KV heads x 32 values: 4096 * 2 * 64 * 2 B = 1 MiB.
    assert memory.host[KV_K] == 4096 * 2 * DENSE_KV_VALUES * 2 == 1024 * 1024
    assert memory.host[KV_V] == 4096 * 2 * DENSE_KV_VALUES * 2
