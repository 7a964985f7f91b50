"""The model catalog: entries, recognition of file names, synthesized GGUF metadata, and its sizes.

Names and keys are checked against the gguf package (which follows llama.cpp's src/llama-arch.cpp), sizes
against published GGUF files, and parameter counts against what the models' publishers state.
"""

from __future__ import annotations

import inspect
from importlib import resources

import gguf
import pytest

from llmkube_components.planner import catalog
from llmkube_components.planner.catalog import (
    SCHEMES,
    CatalogEntry,
    CatalogError,
    catalog_entries,
    catalog_metadata,
    quantization_scheme,
    recognise,
    recognise_quantization,
)
from llmkube_components.planner.types import GGUFMetadata

ENTRIES = sorted(catalog_entries())
MOE_ENTRIES = [n for n in ENTRIES if catalog_entries()[n].parameters.active_billions is not None]


def _tensors(meta: GGUFMetadata) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.name: (t.type, t.shape) for t in meta.tensors}


def _weight_bytes(meta: GGUFMetadata) -> int:
    return sum(t.nbytes for t in meta.tensors)


# ---------------------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------------------


def test_catalog_has_the_entries_the_planner_falls_back_to() -> None:
    assert set(ENTRIES) >= {
        "Qwen3-30B-A3B",
        "Qwen3-Coder-30B-A3B",
        "Qwen3.5-27B",
        "Qwen3.6-35B-A3B",
        "gpt-oss-20b",
        "gpt-oss-120b",
        "Llama-3.1-8B",
    }


def test_every_yaml_file_is_an_entry_named_after_it() -> None:
    folder = resources.files(catalog.__package__).joinpath(catalog.CATALOG_DIR)
    files = sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))
    assert files == ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_loads_as_catalog_metadata(name: str) -> None:
    entry = catalog_entries()[name]
    meta = catalog_metadata(name)
    assert meta.architecture == entry.architecture
    assert meta.fields["general.name"] == name
    assert meta.source == f"catalog:{name}"
    assert meta.notes[0].startswith(f"catalog estimate: {name} at {entry.default_quantization}")
    # block_count counts the multi-token-prediction blocks too (llama.cpp's n_layer_all).
    assert meta.arch("block_count") == entry.config.num_hidden_layers + (entry.config.mtp_num_hidden_layers or 0)
    assert meta.arch("embedding_length") == entry.config.hidden_size
    assert entry.sources, "every entry says where its figures come from"
    names = [t.name for t in meta.tensors]
    assert len(names) == len(set(names)), "no tensor twice"


def test_catalog_entries_returns_a_fresh_dict() -> None:
    entries = catalog_entries()
    entries.clear()
    assert catalog_entries()


def test_an_entry_missing_what_its_architecture_needs_is_rejected() -> None:
    data = catalog_entries()["Qwen3.6-35B-A3B"].model_dump(by_alias=True)
    del data["config"]["linear_num_value_heads"]
    with pytest.raises(ValueError, match="architecture qwen35moe needs config linear_num_value_heads"):
        CatalogEntry.model_validate(data)


def test_an_entry_with_an_unknown_config_key_is_rejected() -> None:
    data = catalog_entries()["Llama-3.1-8B"].model_dump(by_alias=True)
    data["config"]["num_hidden_layer"] = 32
    with pytest.raises(ValueError, match="num_hidden_layer"):
        CatalogEntry.model_validate(data)


# ---------------------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "entry", "quantization"),
    [
        ("Qwen3.6-35B-A3B-Q4_K_M.gguf", "Qwen3.6-35B-A3B", "Q4_K_M"),
        ("Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf", "Qwen3-Coder-30B-A3B", "UD-Q4_K_XL"),
        ("gpt-oss-20b-mxfp4.gguf", "gpt-oss-20b", "MXFP4"),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama-3.1-8B", "Q4_K_M"),
        ("Qwen3-30B-A3B-Q4_K_M.gguf", "Qwen3-30B-A3B", "Q4_K_M"),
        ("qwen3-30b-a3b-instruct-2507-q6_k.gguf", "Qwen3-30B-A3B", "Q6_K"),
        (
            "https://huggingface.co/unsloth/Qwen3-30B-A3B-GGUF/resolve/main/Qwen3-30B-A3B-Q8_0.gguf",
            "Qwen3-30B-A3B",
            "Q8_0",
        ),
        ("hf://unsloth/Qwen3.6-35B-A3B-GGUF/BF16/Qwen3.6-35B-A3B-BF16-00001-of-00002.gguf", "Qwen3.6-35B-A3B", "BF16"),
        ("ggml-org/gpt-oss-120b-GGUF/gpt-oss-120b-mxfp4-00001-of-00003.gguf", "gpt-oss-120b", "MXFP4"),
        ("gpt-oss-120b-F16.gguf", "gpt-oss-120b", "F16"),
        ("openai_gpt-oss-20b-Q4_K_M.gguf", "gpt-oss-20b", "Q4_K_M"),
        ("Qwen3.5-27B-IQ4_XS.gguf", "Qwen3.5-27B", "IQ4_XS"),
        ("Qwen3_5-27B-Q5_K_M.gguf", "Qwen3.5-27B", "Q5_K_M"),
        ("llama3.1:8b", "Llama-3.1-8B", None),
        # The most specific spelling wins: the coder file in a folder named after the base model.
        ("models/qwen3-30b-a3b/Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "Qwen3-Coder-30B-A3B", "Q4_K_M"),
        # Not in the catalog: a neighbour's name must not be mistaken for an entry.
        ("Qwen3-32B-Q4_K_M.gguf", None, "Q4_K_M"),
        ("Qwen3.6-27B-Q4_K_M.gguf", None, "Q4_K_M"),
        ("Mistral-7B-Instruct-v0.3.Q8_0.gguf", None, "Q8_0"),
        ("model.gguf", None, None),
    ],
)
def test_recognise_entry_and_quantization(source: str, entry: str | None, quantization: str | None) -> None:
    assert recognise(source) == entry
    assert recognise_quantization(source) == quantization


@pytest.mark.parametrize(
    ("label", "scheme"),
    [
        ("Q4_K_M", "Q4_K_M"),
        ("q4_k_m", "Q4_K_M"),
        ("Q4_K", "Q4_K_M"),
        ("UD-Q4_K_XL", "Q4_K_M"),
        ("Q4_K_L", "Q4_K_M"),
        ("UD-Q5_K_XL", "Q5_K_M"),
        ("Q6_K_L", "Q6_K"),
        ("UD-Q8_K_XL", "Q8_0"),
        ("MXFP4_MOE", "MXFP4"),
        ("mxfp4", "MXFP4"),
        ("bf16", "BF16"),
        ("IQ4_XS", "IQ4_XS"),
    ],
)
def test_quantization_labels_map_to_schemes(label: str, scheme: str) -> None:
    assert quantization_scheme(label).name == scheme


def test_a_dynamic_label_is_sized_as_its_base_scheme_and_says_so() -> None:
    ud = catalog_metadata("Qwen3-Coder-30B-A3B", "UD-Q4_K_XL")
    base = catalog_metadata("Qwen3-Coder-30B-A3B", "Q4_K_M")
    assert ud.tensors == base.tensors
    assert "catalog estimate: quantization UD-Q4_K_XL is sized as Q4_K_M" in ud.notes


def test_unknown_entry_is_an_error_with_a_suggestion_and_the_known_names() -> None:
    with pytest.raises(CatalogError) as info:
        catalog_metadata("Qwen3-30B-A3")
    message = str(info.value)
    assert message.startswith("'Qwen3-30B-A3' is not in the model catalog; did you mean Qwen3-30B-A3B")
    assert "known: " in message
    assert all(name in message for name in ENTRIES)


def test_unknown_quantization_is_an_error_listing_the_schemes() -> None:
    with pytest.raises(CatalogError) as info:
        catalog_metadata("Llama-3.1-8B", "IQ2_XXS")
    message = str(info.value)
    assert message.startswith("quantization 'IQ2_XXS' has no size rules in the model catalog;")
    assert all(name in message for name in SCHEMES)


# ---------------------------------------------------------------------------------------------------------
# Names, shapes and key-values as llama.cpp has them
# ---------------------------------------------------------------------------------------------------------

ARCH_IN_GGUF = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE,
    "qwen35": gguf.MODEL_ARCH.QWEN35,
    "qwen35moe": gguf.MODEL_ARCH.QWEN35MOE,
    "gpt-oss": gguf.MODEL_ARCH.GPT_OSS,
}


@pytest.mark.parametrize("name", ENTRIES)
def test_tensor_names_are_those_of_the_architecture(name: str) -> None:
    meta = catalog_metadata(name)
    arch = ARCH_IN_GGUF[meta.architecture]
    assert gguf.MODEL_ARCH_NAMES[arch] == meta.architecture
    n_layer = meta.arch("block_count")
    kinds = set(gguf.MODEL_TENSORS[arch])
    if meta.architecture in ("qwen35", "qwen35moe"):
        # The pinned tree's gguf-py lists the nextn tensors for QWEN35/QWEN35MOE; the gguf package predates them.
        kinds |= {t for t in gguf.MODEL_TENSOR if t.name.startswith("NEXTN_")}
    allowed = {gguf.TENSOR_NAMES[t].format(bid=i) for t in kinds for i in range(n_layer)}
    for t in meta.tensors:
        base = t.name.removesuffix(".weight").removesuffix(".bias")
        assert base in allowed, f"{t.name} is not a {meta.architecture} tensor"


def _gguf_keys() -> set[str]:
    keys: set[str] = set()
    for group in vars(gguf.Keys).values():
        if inspect.isclass(group):
            keys |= {v for v in vars(group).values() if isinstance(v, str)}
    return keys


@pytest.mark.parametrize("name", ENTRIES)
def test_key_names_are_those_llama_cpp_reads(name: str) -> None:
    meta = catalog_metadata(name)
    known = {k.replace("{arch}", meta.architecture) for k in _gguf_keys()}
    assert set(meta.fields) <= known, set(meta.fields) - known


@pytest.mark.parametrize(
    ("name", "tensor", "shape"),
    [
        ("Qwen3-30B-A3B", "token_embd.weight", (2048, 151936)),
        ("Qwen3-30B-A3B", "output.weight", (2048, 151936)),
        ("Qwen3-30B-A3B", "blk.47.attn_q.weight", (2048, 4096)),
        ("Qwen3-30B-A3B", "blk.0.attn_k.weight", (2048, 512)),
        ("Qwen3-30B-A3B", "blk.0.attn_output.weight", (4096, 2048)),
        ("Qwen3-30B-A3B", "blk.0.attn_k_norm.weight", (128,)),
        ("Qwen3-30B-A3B", "blk.0.ffn_gate_inp.weight", (2048, 128)),
        ("Qwen3-30B-A3B", "blk.0.ffn_gate_exps.weight", (2048, 768, 128)),
        ("Qwen3-30B-A3B", "blk.0.ffn_down_exps.weight", (768, 2048, 128)),
        # qwen35moe: layer 3 has gated attention (query + gate rows), layers 0-2 Gated DeltaNet.
        ("Qwen3.6-35B-A3B", "blk.3.attn_q.weight", (2048, 2 * 16 * 256)),
        ("Qwen3.6-35B-A3B", "blk.3.attn_k.weight", (2048, 2 * 256)),
        ("Qwen3.6-35B-A3B", "blk.3.attn_output.weight", (16 * 256, 2048)),
        ("Qwen3.6-35B-A3B", "blk.0.attn_qkv.weight", (2048, 2 * 16 * 128 + 32 * 128)),
        ("Qwen3.6-35B-A3B", "blk.0.attn_gate.weight", (2048, 32 * 128)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_conv1d.weight", (4, 2 * 16 * 128 + 32 * 128)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_a", (32,)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_dt.bias", (32,)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_alpha.weight", (2048, 32)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_norm.weight", (128,)),
        ("Qwen3.6-35B-A3B", "blk.0.ssm_out.weight", (32 * 128, 2048)),
        ("Qwen3.6-35B-A3B", "blk.39.ffn_up_exps.weight", (2048, 512, 256)),
        ("Qwen3.6-35B-A3B", "blk.0.ffn_gate_inp_shexp.weight", (2048,)),
        ("Qwen3.6-35B-A3B", "blk.0.ffn_down_shexp.weight", (512, 2048)),
        ("Qwen3.5-27B", "blk.63.attn_q.weight", (5120, 2 * 24 * 256)),
        ("Qwen3.5-27B", "blk.0.attn_qkv.weight", (5120, 2 * 16 * 128 + 48 * 128)),
        ("Qwen3.5-27B", "blk.0.ffn_down.weight", (17408, 5120)),
        ("gpt-oss-20b", "blk.0.attn_q.weight", (2880, 64 * 64)),
        ("gpt-oss-20b", "blk.0.attn_q.bias", (64 * 64,)),
        ("gpt-oss-20b", "blk.0.attn_sinks.weight", (64,)),
        ("gpt-oss-20b", "blk.0.post_attention_norm.weight", (2880,)),
        ("gpt-oss-20b", "blk.23.ffn_gate_exps.weight", (2880, 2880, 32)),
        ("gpt-oss-20b", "blk.0.ffn_down_exps.bias", (2880, 32)),
        ("gpt-oss-120b", "blk.35.ffn_down_exps.weight", (2880, 2880, 128)),
        ("Llama-3.1-8B", "rope_freqs.weight", (64,)),
        ("Llama-3.1-8B", "blk.0.attn_k.weight", (4096, 1024)),
        ("Llama-3.1-8B", "blk.31.ffn_down.weight", (14336, 4096)),
    ],
)
def test_tensor_shapes_in_ggml_order(name: str, tensor: str, shape: tuple[int, ...]) -> None:
    assert _tensors(catalog_metadata(name))[tensor][1] == shape


def test_hybrid_layers_have_either_attention_or_gated_deltanet() -> None:
    tensors = _tensors(catalog_metadata("Qwen3.6-35B-A3B"))
    attention = [i for i in range(40) if f"blk.{i}.attn_q.weight" in tensors]
    deltanet = [i for i in range(40) if f"blk.{i}.attn_qkv.weight" in tensors]
    assert attention == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    assert sorted(attention + deltanet) == list(range(40))
    assert "blk.0.attn_k.weight" not in tensors
    assert "blk.3.ssm_conv1d.weight" not in tensors


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("Qwen3.6-35B-A3B", "qwen35moe.full_attention_interval", 4),
        ("Qwen3.6-35B-A3B", "qwen35moe.attention.head_count_kv", 2),
        ("Qwen3.6-35B-A3B", "qwen35moe.attention.key_length", 256),
        ("Qwen3.6-35B-A3B", "qwen35moe.expert_shared_feed_forward_length", 512),
        ("Qwen3.6-35B-A3B", "qwen35moe.ssm.conv_kernel", 4),
        ("Qwen3.6-35B-A3B", "qwen35moe.ssm.state_size", 128),
        ("Qwen3.6-35B-A3B", "qwen35moe.ssm.group_count", 16),
        ("Qwen3.6-35B-A3B", "qwen35moe.ssm.time_step_rank", 32),
        ("Qwen3.6-35B-A3B", "qwen35moe.ssm.inner_size", 4096),
        ("Qwen3.6-35B-A3B", "qwen35moe.rope.dimension_count", 64),
        ("Qwen3.6-35B-A3B", "qwen35moe.rope.dimension_sections", [11, 11, 10, 0]),
        ("Qwen3.6-35B-A3B", "qwen35moe.context_length", 262144),
        ("Qwen3.5-27B", "qwen35.ssm.time_step_rank", 48),
        ("Qwen3.5-27B", "qwen35.feed_forward_length", 17408),
        ("Qwen3-30B-A3B", "qwen3moe.expert_count", 128),
        ("Qwen3-30B-A3B", "qwen3moe.expert_used_count", 8),
        ("Qwen3-30B-A3B", "qwen3moe.expert_feed_forward_length", 768),
        ("Qwen3-30B-A3B", "qwen3moe.context_length", 40960),
        ("Qwen3-Coder-30B-A3B", "qwen3moe.context_length", 262144),
        ("gpt-oss-20b", "gpt-oss.attention.sliding_window", 128),
        ("gpt-oss-20b", "gpt-oss.expert_used_count", 4),
        ("gpt-oss-20b", "gpt-oss.rope.scaling.type", "yarn"),
        ("gpt-oss-20b", "gpt-oss.rope.scaling.original_context_length", 4096),
        ("gpt-oss-120b", "gpt-oss.expert_count", 128),
        ("Llama-3.1-8B", "llama.attention.head_count_kv", 8),
        ("Llama-3.1-8B", "llama.rope.dimension_count", 128),
        ("Llama-3.1-8B", "tokenizer.ggml.tokens", 128256),
    ],
)
def test_key_values(name: str, key: str, value: object) -> None:
    assert catalog_metadata(name).fields[key] == value


# ---------------------------------------------------------------------------------------------------------
# Tensor types per quantization label
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quantization", "tensor", "type_"),
    [
        # Q4_K_M: Q6_K on the "more bits" layers of attn_v and ffn_down (48 layers: 0-5, 8, 11, ..., 42-47).
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.0.attn_v.weight", "Q6_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.6.attn_v.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.8.attn_v.weight", "Q6_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.8.ffn_down_exps.weight", "Q6_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.9.ffn_down_exps.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.9.ffn_gate_exps.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.9.attn_k.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "token_embd.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "output.weight", "Q6_K"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.0.ffn_gate_inp.weight", "F32"),
        ("Qwen3-30B-A3B", "Q4_K_M", "blk.0.attn_norm.weight", "F32"),
        ("Qwen3-30B-A3B", "Q8_0", "output.weight", "Q8_0"),
        ("Qwen3-30B-A3B", "Q4_K_S", "blk.3.attn_v.weight", "Q5_K"),
        ("Qwen3-30B-A3B", "Q4_K_S", "blk.4.attn_v.weight", "Q4_K"),
        ("Qwen3-30B-A3B", "MXFP4", "blk.0.ffn_up_exps.weight", "MXFP4"),
        ("Qwen3-30B-A3B", "MXFP4", "blk.0.attn_q.weight", "Q8_0"),
        ("Qwen3-30B-A3B", "MXFP4", "token_embd.weight", "Q8_0"),
        ("Qwen3-30B-A3B", "BF16", "blk.0.ffn_up_exps.weight", "BF16"),
        ("Qwen3-30B-A3B", "BF16", "blk.0.attn_norm.weight", "F32"),
        # Gated DeltaNet: attn_qkv counts as attn_v; conv1d and routers stay F32.
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.0.attn_qkv.weight", "Q6_K"),
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.5.attn_qkv.weight", "Q4_K"),
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.0.ffn_down_shexp.weight", "Q6_K"),
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.0.ssm_out.weight", "Q4_K"),
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.0.ssm_conv1d.weight", "F32"),
        ("Qwen3.6-35B-A3B", "Q4_K_M", "blk.0.ffn_gate_inp_shexp.weight", "F32"),
        # gpt-oss: experts stay MXFP4 under every label; 2880-wide rows fall back from the 256-blocks.
        ("gpt-oss-20b", "MXFP4", "blk.0.ffn_down_exps.weight", "MXFP4"),
        ("gpt-oss-20b", "MXFP4", "blk.0.attn_q.weight", "Q8_0"),
        ("gpt-oss-20b", "MXFP4", "output.weight", "Q8_0"),
        ("gpt-oss-20b", "F16", "blk.0.ffn_down_exps.weight", "MXFP4"),
        ("gpt-oss-20b", "F16", "blk.0.attn_q.weight", "F16"),
        ("gpt-oss-20b", "Q4_K_M", "blk.0.attn_q.weight", "Q5_0"),
        ("gpt-oss-20b", "Q4_K_M", "blk.0.attn_v.weight", "Q8_0"),
        ("gpt-oss-20b", "Q4_K_M", "output.weight", "Q8_0"),
        ("gpt-oss-20b", "Q4_K_M", "blk.0.ffn_gate_exps.bias", "F32"),
        ("Llama-3.1-8B", "Q4_K_M", "rope_freqs.weight", "F32"),
        ("Llama-3.1-8B", "Q3_K_M", "blk.0.attn_v.weight", "Q5_K"),
        ("Llama-3.1-8B", "Q3_K_M", "blk.2.attn_v.weight", "Q4_K"),
        ("Llama-3.1-8B", "Q3_K_M", "blk.0.attn_output.weight", "Q4_K"),
        ("Llama-3.1-8B", "Q3_K_M", "blk.0.attn_q.weight", "Q3_K"),
        ("Llama-3.1-8B", "IQ4_XS", "blk.0.attn_v.weight", "Q5_K"),
        ("Llama-3.1-8B", "IQ4_XS", "blk.0.ffn_down.weight", "IQ4_XS"),
    ],
)
def test_tensor_types(name: str, quantization: str, tensor: str, type_: str) -> None:
    assert _tensors(catalog_metadata(name, quantization))[tensor][0] == type_


def test_q4_k_m_raises_half_the_layers() -> None:
    tensors = _tensors(catalog_metadata("Llama-3.1-8B", "Q4_K_M"))
    raised = [i for i in range(32) if tensors[f"blk.{i}.ffn_down.weight"][0] == "Q6_K"]
    assert len(raised) == 16
    assert raised[:4] == [0, 1, 2, 3] and raised[-4:] == [28, 29, 30, 31]
    assert all(tensors[f"blk.{i}.attn_v.weight"][0] == "Q6_K" for i in raised)


@pytest.mark.parametrize(("name", "quantization"), [(n, q) for n in ENTRIES for q in ("Q4_K_M", "Q8_0", "BF16")])
def test_file_type_and_quantization_version(name: str, quantization: str) -> None:
    meta = catalog_metadata(name, quantization)
    assert meta.fields["general.file_type"] == SCHEMES[quantization].file_type
    assert meta.fields["general.quantization_version"] == 2


@pytest.mark.parametrize("name", [n for n in ENTRIES if not catalog_entries()[n].native_expert_type])
def test_more_bits_make_bigger_files(name: str) -> None:
    order = ("Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "BF16", "F32")
    sizes = [_weight_bytes(catalog_metadata(name, q)) for q in order]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)


# ---------------------------------------------------------------------------------------------------------
# Sizes and parameter counts against published figures
# ---------------------------------------------------------------------------------------------------------

SIZE_TOLERANCE = 0.05  # the catalog estimates file sizes to within 5%

# Sizes in bytes (decimal GB) of published GGUF files: the weights are all but a few MB of tokenizer.
# Qwen3-30B-A3B Q4_K_M 18.6 GB, Llama-3.1-8B Q4_K_M 4.92 GB, gpt-oss-20b MXFP4 12.1 GB (ggml-org's
# gpt-oss-20b-mxfp4.gguf) and Qwen3.6-35B-A3B Q4_K_M about 21 GB, as listed on their Hugging Face pages.
PUBLISHED_GGUF_SIZES = [
    ("Qwen3-30B-A3B", "Q4_K_M", 18.6e9),
    ("Llama-3.1-8B", "Q4_K_M", 4.92e9),
    ("Llama-3.2-1B", "Q4_K_M", 0.808e9),  # bartowski/Llama-3.2-1B-Instruct-GGUF, 808 MB
    ("gpt-oss-20b", "MXFP4", 12.1e9),
    ("Qwen3.6-35B-A3B", "Q4_K_M", 21.0e9),
]


@pytest.mark.parametrize(("name", "quantization", "size"), PUBLISHED_GGUF_SIZES)
def test_weight_bytes_match_published_files(name: str, quantization: str, size: float) -> None:
    estimate = _weight_bytes(catalog_metadata(name, quantization))
    assert abs(estimate - size) / size < SIZE_TOLERANCE, f"{estimate / 1e9:.2f} GB vs {size / 1e9:.2f} GB"


@pytest.mark.parametrize("name", ENTRIES)
def test_total_parameters_match_the_publisher(name: str) -> None:
    published = catalog_entries()[name].parameters.total_billions * 1e9
    total = sum(t.n_elements for t in catalog_metadata(name).tensors)
    # Published totals are rounded (27B, 35B) and may count a vision encoder or MTP layer we leave out.
    assert abs(total - published) / published < 0.02, f"{total / 1e9:.2f}B vs {published / 1e9:.2f}B"


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        # BF16 model.safetensors.index.json total_size / 2.
        ("Qwen3-Coder-30B-A3B", 61_064_245_248 // 2),
        ("Llama-3.1-8B", 16_060_522_496 // 2 + 64),  # + rope_freqs, which the GGUF adds
    ],
)
def test_parameters_match_the_released_checkpoint_exactly(name: str, parameters: int) -> None:
    assert sum(t.n_elements for t in catalog_metadata(name).tensors) == parameters


def _active_parameters(meta: GGUFMetadata) -> float:
    """Parameters one token reads: the used share of the routed experts and everything else but the input
    embedding (a row lookup), as OpenAI counts gpt-oss's active parameters."""
    share = meta.arch("expert_used_count") / meta.arch("expert_count")
    return sum(
        t.n_elements * (share if "_exps" in t.name else 1) for t in meta.tensors if t.name != "token_embd.weight"
    )


@pytest.mark.parametrize("name", MOE_ENTRIES)
def test_active_parameters_match_the_publisher(name: str) -> None:
    published = catalog_entries()[name].parameters.active_billions * 1e9
    active = _active_parameters(catalog_metadata(name))
    # Qwen counts the input embedding in its 3.3B (3.35B with it, 3.04B without), OpenAI does not.
    assert abs(active - published) / published < 0.10, f"{active / 1e9:.2f}B vs {published / 1e9:.2f}B"
