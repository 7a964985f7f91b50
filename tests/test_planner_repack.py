"""Repacked host weights (issue 14) in the memory plan: which weights llama.cpp's CPU backend copies into its
extra buffer types (CPU_REPACK, AMX), and what that costs (planner.memory's docstring, "Repacked host weights").

The copy replaces the mapped pages as the weights' live copy, so a repacked weight is counted once, in its
class (``MemoryPlan.repacked`` says how much is repacked); category ``repack`` holds what comes on top: AMX's
layout overhead. A tied output matrix is repacked as a second copy of token_embd (category ``output``).
tests/e2e/test_planner_repack.py checks the same against the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import (
    DRAFT,
    REPACK,
    WEIGHT_CATEGORIES,
    DraftModel,
    Placement,
    plan_memory,
)
from llmkube_components.planner.types import GGUFMetadata, TensorInfo, ggml_type

E, VOCAB = 4096, 1024
CPU = Placement()  # no GPUs: everything in host memory
KiB = 1024


def model(*tensors: TensorInfo, tied: bool = False, experts: int = 0, embd_type: str = "Q4_0") -> ModelFacts:
    """A one-layer model with the given layer-0 tensors (without output.weight when ``tied``)."""
    fields: dict[str, Any] = {
        "context_length": 4096,
        "embedding_length": E,
        "block_count": 1,
        "attention.head_count": 32,
        "attention.head_count_kv": 8,
        "attention.key_length": 128,
        "attention.value_length": 128,
    }
    if experts:
        fields |= {"expert_count": experts, "expert_used_count": 2}
    io = [TensorInfo("token_embd.weight", embd_type, (E, VOCAB)), TensorInfo("output_norm.weight", "F32", (E,))]
    if not tied:
        io.append(TensorInfo("output.weight", "F16", (E, VOCAB + 3)))  # F16 with odd rows: never repacked
    keys = {f"llama.{k}": v for k, v in fields.items()}
    meta = GGUFMetadata("test://llama", {"general.architecture": "llama", **keys}, (*io, *tensors))
    return ModelFacts.from_metadata(meta)


def repacking(facts: ModelFacts, placement: Placement = CPU, **kwargs: Any) -> tuple[int, int]:
    """(bytes repacked, category repack) of the host."""
    plan = plan_memory(facts, placement, context_size=1024, **kwargs)
    return plan.repacked, plan.host[REPACK]


def nbytes(type_name: str, *shape: int) -> int:
    return TensorInfo("x", type_name, shape).nbytes


def amx(type_name: str, rows: int, row_length: int, extra: int) -> int:
    """AMX's layout overhead (amx/mmq.cpp get_row_size): ``extra`` bytes per block of every row."""
    return rows * (row_length // ggml_type(type_name).block_size) * extra


@pytest.mark.parametrize(
    ("tensor", "repacked", "overhead"),
    [
        # 2-D matrix products: CPU_REPACK (x86-64 AVX2 / ARM NEON) or AMX, which comes first where it applies.
        (TensorInfo("blk.0.attn_q.weight", "Q4_0", (E, E)), nbytes("Q4_0", E, E), 0),
        (TensorInfo("blk.0.attn_q.weight", "Q4_K", (E, E)), nbytes("Q4_K", E, E), amx("Q4_K", E, E, 4)),
        (TensorInfo("blk.0.attn_q.weight", "Q5_K", (E, E)), nbytes("Q5_K", E, E), amx("Q5_K", E, E, 4)),
        (TensorInfo("blk.0.attn_q.weight", "Q6_K", (E, E)), nbytes("Q6_K", E, E), 0),
        (TensorInfo("blk.0.attn_q.weight", "Q8_0", (E, E)), nbytes("Q8_0", E, E), amx("Q8_0", E, E, 4)),
        (TensorInfo("blk.0.attn_q.weight", "IQ4_XS", (E, E)), nbytes("IQ4_XS", E, E), amx("IQ4_XS", E, E, 2)),
        (TensorInfo("blk.0.attn_q.weight", "F16", (E, E)), nbytes("F16", E, E), 0),  # AMX only, unpacked
        (TensorInfo("blk.0.attn_q.weight", "MXFP4", (E, E)), nbytes("MXFP4", E, E), 0),  # CPU_REPACK only
        (TensorInfo("blk.0.attn_q.weight", "IQ4_NL", (E, E)), nbytes("IQ4_NL", E, E), 0),
        (TensorInfo("blk.0.attn_q.weight", "Q2_K", (E, E)), nbytes("Q2_K", E, E), 0),  # AVX-512
        # Rows (ne[1]) not a multiple of AMX's 32: CPU_REPACK at the tensor's size (ARM: Q8_0 with 4 | rows).
        (TensorInfo("blk.0.attn_q.weight", "Q8_0", (E, 4100)), nbytes("Q8_0", E, 4100), 0),
        (TensorInfo("blk.0.attn_q.weight", "Q4_K", (E, 4104)), nbytes("Q4_K", E, 4104), 0),
        # ... nor of CPU_REPACK's interleave: not repacked.
        (TensorInfo("blk.0.attn_q.weight", "Q8_0", (E, 4098)), 0, 0),
        (TensorInfo("blk.0.attn_q.weight", "F16", (E, 4104)), 0, 0),
        # Types no CPU repacks.
        (TensorInfo("blk.0.attn_q.weight", "Q5_0", (E, E)), 0, 0),
        (TensorInfo("blk.0.attn_q.weight", "Q3_K", (E, E)), 0, 0),
        (TensorInfo("blk.0.attn_q.weight", "BF16", (E, E)), 0, 0),
        (TensorInfo("blk.0.attn_q.weight", "F32", (E, E)), 0, 0),
        # Not matrix products: norms (GGML_OP_MUL), biases (GGML_OP_ADD).
        (TensorInfo("blk.0.attn_norm.weight", "F16", (E, 32)), 0, 0),
        (TensorInfo("blk.0.attn_q.bias", "F16", (E, 32)), 0, 0),
        # 3-D: only routed experts (GGML_OP_MUL_MAT_ID), in CPU_REPACK (AMX takes 2-D products only).
        (TensorInfo("blk.0.ffn_up_exps.weight", "Q4_K", (E, 512, 8)), nbytes("Q4_K", E, 512, 8), 0),
        (TensorInfo("blk.0.ffn_up_exps.weight", "Q8_0", (E, 512, 8)), nbytes("Q8_0", E, 512, 8), 0),
        (TensorInfo("blk.0.attn_k_b.weight", "Q8_0", (128, 512, 32)), 0, 0),  # MLA's batched product
    ],
    ids=lambda v: f"{v.name.split('.')[2]}-{v.type}-{'x'.join(map(str, v.shape))}" if isinstance(v, TensorInfo) else "",
)
def test_which_weights_are_repacked(tensor: TensorInfo, repacked: int, overhead: int) -> None:
    facts = model(tensor, experts=8 if "_exps" in tensor.name else 0)
    assert repacking(facts) == (repacked, overhead)


def test_a_repacked_weight_counts_once_in_its_class() -> None:
    attn = TensorInfo("blk.0.attn_q.weight", "Q4_0", (E, E))
    facts = model(attn)
    on, off = (plan_memory(facts, CPU, context_size=1024, repack=r) for r in (True, False))
    assert on.host["attention"] == off.host["attention"] == attn.nbytes
    assert on.host.total == off.host.total
    assert on.repacked == attn.nbytes and off.repacked == 0
    assert any("repacked for the CPU's matrix kernels" in n and "counted once" in n for n in on.notes)
    assert not any("repacked" in n for n in off.notes)


def test_amx_overhead_is_on_top_and_said() -> None:
    facts = model(TensorInfo("blk.0.attn_q.weight", "Q8_0", (E, E)))
    on, off = (plan_memory(facts, CPU, context_size=1024, repack=r) for r in (True, False))
    assert on.host.total - off.host.total == on.host[REPACK] == amx("Q8_0", E, E, 4) == 2 * 1024 * KiB
    assert any("AMX's layout needs 2.0 MiB more (category repack)" in n for n in on.notes)


@pytest.mark.parametrize(
    "placement",
    [Placement(gpu_count=1, n_gpu_layers=0), Placement(gpu_count=1, cpu_moe=True)],
    ids=["layers-on-host", "cpu-moe"],
)
def test_a_server_with_gpus_repacks_nothing(placement: Placement) -> None:
    # make_cpu_buft_list: the GPU's host buffer type (CUDA_Host) comes first, and with mmap create_tensor turns
    # it into plain mapped CPU memory: no extra buffer types, --cpu-moe experts included.
    facts = model(TensorInfo("blk.0.ffn_up_exps.weight", "Q4_K", (E, 512, 8)), experts=8)
    plan = plan_memory(facts, placement, context_size=1024)
    assert plan.host["routed_expert"] > 0
    assert (plan.repacked, plan.host[REPACK]) == (0, 0)


@pytest.mark.parametrize(("type_name", "overhead"), [("Q4_0", 0), ("Q8_0", amx("Q8_0", VOCAB, E, 4))])
def test_a_tied_output_matrix_is_repacked_as_a_second_copy(type_name: str, overhead: int) -> None:
    # TENSOR_DUPLICATED: token_embd stays mapped for row lookups (GGML_OP_GET_ROWS); the output matrix (a matrix
    # product) goes to an extra buffer type, so create_tensor makes a second tensor there.
    facts = model(tied=True, embd_type=type_name)
    embd = next(t for t in facts.tensors if t.name == "token_embd.weight")
    on, off = (plan_memory(facts, CPU, context_size=1024, repack=r) for r in (True, False))
    assert on.host["token_embd"] == off.host["token_embd"] == embd.nbytes
    assert on.host["output"] - off.host["output"] == embd.nbytes
    assert (on.repacked, on.host[REPACK]) == (embd.nbytes, overhead)
    assert sum(on.host[c] for c in WEIGHT_CATEGORIES) == facts.file_bytes + embd.nbytes + overhead


def test_a_draft_models_repacking_is_the_drafts() -> None:
    main = model(TensorInfo("blk.0.attn_q.weight", "Q4_0", (E, E)))
    draft = model(TensorInfo("blk.0.attn_q.weight", "Q8_0", (E, E)))
    plan = plan_memory(main, CPU, context_size=1024, draft=DraftModel(draft))
    alone = plan_memory(draft, CPU, context_size=1024)
    assert plan.repacked == nbytes("Q4_0", E, E) + alone.repacked
    assert plan.host[REPACK] == 0  # the draft's AMX overhead is part of its weights (category draft)
    assert plan.host[DRAFT] == draft.file_bytes + alone.host[REPACK]
