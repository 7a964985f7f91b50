"""Small GGUF model files for tests of the planner, written with the gguf package.

Each ``write_*`` function writes a model of one architecture family with the tensors and key-values
llama.cpp's loader asks for (checked against the llama.cpp tree of llama-cpp-python 0.3.36, src/models/),
plus a minimal gpt2 BPE tokenizer and a ChatML chat template, so the same files can later be loaded by a
real llama-server. Tensor data is zeros (ones for norm weights): the planner reads shapes and types only.
``ModelServer`` serves such files over HTTP the way a model hub does (Range, ETag, redirects).

    path = write_moe(tmp_path / "moe.gguf", n_layer=4, n_expert=16, weight_type="Q8_0")
    first = write_dense(tmp_path / "dense.gguf", parts=3)  # dense-00001-of-00003.gguf .. -00003-of-00003

Shapes are given the way llama.cpp and ``TensorInfo.shape`` give them: ne[0] (the row length) first.
Every function returns the path to load: the file, or the first part of a split (``parts > 1``), written as
llama.cpp's gguf-split does: part 1 holds every key-value, each part holds ``split.no`` (u16),
``split.count`` (u16) and ``split.tensors.count`` (i32).

``weight_type`` (F32, F16, Q8_0, Q4_0) applies to the large matrices (embeddings, attention, feed-forward,
experts, SSM projections). Norms, biases, routers and SSM state tensors stay F32, as in real quantized
models; a matrix whose rows are not a whole number of quantization blocks stays F32 too.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants

WEIGHT_TYPES = ("F32", "F16", "Q8_0", "Q4_0")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# How a tensor is stored: the model's weight type, or always F32.
MATRIX = "matrix"
F32 = "f32"


@dataclass
class ModelFile:
    """What a writer puts in a GGUF file: key-values (without the arch prefix where it starts with '.'), tensors."""

    arch: str
    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)  # (name, ne shape, MATRIX|F32)

    def set(self, key: str, value: Any) -> None:
        """``.block_count`` means ``<arch>.block_count``."""
        self.kv[f"{self.arch}{key}" if key.startswith(".") else key] = value

    def add(self, name: str, *shape: int, kind: str = MATRIX) -> None:
        self.tensors.append((name, tuple(shape), kind))


# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode map: 256 printable characters, one per byte (space is 'Ġ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    by_byte = dict(zip(printable, chars, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def gpt2_vocab(vocab: int, *, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocabulary of ``vocab`` tokens: (tokens, token types, merges).

    The 256 byte tokens, then merged tokens (each the concatenation of two earlier ones, with its merge rule),
    then SPECIAL_TOKENS as control tokens. Tokens average 6.5 characters, like a real BPE vocabulary's, so a
    150k vocabulary makes a header of realistic size (about 5 MB).
    """
    n_merged = vocab - 256 - len(SPECIAL_TOKENS)
    if n_merged < 1:
        raise ValueError(f"vocab must be at least {256 + len(SPECIAL_TOKENS) + 1}, got {vocab}")
    rng = random.Random(seed)
    tokens = _byte_tokens()
    seen = set(tokens)
    merges: list[str] = []
    letters = [t for t in tokens if t.isascii() and t.isalpha()]
    by_length: dict[int, list[str]] = {1: list(tokens)}
    lengths, weights = range(2, 15), (6, 8, 9, 10, 10, 9, 8, 7, 5, 4, 3, 2, 1)  # mean 6.5 characters
    while len(merges) < n_merged:
        # A token one letter longer than an earlier one, with the merge rule that makes it.
        length = rng.choices(lengths, weights)[0]
        shorter = by_length.get(length - 1)
        if not shorter:
            continue
        left, right = rng.choice(shorter), rng.choice(letters)
        merged = left + right
        if merged in seen:
            continue
        seen.add(merged)
        tokens.append(merged)
        by_length.setdefault(length, []).append(merged)
        merges.append(f"{left} {right}")
    types = [1] * len(tokens) + [3] * len(SPECIAL_TOKENS)  # 1 normal, 3 control (llama_token_type)
    return [*tokens, *SPECIAL_TOKENS], types, merges


def _tokenizer(model: ModelFile, vocab: int, pre: str) -> None:
    tokens, types, merges = gpt2_vocab(vocab)
    model.set("tokenizer.ggml.model", "gpt2")
    model.set("tokenizer.ggml.pre", pre)
    model.set("tokenizer.ggml.tokens", tokens)
    model.set("tokenizer.ggml.token_type", types)
    model.set("tokenizer.ggml.merges", merges)
    model.set("tokenizer.ggml.eos_token_id", tokens.index("<|im_end|>"))
    model.set("tokenizer.ggml.padding_token_id", tokens.index("<|endoftext|>"))
    model.set("tokenizer.ggml.bos_token_id", tokens.index("<|endoftext|>"))
    model.set("tokenizer.ggml.add_bos_token", False)
    model.set("tokenizer.chat_template", CHAT_TEMPLATE)


# ---------------------------------------------------------------------------------------------------------
# Shared parts of the architectures
# ---------------------------------------------------------------------------------------------------------


def _base(
    arch: str, *, name: str, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, head_dim: int, vocab: int,
    n_ctx_train: int, pre: str,
) -> ModelFile:  # fmt: skip
    m = ModelFile(arch)
    m.set("general.name", name)
    m.set("general.file_type", 0)
    m.set(".context_length", n_ctx_train)
    m.set(".embedding_length", n_embd)
    m.set(".block_count", n_layer)
    m.set(".attention.head_count", n_head)
    m.set(".attention.head_count_kv", n_head_kv)
    m.set(".attention.key_length", head_dim)
    m.set(".attention.value_length", head_dim)
    m.set(".attention.layer_norm_rms_epsilon", 1e-6)
    m.set(".rope.freq_base", 1_000_000.0)
    _tokenizer(m, vocab, pre)
    m.add("token_embd.weight", n_embd, vocab)
    m.add("output_norm.weight", n_embd, kind=F32)
    m.add("output.weight", n_embd, vocab)
    return m


def _attention(m: ModelFile, i: int, *, n_embd: int, n_head: int, n_head_kv: int, head_dim: int, q_rows: int) -> None:
    m.add(f"blk.{i}.attn_q.weight", n_embd, q_rows)
    m.add(f"blk.{i}.attn_k.weight", n_embd, head_dim * n_head_kv)
    m.add(f"blk.{i}.attn_v.weight", n_embd, head_dim * n_head_kv)
    m.add(f"blk.{i}.attn_output.weight", head_dim * n_head, n_embd)


def _qk_norms(m: ModelFile, i: int, head_dim: int) -> None:
    m.add(f"blk.{i}.attn_q_norm.weight", head_dim, kind=F32)
    m.add(f"blk.{i}.attn_k_norm.weight", head_dim, kind=F32)


def _routed_experts(m: ModelFile, i: int, *, n_embd: int, n_expert: int, n_ff_exp: int) -> None:
    m.add(f"blk.{i}.ffn_gate_inp.weight", n_embd, n_expert, kind=F32)
    m.add(f"blk.{i}.ffn_gate_exps.weight", n_embd, n_ff_exp, n_expert)
    m.add(f"blk.{i}.ffn_up_exps.weight", n_embd, n_ff_exp, n_expert)
    m.add(f"blk.{i}.ffn_down_exps.weight", n_ff_exp, n_embd, n_expert)


def _shared_expert(m: ModelFile, i: int, *, n_embd: int, n_ff_shexp: int) -> None:
    m.add(f"blk.{i}.ffn_gate_inp_shexp.weight", n_embd, kind=F32)
    m.add(f"blk.{i}.ffn_gate_shexp.weight", n_embd, n_ff_shexp)
    m.add(f"blk.{i}.ffn_up_shexp.weight", n_embd, n_ff_shexp)
    m.add(f"blk.{i}.ffn_down_shexp.weight", n_ff_shexp, n_embd)


def _dense_ffn(m: ModelFile, i: int, *, n_embd: int, n_ff: int) -> None:
    m.add(f"blk.{i}.ffn_gate.weight", n_embd, n_ff)
    m.add(f"blk.{i}.ffn_up.weight", n_embd, n_ff)
    m.add(f"blk.{i}.ffn_down.weight", n_ff, n_embd)


# ---------------------------------------------------------------------------------------------------------
# The architectures
# ---------------------------------------------------------------------------------------------------------


def dense_model(
    *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 32,
    n_ff: int = 128, vocab: int = 512, n_ctx_train: int = 4096,
) -> ModelFile:  # fmt: skip
    """A qwen3 model: grouped-query attention with q/k norms, a dense SwiGLU feed-forward per layer."""
    m = _base(
        "qwen3", name="tiny-qwen3", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, vocab=vocab, n_ctx_train=n_ctx_train, pre="qwen2",
    )  # fmt: skip
    m.set(".feed_forward_length", n_ff)
    m.set(".rope.dimension_count", head_dim)
    for i in range(n_layer):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        _attention(m, i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, q_rows=head_dim * n_head)
        _qk_norms(m, i, head_dim)
        m.add(f"blk.{i}.ffn_norm.weight", n_embd, kind=F32)
        _dense_ffn(m, i, n_embd=n_embd, n_ff=n_ff)
    return m


def moe_model(
    *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 32,
    n_expert: int = 8, n_expert_used: int = 2, n_ff_exp: int = 32, shared_expert: bool = False,
    n_ff_shexp: int | None = None, vocab: int = 512, n_ctx_train: int = 4096,
) -> ModelFile:  # fmt: skip
    """A Mixture-of-Experts model, qwen3moe-style; with ``shared_expert`` a qwen2moe (see write_moe)."""
    arch = "qwen2moe" if shared_expert else "qwen3moe"
    if shared_expert and head_dim * n_head != n_embd:
        raise ValueError(f"qwen2moe needs head_dim * n_head == n_embd, got {head_dim} * {n_head} != {n_embd}")
    m = _base(
        arch, name=f"tiny-{arch}", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, vocab=vocab, n_ctx_train=n_ctx_train, pre="qwen2",
    )  # fmt: skip
    m.set(".rope.dimension_count", head_dim)
    m.set(".feed_forward_length", n_ff_exp * n_expert_used)
    m.set(".expert_count", n_expert)
    m.set(".expert_used_count", n_expert_used)
    m.set(".expert_feed_forward_length", n_ff_exp)
    n_ff_shexp = n_ff_shexp or n_ff_exp * n_expert_used
    if shared_expert:
        m.set(".expert_shared_feed_forward_length", n_ff_shexp)
    for i in range(n_layer):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        _attention(m, i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, q_rows=head_dim * n_head)
        if not shared_expert:
            _qk_norms(m, i, head_dim)
        m.add(f"blk.{i}.ffn_norm.weight", n_embd, kind=F32)
        _routed_experts(m, i, n_embd=n_embd, n_expert=n_expert, n_ff_exp=n_ff_exp)
        if shared_expert:
            _shared_expert(m, i, n_embd=n_embd, n_ff_shexp=n_ff_shexp)
    return m


def hybrid_model(
    *, n_layer: int = 8, full_attention_interval: int = 4, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
    head_dim: int = 32, n_expert: int = 8, n_expert_used: int = 2, n_ff_exp: int = 32, n_ff_shexp: int = 32,
    ssm_conv_kernel: int = 4, ssm_state_size: int = 16, ssm_group_count: int = 2, ssm_time_step_rank: int = 4,
    vocab: int = 512, n_ctx_train: int = 4096,
) -> ModelFile:  # fmt: skip
    """A qwen35moe model (Qwen3.5/3.6 MoE): gated-delta-net layers, full attention every interval-th layer."""
    m = _base(
        "qwen35moe", name="tiny-qwen35moe", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, vocab=vocab, n_ctx_train=n_ctx_train, pre="qwen35",
    )  # fmt: skip
    n_rot = head_dim // 2  # partial rotary, as Qwen3.5 (64 of 256)
    half = n_rot // 2
    m.set(".rope.dimension_count", n_rot)
    m.set(".rope.dimension_sections", [half - 2 * (half // 3), half // 3, half // 3, 0])
    m.set(".expert_count", n_expert)
    m.set(".expert_used_count", n_expert_used)
    m.set(".expert_feed_forward_length", n_ff_exp)
    m.set(".expert_shared_feed_forward_length", n_ff_shexp)
    m.set(".full_attention_interval", full_attention_interval)
    value_dim = ssm_state_size * ssm_time_step_rank
    key_dim = ssm_state_size * ssm_group_count
    m.set(".ssm.conv_kernel", ssm_conv_kernel)
    m.set(".ssm.inner_size", value_dim)
    m.set(".ssm.state_size", ssm_state_size)
    m.set(".ssm.time_step_rank", ssm_time_step_rank)
    m.set(".ssm.group_count", ssm_group_count)
    for i in range(n_layer):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        m.add(f"blk.{i}.post_attention_norm.weight", n_embd, kind=F32)
        if (i + 1) % full_attention_interval == 0:
            # query and its gate: 2 x head_dim rows per head
            q_rows = 2 * head_dim * n_head
            _attention(m, i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, q_rows=q_rows)
            _qk_norms(m, i, head_dim)
        else:
            m.add(f"blk.{i}.attn_qkv.weight", n_embd, 2 * key_dim + value_dim)
            m.add(f"blk.{i}.attn_gate.weight", n_embd, value_dim)
            m.add(f"blk.{i}.ssm_conv1d.weight", ssm_conv_kernel, 2 * key_dim + value_dim, kind=F32)
            m.add(f"blk.{i}.ssm_dt.bias", ssm_time_step_rank, kind=F32)
            m.add(f"blk.{i}.ssm_a", ssm_time_step_rank, kind=F32)
            m.add(f"blk.{i}.ssm_beta.weight", n_embd, ssm_time_step_rank)
            m.add(f"blk.{i}.ssm_alpha.weight", n_embd, ssm_time_step_rank)
            m.add(f"blk.{i}.ssm_norm.weight", ssm_state_size, kind=F32)
            m.add(f"blk.{i}.ssm_out.weight", value_dim, n_embd)
        _routed_experts(m, i, n_embd=n_embd, n_expert=n_expert, n_ff_exp=n_ff_exp)
        _shared_expert(m, i, n_embd=n_embd, n_ff_shexp=n_ff_shexp)
    return m


def sliding_window_model(
    *, n_layer: int = 6, sliding_window: int = 128, sliding_window_pattern: int | Sequence[bool] = 6,
    n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 32, n_ff: int = 128, vocab: int = 512,
    n_ctx_train: int = 8192,
) -> ModelFile:  # fmt: skip
    """A gemma3 model: interleaved sliding-window attention.

    llama.cpp (src/models/gemma3.cpp) reads ``gemma3.attention.sliding_window`` and
    ``gemma3.attention.sliding_window_pattern``: a period n (layer il uses the window iff il % n < n - 1, so
    every n-th layer is global; llama.cpp assumes 6 when the key is missing) or one bool per layer.
    """
    m = _base(
        "gemma3", name="tiny-gemma3", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, vocab=vocab, n_ctx_train=n_ctx_train, pre="default",
    )  # fmt: skip
    m.set(".feed_forward_length", n_ff)
    m.set(".rope.dimension_count", head_dim)
    m.set(".rope.freq_base_swa", 10_000.0)
    m.set(".attention.sliding_window", sliding_window)
    m.set(
        ".attention.sliding_window_pattern",
        sliding_window_pattern
        if isinstance(sliding_window_pattern, int)
        else [bool(b) for b in sliding_window_pattern],
    )
    for i in range(n_layer):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        _attention(m, i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, q_rows=head_dim * n_head)
        m.add(f"blk.{i}.post_attention_norm.weight", n_embd, kind=F32)
        _qk_norms(m, i, head_dim)
        m.add(f"blk.{i}.ffn_norm.weight", n_embd, kind=F32)
        _dense_ffn(m, i, n_embd=n_embd, n_ff=n_ff)
        m.add(f"blk.{i}.post_ffw_norm.weight", n_embd, kind=F32)
    return m


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def split_paths(path: str | os.PathLike[str], parts: int) -> list[Path]:
    """llama.cpp's names for the parts of a split: model.gguf -> model-00001-of-00003.gguf, ..."""
    path = Path(path)
    if parts == 1:
        return [path]
    stem = path.name.removesuffix(".gguf")
    return [path.with_name(f"{stem}-{i:05d}-of-{parts:05d}.gguf") for i in range(1, parts + 1)]


def _put(writer: GGUFWriter, key: str, value: Any) -> None:
    if key == "general.architecture":
        return  # the writer adds it
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if 0 <= value < 2**32 else writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def _tensor_data(shape: tuple[int, ...], qtype: GGMLQuantizationType, fill: float) -> np.ndarray:
    values = np.full(tuple(reversed(shape)), fill, dtype=np.float32)  # numpy order: ne[0] last
    return quants.quantize(values, qtype)


def write_model(path: str | os.PathLike[str], model: ModelFile, *, weight_type: str = "F32", parts: int = 1) -> Path:
    """Write ``model`` to ``path`` (or to ``parts`` split files named after it); return the path to load."""
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    if not 1 <= parts <= len(model.tensors):
        raise ValueError(f"parts must be between 1 and the tensor count {len(model.tensors)}, got {parts}")
    matrix_type = GGMLQuantizationType[weight_type]
    paths = split_paths(path, parts)
    per_part = -(-len(model.tensors) // parts)
    for no, part_path in enumerate(paths):
        writer = GGUFWriter(part_path, model.arch)
        if no == 0:
            for key, value in model.kv.items():
                _put(writer, key, value)
        if parts > 1:
            writer.add_uint16("split.no", no)
            writer.add_uint16("split.count", parts)
            writer.add_int32("split.tensors.count", len(model.tensors))
        for name, shape, kind in model.tensors[no * per_part : (no + 1) * per_part]:
            block = GGML_QUANT_SIZES[matrix_type][0]
            qtype = matrix_type if kind == MATRIX and shape[0] % block == 0 else GGMLQuantizationType.F32
            fill = 1.0 if "norm" in name else 0.0
            data = _tensor_data(shape, qtype, fill)
            raw = qtype if qtype not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) else None
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return paths[0]


def write_dense(path: str | os.PathLike[str], *, weight_type: str = "F32", parts: int = 1, **dims: Any) -> Path:
    """A qwen3 dense model; ``dims`` are dense_model's: n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff,
    vocab, n_ctx_train."""
    return write_model(path, dense_model(**dims), weight_type=weight_type, parts=parts)


def write_moe(path: str | os.PathLike[str], *, weight_type: str = "F32", parts: int = 1, **dims: Any) -> Path:
    """A Mixture-of-Experts model; ``dims`` are moe_model's: n_layer, n_embd, n_head, n_head_kv, head_dim,
    n_expert, n_expert_used, n_ff_exp, shared_expert, n_ff_shexp, vocab, n_ctx_train.

    Per layer: attn_norm, attn_q/k/v/output, attn_q_norm/k_norm, ffn_norm, ffn_gate_inp and
    ffn_gate_exps/up_exps/down_exps (architecture qwen3moe). With ``shared_expert=True`` also
    ffn_gate_inp_shexp and ffn_gate/up/down_shexp, as architecture qwen2moe: llama.cpp's qwen3moe loader
    rejects shared-expert tensors and its qwen2moe loader has no q/k norms (so those are left out, and
    head_dim * n_head must equal n_embd).
    """
    return write_model(path, moe_model(**dims), weight_type=weight_type, parts=parts)


def write_hybrid(path: str | os.PathLike[str], *, weight_type: str = "F32", parts: int = 1, **dims: Any) -> Path:
    """A qwen35moe hybrid; ``dims`` are hybrid_model's: n_layer, full_attention_interval, n_embd, n_head,
    n_head_kv, head_dim, n_expert, n_expert_used, n_ff_exp, n_ff_shexp, ssm_conv_kernel, ssm_state_size,
    ssm_group_count, ssm_time_step_rank, vocab, n_ctx_train.

    Layer i has attention (and a KV cache) iff (i + 1) % full_attention_interval == 0; the others are
    gated-delta-net layers with a recurrent state. Every layer has routed and shared experts.
    """
    return write_model(path, hybrid_model(**dims), weight_type=weight_type, parts=parts)


def write_sliding_window(
    path: str | os.PathLike[str], *, weight_type: str = "F32", parts: int = 1, **dims: Any
) -> Path:
    """A gemma3 model with interleaved sliding-window attention; ``dims`` are sliding_window_model's:
    n_layer, sliding_window, sliding_window_pattern, n_embd, n_head, n_head_kv, head_dim, n_ff, vocab,
    n_ctx_train."""
    return write_model(path, sliding_window_model(**dims), weight_type=weight_type, parts=parts)


def projector_model(*, n_embd: int = 256, n_embd_text: int = 64, patch_size: int = 14) -> ModelFile:
    """A multimodal projector as the planner reads one: ``general.architecture = clip`` and a few tensors
    (a patch embedding and a two-matrix mlp projector). Not a full vision encoder: llama-server's clip.cpp
    would refuse it (it asks for every encoder layer of the projector type); the planner only sums tensors."""
    m = ModelFile("clip")
    m.set("clip.projector_type", "mlp")
    m.set("clip.has_vision_encoder", True)
    m.set("clip.vision.embedding_length", n_embd)
    m.set("clip.vision.patch_size", patch_size)
    m.add("v.patch_embd.weight", patch_size, patch_size, 3, n_embd)
    m.add("mm.0.weight", n_embd, n_embd_text)
    m.add("mm.0.bias", n_embd_text, kind=F32)
    m.add("mm.2.weight", n_embd_text, n_embd_text)
    return m


def write_projector(path: str | os.PathLike[str], *, weight_type: str = "F32", **dims: Any) -> Path:
    """A projector GGUF (``projector_model``'s dims: n_embd, n_embd_text, patch_size); the weight type applies to
    the matrices."""
    return write_model(path, projector_model(**dims), weight_type=weight_type)


# A Qwen3-30B-A3B-shaped model at Q4_K (17.2 GB of tensor data, 579 tensors): 48 layers, 128 experts, 151936 tokens.
LARGE_MOE = {
    "n_layer": 48, "n_embd": 2048, "n_head": 32, "n_head_kv": 4, "head_dim": 128, "n_expert": 128,
    "n_expert_used": 8, "n_ff_exp": 768, "vocab": 151936, "n_ctx_train": 262144,
}  # fmt: skip


def write_sparse_large(
    path: str | os.PathLike[str], size_bytes: int = 20 * 10**9, *, weight_type: str = "Q4_K", **dims: Any
) -> Path:
    """A large MoE model whose header and tensor infos are real and whose data section is a hole.

    The file's apparent size is ``size_bytes`` or the end of its tensor data, whichever is larger; it takes a
    few megabytes on disk (the header). ``dims`` override LARGE_MOE (moe_model's arguments); the realistic
    151936-token vocabulary makes a header of 5.5 MB, about what real Qwen3 GGUF files have.
    """
    model = moe_model(**{**LARGE_MOE, **dims})
    matrix_type = GGMLQuantizationType[weight_type]
    block, type_size = GGML_QUANT_SIZES[matrix_type]
    path = Path(path)
    writer = GGUFWriter(path, model.arch)
    for key, value in model.kv.items():
        _put(writer, key, value)
    for name, shape, kind in model.tensors:
        qtype = matrix_type if kind == MATRIX and shape[0] % block == 0 else GGMLQuantizationType.F32
        n = int(np.prod(shape))
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), n * 4)
        else:
            byte_shape = (*reversed(shape[1:]), shape[0] // block * type_size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), n // block * type_size, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_end = path.stat().st_size
    data_start = -(-header_end // writer.data_alignment) * writer.data_alignment
    data_size = sum(GGUFWriter.ggml_pad(ti.nbytes, writer.data_alignment) for ti in writer.tensors[0].values())
    os.truncate(path, max(size_bytes, data_start + data_size))
    return path


# ---------------------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------------------

MiB = 1024 * 1024


class ModelServer:
    """An HTTP server of model files on 127.0.0.1, like a model hub: Range requests, ETags, redirects.

    It counts requests (path and Range header), response statuses and body bytes sent, and misbehaves on
    demand: ``ignore_range`` (200 with the whole file), ``conditional = False`` (no 304 for If-None-Match),
    ``drip`` (one byte per 50 ms). ``redirects`` maps a path to another (a 302, as Hugging Face's resolve/
    URLs redirect to a CDN).

        server = ModelServer(tmp_path / "www")
        url = server.serve(write_moe(tmp_path / "moe.gguf"))
        ...
        server.close()
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.redirects: dict[str, str] = {}
        self.ignore_range = False  # answer every GET with 200 and the whole file
        self.conditional = True  # answer If-None-Match with 304
        self.drip = False  # send the body one byte at a time, slowly
        self.lock = threading.Lock()
        self.active = 0  # handlers still running
        self.reset()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the handlers of earlier requests have finished (and counted what they sent)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    def reset(self) -> None:
        """Forget what was served, once the handlers of earlier requests have finished."""
        self.settle()
        self.requests: list[tuple[str, str | None]] = []
        self.statuses: list[int] = []
        self.bytes_sent = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def serve(self, src: str | os.PathLike[str], name: str | None = None) -> str:
        """Put a file into the served directory (a hard link, so a sparse file stays sparse); return its URL."""
        src = Path(src)
        dst = self.root / (name or src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return self.url(dst.relative_to(self.root).as_posix())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def etag(self, path: Path) -> str:
        st = path.stat()
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, server_state: ModelServer, *args: Any) -> None:
        self.state = server_state
        super().__init__(*args)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _status(self, code: int, headers: dict[str, str]) -> None:
        with self.state.lock:
            self.state.statuses.append(code)
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.active += 1
        try:
            self._get()
        finally:
            with self.state.lock:
                self.state.active -= 1

    def _get(self) -> None:
        s = self.state
        path = urlsplit(self.path).path.lstrip("/")
        with s.lock:
            s.requests.append((path, self.headers.get("Range")))
        if path in s.redirects:
            self._status(302, {"Location": s.url(s.redirects[path]), "Content-Length": "0"})
            return
        file = s.root / path
        if not file.is_file():
            self._status(404, {"Content-Length": "0"})
            return
        size, etag = file.stat().st_size, s.etag(file)
        if s.conditional and self.headers.get("If-None-Match") == etag:
            self._status(304, {"ETag": etag})
            return
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng and not s.ignore_range:
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b), size - 1)
            if start >= size:
                self._status(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
                return
            self._status(
                206,
                {"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1), "ETag": etag},
            )
        else:
            self._status(200, {"Content-Length": str(size), "ETag": etag})
        try:
            with open(file, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left:
                    chunk = f.read(1 if s.drip else min(left, MiB))
                    self.wfile.write(chunk)
                    with s.lock:
                        s.bytes_sent += len(chunk)
                    left -= len(chunk)
                    if s.drip:
                        self.wfile.flush()
                        time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client has what it needs


# ---------------------------------------------------------------------------------------------------------
# Multi-token prediction
# ---------------------------------------------------------------------------------------------------------


def hybrid_mtp_model(*, nextn_layers: int = 1, **dims: Any) -> ModelFile:
    """A qwen35moe hybrid (hybrid_model's ``dims``) with ``nextn_layers`` multi-token-prediction blocks after
    its layers, as llama.cpp's converter writes Qwen3.5/3.6 with MTP (src/models/qwen35moe.cpp,
    load_block_mtp): ``block_count`` counts them, ``nextn_predict_layers`` says how many; each is a
    full-attention block with routed and shared experts plus ``nextn.eh_proj``, ``nextn.enorm`` and
    ``nextn.hnorm``."""
    m = hybrid_model(**dims)
    n_layer = m.kv["qwen35moe.block_count"]
    n_embd, n_head, n_head_kv = (m.kv[f"qwen35moe.{k}"] for k in ("embedding_length", "attention.head_count",
                                                                   "attention.head_count_kv"))  # fmt: skip
    head_dim = m.kv["qwen35moe.attention.key_length"]
    n_expert = m.kv["qwen35moe.expert_count"]
    n_ff_exp = m.kv["qwen35moe.expert_feed_forward_length"]
    n_ff_shexp = m.kv["qwen35moe.expert_shared_feed_forward_length"]
    m.set(".block_count", n_layer + nextn_layers)
    m.set(".nextn_predict_layers", nextn_layers)
    for i in range(n_layer, n_layer + nextn_layers):
        m.add(f"blk.{i}.attn_norm.weight", n_embd, kind=F32)
        m.add(f"blk.{i}.post_attention_norm.weight", n_embd, kind=F32)
        _attention(m, i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
                   q_rows=2 * head_dim * n_head)  # fmt: skip
        _qk_norms(m, i, head_dim)
        _routed_experts(m, i, n_embd=n_embd, n_expert=n_expert, n_ff_exp=n_ff_exp)
        _shared_expert(m, i, n_embd=n_embd, n_ff_shexp=n_ff_shexp)
        m.add(f"blk.{i}.nextn.eh_proj.weight", 2 * n_embd, n_embd)
        m.add(f"blk.{i}.nextn.enorm.weight", n_embd, kind=F32)
        m.add(f"blk.{i}.nextn.hnorm.weight", n_embd, kind=F32)
    return m


def write_hybrid_mtp(
    path: str | os.PathLike[str], *, weight_type: str = "F32", parts: int = 1, nextn_layers: int = 1, **dims: Any
) -> Path:
    """A qwen35moe hybrid with multi-token-prediction blocks (hybrid_mtp_model)."""
    return write_model(path, hybrid_mtp_model(nextn_layers=nextn_layers, **dims), weight_type=weight_type, parts=parts)
