"""The built-in model catalog: GGUF metadata synthesized from published config.json values.

The planner reads a model's GGUF header (key-values and tensor infos) to size it. When the file cannot be
read (offline, unreachable, not yet downloaded), it falls back to this catalog, which produces the same
``GGUFMetadata`` a real header would give, marked ``catalog estimate`` in its notes:

- the key-values under the names llama.cpp reads (``src/llama-arch.cpp``), with the values llama.cpp's
  converter (``convert_hf_to_gguf.py``) writes from the model's config.json;
- the tensors llama.cpp creates for the architecture (``load_arch_tensors`` in ``src/models/<arch>.cpp``),
  with their real names and shapes in ggml order (``ne[0]`` first), and the ggml type a quantization
  label gives each of them (``SCHEMES`` below, after ``src/llama-quant.cpp``).

Each entry is one YAML file in ``catalog/`` (the file name is the entry name) holding the config.json
values, the published parameter counts, where each figure comes from (``sources``) and what could not be
sourced (``assumptions``). An entry's file name can be recognised with ``recognise`` and its
quantization label with ``recognise_quantization``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from ..api.base import suggest
from ..data import load_named
from .types import GGUFMetadata, TensorInfo, ggml_type

CATALOG_DIR = "catalog"


class CatalogError(ValueError):
    """A name or quantization label the catalog does not know. The message lists what it knows."""


# ---------------------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------------------


class ModelConfig(BaseModel):
    """The config.json values the catalog needs, under config.json's own names.

    Qwen3.5/3.6 publish theirs in ``text_config``, with ``rope_theta``, ``partial_rotary_factor`` and
    ``mrope_section`` inside ``rope_parameters``; they are written flat here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0)  # absent: hidden_size / num_attention_heads
    intermediate_size: int | None = Field(default=None, gt=0)  # dense FFN width
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    rms_norm_eps: float = Field(gt=0)
    rope_theta: float = Field(gt=0)
    rope_scaling: dict[str, Any] | None = None
    partial_rotary_factor: float | None = Field(default=None, gt=0, le=1)
    mrope_section: list[int] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    # Mixture of experts (Qwen: num_experts; gpt-oss: num_local_experts and experts_per_token).
    num_experts: int | None = Field(default=None, gt=0)
    num_local_experts: int | None = Field(default=None, gt=0)
    num_experts_per_tok: int | None = Field(default=None, gt=0)
    experts_per_token: int | None = Field(default=None, gt=0)
    moe_intermediate_size: int | None = Field(default=None, gt=0)
    shared_expert_intermediate_size: int | None = Field(default=None, ge=0)
    # Sliding-window attention (gpt-oss: every other layer, starting with layer 0).
    sliding_window: int | None = Field(default=None, gt=0)
    # Hybrid linear attention (Qwen3.5/3.6 Gated DeltaNet): layer i has full attention iff
    # (i + 1) % full_attention_interval == 0.
    full_attention_interval: int | None = Field(default=None, gt=0)
    linear_conv_kernel_dim: int | None = Field(default=None, gt=0)
    linear_key_head_dim: int | None = Field(default=None, gt=0)
    linear_value_head_dim: int | None = Field(default=None, gt=0)
    linear_num_key_heads: int | None = Field(default=None, gt=0)
    linear_num_value_heads: int | None = Field(default=None, gt=0)
    # Multi-token-prediction blocks (Qwen3.5/3.6: the checkpoint's mtp.* tensors), which llama.cpp's converter
    # appends as the last blocks (see _mtp_layers).
    mtp_num_hidden_layers: int | None = Field(default=None, ge=0)

    @property
    def experts(self) -> int:
        return self.num_experts or self.num_local_experts or 0

    @property
    def experts_used(self) -> int:
        return self.num_experts_per_tok or self.experts_per_token or 0

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def block_count(self) -> int:
        """Blocks in the GGUF: the layers, then the multi-token-prediction blocks (llama.cpp's n_layer_all)."""
        return self.num_hidden_layers + (self.mtp_num_hidden_layers or 0)


class PublishedParameters(BaseModel):
    """Parameter counts as the model's publisher states them, in billions (checked against the tensors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    total_billions: float = Field(gt=0)
    active_billions: float | None = Field(default=None, gt=0)  # mixture of experts: used per token


class CatalogEntry(BaseModel):
    """One model of the catalog: its architecture, config.json values, and where they come from."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    architecture: str  # llama.cpp's general.architecture
    match: tuple[str, ...] = ()  # more spellings of the name that recognise() accepts, besides the name
    default_quantization: str
    # The expert weights' format in the released checkpoint, when every published GGUF keeps it whatever
    # the label (gpt-oss: MXFP4).
    native_expert_type: str | None = None
    parameters: PublishedParameters
    config: ModelConfig
    sources: tuple[str, ...] = Field(min_length=1)
    assumptions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _known_architecture_and_scheme(self) -> CatalogEntry:
        arch = _ARCHITECTURES.get(self.architecture)
        if arch is None:
            raise ValueError(f"architecture {self.architecture!r} is not one of {', '.join(_ARCHITECTURES)}")
        missing = [f for f in arch.required if getattr(self.config, f) is None]
        if arch.moe and not (self.config.experts and self.config.experts_used):
            missing.append("num_experts/num_local_experts and num_experts_per_tok/experts_per_token")
        if missing:
            raise ValueError(f"architecture {self.architecture} needs config {', '.join(missing)}")
        heads = (self.config.linear_key_head_dim, self.config.linear_value_head_dim)
        if self.architecture in ("qwen35", "qwen35moe") and heads[0] != heads[1]:
            # llama.cpp sizes both kinds of Gated DeltaNet heads with ssm.state_size (the key head size).
            raise ValueError("llama.cpp's qwen35 needs linear_key_head_dim == linear_value_head_dim")
        if self.config.mtp_num_hidden_layers and self.architecture not in ("qwen35", "qwen35moe"):
            raise ValueError(
                "the catalog writes multi-token-prediction blocks for qwen35 and qwen35moe only, "
                f"not {self.architecture}"
            )
        if _canonical_scheme(self.default_quantization) is None:
            raise ValueError(f"default quantization {self.default_quantization!r} is not a known scheme")
        if self.native_expert_type is not None:
            ggml_type(self.native_expert_type)
        return self


@functools.cache
def _load_entries() -> dict[str, CatalogEntry]:
    return load_named(__package__, CATALOG_DIR, CatalogEntry)


def catalog_entries() -> dict[str, CatalogEntry]:
    """The catalog's entries by name (read once; a fresh dict each call, so callers cannot edit the cache)."""
    return dict(_load_entries())


def _entry(name: str) -> CatalogEntry:
    entries = _load_entries()
    if name in entries:
        return entries[name]
    known = list(entries)
    hints = suggest(name, known)
    hint = f"did you mean {' or '.join(hints)}? " if hints else ""
    raise CatalogError(f"{name!r} is not in the model catalog; {hint}known: {', '.join(known)}")


# ---------------------------------------------------------------------------------------------------------
# Recognising an entry and a quantization label from a file name or source
# ---------------------------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    # Case and separators vary between uploads (Qwen3_5-27B, llama3.1:8b): compare lower case, with
    # underscores, spaces and colons read as hyphens. Dots stay: they separate versions (Qwen3.5, 3.6).
    return re.sub(r"[_\s:]+", "-", text.lower())


def recognise(source_or_filename: str) -> str | None:
    """The catalog entry a file name, URL or repository names, or None.

    Matching is case-insensitive, on whole words of the name (``gpt-oss-20b`` is not found in
    ``gpt-oss-120b``), and the longest (most specific) spelling that matches wins.
    """
    text = _fold(source_or_filename)
    best: tuple[int, int, str] | None = None  # (length of the spelling, where it ends, entry)
    for entry in _load_entries().values():
        for spelling in {_fold(entry.name), *(_fold(m) for m in entry.match)}:
            for found in re.finditer(rf"(?<![a-z0-9]){re.escape(spelling)}(?![a-z0-9])", text):
                candidate = (len(spelling), found.end(), entry.name)
                if best is None or candidate > best:
                    best = candidate
    return best[2] if best else None


_QUANT_LABEL = re.compile(
    r"(?<![a-z0-9])(ud-)?(i?q[1-8]_(?:k(?:_[a-z]+)?|[0-9]|[a-z]+)|bf16|f16|f32|mxfp4(?:_moe)?)(?![a-z0-9])",
    re.IGNORECASE,
)


def recognise_quantization(filename: str) -> str | None:
    """The quantization label in a GGUF file name (upper case, e.g. ``Q4_K_M``, ``UD-Q4_K_XL``), or None.

    The last label wins: in ``.../Q4_K_M/model-Q4_K_M-00001-of-00002.gguf`` it is the file's own.
    """
    found = _QUANT_LABEL.findall(filename)
    if not found:
        return None
    ud, label = found[-1]
    return (ud + label).upper()


# ---------------------------------------------------------------------------------------------------------
# Quantization schemes: the ggml type a label gives each tensor (after llama.cpp's src/llama-quant.cpp)
# ---------------------------------------------------------------------------------------------------------
#
# What llama-quantize does, simplified to what moves file size by more than a fraction of a percent:
#
# - Never quantized, F32 in every file: 1-D tensors (norms, biases, attention sinks, ssm_a, ssm_dt), norm
#   weights, biases of any shape, the expert routers (ffn_gate_inp*) and ssm_conv1d. The converter writes
#   them as F32 and llama-quantize keeps them.
# - F32/F16/BF16 labels: every other tensor in that type.
# - output.weight (and token_embd.weight when the embeddings are tied): Q8_0 for the Q8_0 and MXFP4
#   labels, Q6_K for every other label (Q8_0 when its rows are not a multiple of 256).
# - MXFP4 (llama.cpp's MXFP4_MOE): expert tensors (3-D) MXFP4, every other weight Q8_0.
# - The K-quant mixes raise attn_v-like tensors (attn_v, and attn_qkv of linear-attention layers) and
#   ffn_down (dense, routed experts and shared expert alike) on some layers, by the rules of SCHEMES.
#   Q4_K_M and Q5_K_M use Q6_K on "more bits" layers: the first and last eighth of the layers and every
#   third layer between (half of them, give or take one). llama.cpp picks the ffn_down of an MoE layer by
#   its layer index, a dense ffn_down and attn_v by their count among such tensors in file order; with one
#   per layer, in layer order, that is the layer index too.
# - Every other weight (attn_q, attn_k, attn_output, ffn_gate, ffn_up, the experts, token_embd when not
#   tied, the Gated DeltaNet projections) gets the label's base type.
# - A row length (ne[0]) the type's block does not divide falls back as llama.cpp does: Q4_K -> Q5_0,
#   Q5_K -> Q5_1, Q6_K -> Q8_0, Q3_K -> Q4_0, IQ4_XS -> IQ4_NL, and to F16 when that does not fit either
#   (gpt-oss's 2880-wide rows are not a multiple of 256).
# - Not modelled: the extra rules for 8-expert models (Mixtral) and for 70B llama, imatrix-dependent rules
#   (files with an IQ type are assumed to have been made with an importance matrix), and the per-tensor
#   choices of "dynamic" quants (Unsloth UD-*, bartowski *_L/*_XL), which are sized as their base scheme.
#
# A checkpoint whose experts are released in a quantized format (gpt-oss: MXFP4, CatalogEntry's
# native_expert_type) keeps them so under every label, as the published GGUFs do.


@dataclass(frozen=True)
class _TensorPlace:
    """Where a tensor sits, for the rules that depend on it."""

    layer: int
    n_layer: int
    gqa: int  # attention heads per KV head


Selector = Callable[[_TensorPlace], bool]


def _more_bits(p: _TensorPlace) -> bool:
    # llama-quant.cpp use_more_bits(): first and last eighth of the layers, every third layer between.
    n = p.n_layer
    return p.layer < n // 8 or p.layer >= 7 * n // 8 or (p.layer - n // 8) % 3 == 2


def _first(k: int) -> Selector:
    return lambda p: p.layer < k


def _first_fraction(d: int) -> Selector:
    return lambda p: p.layer < p.n_layer // d


def _always(p: _TensorPlace) -> bool:
    return True


def _gqa_at_least(k: int) -> Selector:
    return lambda p: p.gqa >= k


@dataclass(frozen=True)
class Rule:
    """Tensors of ``role`` (attn_v, ffn_down, attn_output) get ``type`` where ``when`` holds."""

    role: str
    when: Selector
    type: str


@dataclass(frozen=True)
class QuantScheme:
    name: str
    base: str  # ggml type of the weights no rule raises
    file_type: int  # llama_ftype (include/llama.h), as general.file_type
    rules: tuple[Rule, ...] = ()  # the first rule matching a tensor's role and place wins
    output: str = "Q6_K"  # output.weight (and token_embd.weight when tied)
    experts: str | None = None  # 3-D expert tensors, when not the base type
    float_only: bool = False  # F32/F16/BF16: no quantization at all


# Q4_K_M and Q5_K_M: Q6_K for attn_v and ffn_down on the "more bits" layers.
_MORE_BITS_Q6_K = (Rule("attn_v", _more_bits, "Q6_K"), Rule("ffn_down", _more_bits, "Q6_K"))
_Q4_K_S_RULES = (Rule("attn_v", _first(4), "Q5_K"), Rule("ffn_down", _first_fraction(8), "Q5_K"))
_Q3_K_M_RULES = (
    Rule("attn_v", _first(2), "Q5_K"),
    Rule("attn_v", _always, "Q4_K"),
    Rule("ffn_down", _first_fraction(16), "Q5_K"),
    Rule("ffn_down", _always, "Q4_K"),
    Rule("attn_output", _always, "Q4_K"),
)

SCHEMES: Mapping[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("F32", "F32", 0, output="F32", float_only=True),
        QuantScheme("F16", "F16", 1, output="F16", float_only=True),
        QuantScheme("BF16", "BF16", 32, output="BF16", float_only=True),
        QuantScheme("Q8_0", "Q8_0", 7, output="Q8_0"),
        QuantScheme("Q6_K", "Q6_K", 18),
        QuantScheme("Q5_K_M", "Q5_K", 17, _MORE_BITS_Q6_K),
        QuantScheme("Q5_K_S", "Q5_K", 16),
        QuantScheme("Q4_K_M", "Q4_K", 15, _MORE_BITS_Q6_K),
        QuantScheme("Q4_K_S", "Q4_K", 14, _Q4_K_S_RULES),
        QuantScheme("Q4_0", "Q4_0", 2),
        QuantScheme("IQ4_XS", "IQ4_XS", 30, (Rule("attn_v", _gqa_at_least(4), "Q5_K"),)),
        QuantScheme("Q3_K_M", "Q3_K", 12, _Q3_K_M_RULES),
        QuantScheme("MXFP4", "Q8_0", 38, output="Q8_0", experts="MXFP4"),  # llama.cpp's MXFP4_MOE
    )
}

# Labels that name one of the schemes above: llama-quantize's own aliases (Q4_K means Q4_K_M), the ftype's
# full name, and the "dynamic" variants of Unsloth (UD-...) and bartowski (_L, _XL), sized as their base.
QUANT_ALIASES: Mapping[str, str] = {
    "Q4_K": "Q4_K_M",
    "Q5_K": "Q5_K_M",
    "Q3_K": "Q3_K_M",
    "Q4_K_L": "Q4_K_M",
    "Q4_K_XL": "Q4_K_M",
    "Q5_K_L": "Q5_K_M",
    "Q5_K_XL": "Q5_K_M",
    "Q6_K_L": "Q6_K",
    "Q6_K_XL": "Q6_K",
    "Q8_K_XL": "Q8_0",
    "MXFP4_MOE": "MXFP4",
    "FP16": "F16",
    "FP32": "F32",
}

# llama.cpp's fallback when a type's block does not divide a row (tensor_type_fallback in llama-quant.cpp).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0", "IQ4_XS": "IQ4_NL"}


def _canonical_scheme(label: str) -> str | None:
    key = label.strip().upper().replace("-", "_")
    key = key.removeprefix("UD_")
    key = QUANT_ALIASES.get(key, key)
    return key if key in SCHEMES else None


def quantization_scheme(label: str) -> QuantScheme:
    """The scheme a quantization label is sized as (``UD-Q4_K_XL`` -> Q4_K_M), or CatalogError."""
    name = _canonical_scheme(label)
    if name is None:
        known = [*SCHEMES, *QUANT_ALIASES]
        hints = suggest(label.strip().upper(), known)
        hint = f"did you mean {' or '.join(hints)}? " if hints else ""
        raise CatalogError(
            f"quantization {label!r} has no size rules in the model catalog; {hint}known: {', '.join(known)}"
        )
    return SCHEMES[name]


def _role(name: str) -> str:
    # The categories of llama-quant.cpp tensor_get_category() that the schemes' rules use.
    if name.endswith(("attn_v.weight", "attn_qkv.weight")):
        return "attn_v"
    if name.endswith("attn_output.weight"):
        return "attn_output"
    if "ffn_down" in name:
        return "ffn_down"
    return "other"


def _fits(type_name: str, row: int) -> bool:
    return row % ggml_type(type_name).block_size == 0


def _with_fallback(type_name: str, row: int) -> str:
    if _fits(type_name, row):
        return type_name
    fallback = _FALLBACK.get(type_name, type_name)
    return fallback if _fits(fallback, row) else "F16"


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    layer: int | None = None
    keep_f32: bool = False  # norms, biases, routers, conv1d: F32 in every file


def _tensor_type(scheme: QuantScheme, t: _Tensor, entry: CatalogEntry, tied: bool) -> str:
    cfg = entry.config
    if t.keep_f32:
        return "F32"
    if len(t.shape) == 3 and entry.native_expert_type:
        return entry.native_expert_type
    if scheme.float_only:
        return scheme.base
    row = t.shape[0]
    if t.name == "output.weight" or (tied and t.name == "token_embd.weight"):
        # llama-quant.cpp: Q8_0 stays Q8_0, everything else Q6_K, and Q8_0 for rows Q6_K cannot hold.
        return scheme.output if _fits(scheme.output, row) else "Q8_0"
    if len(t.shape) == 3 and scheme.experts:
        return scheme.experts
    chosen = scheme.base
    if t.layer is not None:
        # llama-quant.cpp counts every block, MTP ones included (n_ffn_down = n_layer_all; n_attention_wv).
        place = _TensorPlace(t.layer, cfg.block_count, cfg.num_attention_heads // cfg.num_key_value_heads)
        role = _role(t.name)
        for rule in scheme.rules:
            if rule.role == role and rule.when(place):
                chosen = rule.type
                break
    return _with_fallback(chosen, row)


# ---------------------------------------------------------------------------------------------------------
# Architectures: key-values and tensors as llama.cpp's converter writes them and its loader creates them
# ---------------------------------------------------------------------------------------------------------


def _weight(name: str, *shape: int, layer: int | None = None) -> _Tensor:
    return _Tensor(name, tuple(shape), layer)


def _f32(name: str, *shape: int, layer: int | None = None) -> _Tensor:
    return _Tensor(name, tuple(shape), layer, keep_f32=True)


def _embeddings(cfg: ModelConfig) -> Iterator[_Tensor]:
    yield _weight("token_embd.weight", cfg.hidden_size, cfg.vocab_size)
    yield _f32("output_norm.weight", cfg.hidden_size)
    if not cfg.tie_word_embeddings:
        yield _weight("output.weight", cfg.hidden_size, cfg.vocab_size)


def _gqa_attention(cfg: ModelConfig, i: int, q_rows: int | None = None) -> Iterator[_Tensor]:
    """attn_q/k/v/output of grouped-query attention (create_tensor_qkv), with biases where the model has them."""
    e, d = cfg.hidden_size, cfg.head_size
    q = q_rows or cfg.num_attention_heads * d
    kv = cfg.num_key_value_heads * d
    yield _weight(f"blk.{i}.attn_q.weight", e, q, layer=i)
    yield _weight(f"blk.{i}.attn_k.weight", e, kv, layer=i)
    yield _weight(f"blk.{i}.attn_v.weight", e, kv, layer=i)
    yield _weight(f"blk.{i}.attn_output.weight", cfg.num_attention_heads * d, e, layer=i)
    if cfg.attention_bias:
        yield _f32(f"blk.{i}.attn_q.bias", q, layer=i)
        yield _f32(f"blk.{i}.attn_k.bias", kv, layer=i)
        yield _f32(f"blk.{i}.attn_v.bias", kv, layer=i)
        yield _f32(f"blk.{i}.attn_output.bias", e, layer=i)


def _routed_experts(cfg: ModelConfig, i: int) -> Iterator[_Tensor]:
    e, f, x = cfg.hidden_size, cfg.moe_intermediate_size or cfg.intermediate_size or 0, cfg.experts
    yield _f32(f"blk.{i}.ffn_gate_inp.weight", e, x, layer=i)
    yield _weight(f"blk.{i}.ffn_gate_exps.weight", e, f, x, layer=i)
    yield _weight(f"blk.{i}.ffn_up_exps.weight", e, f, x, layer=i)
    yield _weight(f"blk.{i}.ffn_down_exps.weight", f, e, x, layer=i)


def _dense_ffn(cfg: ModelConfig, i: int) -> Iterator[_Tensor]:
    e, f = cfg.hidden_size, cfg.intermediate_size or 0
    yield _weight(f"blk.{i}.ffn_gate.weight", e, f, layer=i)
    yield _weight(f"blk.{i}.ffn_up.weight", e, f, layer=i)
    yield _weight(f"blk.{i}.ffn_down.weight", f, e, layer=i)


def _llama(cfg: ModelConfig) -> Iterator[_Tensor]:
    # src/models/llama.cpp; Llama 3.1's llama3 RoPE scaling is written as rope_freqs (n_rot/2 factors).
    yield from _embeddings(cfg)
    if (cfg.rope_scaling or {}).get("rope_type") == "llama3":
        yield _f32("rope_freqs.weight", cfg.head_size // 2)
    for i in range(cfg.num_hidden_layers):
        yield _f32(f"blk.{i}.attn_norm.weight", cfg.hidden_size, layer=i)
        yield from _gqa_attention(cfg, i)
        yield _f32(f"blk.{i}.ffn_norm.weight", cfg.hidden_size, layer=i)
        yield from _dense_ffn(cfg, i)


def _qwen3moe(cfg: ModelConfig) -> Iterator[_Tensor]:
    # src/models/qwen3moe.cpp
    yield from _embeddings(cfg)
    for i in range(cfg.num_hidden_layers):
        yield _f32(f"blk.{i}.attn_norm.weight", cfg.hidden_size, layer=i)
        yield from _gqa_attention(cfg, i)
        yield _f32(f"blk.{i}.attn_k_norm.weight", cfg.head_size, layer=i)
        yield _f32(f"blk.{i}.attn_q_norm.weight", cfg.head_size, layer=i)
        yield _f32(f"blk.{i}.ffn_norm.weight", cfg.hidden_size, layer=i)
        yield from _routed_experts(cfg, i)


def _is_full_attention(cfg: ModelConfig, i: int) -> bool:
    return (i + 1) % (cfg.full_attention_interval or 1) == 0


def _qwen35_mixer(cfg: ModelConfig, i: int) -> Iterator[_Tensor]:
    """The token mixer of a Qwen3.5/3.6 layer (src/models/qwen35.cpp, qwen35moe.cpp: load_block_trunk)."""
    e = cfg.hidden_size
    yield _f32(f"blk.{i}.attn_norm.weight", e, layer=i)
    yield _f32(f"blk.{i}.post_attention_norm.weight", e, layer=i)
    if _is_full_attention(cfg, i):
        # Gated attention: attn_q carries the query and its output gate, 2 x heads x head_dim rows.
        yield from _gqa_attention(cfg, i, q_rows=2 * cfg.num_attention_heads * cfg.head_size)
        yield _f32(f"blk.{i}.attn_q_norm.weight", cfg.head_size, layer=i)
        yield _f32(f"blk.{i}.attn_k_norm.weight", cfg.head_size, layer=i)
        return
    # Gated DeltaNet. llama.cpp sizes both head kinds with ssm.state_size (= linear_key_head_dim).
    head = cfg.linear_key_head_dim or 0
    n_k, n_v = cfg.linear_num_key_heads or 0, cfg.linear_num_value_heads or 0
    key_dim, value_dim = head * n_k, head * n_v
    conv_dim = 2 * key_dim + value_dim
    yield _weight(f"blk.{i}.attn_qkv.weight", e, conv_dim, layer=i)
    yield _weight(f"blk.{i}.attn_gate.weight", e, value_dim, layer=i)
    yield _f32(f"blk.{i}.ssm_conv1d.weight", cfg.linear_conv_kernel_dim or 0, conv_dim, layer=i)
    yield _f32(f"blk.{i}.ssm_dt.bias", n_v, layer=i)
    yield _f32(f"blk.{i}.ssm_a", n_v, layer=i)
    yield _weight(f"blk.{i}.ssm_beta.weight", e, n_v, layer=i)
    yield _weight(f"blk.{i}.ssm_alpha.weight", e, n_v, layer=i)
    yield _f32(f"blk.{i}.ssm_norm.weight", head, layer=i)
    yield _weight(f"blk.{i}.ssm_out.weight", value_dim, e, layer=i)


def _mtp_layers(cfg: ModelConfig) -> range:
    """The multi-token-prediction blocks: after the layers, as llama.cpp's converter numbers them.

    conversion/qwen.py (_QwenMtpMixin, the default unless --no-mtp): block_count grows by
    ``mtp_num_hidden_layers``, ``nextn_predict_layers`` is written, ``mtp.layers.<j>.*`` become
    ``blk.<num_hidden_layers + j>.*`` and ``mtp.fc``, ``mtp.pre_fc_norm_embedding``, ``mtp.pre_fc_norm_hidden``
    and ``mtp.norm`` become that block's ``nextn.eh_proj``, ``enorm``, ``hnorm`` and ``shared_head_norm``.
    """
    return range(cfg.num_hidden_layers, cfg.block_count)


def _mtp_block(cfg: ModelConfig, i: int, ffn: Callable[[ModelConfig, int], Iterator[_Tensor]]) -> Iterator[_Tensor]:
    """One MTP block (src/models/qwen35.cpp, qwen35moe.cpp: load_block_mtp): a gated-attention layer with the
    model's feed-forward, plus the nextn projection and norms (nextn.embed_tokens and shared_head_head are
    optional there, and Qwen's checkpoints share the main ones)."""
    e = cfg.hidden_size
    yield _f32(f"blk.{i}.attn_norm.weight", e, layer=i)
    yield _f32(f"blk.{i}.post_attention_norm.weight", e, layer=i)
    yield from _gqa_attention(cfg, i, q_rows=2 * cfg.num_attention_heads * cfg.head_size)
    yield _f32(f"blk.{i}.attn_q_norm.weight", cfg.head_size, layer=i)
    yield _f32(f"blk.{i}.attn_k_norm.weight", cfg.head_size, layer=i)
    yield from ffn(cfg, i)
    yield _weight(f"blk.{i}.nextn.eh_proj.weight", 2 * e, e, layer=i)
    yield _f32(f"blk.{i}.nextn.enorm.weight", e, layer=i)
    yield _f32(f"blk.{i}.nextn.hnorm.weight", e, layer=i)
    yield _f32(f"blk.{i}.nextn.shared_head_norm.weight", e, layer=i)


def _qwen35(cfg: ModelConfig) -> Iterator[_Tensor]:
    yield from _embeddings(cfg)
    for i in range(cfg.num_hidden_layers):
        yield from _qwen35_mixer(cfg, i)
        yield from _dense_ffn(cfg, i)
    for i in _mtp_layers(cfg):
        yield from _mtp_block(cfg, i, _dense_ffn)


def _qwen35moe_ffn(cfg: ModelConfig, i: int) -> Iterator[_Tensor]:
    e, s = cfg.hidden_size, cfg.shared_expert_intermediate_size or 0
    yield from _routed_experts(cfg, i)
    yield _f32(f"blk.{i}.ffn_gate_inp_shexp.weight", e, layer=i)
    yield _weight(f"blk.{i}.ffn_gate_shexp.weight", e, s, layer=i)
    yield _weight(f"blk.{i}.ffn_up_shexp.weight", e, s, layer=i)
    yield _weight(f"blk.{i}.ffn_down_shexp.weight", s, e, layer=i)


def _qwen35moe(cfg: ModelConfig) -> Iterator[_Tensor]:
    yield from _embeddings(cfg)
    for i in range(cfg.num_hidden_layers):
        yield from _qwen35_mixer(cfg, i)
        yield from _qwen35moe_ffn(cfg, i)
    for i in _mtp_layers(cfg):
        yield from _mtp_block(cfg, i, _qwen35moe_ffn)


def _gpt_oss(cfg: ModelConfig) -> Iterator[_Tensor]:
    # src/models/openai-moe.cpp: attention biases and sinks, biased router and experts.
    e, f, x = cfg.hidden_size, cfg.moe_intermediate_size or cfg.intermediate_size or 0, cfg.experts
    yield from _embeddings(cfg)
    for i in range(cfg.num_hidden_layers):
        yield _f32(f"blk.{i}.attn_norm.weight", e, layer=i)
        yield _f32(f"blk.{i}.post_attention_norm.weight", e, layer=i)
        yield from _gqa_attention(cfg, i)
        yield _f32(f"blk.{i}.attn_sinks.weight", cfg.num_attention_heads, layer=i)
        yield from _routed_experts(cfg, i)
        yield _f32(f"blk.{i}.ffn_gate_inp.bias", x, layer=i)
        yield _f32(f"blk.{i}.ffn_gate_exps.bias", f, x, layer=i)
        yield _f32(f"blk.{i}.ffn_up_exps.bias", f, x, layer=i)
        yield _f32(f"blk.{i}.ffn_down_exps.bias", e, x, layer=i)


def _arch_fields(arch: str, cfg: ModelConfig) -> dict[str, Any]:
    """The <arch>.* key-values llama.cpp's converter writes from config.json (convert_hf_to_gguf.py)."""
    fields: dict[str, Any] = {
        "context_length": cfg.max_position_embeddings,
        "embedding_length": cfg.hidden_size,
        "block_count": cfg.num_hidden_layers,
        "attention.head_count": cfg.num_attention_heads,
        "attention.head_count_kv": cfg.num_key_value_heads,
        "rope.freq_base": float(cfg.rope_theta),
        "attention.layer_norm_rms_epsilon": cfg.rms_norm_eps,
    }
    if cfg.intermediate_size is not None:
        fields["feed_forward_length"] = cfg.intermediate_size
    if cfg.head_dim is not None:
        fields["attention.key_length"] = cfg.head_dim
        fields["attention.value_length"] = cfg.head_dim
    if cfg.experts:
        fields["expert_count"] = cfg.experts
        fields["expert_used_count"] = cfg.experts_used
        fields["expert_feed_forward_length"] = cfg.moe_intermediate_size or cfg.intermediate_size
    if cfg.shared_expert_intermediate_size:
        fields["expert_shared_feed_forward_length"] = cfg.shared_expert_intermediate_size
    scaling = cfg.rope_scaling or {}
    if scaling.get("rope_type") == "yarn":
        fields["rope.scaling.type"] = "yarn"
        fields["rope.scaling.factor"] = float(scaling["factor"])
        fields["rope.scaling.original_context_length"] = int(scaling["original_max_position_embeddings"])
    if cfg.sliding_window is not None:
        fields["attention.sliding_window"] = cfg.sliding_window
    if arch == "llama":
        fields["vocab_size"] = cfg.vocab_size
        fields["rope.dimension_count"] = cfg.head_size
    if arch in ("qwen35", "qwen35moe"):
        if cfg.mtp_num_hidden_layers:
            fields["block_count"] = cfg.block_count
            fields["nextn_predict_layers"] = cfg.mtp_num_hidden_layers
        head = cfg.linear_key_head_dim or 0
        fields["ssm.conv_kernel"] = cfg.linear_conv_kernel_dim
        fields["ssm.state_size"] = head
        fields["ssm.group_count"] = cfg.linear_num_key_heads
        fields["ssm.time_step_rank"] = cfg.linear_num_value_heads
        fields["ssm.inner_size"] = (cfg.linear_value_head_dim or 0) * (cfg.linear_num_value_heads or 0)
        fields["full_attention_interval"] = cfg.full_attention_interval
        fields["rope.dimension_count"] = int(cfg.head_size * (cfg.partial_rotary_factor or 0.25))
        # Four sections, zero-padded, as the converter writes them (llama.cpp requires the key for qwen35*).
        fields["rope.dimension_sections"] = [*(cfg.mrope_section or [11, 11, 10]), 0, 0, 0, 0][:4]
    return {f"{arch}.{key}": value for key, value in fields.items()}


@dataclass(frozen=True)
class _Architecture:
    tensors: Callable[[ModelConfig], Iterator[_Tensor]]
    required: tuple[str, ...] = ()
    moe: bool = False


_LINEAR_ATTENTION = (
    "full_attention_interval",
    "linear_conv_kernel_dim",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "linear_num_key_heads",
    "linear_num_value_heads",
    "head_dim",
)

_ARCHITECTURES: Mapping[str, _Architecture] = {
    "llama": _Architecture(_llama, ("intermediate_size",)),
    "qwen3moe": _Architecture(_qwen3moe, ("moe_intermediate_size", "head_dim"), moe=True),
    "qwen35": _Architecture(_qwen35, (*_LINEAR_ATTENTION, "intermediate_size")),
    "qwen35moe": _Architecture(
        _qwen35moe, (*_LINEAR_ATTENTION, "moe_intermediate_size", "shared_expert_intermediate_size"), moe=True
    ),
    "gpt-oss": _Architecture(_gpt_oss, ("head_dim", "sliding_window"), moe=True),
}


def catalog_metadata(name: str, quantization: str | None = None) -> GGUFMetadata:
    """The GGUF metadata of catalog entry ``name`` at ``quantization`` (default: the entry's usual label).

    Raises CatalogError for a name or label the catalog does not know, listing the known ones.
    """
    return entry_metadata(_entry(name), quantization)


def entry_metadata(entry: CatalogEntry, quantization: str | None = None) -> GGUFMetadata:
    """The GGUF metadata of ``entry`` (a catalog file's, or one built in a test) at ``quantization``."""
    label = quantization or entry.default_quantization
    scheme = quantization_scheme(label)
    cfg = entry.config
    tied = cfg.tie_word_embeddings
    tensors = tuple(
        TensorInfo(t.name, _tensor_type(scheme, t, entry, tied), t.shape)
        for t in _ARCHITECTURES[entry.architecture].tensors(cfg)
    )
    fields: dict[str, Any] = {
        "general.architecture": entry.architecture,
        "general.name": entry.name,
        "general.file_type": scheme.file_type,
        "general.quantization_version": 2,
        **_arch_fields(entry.architecture, cfg),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": cfg.vocab_size,  # a token list, kept as its length
    }
    notes = [
        f"catalog estimate: {entry.name} at {scheme.name}, synthesized from published config.json values, "
        "not read from a GGUF file"
    ]
    if label.strip().upper() != scheme.name:
        notes.append(f"catalog estimate: quantization {label} is sized as {scheme.name}")
    return GGUFMetadata(
        source=f"catalog:{entry.name}",
        fields=fields,
        tensors=tensors,
        notes=tuple(notes),
    )
