"""Memory plan: how many bytes llama-server puts on each GPU and in host RAM, by category, for one placement.

``plan_memory(facts, placement, context_size=..., ...)`` follows llama.cpp's own allocation rules, cited per
rule from the tree vendored in llama-cpp-python 0.3.36 (``vendor/llama.cpp``):

Placement of weights
- Layers (``llama_model_base::load_tensors`` in ``src/llama-model.cpp``): the output layer counts as layer
  ``n_layer_all``, so there are ``n_layer_all + 1`` offloadable layers; ``--n-gpu-layers N`` offloads the last
  ``N`` of them (``i_gpu_start = max(n_layer_all + 1 - N, 0)``), so the output layer is the first to go to a
  GPU and ``N >= n_layer_all + 1`` offloads everything. An offloaded layer ``il`` goes to the first GPU whose
  cumulative ``--tensor-split`` share exceeds ``(il - i_gpu_start) / offloaded`` (float32 arithmetic, as
  there). The input layer (``token_embd``) always stays on the CPU. ``--split-mode none`` keeps the main GPU
  only (``llama_prepare_model_devices`` in ``src/llama.cpp``).
- Without ``--tensor-split`` llama.cpp splits by each GPU's free memory at start-up; the plan assumes equal
  shares (identical GPUs, nothing else on them).
- Overrides (``llama_model_loader::create_tensor`` in ``src/llama-model-loader.cpp``): every rule is tried
  with ``std::regex_search`` on the tensor name, in order, and the first match wins. ``--cpu-moe`` adds
  ``\\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU`` and ``--n-cpu-moe N`` adds ``blk\\.<i>\\.ffn_...=CPU`` for
  ``i < N`` (``common/common.h``, ``common/arg.cpp``), in command-line order; ``llmkube_components.llamacpp``
  emits ``--cpu-moe``, ``--n-cpu-moe``, then each ``--override-tensor``, so that is the order used here.
- Tied embeddings (no ``output.weight``): token_embd is loaded a second time as the output matrix, on the
  output layer's device, unless that is the CPU too (``TENSOR_DUPLICATED`` in ``create_tensor``).
- ``--split-mode row``: the 2-D matrix weights of offloaded layers (not routed experts, which the split
  buffer cannot run) are divided across all GPUs by the split shares (``make_gpu_buft_list``); an estimate,
  as ggml-cuda rounds each GPU's rows.

Repacked host weights (``--repack``, on by default; ``--no-repack``: ``common_params::no_extra_bufts``)
- Which buffer a host-resident weight gets (``make_cpu_buft_list`` in ``src/llama-model.cpp``): the CPU list is
  accelerators, then the first GPU's host buffer type (``CUDA_Host``, unless ``--no-host``), then the CPU's
  "extra" buffer types (``ggml_backend_cpu_get_extra_buffer_types`` in ``ggml/src/ggml-cpu/ggml-cpu.cpp``: AMX,
  then CPU_REPACK), then plain CPU; ``select_weight_buft`` (``src/llama-model-loader.cpp``) takes the first
  whose device supports the weight's operation. With GPUs the host buffer type always wins, and with mmap
  ``create_tensor`` turns it back into plain (mapped) CPU ("avoid using a host buffer when using mmap"), so a
  server with GPUs repacks nothing, ``--cpu-moe`` experts included (a worker's device of a multi-node group has
  no host buffer type: it does not count). Without GPUs a weight goes to an extra
  buffer when its operation and type qualify:
  - CPU_REPACK (``ggml/src/ggml-cpu/repack.cpp``, ``extra_buffer_type::supports_op`` and
    ``ggml_repack_get_optimal_repack_type``): 2-D weights of matrix products (``GGML_OP_MUL_MAT``) and 3-D
    routed experts (``GGML_OP_MUL_MAT_ID``), not token_embd (``GGML_OP_GET_ROWS``), norms or biases. x86-64
    repacks Q4_0, Q4_K, IQ4_NL and MXFP4 (AVX2) and Q2_K (AVX-512) with ``ne[1] % 8 == 0``; ARM64 (NEON dot
    product / int8 matmul) also Q5_K, Q6_K and Q8_0, Q4_0/IQ4_NL/MXFP4/Q8_0 with ``ne[1] % 4 == 0``. Same size as
    the tensor (``get_alloc_size`` unset: ``ggml_nbytes``).
  - AMX (``ggml/src/ggml-cpu/amx/amx.cpp``; the CPU image's Sapphire Rapids variant, ``GGML_CPU_ALL_VARIANTS``):
    2-D matrix products only, ``ne[1] % 32 == 0``, ``ne[0]`` a multiple of 32 (Q4_0, Q4_1, Q8_0), 256 (Q4_K,
    Q5_K, Q6_K, IQ4_XS) or 16 (F16); its layout (``ggml_backend_amx_get_alloc_size``, ``get_row_size`` in
    ``amx/mmq.cpp``) adds 4 bytes per block to Q8_0, Q4_K and Q5_K and 2 to IQ4_XS.
  The node's CPU is not known when planning, so the plan takes the union: a weight is repacked if some CPU
  the image runs on repacks it, in AMX's layout where AMX takes it (it comes first). Cloud CPU nodes are often
  Sapphire Rapids or later (AMX); on other CPUs the AMX overhead below is room to spare.
- The repacked copy is anonymous memory, read out of the mapping at load (``load_all_data``:
  ``ggml_backend_tensor_set`` -> ``repack``). After that nothing touches the mapped pages it came from (measured:
  after a completion, 0.1 of 31.5 MiB of the mapping is referenced, against all of it with ``--no-repack``),
  so they are clean, cold page cache that the kernel reclaims under the pod's memory limit before any OOM
  kill: the plan counts a repacked weight once, in its class (``MemoryPlan.repacked`` says how much of it is
  repacked). What does come on top: AMX's layout overhead (category ``repack``), and with tied embeddings the
  output matrix, which ``create_tensor`` creates again when its buffer type differs from token_embd's
  (``TENSOR_DUPLICATED``): token_embd stays mapped for its row lookups and the output copy is repacked
  (category ``output``, measured: CPU_REPACK holds it). With ``--mlock`` the mapped range would stay locked,
  so repacked weights would count twice; the flag table renders no ``--mlock``.

KV cache and recurrent state
- Context (``llama_context`` constructor in ``src/llama-context.cpp``): ``n_ctx`` (``--ctx-size``, 0 = the
  trained context) is padded up to a multiple of 256. A unified cache (llama-server's default when
  ``--parallel`` is not given: 4 sequences, ``tools/server/server.cpp``) has one stream of ``n_ctx`` cells; with
  an explicit ``--parallel P`` and no ``--kv-unified``, each of ``P`` streams has ``pad256(n_ctx / P)`` cells.
- Bytes (``llama_kv_cache`` constructor in ``src/llama-kv-cache.cpp``): per layer with attention KV, K is
  ``cells x streams`` rows of ``n_embd_k_gqa(il)`` values of the K cache type (quantized types in whole
  blocks, ``types.row_bytes``), V likewise; without flash attention V rows are ``n_embd_v_gqa_max`` wide.
  The cache of a layer lives on its layer's device, or on the CPU with ``--no-kv-offload``.
- Sliding-window layers (``llama_kv_cache_iswa`` in ``src/llama-kv-cache-iswa.cpp``) get
  ``pad256(min(cells, n_swa * (unified ? n_seq : 1) + n_ubatch))`` cells.
- Recurrent layers (``llama_memory_recurrent`` in ``src/llama-memory-recurrent.cpp``, created by
  ``llama_model::create_memory``): ``max(1, n_seq)`` cells of f32 state (``n_embd_r + n_embd_s`` values) per
  layer, on the layer's device (CPU with ``--no-kv-offload``).
- A quantized K or V cache needs flash attention, and its block size must divide every layer's head size
  (``llama_init_from_model`` in ``src/llama-context.cpp``): the plan refuses what llama-server refuses.
- Multi-head latent attention (DeepSeek2/3, Kimi K2, GLM-4.7-Flash: ``attention.key_length_mla`` and
  ``value_length_mla`` set; ``llama_hparams::is_mla``): the cache keeps the compressed latent only. K rows are
  ``attention.key_length`` (``kv_lora_rank`` + the rope part, 576 for DeepSeek V3) x ``head_count_kv`` (1)
  values, and there is no V tensor (``has_v = !is_mla`` in the ``llama_kv_cache`` constructor): V is a view
  of K's first ``value_length`` (``kv_lora_rank``) values (``build_attn`` with ``llm_graph_input_attn_k`` in
  ``src/llama-graph.cpp``), with or without flash attention. So llama-server refuses a V cache type other
  than K's (``llama_init_from_model``: "model does not support different K and V cache types"), and the
  block-size rule applies to ``key_length`` and ``value_length``; a quantized type still needs flash
  attention (the V type is the K type). The plan checks all three, in the main context and in a draft or MTP
  context (whose types are ``--spec-draft-type-k/v``).

Speculative decoding (``common/speculative.cpp``, ``common_base_params_to_speculative`` and
``common_speculative_init_result``; ``llama_model::create_memory`` in ``src/llama-model.cpp``)
- A draft model (``-md``) is a second model with a context of its own: all its layers on the GPUs unless
  ``--spec-draft-ngl`` says otherwise (``n_gpu_layers`` -1), split like the main model (it inherits
  ``--split-mode`` and ``--tensor-split``, not the tensor overrides), a KV cache of the main context's size and
  sequences (``cparams.n_ctx = llama_n_ctx(ctx_tgt)``) in the draft's cache types (``--spec-draft-type-k/v``,
  f16 by default, whatever ``-ctk``/``-ctv`` say), and compute buffers of its own. Its weights are category
  ``draft``, its KV cache ``draft_kv``.
- ``--spec-type draft-mtp`` loads the multi-token-prediction layers (``load_mtp``; category ``mtp``, on their
  layer's device) and creates an MTP context on the same weights whose KV cache holds the MTP layers only
  (``il >= n_layer``), again the main context's size in the draft cache types (``draft_kv``), with compute
  buffers of its own. A model without such layers makes llama-server stop ("failed to create MTP context"):
  the plan refuses it. With a draft file too, the MTP context runs on the draft's weights.
- With draft-mtp, draft-eagle3, draft-dflash or draft-dspark the main context keeps ``--spec-draft-n-max``
  (default 3) extra copies of each sequence's recurrent state to roll rejected drafts back
  (``common_params_speculative::need_n_rs_seq``; ``llama_memory_recurrent``: ``mem_size * (1 + n_rs_seq)``
  rows).

Multimodal projector (``--mmproj``; ``tools/mtmd/clip.cpp``, ``clip_ctx`` and ``clip_model_loader``)
- The projector is a model of its own, loaded whole on one backend: the first GPU device
  (``ggml_backend_init_by_type(GPU)``; ``--mmproj-device`` picks another, which the planner does not read)
  unless ``--no-mmproj-offload``
  (``common_params::mmproj_use_gpu``, default on), else the CPU; ``--n-gpu-layers`` and the tensor split do
  not apply to it. Its weights (the file's tensors, ``ProjectorFacts``) are category ``mmproj`` on ``gpu0``,
  or in host memory without GPUs or with ``--no-mmproj-offload``.
- Its compute buffer is not counted: clip.cpp reserves it at load when llama-server warms up (the default;
  ``warmup`` -> ``reserve_compute_meta`` on a dummy image of ``warmup_image_size``), else at the first image,
  sized by the encoder's graph for that image, which the planner does not model. A note says so.

Estimates (not llama.cpp's own accounting; issue 5 measures them)
- ``compute``: llama.cpp sizes its compute buffers by allocating the worst-case graph (``sched_reserve``:
  ``n_ubatch`` tokens, one output per sequence since llama-server sets ``n_outputs_max = n_parallel``). The
  plan estimates that graph's peak, per device that runs layers, as ``4 B x n_ubatch x activations`` with
  ``activations`` the widest of the per-phase working sets (per token, in values; ``_activation_values``
  derives them from ggml-alloc.c's freeing and in-place reuse): attention ``q + 2 kv + 3 E``, dense FFN
  ``3 F + 2 E``, routed experts ``3 U F_exp + 2 E + 2 n_expert`` (``+ U E`` when the expert outputs do not fit
  in the freed up/gate block), shared expert ``3 F_sh + 3 E`` (``E`` n_embd, ``U`` experts used, ``F`` dense
  FFN length, ``F_exp`` expert FFN length, ``F_sh`` shared-expert FFN length), or a recurrent layer's
  working set when wider (``_recurrent_layer_bytes``); plus the attention scratch: the KQ mask
  (``cells x n_ubatch``, f16 with flash attention, f32 without) on the host and on every device running
  attention, ``cells x n_ubatch x n_head x 4 B`` of KQ scores without flash attention, and on a GPU with flash
  attention and a quantized K or V cache the f16 copy of K and V that ggml-cuda's flash attention makes inside
  the compute buffer (``ggml_cuda_flash_attn_ext_get_f16_extra_data``). These terms match the CPU build's
  ``compute buffer size`` within 10% on small qwen3, qwen3moe, qwen2moe, gemma3 and qwen35moe models (mask
  and KQ terms exactly; benchmarks/planner_accuracy.py). With ``n_ubatch >= 32`` ggml-cuda runs matrix products
  whose weights are in host memory on the first GPU (``op_offload``, ``ggml_backend_cuda_device_offload_op``),
  copying the weights into that GPU's compute buffer: the plan adds the largest layer's host-resident matrix
  weights (the whole routed-expert set of one layer under ``--cpu-moe``) to ``gpu0``. The host also holds the
  token embeddings of one ubatch and the logits buffer (``n_vocab x n_seq`` floats). Pipeline parallelism
  (several GPUs, every layer offloaded, no overrides) keeps four copies of graph inputs; a note says so when it
  applies.
- ``runtime``: per GPU ``GPU_RUNTIME_OVERHEAD`` (128 MiB) for what ggml-cuda allocates outside the buffers
  llama.cpp reports (its memory pool for quantized activations and dequantization, CUDA graphs). The CUDA
  context and cuBLAS workspace are not counted here: they are what a hardware profile's
  ``reserved.gpuMemory`` (512Mi by default) is for. On the host ``HOST_RUNTIME_OVERHEAD`` (64 MiB, the
  resident size of the CPU build serving a small model) plus ``HOST_GPU_RUNTIME_OVERHEAD`` (512 MiB, the
  CUDA runtime and cuBLAS libraries) when GPUs are used.
- ``prompt_cache``: llama-server keeps prompt states in host RAM up to ``--cache-ram`` MiB (default 8192,
  ``common/common.h`` ``cache_ram_mib``; ``server_prompt_cache`` in ``tools/server``) and does not give the
  memory back, so the plan counts the whole limit.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from ..api.base import format_bytes
from ..flags import ALL_LAYERS, DEFAULTS  # ALL_LAYERS: --n-gpu-layers 99, every layer of any model
from .facts import F32_BYTES, ModelFacts, ProjectorFacts, TensorClass
from .types import GgmlType, TensorInfo, ggml_type, row_bytes

if TYPE_CHECKING:
    from ..hardware.profile import HardwareProfile

__all__ = [
    "CATEGORIES",
    "COMPUTE",
    "DRAFT",
    "DRAFT_KV",
    "GPU_RUNTIME_OVERHEAD",
    "HOST",
    "HOST_GPU_RUNTIME_OVERHEAD",
    "HOST_RUNTIME_OVERHEAD",
    "KV_K",
    "KV_V",
    "MMPROJ",
    "PROMPT_CACHE",
    "RECURRENT_STATE",
    "REPACK",
    "RUNTIME",
    "SKIPPED",
    "SPLIT",
    "WEIGHT_CATEGORIES",
    "DeviceMemory",
    "DraftModel",
    "MemoryPlan",
    "Placement",
    "PlacementError",
    "Shortfall",
    "SplitMode",
    "gpu_name",
    "layer_devices",
    "parse_overrides",
    "plan_memory",
]

MiB: Final = 1024 * 1024
GPU_RUNTIME_OVERHEAD: Final = 128 * MiB
HOST_RUNTIME_OVERHEAD: Final = 64 * MiB
HOST_GPU_RUNTIME_OVERHEAD: Final = 512 * MiB
DEFAULT_CACHE_RAM_MIB: Final = int(DEFAULTS["--cache-ram"])  # common/common.h cache_ram_mib
AUTO_PARALLEL: Final = 4  # tools/server/server.cpp: n_parallel auto -> 4 sequences, unified KV
CTX_PAD: Final = 256  # src/llama-context.cpp and src/llama-kv-cache-iswa.cpp pad to 256 cells
OP_OFFLOAD_MIN_BATCH: Final = 32  # ggml-cuda.cu: GGML_OP_OFFLOAD_MIN_BATCH default
SCHED_MAX_COPIES: Final = 4  # ggml-backend.cpp GGML_SCHED_MAX_COPIES
F16_BYTES: Final = 2

HOST: Final = "host"
SPLIT: Final = "split"  # a tensor divided across the GPUs by --split-mode row
SKIPPED: Final = "skipped"  # a tensor llama-server does not load
KV_K: Final = "kv_k"
KV_V: Final = "kv_v"
RECURRENT_STATE: Final = "recurrent_state"
COMPUTE: Final = "compute"
RUNTIME: Final = "runtime"
PROMPT_CACHE: Final = "prompt_cache"
DRAFT: Final = "draft"  # a draft model's weights (-md)
DRAFT_KV: Final = "draft_kv"  # the KV cache (and any recurrent state) of the draft or MTP context
# A multimodal projector's weights (--mmproj). Not a weight category: those are the language models', which
# the accuracy checks compare with llama.cpp's model buffers and decode reads per token.
MMPROJ: Final = "mmproj"
# What repacked host weights need beyond their own bytes: AMX's layout overhead (see the module docstring).
REPACK: Final = "repack"
# The main model's weights by class (mtp: its multi-token-prediction layers, loaded for draft-mtp only), then a
# draft model's, then the repacking overhead of either.
WEIGHT_CATEGORIES: Final = (*(c.value for c in TensorClass), DRAFT, REPACK)
CATEGORIES: Final = (*WEIGHT_CATEGORIES, MMPROJ, KV_K, KV_V, RECURRENT_STATE, DRAFT_KV, COMPUTE, RUNTIME, PROMPT_CACHE)
MTP_TYPE: Final = "draft-mtp"  # --spec-type of the multi-token-prediction draft
# The flags of a context's K and V cache types: the main context's, and a draft or MTP context's.
CACHE_FLAGS: Final = ("--cache-type-k", "--cache-type-v")
DRAFT_CACHE_FLAGS: Final = ("--spec-draft-type-k", "--spec-draft-type-v")
# common/common.h need_n_rs_seq: with these types the main context keeps --spec-draft-n-max extra snapshots of
# every sequence's recurrent state, for rolling back rejected drafts (llama-memory-recurrent.cpp: rows x (1 + n)).
ROLLBACK_TYPES: Final = frozenset({"draft-mtp", "draft-eagle3", "draft-dflash", "draft-dspark"})

# Matrix weights: what a split buffer (--split-mode row) holds and what op offload copies to the GPU.
_MATRIX_CLASSES: Final = frozenset(
    {
        TensorClass.ATTENTION,
        TensorClass.DENSE_FFN,
        TensorClass.SHARED_EXPERT,
        TensorClass.ROUTED_EXPERT,
        TensorClass.ROUTER,
        TensorClass.RECURRENT,
        TensorClass.OUTPUT,
    }
)
# Host weights in the CPU's extra buffer types (module docstring, "Repacked host weights"). CPU_REPACK
# (ggml-cpu/repack.cpp ggml_repack_get_optimal_repack_type): type -> the row count (ne[1]) its interleaved layout
# needs a multiple of, the smallest over x86-64 (AVX2, AVX-512 for Q2_K) and ARM64 (NEON dot product / int8 matmul).
CPU_REPACK_ROWS: Final[Mapping[str, int]] = {
    "Q4_0": 4,
    "Q4_K": 8,
    "Q5_K": 8,
    "Q6_K": 8,
    "Q2_K": 8,
    "IQ4_NL": 4,
    "MXFP4": 4,
    "Q8_0": 4,
}
# AMX (ggml-cpu/amx/amx.cpp supports_op, amx/mmq.cpp get_row_size): type -> (the multiple ne[0] must be, bytes
# its layout adds per block); 2-D matrix products with ne[1] a multiple of AMX_ROWS (TILE_N * 2) only.
AMX_LAYOUT: Final[Mapping[str, tuple[int, int]]] = {
    "Q4_0": (32, 0),
    "Q4_1": (32, 0),
    "Q8_0": (32, 4),
    "Q4_K": (256, 4),
    "Q5_K": (256, 4),
    "Q6_K": (256, 0),
    "IQ4_XS": (256, 2),
    "F16": (16, 0),
}
AMX_ROWS: Final = 32
# --override-tensor buffer names: CPU, or a GPU backend's device name with its index (CUDA0, ROCm1, Vulkan0).
_GPU_BUFFER: Final = re.compile(r"^(CUDA|ROCm|Vulkan|SYCL|MUSA|CANN)(\d+)$")
# common/common.h LLM_FFN_EXPS_REGEX and llm_ffn_block_regex.
CPU_MOE_REGEX: Final = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


class PlacementError(ValueError):
    """A placement or cache setting llama-server would refuse, or the plan cannot model."""


class SplitMode(StrEnum):
    LAYER = "layer"
    ROW = "row"
    NONE = "none"


def gpu_name(index: int) -> str:
    return f"gpu{index}"


def parse_overrides(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``--override-tensor`` values as (regex, buffer) pairs: each value is ``regex=BUFFER[,regex=BUFFER...]``.

    As common/arg.cpp parses them: split on ``,``, then on the first ``=``.
    """
    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            pattern, eq, buffer = item.partition("=")
            if not eq:
                raise PlacementError(f"--override-tensor {item!r}: expected <tensor name regex>=<buffer type>")
            out.append((pattern, buffer))
    return tuple(out)


@dataclass(frozen=True)
class Placement:
    """Where llama-server puts weights and caches: its GPU flags, as the argument builder renders them."""

    gpu_count: int = 0  # GPUs the server sees; 0 for a CPU-only server
    n_gpu_layers: int = ALL_LAYERS  # --n-gpu-layers; negative means all (llama.cpp's -1 without --fit)
    split_mode: SplitMode | str = SplitMode.LAYER  # --split-mode
    tensor_split: tuple[float, ...] = ()  # --tensor-split shares per GPU; empty: equal shares
    main_gpu: int = 0  # --main-gpu: the one GPU of --split-mode none
    cpu_moe: bool = False  # --cpu-moe
    n_cpu_moe: int = 0  # --n-cpu-moe
    overrides: tuple[tuple[str, str], ...] = ()  # --override-tensor (regex, "CPU" | "CUDA<n>"), in order
    no_kv_offload: bool = False  # --no-kv-offload
    # multiNode: the workers' devices, which llama.cpp puts before its own GPUs (True: a GPU, False: a worker's
    # CPU served as a device). They count in gpu_count; ggml-rpc does not offload ops and has no CUDA runtime
    # of its own on a CPU worker.
    rpc_devices: tuple[bool, ...] = ()

    @property
    def local_gpus(self) -> int:
        """The server's own GPUs (after the workers' devices)."""
        return self.gpu_count - len(self.rpc_devices)

    @property
    def first_local(self) -> str:
        """The server's first own GPU: where op offload and the multimodal projector go."""
        if self.split_mode == SplitMode.NONE:
            return gpu_name(self.main_gpu)
        return gpu_name(len(self.rpc_devices) if self.local_gpus else 0)

    def rules(self) -> tuple[tuple[re.Pattern[str], str], ...]:
        """The override rules in the order llama.cpp tries them, each with its device (gpuN or host)."""
        raw: list[tuple[str, str]] = []
        if self.cpu_moe:
            raw.append((CPU_MOE_REGEX, "CPU"))
        if self.n_cpu_moe:
            # llama.cpp adds one rule per layer (common/arg.cpp); they are adjacent and all say CPU, so one
            # alternation matches exactly the same tensors, with one regex search per tensor instead of N.
            layers = "|".join(str(i) for i in range(self.n_cpu_moe))
            raw.append((rf"blk\.({layers}){CPU_MOE_REGEX}", "CPU"))
        raw.extend(self.overrides)
        rules = []
        for pattern, buffer in raw:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise PlacementError(f"--override-tensor {pattern}={buffer}: not a valid regex ({exc})") from None
            rules.append((compiled, self._device_of_buffer(pattern, buffer)))
        return tuple(rules)

    def _device_of_buffer(self, pattern: str, buffer: str) -> str:
        if buffer == "CPU":
            return HOST
        m = _GPU_BUFFER.match(buffer)
        if m is None:
            raise PlacementError(
                f"--override-tensor {pattern}={buffer}: unknown buffer type {buffer!r}; use CPU or a GPU such as CUDA0"
            )
        index = int(m.group(2))
        if index >= self.gpu_count:
            raise PlacementError(
                f"--override-tensor {pattern}={buffer}: the server has {self.gpu_count} GPU(s), "
                f"so {buffer} does not exist"
            )
        return gpu_name(index)

    def validate(self) -> None:
        if self.gpu_count < 0:
            raise PlacementError(f"gpu_count {self.gpu_count} is negative")
        if self.n_cpu_moe < 0:
            raise PlacementError(f"--n-cpu-moe {self.n_cpu_moe} is negative")
        if str(self.split_mode) not in {m.value for m in SplitMode}:
            raise PlacementError(
                f"--split-mode {self.split_mode}: the planner models {', '.join(m.value for m in SplitMode)}"
            )
        if any(s < 0 for s in self.tensor_split):
            raise PlacementError(f"--tensor-split {list(self.tensor_split)}: shares cannot be negative")
        if self.gpu_count and not 0 <= self.main_gpu < self.gpu_count:
            raise PlacementError(f"--main-gpu {self.main_gpu}: the server has {self.gpu_count} GPU(s)")


@dataclass(frozen=True)
class DraftModel:
    """A draft model (-md) and the flags that place it (--spec-draft-type-k/v, --spec-draft-ngl)."""

    facts: ModelFacts
    cache_type_k: str = DEFAULTS["--spec-draft-type-k"]
    cache_type_v: str = DEFAULTS["--spec-draft-type-v"]
    n_gpu_layers: int = -1  # llama.cpp's default: every layer (llama_model::n_gpu_layers)


# ---------------------------------------------------------------------------------------------------------
# Layer placement
# ---------------------------------------------------------------------------------------------------------


def _f32(x: float) -> float:
    """Round to float32: llama.cpp computes split points in float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _split_points(shares: Sequence[float]) -> list[float]:
    """Normalised cumulative shares, as load_tensors computes them (float32 sums and divisions)."""
    points: list[float] = []
    total = 0.0
    for s in shares:
        total = _f32(total + _f32(s))
        points.append(total)
    return [_f32(p / total) for p in points]


def layer_devices(n_layer_all: int, placement: Placement) -> tuple[str, ...]:
    """The device of each layer ``0..n_layer_all``; the last entry is the output layer (src/llama-model.cpp)."""
    host = (HOST,) * (n_layer_all + 1)
    if placement.gpu_count == 0:
        return host
    if placement.split_mode == SplitMode.NONE:
        gpus = [gpu_name(placement.main_gpu)]
        shares: Sequence[float] = [1.0]
    else:
        gpus = [gpu_name(i) for i in range(placement.gpu_count)]
        given = [*placement.tensor_split[: placement.gpu_count]]
        given += [0.0] * (placement.gpu_count - len(given))
        shares = given if any(given) else [1.0] * placement.gpu_count
    points = _split_points(shares)
    n_gpu_layers = n_layer_all + 1 if placement.n_gpu_layers < 0 else placement.n_gpu_layers
    start = max(n_layer_all + 1 - n_gpu_layers, 0)
    offloaded = min(n_gpu_layers, n_layer_all + 1)
    devices = []
    for il in range(n_layer_all + 1):
        if il < start or il - start >= offloaded:
            devices.append(HOST)
        else:
            # std::upper_bound: the first split point greater than the layer's position.
            devices.append(gpus[bisect_right(points, _f32((il - start) / offloaded))])
    return tuple(devices)


# ---------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes one device holds, by category (every category in ``CATEGORIES`` is present)."""

    name: str
    bytes: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def weights(self) -> int:
        return sum(self.bytes[c] for c in WEIGHT_CATEGORIES)

    def __getitem__(self, category: str) -> int:
        return self.bytes[category]


@dataclass(frozen=True)
class Shortfall:
    """A device that needs more memory than the profile can give it."""

    device: str
    needed: int
    usable: int

    @property
    def missing(self) -> int:
        return self.needed - self.usable

    def __str__(self) -> str:
        return (
            f"{self.device} needs {format_bytes(self.needed)}, {format_bytes(self.usable)} usable "
            f"({format_bytes(self.missing)} short)"
        )


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device (``gpu0``.., ``host``) and category, with what they were computed from."""

    devices: tuple[DeviceMemory, ...]
    layer_devices: tuple[str, ...]  # device of each block, then of the output layer
    context_size: int  # n_ctx after padding
    kv_cells: int  # cells per stream of the full-attention cache
    kv_streams: int
    swa_cells: int  # cells per stream of the sliding-window cache (0 without SWA layers)
    n_seq: int
    ubatch: int
    skipped: int = 0  # bytes of tensors llama-server does not load (multi-token-prediction layers)
    # Bytes of host weights held in the CPU's extra buffer types (CPU_REPACK, AMX): counted once, in their classes
    # (see the module docstring); what their copies need beyond that is category repack.
    repacked: int = 0
    # Where each tensor went: a device, "split" (--split-mode row) or "skipped" (not loaded).
    tensor_devices: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())

    def device(self, name: str) -> DeviceMemory:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r} in the plan; devices: {', '.join(d.name for d in self.devices)}")

    @property
    def gpus(self) -> tuple[DeviceMemory, ...]:
        return tuple(d for d in self.devices if d.name != HOST)

    @property
    def host(self) -> DeviceMemory:
        return self.device(HOST)

    def totals(self) -> dict[str, int]:
        """Total bytes per device."""
        return {d.name: d.total for d in self.devices}

    def category_totals(self) -> dict[str, int]:
        """Bytes per category over all devices."""
        return {c: sum(d.bytes[c] for d in self.devices) for c in CATEGORIES}

    def fits(self, profile: HardwareProfile) -> list[Shortfall]:
        """Devices whose total exceeds what the profile can give (usable memory after its reserves)."""
        capacities = [profile.usable_gpu_memory] * profile.gpu_count
        return self.fits_capacities(capacities, profile.usable_host_memory)

    def fits_capacities(self, capacities: Sequence[int], host: int) -> list[Shortfall]:
        """Devices whose total exceeds their usable memory: ``capacities`` per device in order, ``host`` for the
        server's own RAM."""
        out: list[Shortfall] = []
        for i, gpu in enumerate(self.gpus):
            usable = capacities[i] if i < len(capacities) else 0
            if gpu.total > usable:
                out.append(Shortfall(gpu.name, gpu.total, usable))
        if self.host.total > host:
            out.append(Shortfall(HOST, self.host.total, host))
        return out

    def table(self) -> str:
        """Devices as columns, categories with any bytes as rows, then the totals."""
        names = [d.name for d in self.devices]
        rows = [("", *names)]
        for c in CATEGORIES:
            if any(d.bytes[c] for d in self.devices):
                rows.append((c, *(_cell(d.bytes[c]) for d in self.devices)))
        rows.append(("total", *(_cell(d.total) for d in self.devices)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        return "\n".join(line.rstrip() for line in lines)


def _cell(n: int) -> str:
    if n == 0:
        return "-"
    if n >= 1024 * MiB:
        return f"{n / (1024 * MiB):.2f} GiB"
    if n < MiB // 20:
        return "<0.1 MiB"  # not "0.0 MiB", which reads as nothing
    return f"{n / MiB:.1f} MiB"


def _pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


class _Ledger:
    def __init__(self, names: Sequence[str]) -> None:
        self.bytes: dict[str, dict[str, int]] = {n: dict.fromkeys(CATEGORIES, 0) for n in names}

    def add(self, device: str, category: str, n: int) -> None:
        self.bytes[device][category] += n

    def freeze(self) -> tuple[DeviceMemory, ...]:
        return tuple(DeviceMemory(name, dict(b)) for name, b in self.bytes.items())


def plan_memory(
    facts: ModelFacts,
    placement: Placement,
    *,
    tensors: Sequence[TensorInfo] | None = None,
    context_size: int,
    parallel: int | None = None,
    kv_unified: bool | None = None,
    cache_type_k: str = DEFAULTS["--cache-type-k"],
    cache_type_v: str = DEFAULTS["--cache-type-v"],
    batch: int = int(DEFAULTS["--batch-size"]),
    ubatch: int = int(DEFAULTS["--ubatch-size"]),
    flash_attn: bool = True,
    cache_ram_mib: int = DEFAULT_CACHE_RAM_MIB,
    gpu_runtime_overhead: int = GPU_RUNTIME_OVERHEAD,
    spec_types: Sequence[str] = (),
    spec_n_max: int = int(DEFAULTS["--spec-draft-n-max"]),
    draft: DraftModel | None = None,
    draft_cache_type_k: str = DEFAULTS["--spec-draft-type-k"],
    draft_cache_type_v: str = DEFAULTS["--spec-draft-type-v"],
    mmproj: ProjectorFacts | None = None,
    mmproj_offload: bool = True,
    repack: bool = True,
) -> MemoryPlan:
    """Bytes per device and category for ``facts`` served with ``placement`` (see the module docstring).

    ``context_size`` is ``--ctx-size`` (0: the trained context); ``parallel`` is ``--parallel`` (None:
    llama-server's auto, 4 sequences with a unified cache); ``kv_unified`` forces ``--kv-unified`` on or off
    (None: llama-server's rule); ``batch``/``ubatch`` are ``--batch-size``/``--ubatch-size``; ``flash_attn`` is
    whether flash attention runs (llama-server's ``auto`` turns it on where the device supports it);
    ``cache_ram_mib`` is ``--cache-ram`` (0 disables the prompt cache). ``spec_types`` are ``--spec-type``'s,
    ``spec_n_max`` is ``--spec-draft-n-max``,
    ``draft`` the draft model of ``-md``, ``draft_cache_type_k/v`` the MTP context's cache types (see the
    module docstring: speculative decoding). ``mmproj`` is the multimodal projector of ``--mmproj``,
    ``mmproj_offload`` false for ``--no-mmproj-offload``. ``repack`` false for ``--no-repack`` (module docstring:
    repacked host weights).
    """
    plan = _plan_models(
        facts, placement, tensors=tensors, context_size=context_size, parallel=parallel, kv_unified=kv_unified,
        cache_type_k=cache_type_k, cache_type_v=cache_type_v, batch=batch, ubatch=ubatch, flash_attn=flash_attn,
        cache_ram_mib=cache_ram_mib, gpu_runtime_overhead=gpu_runtime_overhead, spec_types=spec_types,
        spec_n_max=spec_n_max, draft=draft, draft_cache_type_k=draft_cache_type_k,
        draft_cache_type_v=draft_cache_type_v, repack=repack,
    )  # fmt: skip
    return (
        plan
        if mmproj is None
        else _with_projector(
            plan,
            mmproj,
            gpu_name(len(placement.rpc_devices) if placement.local_gpus else 0),
            offload=mmproj_offload and bool(placement.gpu_count),
        )
    )


def _with_projector(plan: MemoryPlan, mmproj: ProjectorFacts, first: str, *, offload: bool) -> MemoryPlan:
    """The plan plus a multimodal projector's weights, on the first GPU or in host memory (clip_ctx)."""
    # clip_ctx asks for the first GPU device (ggml_backend_init_by_type), whatever --main-gpu or the split say:
    # in ggml's registry the server's own GPUs come before the workers' (registered later, by --rpc).
    where = first if offload else HOST
    devices = tuple(
        DeviceMemory(d.name, {**d.bytes, MMPROJ: d.bytes[MMPROJ] + mmproj.weight_bytes}) if d.name == where else d
        for d in plan.devices
    )
    note = (
        f"the multimodal projector ({mmproj.source}): {format_bytes(mmproj.weight_bytes)} of weights on {where}; "
        "its compute buffer (reserved at warmup for one image, sized by its encoder) is not counted"
    )
    return dataclasses.replace(plan, devices=devices, notes=(*plan.notes, note))


def _plan_models(
    facts: ModelFacts,
    placement: Placement,
    *,
    tensors: Sequence[TensorInfo] | None,
    context_size: int,
    parallel: int | None,
    kv_unified: bool | None,
    cache_type_k: str,
    cache_type_v: str,
    batch: int,
    ubatch: int,
    flash_attn: bool,
    cache_ram_mib: int,
    gpu_runtime_overhead: int,
    spec_types: Sequence[str],
    spec_n_max: int,
    draft: DraftModel | None,
    draft_cache_type_k: str,
    draft_cache_type_v: str,
    repack: bool,
) -> MemoryPlan:
    """The language models' part of ``plan_memory``: the main context, and a draft or MTP context."""
    plan = _plan_context(
        facts, placement, tensors=tensors, context_size=context_size, parallel=parallel, kv_unified=kv_unified,
        cache_type_k=cache_type_k, cache_type_v=cache_type_v, batch=batch, ubatch=ubatch, flash_attn=flash_attn,
        cache_ram_mib=cache_ram_mib, gpu_runtime_overhead=gpu_runtime_overhead, load_mtp=MTP_TYPE in spec_types,
        rollback_states=spec_n_max if ROLLBACK_TYPES.intersection(spec_types) else 0, repack=repack,
    )  # fmt: skip
    if draft is None and MTP_TYPE not in spec_types:
        return plan
    # The side context: the main context's size and sequences, no prompt cache or runtime of its own.
    side_context = functools.partial(
        _plan_context, context_size=plan.context_size, parallel=parallel, kv_unified=kv_unified, batch=batch,
        ubatch=ubatch, flash_attn=flash_attn, cache_ram_mib=0, gpu_runtime_overhead=0,
        load_mtp=MTP_TYPE in spec_types, mtp_context=MTP_TYPE in spec_types, host_overhead=0, repack=repack,
        cache_flags=DRAFT_CACHE_FLAGS,
    )  # fmt: skip
    if draft is not None:
        # common_base_params_to_speculative: the main model's split, the draft's own layer count, no overrides.
        draft_placement = dataclasses.replace(
            placement, n_gpu_layers=draft.n_gpu_layers if placement.gpu_count else 0, cpu_moe=False, n_cpu_moe=0,
            overrides=(),
        )  # fmt: skip
        side = side_context(
            draft.facts, draft_placement, cache_type_k=draft.cache_type_k, cache_type_v=draft.cache_type_v
        )
        return _with_side_context(plan, side, weights=True, what=f"the draft model ({draft.facts.source})")
    if facts.nextn_layers == 0:
        raise PlacementError(
            f"--spec-type {MTP_TYPE} needs the model's multi-token-prediction layers, and {facts.source or 'it'} "
            "has none (nextn_predict_layers 0): llama-server stops with 'failed to create MTP context'; use a GGUF "
            "converted with its MTP layer, or another speculative type"
        )
    side = side_context(
        facts, placement, tensors=tensors, cache_type_k=draft_cache_type_k, cache_type_v=draft_cache_type_v
    )
    return _with_side_context(plan, side, weights=False, what="the multi-token-prediction context")


def _with_side_context(plan: MemoryPlan, side: MemoryPlan, *, weights: bool, what: str) -> MemoryPlan:
    """The main plan plus a draft or MTP context: its weights as ``draft`` (unless it shares the main
    model's), its KV cache and state as ``draft_kv``, its compute buffers as compute."""
    merged = []
    for device in plan.devices:
        extra = side.device(device.name).bytes if device.name in {d.name for d in side.devices} else {}
        b = dict(device.bytes)
        if weights:
            b[DRAFT] += sum(extra.get(c, 0) for c in WEIGHT_CATEGORIES)
        b[DRAFT_KV] += extra.get(KV_K, 0) + extra.get(KV_V, 0) + extra.get(RECURRENT_STATE, 0)
        b[COMPUTE] += extra.get(COMPUTE, 0)
        merged.append(DeviceMemory(device.name, b))
    draft_kv = sum(d.bytes[KV_K] + d.bytes[KV_V] + d.bytes[RECURRENT_STATE] for d in side.devices)
    note = f"{what}: KV cache {format_bytes(draft_kv)} ({side.kv_cells} cells x {side.kv_streams} streams)"
    repacked = plan.repacked + (side.repacked if weights else 0)
    return dataclasses.replace(plan, devices=tuple(merged), repacked=repacked, notes=(*plan.notes, note))


def _plan_context(
    facts: ModelFacts,
    placement: Placement,
    *,
    tensors: Sequence[TensorInfo] | None = None,
    context_size: int,
    parallel: int | None,
    kv_unified: bool | None,
    cache_type_k: str,
    cache_type_v: str,
    batch: int,
    ubatch: int,
    flash_attn: bool,
    cache_ram_mib: int,
    gpu_runtime_overhead: int,
    load_mtp: bool = False,
    mtp_context: bool = False,
    host_overhead: int = HOST_RUNTIME_OVERHEAD,
    rollback_states: int = 0,
    repack: bool = True,
    cache_flags: tuple[str, str] = CACHE_FLAGS,
) -> MemoryPlan:
    """One model and one llama context: the main one, or (``mtp_context``) an MTP context, whose KV cache holds
    the multi-token-prediction layers only. ``cache_flags`` name the flags of ``cache_type_k/v`` in messages."""
    placement.validate()
    tensors = facts.tensors if tensors is None else tuple(tensors)
    if context_size < 0 or batch < 1 or ubatch < 1:
        raise PlacementError(f"context {context_size}, batch {batch}, ubatch {ubatch}: need context >= 0, batches >= 1")
    if parallel is not None and parallel < 1:
        raise PlacementError(f"--parallel {parallel}: need at least 1 sequence")
    if cache_ram_mib < 0:
        raise PlacementError(f"--cache-ram {cache_ram_mib}: the plan needs a limit (0 disables the prompt cache)")
    type_k, type_v = _cache_type(cache_type_k, "K"), _cache_type(cache_type_v, "V")
    if facts.is_mla:
        _check_mla_cache_types(facts, type_k, type_v, cache_flags)
    if not flash_attn and type_v.block_size > 1:
        raise PlacementError(f"quantized V cache ({cache_type_v}) requires flash attention")
    if flash_attn:
        _check_head_sizes(facts, type_k.name, type_k.block_size, "K", facts.head_k)
        _check_head_sizes(facts, type_v.name, type_v.block_size, "V", facts.head_v)

    # src/llama-context.cpp: context, sequences, batches.
    n_seq = AUTO_PARALLEL if parallel is None else parallel
    unified = (parallel is None) if kv_unified is None else kv_unified
    n_ctx = _pad(context_size or facts.context_length)
    if n_ctx == 0:
        raise PlacementError("context size 0 and the model has no trained context length")
    if unified:
        kv_cells, streams = n_ctx, 1
    else:
        kv_cells, streams = _pad(n_ctx // n_seq), n_seq
        if kv_cells == 0:
            raise PlacementError(f"context {n_ctx} over {n_seq} sequences leaves no cells per sequence")
    n_batch = min(n_ctx, batch)
    n_ubatch = min(n_batch, ubatch)
    n_swa = facts.sliding_window
    swa_cells = _pad(min(kv_cells, n_swa * (n_seq if unified else 1) + n_ubatch)) if any(facts.is_swa) else 0

    gpus = [gpu_name(i) for i in range(placement.gpu_count)]
    ledger = _Ledger([*gpus, HOST])
    devices = layer_devices(facts.block_count, placement)
    output_device = devices[-1]
    notes: list[str] = list(facts.notes)
    if placement.gpu_count and not placement.tensor_split and placement.split_mode != SplitMode.NONE:
        notes.append("no --tensor-split: llama.cpp splits by free GPU memory at start-up; planned as equal shares")

    # --- weights ------------------------------------------------------------------------------------------
    rules = placement.rules()
    # make_cpu_buft_list: with GPUs their host buffer type comes before the CPU's extra ones (no repacking). A
    # multi-node group's RPC devices have none, so a server without GPUs of its own repacks.
    repacking = repack and placement.local_gpus == 0
    repacked = 0
    skipped = 0
    host_matrix_by_layer: dict[int, int] = {}
    tensor_devices: dict[str, str] = {}
    for t in tensors:
        cls, layer = facts.classify(t.name)
        if cls is TensorClass.MTP and not load_mtp:
            skipped += t.nbytes
            tensor_devices[t.name] = SKIPPED
            continue
        if cls is TensorClass.TOKEN_EMBD:
            base = HOST  # the input layer always stays on the CPU
        elif cls is TensorClass.OUTPUT:
            base = output_device
        elif layer is not None and layer < facts.block_count:
            base = devices[layer]
        else:
            base = devices[0]
        device = _override(rules, t.name) or base
        overridden = device != base
        if (
            placement.split_mode == SplitMode.ROW
            and device != HOST
            and not overridden
            and cls in _MATRIX_CLASSES
            and cls is not TensorClass.ROUTED_EXPERT
            and len(t.shape) == 2
            and t.name.endswith(".weight")
        ):
            _split_rows(ledger, cls.value, t.nbytes, gpus, placement.tensor_split)
            tensor_devices[t.name] = SPLIT
        else:
            ledger.add(device, cls.value, t.nbytes)
            tensor_devices[t.name] = device
        if repacking and device == HOST and (held := _extra_buffer_bytes(t, cls)) is not None:
            repacked += t.nbytes
            ledger.add(HOST, REPACK, held - t.nbytes)
        if device == HOST and cls in _MATRIX_CLASSES and layer is not None and len(t.shape) >= 2:
            host_matrix_by_layer[layer] = host_matrix_by_layer.get(layer, 0) + t.nbytes
        if cls is TensorClass.TOKEN_EMBD and t.name == "token_embd.weight" and facts.tied_embeddings:
            output_copy = _override(rules, t.name) or output_device
            # TENSOR_DUPLICATED: a second tensor when the output matrix's buffer type differs from token_embd's,
            # on another device or (a matrix product, not a row lookup) in an extra buffer of the CPU.
            held = _extra_buffer_bytes(t, TensorClass.OUTPUT) if repacking and output_copy == HOST else None
            if output_copy != device:
                ledger.add(output_copy, TensorClass.OUTPUT.value, t.nbytes)
            elif held is not None:
                ledger.add(HOST, TensorClass.OUTPUT.value, t.nbytes)
                ledger.add(HOST, REPACK, held - t.nbytes)
                repacked += t.nbytes
    if skipped:
        notes.append(
            f"{format_bytes(skipped)} of multi-token-prediction layers are not loaded (llama-server loads them "
            "only for MTP speculative decoding)"
        )
    if repacked:
        overhead = ledger.bytes[HOST][REPACK]
        notes.append(
            f"{format_bytes(repacked)} of host weights are repacked for the CPU's matrix kernels (CPU_REPACK/AMX, "
            "anonymous memory): counted once, as the mapped file pages they are read from go unused and the kernel "
            "reclaims them"
            + (f"; AMX's layout needs {format_bytes(overhead)} more (category repack)" if overhead else "")
        )

    # --- KV cache and recurrent state ---------------------------------------------------------------------
    if mtp_context:
        # llama_model::create_memory: an MTP context's cache holds the multi-token-prediction layers only.
        kv_layers = [il for il in range(facts.n_layer, facts.block_count) if facts.n_head_kv[il] > 0]
    else:
        kv_layers = [il for il, has in enumerate(facts.has_attention_kv) if has]
    v_width_max = max((facts.n_embd_v_gqa(il) for il in range(facts.block_count)), default=0)
    for il in kv_layers:
        cells = swa_cells if facts.is_swa[il] else kv_cells
        device = HOST if placement.no_kv_offload else devices[il]
        v_width = facts.n_embd_v_gqa(il) if flash_attn else v_width_max
        ledger.add(device, KV_K, row_bytes(type_k.name, facts.n_embd_k_gqa(il)) * cells * streams)
        if v_width:
            ledger.add(device, KV_V, row_bytes(type_v.name, v_width) * cells * streams)
    for il in () if mtp_context else facts.recurrent_layers:
        device = HOST if placement.no_kv_offload else devices[il]
        per_sequence = facts.recurrent_state_bytes_per_sequence * (1 + rollback_states)
        ledger.add(device, RECURRENT_STATE, per_sequence * max(1, n_seq))

    # --- compute buffers (estimate) -----------------------------------------------------------------------
    _estimate_compute(
        ledger,
        facts,
        placement,
        devices=devices,
        kv_layers=kv_layers,
        kv_cells=kv_cells,
        swa_cells=swa_cells,
        streams=streams,
        n_seq=n_seq,
        n_ubatch=n_ubatch,
        flash_attn=flash_attn,
        quantized_k=type_k.block_size > 1,
        quantized_v=type_v.block_size > 1,
        host_matrix_by_layer=host_matrix_by_layer,
    )
    pipeline_parallel = (
        placement.gpu_count > 1
        and placement.split_mode == SplitMode.LAYER
        and (placement.n_gpu_layers < 0 or placement.n_gpu_layers > facts.block_count)
        and not placement.no_kv_offload
        and not rules
    )
    if pipeline_parallel:
        _pipeline_copies(ledger, facts, devices, kv_layers, kv_cells, swa_cells, n_ubatch, flash_attn)
        notes.append(
            "pipeline parallelism is on (several GPUs, every layer offloaded, no overrides): llama.cpp keeps "
            f"{SCHED_MAX_COPIES} copies of each split's graph inputs, counted in every device's compute buffer"
        )

    # --- runtime and prompt cache -------------------------------------------------------------------------
    for i, g in enumerate(gpus):
        if i >= len(placement.rpc_devices) or placement.rpc_devices[i]:
            ledger.add(g, RUNTIME, gpu_runtime_overhead)
    if host_overhead:
        ledger.add(HOST, RUNTIME, host_overhead + (HOST_GPU_RUNTIME_OVERHEAD if placement.local_gpus else 0))
    ledger.add(HOST, PROMPT_CACHE, cache_ram_mib * MiB)

    return MemoryPlan(
        devices=ledger.freeze(),
        layer_devices=devices,
        context_size=n_ctx,
        kv_cells=kv_cells,
        kv_streams=streams,
        swa_cells=swa_cells,
        n_seq=n_seq,
        ubatch=n_ubatch,
        skipped=skipped,
        repacked=repacked,
        tensor_devices=tensor_devices,
        notes=tuple(notes),
    )


def _cache_type(name: str, which: str) -> GgmlType:
    try:
        return ggml_type(name)
    except ValueError:
        raise PlacementError(f"{which} cache type {name!r} is not a ggml type the planner knows") from None


def _extra_buffer_bytes(t: TensorInfo, cls: TensorClass) -> int | None:
    """Bytes a host weight takes in the CPU's AMX or CPU_REPACK buffer, None when no CPU puts it in one.

    The union over the CPUs the server image runs on (module docstring, "Repacked host weights"): AMX where it
    takes the weight (it comes first, in its own layout), else CPU_REPACK at the tensor's own size.
    """
    if cls not in _MATRIX_CLASSES and cls is not TensorClass.MTP:
        return None
    if not t.name.endswith(".weight"):
        return None  # biases: GGML_OP_ADD
    shape = t.shape
    if len(shape) == 2:  # GGML_OP_MUL_MAT
        layout = AMX_LAYOUT.get(t.type)
        if layout is not None and shape[1] % AMX_ROWS == 0 and shape[0] % layout[0] == 0:
            block = ggml_type(t.type)
            return shape[1] * (shape[0] // block.block_size) * (block.type_size + layout[1])
    elif len(shape) != 3 or cls not in (TensorClass.ROUTED_EXPERT, TensorClass.MTP) or "_exps" not in t.name:
        return None  # 3-D: only routed experts (GGML_OP_MUL_MAT_ID) go to CPU_REPACK
    rows = CPU_REPACK_ROWS.get(t.type)
    return t.nbytes if rows is not None and shape[1] % rows == 0 else None


def _check_mla_cache_types(facts: ModelFacts, type_k: GgmlType, type_v: GgmlType, flags: tuple[str, str]) -> None:
    # llama_init_from_model (src/llama-context.cpp): an MLA model's V cache is a view of its K cache, so llama-server
    # refuses different types; the block-size rule (_check_head_sizes) then covers key_length and value_length.
    if type_k.name != type_v.name:
        k_flag, v_flag = flags
        raise PlacementError(
            f"{k_flag} {type_k.name.lower()} with {v_flag} {type_v.name.lower()}: {facts.source or 'the model'} uses "
            "multi-head latent attention, whose V cache is a view of the K cache, and llama-server refuses different "
            f"K and V cache types for it; set both to the same type (e.g. {v_flag} {type_k.name.lower()})"
        )


def _check_head_sizes(facts: ModelFacts, type_name: str, block: int, which: str, head: Callable[[int], int]) -> None:
    # llama_init_from_model (src/llama-context.cpp): with flash attention, a quantized cache type's block size
    # must divide every layer's head size, or llama-server refuses to start.
    if block == 1:
        return
    for il in range(facts.n_layer):
        size = head(il)
        if size % block:
            raise PlacementError(
                f"{which} cache type {type_name.lower()} with block size {block} does not divide "
                f"n_embd_head_{which.lower()}={size}: llama-server refuses to start; use f16 or bf16"
            )


def _override(rules: Sequence[tuple[re.Pattern[str], str]], name: str) -> str | None:
    for pattern, device in rules:
        if pattern.search(name):
            return device  # the first matching rule wins (create_tensor breaks out of its loop)
    return None


def _split_rows(ledger: _Ledger, category: str, nbytes: int, gpus: Sequence[str], shares: Sequence[float]) -> None:
    given = [*shares[: len(gpus)]] + [0.0] * (len(gpus) - len(shares[: len(gpus)]))
    weights = given if any(given) else [1.0] * len(gpus)
    total = sum(weights)
    placed = 0
    for i, g in enumerate(gpus):
        part = nbytes - placed if i == len(gpus) - 1 else int(nbytes * weights[i] / total)
        ledger.add(g, category, part)
        placed += part


def _activation_values(facts: ModelFacts) -> int:
    """Peak activation values per token of one layer (see the module docstring: an estimate).

    The widest of the per-phase working sets of ggml-alloc.c's allocation of one layer's graph. That allocator
    frees a tensor after its last consumer and lets the in-place ops (ggml_op_can_inplace: add, mul, rms_norm,
    rope, unary such as silu, soft_max, ...) reuse their input, but not matrix products or GGML_OP_GLU
    (ggml_swiglu_split); a freed block lower in the buffer is only reused by a tensor that fits in it, so a
    freed hole below a wider tensor still counts towards the buffer's high-water mark. Per token, in values
    (``e`` n_embd):

    - attention (build_qkv and build_attn in src/llama-graph.cpp, src/models/qwen3.cpp, gemma3.cpp): the
      residual, the attention norm, the Q, K and V products (q/k rms_norm and rope in place), then the
      flash-attention output (q wide, in the block K and V leave once ggml_set_rows has copied them into
      the cache) and the output projection (``e``): ``q + 2 kv + 3 e``. That matches gemma3 (which also
      normalises the attention output) and is about ``e`` above what qwen3moe measures.
    - dense feed-forward (build_ffn, LLM_FFN_SILU / LLM_FFN_GELU with LLM_FFN_PAR: the fused
      ggml_swiglu_split / ggml_geglu_split): the residual ffn_inp, the hole of its norm (freed after the gate
      product, below the FFN tensors), up, gate and the GLU output: ``3 F + 2 e``; the down product (``e``)
      then fits in a freed block.
    - routed experts (build_moe_ffn): the residual, the norm (kept: qwen2moe's shared expert reads it after
      the routed experts), the router logits and probabilities (``2 n_expert``), ggml_mul_mat_id's up and gate
      (``U F`` each) and their GLU: ``3 U F + 2 e + 2 n_expert``; the expert outputs (``U e``) go into the
      freed up/gate block when they fit (``U e <= 2 U F``), else above the GLU output.
    - shared expert (src/models/qwen2moe.cpp: build_ffn on the norm after build_moe_ffn): the residual, the
      norm and the routed output alive beside the shared expert's up, gate and GLU: ``3 F_sh + 3 e``.
    """
    e = facts.n_embd
    used, f_exp, f_sh = (
        facts.expert_used_count,
        facts.expert_feed_forward_length,
        facts.expert_shared_feed_forward_length,
    )
    f_dense = max(facts.feed_forward_length, default=0)
    q = max((h * facts.key_length for h in facts.n_head), default=0)
    kv = max((facts.n_embd_k_gqa(il) for il in range(facts.block_count)), default=0)
    phases = [q + 2 * kv + 3 * e]
    if f_dense:
        phases.append(3 * f_dense + 2 * e)
    if facts.expert_count:
        routed = 3 * used * f_exp + 2 * e + 2 * facts.expert_count
        expert_out = used * e if used * e > 2 * used * f_exp else 0
        phases.append(routed + expert_out)
        if f_sh:
            phases.append(3 * f_sh + 3 * e)
    return max(phases)


def _recurrent_layer_bytes(facts: ModelFacts, n_tokens: int, n_seq: int) -> int:
    """Peak working set of one recurrent (gated delta-net / SSM) layer for a ubatch of ``n_tokens``.

    src/models/qwen35moe.cpp (build_layer_attn_linear) with the fused gated delta net
    (src/models/delta-net-base.cpp, build_delta_net_fused; cparams.fused_gdn_ch defaults on in
    src/llama-context.cpp): the in-projection qkv_mixed (C = d_inner + 2 * n_group * d_state channels per
    token), the convolution input (the conv state concatenated with qkv_mixed, build_conv_state), the
    ggml_ssm_conv output and its silu are C-wide tensors alive at once (3 C per token), next to the layer
    input, its norm and the z gate (about 3 n_embd per token). ggml_gated_delta_net's result holds the
    per-token output and the new state of every sequence (d_head_v^2 * n_v_heads per sequence). ggml-alloc.c
    frees a tensor after its last consumer, so this layer's peak is that sum; measured against
    llama-server's CPU compute buffer it is within a few percent (benchmarks/planner_accuracy.py).
    """
    ssm = facts.ssm
    if ssm is None or not facts.recurrent_layers:
        return 0
    channels = ssm.inner_size + 2 * ssm.group_count * ssm.state_size
    head_v = ssm.inner_size // max(ssm.time_step_rank, 1)
    state = head_v * head_v * max(ssm.time_step_rank, 1) * max(1, n_seq)
    return F32_BYTES * (n_tokens * (3 * channels + 3 * facts.n_embd) + state)


def _pipeline_copies(
    ledger: _Ledger,
    facts: ModelFacts,
    devices: Sequence[str],
    kv_layers: Sequence[int],
    kv_cells: int,
    swa_cells: int,
    n_ubatch: int,
    flash_attn: bool,
) -> None:
    """Pipeline parallelism (``llama_context`` constructor: several devices, every layer offloaded, layer split,
    KV offloaded, no tensor overrides): ggml_backend_sched keeps ``SCHED_MAX_COPIES`` copies of every split's
    inputs so that ubatches overlap. Each device and the host hold the extra copies of the KQ mask they read
    and of one ubatch of hidden state: ``(copies - 1) x mask + copies x n_embd x n_ubatch x 4 B``, measured
    to the MiB on two rpc-server devices (tests/e2e/test_two_devices.py)."""
    has_swa = any(facts.is_swa[il] for il in kv_layers)
    has_full = any(not facts.is_swa[il] for il in kv_layers)
    mask_value = F16_BYTES if flash_attn else F32_BYTES
    mask = mask_value * n_ubatch * ((kv_cells if has_full else 0) + (swa_cells if has_swa else 0))
    extra = (SCHED_MAX_COPIES - 1) * mask + SCHED_MAX_COPIES * F32_BYTES * n_ubatch * facts.n_embd
    for device in {*devices, HOST}:
        ledger.add(device, COMPUTE, extra)


def _estimate_compute(
    ledger: _Ledger,
    facts: ModelFacts,
    placement: Placement,
    *,
    devices: Sequence[str],
    kv_layers: Sequence[int],
    kv_cells: int,
    swa_cells: int,
    streams: int,
    n_seq: int,
    n_ubatch: int,
    flash_attn: bool,
    quantized_k: bool,
    quantized_v: bool,
    host_matrix_by_layer: Mapping[int, int],
) -> None:
    t = n_ubatch
    activations = F32_BYTES * t * _activation_values(facts)
    recurrent = _recurrent_layer_bytes(facts, t, n_seq)
    if recurrent > activations:
        activations = recurrent
    has_swa = any(facts.is_swa[il] for il in kv_layers)
    has_full = any(not facts.is_swa[il] for il in kv_layers)
    # Mask and KQ are [cells, tokens per stream, heads, streams]: cells x tokens in all.
    mask_value = F16_BYTES if flash_attn else F32_BYTES
    mask = mask_value * t * ((kv_cells if has_full else 0) + (swa_cells if has_swa else 0))
    widest_cells = kv_cells if has_full else swa_cells
    kq = 0 if flash_attn else F32_BYTES * t * widest_cells * max(facts.n_head, default=0)
    k_width = max((facts.n_embd_k_gqa(il) for il in kv_layers), default=0)
    v_width = max((facts.n_embd_v_gqa(il) for il in kv_layers), default=0)
    fa_f16 = F16_BYTES * widest_cells * streams * ((k_width if quantized_k else 0) + (v_width if quantized_v else 0))

    layer_devs = set(devices[: facts.block_count])
    # Below the op-offload batch (or without GPUs) the CPU runs the products of the weights it holds.
    if host_matrix_by_layer and (placement.local_gpus == 0 or t < OP_OFFLOAD_MIN_BATCH):
        layer_devs.add(HOST)
    attention_devs = {HOST if placement.no_kv_offload else devices[il] for il in kv_layers}
    for device in layer_devs:
        ledger.add(device, COMPUTE, activations)
    if devices[-1] not in layer_devs:
        # A device with the output layer and no block computes the output norm and the logits only, of the rows
        # the last block kept (one output per sequence, inp_out_ids): measured on two rpc-server devices
        # (tests/e2e/test_two_devices.py).
        ledger.add(devices[-1], COMPUTE, F32_BYTES * n_seq * facts.n_embd)
    for device in attention_devs:
        ledger.add(device, COMPUTE, mask + kq + (fa_f16 if device != HOST and flash_attn else 0))
    # Graph inputs are built in host memory (the KQ mask, the ubatch's token embeddings), and the logits of
    # one output per sequence are read back into the host output buffer (llama_context::output_reserve).
    if HOST not in attention_devs:
        ledger.add(HOST, COMPUTE, mask)
    ledger.add(HOST, COMPUTE, F32_BYTES * t * facts.n_embd + F32_BYTES * facts.vocab_size * n_seq)
    ledger.add(devices[-1], COMPUTE, F32_BYTES * facts.vocab_size * n_seq)
    # ggml-cuda op offload: host-resident matrix weights of a layer are copied to the first GPU per ubatch.
    if placement.local_gpus and t >= OP_OFFLOAD_MIN_BATCH and host_matrix_by_layer:
        ledger.add(placement.first_local, COMPUTE, max(host_matrix_by_layer.values()))
