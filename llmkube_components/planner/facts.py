"""What the memory planner needs to know about a model, read from GGUF metadata the way llama.cpp reads it.

``ModelFacts.from_metadata`` turns a ``GGUFMetadata`` (key-values and tensor infos) into per-layer facts:
which layers keep an attention KV cache, which use a sliding window, which keep recurrent state, how wide
their K and V rows are, and what each tensor is for (``classify``). Every rule names the llama.cpp file it
comes from; the tree is the one vendored in llama-cpp-python 0.3.36 (``vendor/llama.cpp``):

- key names: ``src/llama-arch.cpp`` (``LLM_KV_NAMES``); generic hyperparameters and their defaults:
  ``llama_model_base::load_hparams`` in ``src/llama-model.cpp``; per-architecture ones:
  ``load_arch_hparams`` in ``src/models/<arch>.cpp``; derived sizes: ``src/llama-hparams.cpp``.
- Recurrent layers. Qwen3-Next and Qwen3.5/3.6 (``qwen3next``, ``qwen35``, ``qwen35moe``) read
  ``attention.recurrent_layers`` (one flag per layer) if present, else layer ``i`` is recurrent unless
  ``(i + 1) % full_attention_interval == 0`` (default interval 4). Mamba (``mamba``, ``mamba2``) is recurrent in
  every layer; Jamba and Granite hybrid (``jamba``, ``granitehybrid``) in the layers with ``head_count_kv``
  0. Other recurrent or hybrid architectures (RWKV, LFM2, Kimi linear, Nemotron-H, ...) keep state the planner
  does not model yet: ``from_metadata`` refuses them.
- Recurrent state per layer and sequence (``llama_hparams::n_embd_r`` / ``n_embd_s``, stored as f32 by
  ``llama_model::create_memory``): ``n_embd_r = (ssm.conv_kernel - 1) * (ssm.inner_size + 2 *
  ssm.group_count * ssm.state_size)`` (the convolution state) and ``n_embd_s = ssm.state_size *
  ssm.inner_size`` (the SSM / delta-net state).
- Sliding-window (SWA) layers (``llama_model_base::load_swa_pattern``, ``llama_hparams::set_swa_pattern``):
  an array ``attention.sliding_window_pattern`` gives one flag per layer; otherwise a period ``n`` (the scalar
  key, else the architecture's default) makes layer ``i`` SWA iff ``i % n < n - 1``, so the last layer of each
  period is global. Supported: ``gemma3`` (period 6, and only when ``attention.sliding_window`` > 0),
  ``gemma2`` (period 2, window 4096 unless the key says otherwise), ``gpt-oss`` (period 2: even layers slide)
  and ``cohere2`` (period 4). Another architecture with a ``sliding_window`` key gets full-context caches in
  every layer (an over-estimate), and a note says so.
- Multi-token-prediction layers (``nextn_predict_layers``, the last blocks of the file) count in
  ``block_count`` and in layer placement, but llama-server loads their weights only for MTP speculative
  decoding (``TENSOR_SKIP`` in ``load_arch_tensors`` unless ``load_mtp``) and never gives them KV cache in the
  main context: they are class ``mtp`` here. A skipped tensor is in no buffer, host or GPU: the loader's
  ``create_tensor`` returns none for it ("model has unused tensor ... -- ignoring"), so at most the mapping's
  prefetch reads its file pages into the page cache, which nothing touches afterwards.
- Multi-head latent attention (``llama_hparams::is_mla``: ``attention.key_length_mla`` and
  ``value_length_mla`` both set, read by ``load_arch_hparams`` in ``src/models/deepseek2.cpp``): the cache's
  head sizes are ``attention.key_length`` (``kv_lora_rank`` + rope dimensions) and ``value_length``
  (``kv_lora_rank``) with ``head_count_kv`` 1, and there is no V tensor (``is_mla``; see ``memory``). An older
  GGUF without the ``_mla`` keys is plain multi-head attention (``attn_kv_b``), sized as such. DeepSeek sparse
  attention (``deepseek32``, ``glm-dsa``) adds an indexer cache the planner does not model: refused.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ..api.model import MAX_LAYERS
from ..errors import UserError
from .types import GGUFMetadata, TensorInfo

__all__ = [
    "F32_BYTES",
    "ModelFacts",
    "ModelFactsError",
    "ProjectorFacts",
    "SsmFacts",
    "TensorClass",
]

F32_BYTES: Final = 4


# No hyperparameter of a real model comes near this (context lengths are millions, widths tens of thousands);
# a larger one is a corrupt or hostile header, refused before any arithmetic sizes memory with it.
MAX_HYPERPARAMETER: Final = 1 << 40


class ModelFactsError(UserError):
    """GGUF metadata the planner cannot use: the source, then the key or rule at fault.

    A ``pulumi.RunError``, like the GGUF reader's ``MetadataError``, so that an unhandled one prints as its
    message alone.
    """

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}" if source else message)


class TensorClass(StrEnum):
    """What a tensor is for, as far as memory placement cares."""

    TOKEN_EMBD = "token_embd"  # input layer: token_embd (and position/type embeddings); llama.cpp keeps it on the CPU
    OUTPUT = "output"  # output layer: output, output_norm
    ATTENTION = "attention"  # attn_q/k/v/output/qkv, their norms and biases, attention sinks
    DENSE_FFN = "dense_ffn"  # ffn_gate/up/down of a dense layer
    SHARED_EXPERT = "shared_expert"  # ffn_*_shexp, ffn_gate_inp_shexp
    ROUTED_EXPERT = "routed_expert"  # ffn_{gate,up,down,gate_up}_exps (what --cpu-moe moves)
    ROUTER = "router"  # ffn_gate_inp, exp_probs_b
    RECURRENT = "recurrent"  # ssm_*, and attn_qkv / attn_gate of recurrent layers
    NORM = "norm"  # per-layer norms: attn_norm, ffn_norm, post_attention_norm, ...
    OTHER = "other"  # anything else (rope_freqs, ...)
    MTP = "mtp"  # tensors of multi-token-prediction layers, which llama-server does not load by default


# --- architecture rules -----------------------------------------------------------------------------------

# src/models/{qwen3next,qwen35,qwen35moe}.cpp: recurrent unless (i + 1) % full_attention_interval == 0.
INTERVAL_HYBRIDS: Final[Mapping[str, int]] = {"qwen3next": 4, "qwen35": 4, "qwen35moe": 4}
# src/llama-arch.cpp llm_arch_is_recurrent: every layer keeps state.
PURE_RECURRENT: Final = frozenset({"mamba", "mamba2"})
# src/models/{jamba,granite-hybrid}.cpp: is_recr(i) = head_count_kv(i) == 0.
KV_HEADLESS_HYBRIDS: Final = frozenset({"jamba", "granitehybrid"})
# llm_arch_is_recurrent / llm_arch_is_hybrid architectures whose state sizes use other keys
# (RWKV wkv heads, LFM2 short convolutions, KDA / lightning attention, ...): not modelled.
UNMODELLED_STATE: Final = frozenset(
    {
        "rwkv6",
        "rwkv6qwen2",
        "rwkv7",
        "arwkv7",
        "falcon-h1",
        "plamo2",
        "lfm2",
        "lfm2moe",
        "nemotron_h",
        "nemotron_h_moe",
        "kimi-linear",
        "bailingmoe3",
        "kimi-k3",
        "glm5-next",
        "qwen4exp",
        "deepseek4",
        "minimax-01",
    }
)

# Multi-head latent attention with DeepSeek sparse attention (src/llama-model.cpp create_memory:
# llama_kv_cache_dsa): beside the MLA cache, an indexer key cache (attention.indexer.key_length per token and
# layer, in the K cache type, in every layer or per attention.indexer.types) the planner does not model yet.
UNMODELLED_CACHES: Final = frozenset({"deepseek32", "glm-dsa"})


@dataclass(frozen=True)
class SwaRule:
    period: int  # default sliding_window_pattern
    needs_window_key: bool  # SWA only when attention.sliding_window is present and > 0
    default_window: int | None  # window when the key is missing (None: the key is required)


# load_arch_hparams in src/models/<arch>.cpp (see the module docstring).
SWA_RULES: Final[Mapping[str, SwaRule]] = {
    "gemma2": SwaRule(period=2, needs_window_key=False, default_window=4096),
    "gemma3": SwaRule(period=6, needs_window_key=True, default_window=None),
    "gpt-oss": SwaRule(period=2, needs_window_key=False, default_window=None),
    "cohere2": SwaRule(period=4, needs_window_key=False, default_window=None),
}

# --- tensor classification --------------------------------------------------------------------------------

_BLOCK: Final = re.compile(r"^blk\.(\d+)\.(.+)$")
# The stem llama.cpp's --cpu-moe regex matches (common/common.h LLM_FFN_EXPS_REGEX).
_ROUTED: Final = re.compile(r"^ffn_(up|down|gate|gate_up)_(ch|)exps$")
_SHARED: Final = re.compile(r"^ffn_\w+_shexp$")
_ROUTER: Final = frozenset({"ffn_gate_inp", "exp_probs_b", "ffn_exp_probs_b"})
_DENSE: Final = frozenset({"ffn_gate", "ffn_up", "ffn_down", "ffn_gate_up"})
_RECURRENT_IN_RECURRENT_LAYERS: Final = frozenset({"attn_qkv", "attn_gate"})
# LLM_TENSOR_LAYER_INPUT and LLM_TENSOR_LAYER_OUTPUT tensors (src/llama-arch.cpp LLM_TENSOR_INFOS).
_INPUT: Final = frozenset({"token_embd", "position_embd", "token_types", "per_layer_token_embd"})
_OUTPUT: Final = frozenset({"output", "output_norm", "cls"})


@dataclass(frozen=True)
class SsmFacts:
    """The ``<arch>.ssm.*`` keys of a recurrent (Mamba-style or gated delta-net) model."""

    conv_kernel: int
    inner_size: int
    state_size: int
    group_count: int
    time_step_rank: int

    @property
    def n_embd_r(self) -> int:
        """Convolution state per sequence, in values (llama_hparams::n_embd_r, Mamba branch)."""
        return max(self.conv_kernel - 1, 0) * (self.inner_size + 2 * self.group_count * self.state_size)

    @property
    def n_embd_s(self) -> int:
        """SSM / delta-net state per sequence, in values (llama_hparams::n_embd_s, Mamba branch)."""
        return self.state_size * self.inner_size


@dataclass(frozen=True)
class ModelFacts:
    """Per-layer facts of one model, from its GGUF metadata (see the module docstring for the rules)."""

    source: str
    architecture: str
    block_count: int  # every block in the file, multi-token-prediction layers included (llama.cpp n_layer_all)
    nextn_layers: int  # multi-token-prediction layers at the end of the file
    n_embd: int
    context_length: int  # trained context (n_ctx_train): llama.cpp's context size for --ctx-size 0
    vocab_size: int  # 0 when the metadata does not say
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    key_length: int  # head size of K in full-attention layers
    value_length: int
    key_length_swa: int  # head size of K in sliding-window layers
    value_length_swa: int
    is_mla: bool  # DeepSeek-style multi-head latent attention: the cache keeps K only
    feed_forward_length: tuple[int, ...]
    is_recurrent: tuple[bool, ...]
    is_swa: tuple[bool, ...]
    sliding_window: int  # 0 without sliding-window layers
    expert_count: int
    expert_used_count: int
    expert_feed_forward_length: int
    expert_shared_feed_forward_length: int
    ssm: SsmFacts | None
    tensors: tuple[TensorInfo, ...]
    notes: tuple[str, ...] = ()

    # --- derived, as src/llama-hparams.cpp derives them ---------------------------------------------------

    @property
    def n_layer(self) -> int:
        """Layers of the main model: blocks without the multi-token-prediction ones (llama_hparams::n_layer)."""
        return self.block_count - self.nextn_layers

    @property
    def has_attention_kv(self) -> tuple[bool, ...]:
        """Per block: does the main context keep K/V for it (not recurrent, has KV heads, not an MTP layer)."""
        return tuple(
            il < self.n_layer and not self.is_recurrent[il] and self.n_head_kv[il] > 0 for il in range(self.block_count)
        )

    def head_k(self, il: int) -> int:
        return self.key_length_swa if self.is_swa[il] else self.key_length

    def head_v(self, il: int) -> int:
        return self.value_length_swa if self.is_swa[il] else self.value_length

    def n_embd_k_gqa(self, il: int) -> int:
        """Values of K per token in layer ``il`` (llama_hparams::n_embd_k_gqa)."""
        return self.head_k(il) * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        """Values of V per token in layer ``il`` (llama_hparams::n_embd_v_gqa); the MLA cache keeps no V."""
        return 0 if self.is_mla else self.head_v(il) * self.n_head_kv[il]

    @property
    def recurrent_layers(self) -> tuple[int, ...]:
        return tuple(il for il in range(self.n_layer) if self.is_recurrent[il])

    @property
    def recurrent_state_bytes_per_sequence(self) -> int:
        """Bytes of one recurrent layer's state for one sequence: r and s rows, f32 (llama-memory-recurrent.cpp)."""
        if self.ssm is None:
            return 0
        return F32_BYTES * (self.ssm.n_embd_r + self.ssm.n_embd_s)

    @property
    def ffn_width(self) -> int:
        """Widest feed-forward activation per token: dense n_ff, or the routed experts used plus the shared one."""
        moe = self.expert_used_count * self.expert_feed_forward_length + self.expert_shared_feed_forward_length
        return max(max(self.feed_forward_length, default=0), moe)

    # --- tensors ------------------------------------------------------------------------------------------

    @property
    def file_bytes(self) -> int:
        """Bytes of tensor data: what the model's files hold at least (their headers add a few MB)."""
        return sum(t.nbytes for t in self.tensors)

    def classify(self, name: str) -> tuple[TensorClass, int | None]:
        """What a tensor is for, and its layer (None outside the repeating blocks)."""
        # The auto decision plans the same model many times: classify each tensor once per model.
        known = self._classes.get(name)
        if known is None:
            known = self._classes[name] = self._classify(name)
        return known

    @functools.cached_property
    def _classes(self) -> dict[str, tuple[TensorClass, int | None]]:
        return {}

    def _classify(self, name: str) -> tuple[TensorClass, int | None]:
        m = _BLOCK.match(name)
        if m is None:
            stem = name.split(".", 1)[0]
            if stem in _INPUT:
                return TensorClass.TOKEN_EMBD, None
            if stem in _OUTPUT:
                return TensorClass.OUTPUT, None
            return TensorClass.OTHER, None
        il = int(m.group(1))
        stem = m.group(2).split(".", 1)[0]
        if il >= self.n_layer:
            return TensorClass.MTP, il
        return _classify_stem(stem, recurrent=il < len(self.is_recurrent) and self.is_recurrent[il]), il

    @property
    def tied_embeddings(self) -> bool:
        """No ``output.weight``: llama.cpp uses token_embd as the output matrix too (TENSOR_DUPLICATED)."""
        return not any(t.name == "output.weight" for t in self.tensors)

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_metadata(cls, meta: GGUFMetadata) -> ModelFacts:
        return _Reader(meta).facts()


@dataclass(frozen=True)
class ProjectorFacts:
    """What the planner knows of a multimodal projector (a Model's mmproj, loaded by tools/mtmd/clip.cpp).

    ``weight_bytes`` is the sum of the file's tensors: clip.cpp allocates the tensors its projector type asks
    for (``tensors_to_load``) in one weights buffer, so this is what it loads, or slightly more.
    """

    source: str
    weight_bytes: int

    @classmethod
    def from_metadata(cls, meta: GGUFMetadata) -> ProjectorFacts:
        if not meta.tensors:
            raise ModelFactsError(meta.source, "has no tensors; a multimodal projector holds its encoder's weights")
        return cls(meta.source, sum(t.nbytes for t in meta.tensors))


def _classify_stem(stem: str, *, recurrent: bool) -> TensorClass:
    if _ROUTED.match(stem):
        return TensorClass.ROUTED_EXPERT
    if _SHARED.match(stem):
        return TensorClass.SHARED_EXPERT
    if stem in _ROUTER:
        return TensorClass.ROUTER
    if stem in _DENSE:
        return TensorClass.DENSE_FFN
    if stem.startswith("ssm_") or (recurrent and stem in _RECURRENT_IN_RECURRENT_LAYERS):
        return TensorClass.RECURRENT
    if stem == "attn_norm" or (stem.endswith("_norm") and not stem.startswith("attn_")):
        return TensorClass.NORM
    if stem.startswith("attn_"):
        return TensorClass.ATTENTION
    return TensorClass.OTHER


class _Reader:
    """Reads one GGUFMetadata; every failure names the key."""

    def __init__(self, meta: GGUFMetadata) -> None:
        self.meta = meta
        self.arch = meta.architecture
        self.notes: list[str] = list(meta.notes)

    def fail(self, message: str) -> ModelFactsError:
        return ModelFactsError(self.meta.source, message)

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def has(self, name: str) -> bool:
        return self.key(name) in self.meta.fields

    def uint(self, name: str, default: int | None = None, *, why: str = "") -> int:
        value = self.meta.fields.get(self.key(name))
        if value is None:
            if default is None:
                raise self.fail(f"{self.key(name)} is missing{why}; the planner cannot size this model without it")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{self.key(name)} is {value!r}, expected a non-negative integer")
        if value > MAX_HYPERPARAMETER:
            raise self.fail(
                f"{self.key(name)} is {value}, beyond any model (at most {MAX_HYPERPARAMETER}): a corrupt header?"
            )
        return int(value)

    def per_layer(self, name: str, n: int, default: int | None = None, *, why: str = "") -> tuple[int, ...]:
        """A key llama.cpp reads with get_key_or_arr: one value for every layer, or an array of ``n``."""
        value = self.meta.fields.get(self.key(name))
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != n:
                raise self.fail(f"{self.key(name)} has {len(value)} entries, expected one per block ({n})")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                raise self.fail(f"{self.key(name)} holds {list(value)!r}, expected non-negative integers")
            return tuple(int(v) for v in value)
        return (self.uint(name, default, why=why),) * n

    def flags(self, name: str, n: int) -> tuple[bool, ...] | None:
        value = self.meta.fields.get(self.key(name))
        if value is None:
            return None
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n:
            raise self.fail(f"{self.key(name)} is {value!r}, expected one flag per block ({n})")
        return tuple(bool(v) for v in value)

    def facts(self) -> ModelFacts:
        if not self.arch:
            raise self.fail("general.architecture is missing; the planner cannot tell what model this is")
        if self.arch in UNMODELLED_CACHES:
            raise self.fail(
                f"architecture {self.arch} keeps a sparse-attention indexer cache beside its latent (MLA) KV cache, "
                "which the planner does not model yet (DeepSeek2/3-style MLA models, arch deepseek2, are supported)"
            )
        if self.arch in UNMODELLED_STATE:
            raise self.fail(
                f"architecture {self.arch} keeps recurrent state the planner does not model yet "
                f"(supported recurrent and hybrid architectures: "
                f"{', '.join(sorted({*INTERVAL_HYBRIDS, *PURE_RECURRENT, *KV_HEADLESS_HYBRIDS}))})"
            )
        n = self.uint("block_count")
        if n == 0:
            raise self.fail(f"{self.key('block_count')} is 0; a model needs at least one block")
        if n > MAX_LAYERS:
            # Everything per layer is sized by it: an absurd count would take minutes and gigabytes to plan.
            raise self.fail(f"{self.key('block_count')} is {n}; llama.cpp loads at most {MAX_LAYERS} blocks")
        nextn = self.uint("nextn_predict_layers", 0)
        if nextn > n:
            raise self.fail(f"{self.key('nextn_predict_layers')} is {nextn}, more than the {n} blocks")
        n_embd = self.uint("embedding_length")
        context_length = self.uint("context_length")

        pure_recurrent = self.arch in PURE_RECURRENT
        n_head = self.per_layer("attention.head_count", n, 0 if pure_recurrent else None)
        # llama-model.cpp load_hparams: n_head_kv defaults to n_head.
        n_head_kv = self.per_layer("attention.head_count_kv", n) if self.has("attention.head_count_kv") else n_head
        head0 = n_head[0]
        if head0 > 0:
            key_length = self.uint("attention.key_length", n_embd // head0)
            value_length = self.uint("attention.value_length", n_embd // head0)
        else:
            key_length = value_length = 0
        key_length_swa = self.uint("attention.key_length_swa", key_length)
        value_length_swa = self.uint("attention.value_length_swa", value_length)
        is_mla = self.uint("attention.key_length_mla", 0) > 0 and self.uint("attention.value_length_mla", 0) > 0

        is_recurrent = self._recurrent_layers(n, n - nextn, n_head_kv)
        ssm = self._ssm() if any(is_recurrent) else None
        is_swa, window = self._swa_layers(n, n - nextn)
        if not any(n_head_kv[il] for il in range(n - nextn) if not is_recurrent[il]) and not pure_recurrent:
            raise self.fail(f"{self.key('attention.head_count_kv')} is 0 in every attention layer")

        expert_count = self.uint("expert_count", 0)
        expert_used = max(self.per_layer("expert_used_count", n, 0), default=0)
        if expert_count and not expert_used:
            raise self.fail(f"{self.key('expert_used_count')} is missing; a model with {expert_count} experts needs it")
        return ModelFacts(
            source=self.meta.source,
            architecture=self.arch,
            block_count=n,
            nextn_layers=nextn,
            n_embd=n_embd,
            context_length=context_length,
            vocab_size=self._vocab_size(),
            n_head=n_head,
            n_head_kv=n_head_kv,
            key_length=key_length,
            value_length=value_length,
            key_length_swa=key_length_swa,
            value_length_swa=value_length_swa,
            is_mla=is_mla,
            feed_forward_length=self.per_layer("feed_forward_length", n, 0),
            is_recurrent=is_recurrent,
            is_swa=is_swa,
            sliding_window=window,
            expert_count=expert_count,
            expert_used_count=expert_used,
            expert_feed_forward_length=max(self.per_layer("expert_feed_forward_length", n, 0), default=0),
            expert_shared_feed_forward_length=self.uint("expert_shared_feed_forward_length", 0),
            ssm=ssm,
            tensors=tuple(self.meta.tensors),
            notes=tuple(self.notes),
        )

    def _recurrent_layers(self, n: int, n_layer: int, n_head_kv: tuple[int, ...]) -> tuple[bool, ...]:
        if self.arch in INTERVAL_HYBRIDS:
            given = self.flags("attention.recurrent_layers", n)
            if given is not None:
                return given
            interval = self.uint("full_attention_interval", INTERVAL_HYBRIDS[self.arch])
            if interval == 0:
                raise self.fail(f"{self.key('full_attention_interval')} is 0; it must be at least 1")
            return tuple(il < n_layer and (il + 1) % interval != 0 for il in range(n))
        if self.arch in PURE_RECURRENT:
            return tuple(il < n_layer for il in range(n))
        if self.arch in KV_HEADLESS_HYBRIDS:
            return tuple(il < n_layer and n_head_kv[il] == 0 for il in range(n))
        return (False,) * n

    def _ssm(self) -> SsmFacts:
        why = f" (the recurrent layers of {self.arch} keep state sized by it)"
        return SsmFacts(
            conv_kernel=self.uint("ssm.conv_kernel", why=why),
            inner_size=self.uint("ssm.inner_size", why=why),
            state_size=self.uint("ssm.state_size", why=why),
            group_count=self.uint("ssm.group_count", 0),
            time_step_rank=self.uint("ssm.time_step_rank", 0),
        )

    def _swa_layers(self, n: int, n_layer: int) -> tuple[tuple[bool, ...], int]:
        none = (False,) * n
        rule = SWA_RULES.get(self.arch)
        has_window = self.has("attention.sliding_window")
        if rule is None:
            if has_window and self.uint("attention.sliding_window", 0) > 0:
                self.notes.append(
                    f"{self.arch}: sliding-window layers are not modelled; every layer is sized with a "
                    "full-context KV cache (an over-estimate)"
                )
            return none, 0
        if rule.needs_window_key and self.uint("attention.sliding_window", 0) == 0:
            return none, 0
        window = self.uint("attention.sliding_window", rule.default_window)
        pattern: Any = self.meta.fields.get(self.key("attention.sliding_window_pattern"))
        if isinstance(pattern, Sequence) and not isinstance(pattern, str):
            flags = self.flags("attention.sliding_window_pattern", n)
            assert flags is not None
            return tuple(flags[il] and il < n_layer for il in range(n)), window
        period = self.uint("attention.sliding_window_pattern", rule.period)
        # llama_hparams::set_swa_pattern (dense_first false): the last layer of each period is global.
        return tuple(il < n_layer and (period == 0 or il % period < period - 1) for il in range(n)), window

    def _vocab_size(self) -> int:
        for t in self.meta.tensors:
            if t.name == "token_embd.weight" and len(t.shape) >= 2:
                return t.shape[1]
        if self.has("vocab_size"):
            return self.uint("vocab_size")
        tokens = self.meta.fields.get("tokenizer.ggml.tokens")
        if isinstance(tokens, int):
            return tokens
        if isinstance(tokens, Sequence):
            return len(tokens)
        return 0
