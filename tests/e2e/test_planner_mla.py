"""Multi-head latent attention (issue 14) on the real CPU llama-server: the latent K-only cache and the cache
types it accepts, against the plan.

A small deepseek2 model written here (the tensors ``load_arch_tensors`` in src/models/deepseek2.cpp creates for
an MLA conversion: attn_q_a/q_b, attn_kv_a_mqa, the split attn_k_b/attn_v_b, dense feed-forward layers), with
``key_length`` = kv_lora_rank + rope and ``value_length`` = kv_lora_rank as the converter writes them. The server
logs its cache (``llama_kv_cache: ... K (f16): x MiB, V (f16): 0.00 MiB``) and refuses what the plan refuses:
different K and V cache types, and a quantized type whose block does not divide a latent head size.

Missing server: a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkube_components.planner.memory import KV_K, KV_V, WEIGHT_CATEGORIES, Placement, PlacementError, plan_memory
from testkit import gguf_files
from testkit.accuracy import TARGETS, Case, facts_of, reported, server_args
from testkit.gguf_files import F32, ModelFile
from testkit.llama_server import LlamaServer, ServerFailed, free_port, require_server

pytestmark = pytest.mark.e2e

SERVER = require_server()
MiB = 1024 * 1024
PRINTED = 0.005  # llama.cpp prints MiB with two decimals


def mla_model(
    *, n_layer: int = 2, n_embd: int = 256, n_head: int = 4, q_lora_rank: int = 64, kv_lora_rank: int = 96,
    rope: int = 32, nope: int = 32, v_head: int = 32, n_ff: int = 512, vocab: int = 1024,
) -> ModelFile:  # fmt: skip
    """A deepseek2 model with MLA: every layer dense (leading_dense_block_count = n_layer), no experts."""
    tokenizer = gguf_files.dense_model(vocab=vocab)  # the gpt2 tokenizer of the other test models
    m = ModelFile("deepseek2", kv={k: v for k, v in tokenizer.kv.items() if k.startswith("tokenizer.")})
    for key, value in {
        "general.name": "tiny-deepseek2",
        "general.file_type": 1,
        ".context_length": 8192,
        ".embedding_length": n_embd,
        ".block_count": n_layer,
        ".feed_forward_length": n_ff,
        ".leading_dense_block_count": n_layer,
        ".expert_feed_forward_length": n_ff,
        ".expert_shared_count": 1,
        ".attention.head_count": n_head,
        ".attention.head_count_kv": 1,
        ".attention.key_length": kv_lora_rank + rope,
        ".attention.value_length": kv_lora_rank,
        ".attention.key_length_mla": nope + rope,
        ".attention.value_length_mla": v_head,
        ".attention.q_lora_rank": q_lora_rank,
        ".attention.kv_lora_rank": kv_lora_rank,
        ".attention.layer_norm_rms_epsilon": 1e-6,
        ".rope.dimension_count": rope,
        ".rope.freq_base": 10000.0,
    }.items():
        m.set(key, value)
    m.add("token_embd.weight", n_embd, vocab)
    m.add("output_norm.weight", n_embd, kind=F32)
    m.add("output.weight", n_embd, vocab)
    for i in range(n_layer):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        m.add(f"blk.{i}.attn_q_a_norm.weight", q_lora_rank, kind=F32)
        m.add(f"blk.{i}.attn_kv_a_norm.weight", kv_lora_rank, kind=F32)
        m.add(f"blk.{i}.attn_q_a.weight", n_embd, q_lora_rank)
        m.add(f"blk.{i}.attn_q_b.weight", q_lora_rank, n_head * (nope + rope))
        m.add(f"blk.{i}.attn_kv_a_mqa.weight", n_embd, kv_lora_rank + rope)
        m.add(f"blk.{i}.attn_k_b.weight", nope, kv_lora_rank, n_head)
        m.add(f"blk.{i}.attn_v_b.weight", kv_lora_rank, v_head, n_head)
        m.add(f"blk.{i}.attn_output.weight", n_head * v_head, n_embd)
        m.add(f"blk.{i}.ffn_norm.weight", n_embd, kind=F32)
        m.add(f"blk.{i}.ffn_gate.weight", n_embd, n_ff)
        m.add(f"blk.{i}.ffn_down.weight", n_ff, n_embd)
        m.add(f"blk.{i}.ffn_up.weight", n_embd, n_ff)
    return m


def write(folder: Path, name: str, **dims: int) -> Path:
    return gguf_files.write_model(folder / f"{name}.gguf", mla_model(**dims), weight_type="F16")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("gguf"), "mla")  # K 96 + 32 = 128, V 96: q8_0 and q4_0 divide both


def run(model: Path, log: Path, cache_k: str, cache_v: str, *extra: str) -> dict[str, float]:
    args = server_args(model, Case("mla", cache_k, 4096, None), free_port()) + list(extra)
    args[args.index("--cache-type-v") + 1] = cache_v
    with LlamaServer(SERVER, args, log) as srv:
        status, body = srv.post("/completion", {"prompt": "hello", "n_predict": 4})
        assert status == 200, body
    return reported(srv.log())


def plan(model: Path, cache_k: str, cache_v: str, *, flash_attn: bool = True) -> dict[str, float]:
    p = plan_memory(
        facts_of(model), Placement(), context_size=4096, cache_type_k=cache_k, cache_type_v=cache_v,
        flash_attn=flash_attn, cache_ram_mib=0, repack=False,
    )  # fmt: skip
    return {
        "weights": sum(p.host[c] for c in WEIGHT_CATEGORIES) / MiB,
        "K": p.host[KV_K] / MiB,
        "V": p.host[KV_V] / MiB,
    }


def close(want: float, got: float) -> bool:
    return abs(want - got) <= max(TARGETS["K"] * got, PRINTED)


@pytest.mark.parametrize(
    ("cache_type", "extra"), [("f16", ()), ("q8_0", ()), ("q4_0", ()), ("f16", ("--flash-attn", "off"))]
)
def test_the_latent_cache_is_k_only_and_sized_as_planned(
    cache_type: str, extra: tuple[str, ...], model: Path, tmp_path: Path
) -> None:
    got = run(model, tmp_path / "server.log", cache_type, cache_type, "--no-repack", *extra)
    want = plan(model, cache_type, cache_type, flash_attn=not extra)
    assert got["V"] == 0 and want["V"] == 0
    assert close(want["K"], got["K"]), (want, got)
    assert close(want["weights"], got["weights"]), (want, got)


def refused(model: Path, log: Path, cache_k: str, cache_v: str) -> str:
    with pytest.raises(ServerFailed):
        run(model, log, cache_k, cache_v)
    return log.read_text(errors="replace")


def test_different_k_and_v_types_are_refused_by_both(model: Path, tmp_path: Path) -> None:
    log = refused(model, tmp_path / "server.log", "q8_0", "f16")
    assert "model does not support different K (q8_0) and V (f16) cache types" in log
    with pytest.raises(PlacementError, match=r"--cache-type-k q8_0 with --cache-type-v f16: .* multi-head latent"):
        plan(model, "q8_0", "f16")


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ({"kv_lora_rank": 64, "rope": 16}, "K cache type q8_0 with block size 32 does not divide n_embd_head_k=80"),
        ({"kv_lora_rank": 48, "rope": 16}, "V cache type q8_0 with block size 32 does not divide n_embd_head_v=48"),
    ],
    ids=["key-length-80", "value-length-48"],
)
def test_a_block_that_does_not_divide_a_latent_head_is_refused_by_both(
    dims: dict[str, int], message: str, tmp_path: Path
) -> None:
    model = write(tmp_path, "odd", **dims)
    assert message in refused(model, tmp_path / "server.log", "q8_0", "q8_0")
    with pytest.raises(PlacementError, match=message):
        plan(model, "q8_0", "q8_0")
