"""Speed estimates of a placement: decode at a context depth, prefill and time to first token, concurrent decode.

The model is a roofline per device and step, summed over the devices a step runs on one after another (layer
split: GPU 0's layers, then GPU 1's, with the host's share, such as experts kept in RAM under --cpu-moe, in
between), plus the cost of handing the activations from one device to the next:

    step seconds = sum over devices of max(bytes read there / (bandwidth x memory efficiency),
                                           flops there / (peak FLOPS x compute efficiency))
                 + host<->GPU transfers / (link bandwidth x link efficiency)
                 + graph splits x SPLIT_SECONDS + STEP_SECONDS

- **Decode** (one token for each of ``n`` sequences at context depth ``d``) reads every dense weight once, the
  routed experts the ``n`` tokens pick (``1 - (1 - used/count)^n`` of them: each token picks ``used`` of
  ``count``, taken as independent and uniform), and each sequence's K and V rows up to ``d`` (a sliding-window
  layer up to its window), and reads and writes the recurrent state. Flops: 2 per weight element per token
  (only the picked experts), and ``2 x heads x (head_k + head_v)`` per layer per token of context for attention.
  With one request a GPU is memory-bound; the host's matrix-vector products may be compute-bound on few cores,
  which is what the max decides.
- **Prefill** (a prompt of ``p`` tokens) runs in ubatches of ``--ubatch-size`` tokens: per ubatch every weight
  is read once and does ``2 x ubatch`` flops per element, so it is compute-bound. With a GPU and a ubatch of at
  least 32 tokens llama.cpp runs the matrix products of host-resident weights on the first GPU (``op offload``,
  ``ggml_backend_cuda_device_offload_op``): the weights cross the host link once per ubatch, of a routed expert
  set only the experts the ubatch uses (``ggml_backend_sched_compute_splits`` copies the used ones,
  ``ggml-backend.cpp``). Time to first token is the prefill of the prompt plus one decode step.
- **Graph splits**: llama.cpp's scheduler runs a layer's parts on the device that holds their weights or cache,
  and every change of device is a synchronisation and a copy of the activations (``ggml_backend_sched``). A
  layer whose experts are in RAM adds two (GPU -> CPU -> GPU), as does a layer whose KV cache or recurrent state
  is in RAM (--no-kv-offload): the attention core runs where the cache is. In prefill with op offload the
  expert products move to the GPU, so those splits become link transfers instead.

Every constant below says where it comes from. The efficiencies are calibrated on the published measurements in
``benchmarks/data/published_throughput.yaml`` (GPU and hybrid rows, each with its source) and the CPU terms on
measurements of the real llama-bench and llama-server on generated models (``benchmarks/throughput.py`` prints
predicted vs measured; ``tests/e2e/test_throughput.py`` holds each row within 20%). An estimate: use it to compare
placements and hardware, not as a promise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .facts import ModelFacts, TensorClass
from .memory import HOST, SKIPPED, SPLIT, MemoryPlan
from .types import row_bytes

# --- Efficiencies: what fraction of a spec-sheet figure a step reaches (calibration in the module docstring) ---

# GPU decode: weights streamed at close to peak bandwidth by llama.cpp's CUDA matrix-vector kernels.
GPU_MEMORY_EFFICIENCY: Final = 0.85
# GPU prefill: quantized matrix products (MMQ, int8 tensor cores) against the dense FP16 tensor-core figure.
GPU_COMPUTE_EFFICIENCY: Final = 0.6
# GPU decode steps of several sequences: llama.cpp's matrix-vector kernels (MMVQ, up to 8 tokens) run on the
# CUDA cores with int8 dot products, not on the tensor cores the compute figure counts, so a step of a few
# sequences turns compute-bound far below the tensor rate.
GPU_DECODE_COMPUTE_EFFICIENCY: Final = 0.12
# Host decode: quantized matrix-vector products over DDR reach well under the channel peak (dequantisation,
# thread synchronisation, one NUMA node).
HOST_MEMORY_EFFICIENCY: Final = 0.8
# Host compute, against cores x HOST_CORE_FLOPS: matrix-vector products (decode) and the batched products of
# prefill (llamafile sgemm / repacked kernels reuse each dequantised block across the ubatch).
HOST_DECODE_COMPUTE_EFFICIENCY: Final = 1.0
HOST_PREFILL_COMPUTE_EFFICIENCY: Final = 1.0
# Host <-> GPU copies (pinned staging buffers over PCIe).
LINK_EFFICIENCY: Final = 0.9

# --- Fixed costs ---

# Graph operations of one layer's parts in a decode step, counted in llama.cpp's graph builders
# (src/models/*.cpp: llm_build_norm, build_attn, build_ffn, build_moe_ffn, the delta-net and Mamba blocks), views
# and reshapes left out: the parts that run where the layer's weights are, and the cores that run where the
# layer's cache is (--no-kv-offload moves them to the CPU).
OPS: Final = {
    "attention": 12,  # norm, scale, Q/K/V products, Q/K norms, two RoPEs, output product, residual add
    "attention_core": 3,  # K and V rows written to the cache, flash attention
    "recurrent": 14,  # norm, input products, gates, output norm and product, residual add
    "recurrent_core": 16,  # the convolution state, the delta-net or SSM scan and its state update
    "dense_ffn": 7,  # norm, gate/up products, GLU, down product, residual add
    "router": 8,  # norm, router product, softmax or sigmoid, top-k, weights gathered and normalised
    "experts": 7,  # three expert products (mul_mat_id), GLU, weighting, the sum over experts
    "output": 3,  # final norm, output product, logits copy
}
# Tokens per expert at which a grouped expert product (mul_mat_id) runs at half the rate of a dense product of
# the same size: its tiles are as wide as a dense product's, and most of them run empty with few tokens each.
EXPERT_HALF_TOKENS: Final = 128.0
# One operation's fixed cost on a GPU: a kernel's launch and tail at batch 1, CUDA graphs on.
GPU_OP_SECONDS: Final = 1e-6
# One operation's fixed cost on the CPU: ggml's thread barrier after every node and the work split.
HOST_OP_SECONDS: Final = 6e-6

# One change of device inside a step: a stream synchronisation, the activations' copy and the CPU threadpool's
# wake-up.
SPLIT_SECONDS: Final = 0.00016
# Per step, beyond the devices' work: graph build, sampling, the server's bookkeeping.
STEP_SECONDS: Final = 0.0002
# Per ubatch of prefill, beyond its work.
UBATCH_SECONDS: Final = 0.001

# Peak FLOPS of one CPU core when a profile does not give hostCompute: 2 FMA units x 8 fp32 lanes x 2 flops x
# 3.5 GHz, a desktop core with AVX2 (Zen 4 / Raptor Lake class).
HOST_CORE_FLOPS: Final = 112e9
# op offload threshold: ggml-cuda.cu GGML_OP_OFFLOAD_MIN_BATCH default.
OP_OFFLOAD_MIN_BATCH: Final = 32
# Depth of the decode figure the plan shows beside the asked depth and the full context.
SHORT_DEPTH: Final = 1024


@dataclass(frozen=True)
class Machine:
    """The figures of a hardware profile the estimate reads, in bytes/s and FLOPS (per GPU where it says)."""

    gpu_count: int
    gpu_bandwidth: float
    gpu_flops: float
    link_bandwidth: float  # host <-> one GPU, one direction
    host_bandwidth: float
    host_flops: float  # every core the server's threads use


@dataclass
class DeviceWork:
    """What one device holds that a step reads or computes: weights, caches, and the attention per context token."""

    dense_bytes: float = 0.0  # weights read once per step whatever the batch (not routed experts)
    dense_elements: float = 0.0
    expert_bytes: float = 0.0  # routed experts: a token reads used/count of them
    expert_elements: float = 0.0
    kv_bytes_per_token: float = 0.0  # K and V bytes per token of context, full-attention layers
    swa_kv_bytes_per_token: float = 0.0  # the same for sliding-window layers (read up to the window)
    attention_flops_per_token: float = 0.0  # per query token and context token, full-attention layers
    swa_attention_flops_per_token: float = 0.0
    recurrent_bytes: float = 0.0  # recurrent state of one sequence (read and written per token)
    ops: int = 0  # graph operations one step runs here (each a kernel on a GPU, a thread barrier on the CPU)


@dataclass(frozen=True)
class Workload:
    """A placement's work per device, and the facts of the model the steps need."""

    devices: Mapping[str, DeviceWork]
    expert_used: int
    expert_count: int
    sliding_window: int
    decode_splits: int  # device changes in one decode step
    prefill_splits: int  # device changes in one prefill ubatch with op offload (experts run on the GPU)

    def expert_fraction(self, tokens: int) -> float:
        """Share of a layer's routed experts that ``tokens`` tokens read (uniform, independent routing)."""
        if not self.expert_count:
            return 0.0
        return 1.0 - (1.0 - self.expert_used / self.expert_count) ** max(1, tokens)


def workload(
    memory: MemoryPlan, facts: ModelFacts, cache_type_k: str, cache_type_v: str, *, kv_on_host: bool
) -> Workload:
    """Where each weight, cache row and attention product of the plan sits (``kv_on_host``: --no-kv-offload)."""
    devices: dict[str, DeviceWork] = {d.name: DeviceWork() for d in memory.devices}
    gpus = [d.name for d in memory.gpus]
    host_expert_layers: set[int] = set()
    for tensor in facts.tensors:
        cls, layer = facts.classify(tensor.name)
        where = memory.tensor_devices.get(tensor.name, HOST)
        if where == SKIPPED or cls in (TensorClass.TOKEN_EMBD, TensorClass.MTP):
            continue  # token_embd: one row per token is read, not the matrix
        shares = [(g, 1 / len(gpus)) for g in gpus] if where == SPLIT else [(where, 1.0)]
        for name, share in shares:
            work = devices[name]
            if cls == TensorClass.ROUTED_EXPERT:
                work.expert_bytes += tensor.nbytes * share
                work.expert_elements += tensor.n_elements * share
            else:
                work.dense_bytes += tensor.nbytes * share
                work.dense_elements += tensor.n_elements * share
        if cls == TensorClass.ROUTED_EXPERT and where == HOST and layer is not None:
            host_expert_layers.add(layer)
    n_layer = facts.n_layer
    for il in range(n_layer):
        layer_device = memory.layer_devices[il]
        cache_device = HOST if kv_on_host else layer_device
        work = devices[cache_device]
        if facts.has_attention_kv[il]:
            k = row_bytes(cache_type_k, facts.n_embd_k_gqa(il))
            v = 0 if facts.is_mla else row_bytes(cache_type_v, facts.n_embd_v_gqa(il))
            flops = 2.0 * facts.n_head[il] * (facts.head_k(il) + facts.head_v(il))
            if facts.is_swa[il]:
                work.swa_kv_bytes_per_token += k + v
                work.swa_attention_flops_per_token += flops
            else:
                work.kv_bytes_per_token += k + v
                work.attention_flops_per_token += flops
    if facts.ssm is not None:
        per_layer = facts.recurrent_state_bytes_per_sequence / max(1, len(facts.recurrent_layers))
        for il in facts.recurrent_layers:
            devices[HOST if kv_on_host else memory.layer_devices[il]].recurrent_bytes += per_layer
    _count_ops(devices, memory, facts, host_expert_layers, kv_on_host)
    decode_splits, prefill_splits = _splits(memory, facts, host_expert_layers, kv_on_host)
    return Workload(
        devices,
        facts.expert_used_count,
        facts.expert_count,
        facts.sliding_window,
        decode_splits,
        prefill_splits,
    )


def _count_ops(
    devices: Mapping[str, DeviceWork], memory: MemoryPlan, facts: ModelFacts, host_experts: set[int], kv_on_host: bool
) -> None:
    """Graph operations per step on each device, layer part by layer part (``OPS``)."""
    for il in range(facts.n_layer):
        main = memory.layer_devices[il]
        cache = HOST if kv_on_host else main
        if facts.is_recurrent[il]:
            parts = [(main, OPS["recurrent"]), (cache, OPS["recurrent_core"])]
        else:
            parts = [(main, OPS["attention"]), (cache, OPS["attention_core"])]
        if facts.expert_count:
            parts.append((main, OPS["router"]))
            parts.append((HOST if il in host_experts else main, OPS["experts"]))
            if facts.expert_shared_feed_forward_length:
                parts.append((main, OPS["dense_ffn"]))
        else:
            parts.append((main, OPS["dense_ffn"]))
        for device, n in parts:
            devices[device].ops += n
    devices[memory.layer_devices[-1]].ops += OPS["output"]


def _splits(memory: MemoryPlan, facts: ModelFacts, host_experts: set[int], kv_on_host: bool) -> tuple[int, int]:
    """Device changes along one step's graph: (decode, prefill with op offload)."""
    if not memory.gpus:
        return 0, 0
    decode: list[str] = [HOST]  # token embeddings are looked up on the CPU
    prefill: list[str] = [HOST]
    for il in range(facts.n_layer):
        main = memory.layer_devices[il]
        cache = HOST if kv_on_host and (facts.has_attention_kv[il] or facts.is_recurrent[il]) else main
        experts = HOST if il in host_experts else main
        decode += [main, cache, main, experts, main]
        # op offload: a CPU layer's and CPU experts' matrix products run on the first GPU.
        offloaded = memory.gpus[0].name if main == HOST else main
        prefill += [offloaded, cache, offloaded]
    decode.append(memory.layer_devices[-1])
    prefill.append(memory.layer_devices[-1])
    return _changes(decode), _changes(prefill)


def _changes(path: Sequence[str]) -> int:
    return sum(1 for a, b in itertools.pairwise(path) if a != b)


@dataclass(frozen=True)
class Step:
    seconds: float
    by_part: Mapping[str, float]  # gpu0.., host, link, splits, overhead


def _op_seconds(name: str) -> float:
    return HOST_OP_SECONDS if name == HOST else GPU_OP_SECONDS


def _expert_flops(work: DeviceWork, tokens: int, load: Workload, *, grouped: bool) -> float:
    """The flops of ``tokens`` tokens through the routed experts here, as the products cost them.

    In prefill (``grouped``) each expert's matrix product runs on the tokens routed to it, ``tokens x used /
    count`` on average: with few tokens per expert the tiles run mostly empty, at ``t / (t + EXPERT_HALF_TOKENS)``
    of a dense product's rate. A decode step's few tokens take the matrix-vector path, which has no tiles."""
    if not load.expert_count:
        return 0.0
    used = load.expert_used / load.expert_count
    flops = 2 * tokens * work.expert_elements * used
    if not grouped:
        return flops
    per_expert = max(1.0, tokens * used)
    return flops * (1 + EXPERT_HALF_TOKENS / per_expert)


def _device_seconds(name: str, nbytes: float, flops: float, machine: Machine, *, prefill: bool) -> float:
    if name == HOST:
        compute = HOST_PREFILL_COMPUTE_EFFICIENCY if prefill else HOST_DECODE_COMPUTE_EFFICIENCY
        return max(
            nbytes / (machine.host_bandwidth * HOST_MEMORY_EFFICIENCY),
            flops / (machine.host_flops * compute),
        )
    compute = GPU_COMPUTE_EFFICIENCY if prefill else GPU_DECODE_COMPUTE_EFFICIENCY
    return max(
        nbytes / (machine.gpu_bandwidth * GPU_MEMORY_EFFICIENCY),
        flops / (machine.gpu_flops * compute),
    )


def _attention(work: DeviceWork, depth: float, window: int) -> tuple[float, float]:
    """(K/V bytes, flops) of one query token over ``depth`` tokens of context."""
    swa_depth = min(depth, window) if window else depth
    nbytes = work.kv_bytes_per_token * depth + work.swa_kv_bytes_per_token * swa_depth
    flops = work.attention_flops_per_token * depth + work.swa_attention_flops_per_token * swa_depth
    return nbytes, flops


def decode_step(load: Workload, machine: Machine, *, sequences: int = 1, depth: int = 0) -> Step:
    """One decode step: one new token for each of ``sequences`` sequences, each ``depth`` tokens deep."""
    n = max(1, sequences)
    experts = load.expert_fraction(n)
    parts: dict[str, float] = {}
    for name, work in load.devices.items():
        kv_bytes, attn_flops = _attention(work, depth, load.sliding_window)
        nbytes = work.dense_bytes + work.expert_bytes * experts + n * (kv_bytes + 2 * work.recurrent_bytes)
        flops = 2 * n * work.dense_elements + _expert_flops(work, n, load, grouped=False) + n * attn_flops
        if nbytes or flops or work.ops:
            parts[name] = _device_seconds(name, nbytes, flops, machine, prefill=False) + work.ops * _op_seconds(name)
    parts["splits"] = load.decode_splits * SPLIT_SECONDS
    parts["overhead"] = STEP_SECONDS
    return Step(sum(parts.values()), parts)


def prefill(load: Workload, machine: Machine, *, prompt: int, depth: int = 0, ubatch: int = 512) -> Step:
    """Processing a prompt of ``prompt`` tokens after ``depth`` tokens already in context, in ubatches."""
    parts: dict[str, float] = {}
    done = 0
    first_gpu = next((name for name in load.devices if name != HOST), None)
    while done < prompt:
        u = min(ubatch, prompt - done)
        # Attention of the ubatch: each of its tokens sees the context before it (causal), on average the middle.
        context = depth + done + u / 2
        experts = load.expert_fraction(u)
        offload = first_gpu is not None and u >= OP_OFFLOAD_MIN_BATCH
        for name, work in load.devices.items():
            kv_bytes, attn_flops = _attention(work, context, load.sliding_window)
            weight_bytes = work.dense_bytes + work.expert_bytes * experts
            weight_flops = 2 * u * work.dense_elements + _expert_flops(work, u, load, grouped=True)
            cache_bytes = kv_bytes + 2 * work.recurrent_bytes
            if name == HOST and offload and first_gpu is not None:
                # Host weights cross the link to the first GPU, which runs their products.
                parts["link"] = parts.get("link", 0.0) + weight_bytes / (machine.link_bandwidth * LINK_EFFICIENCY)
                parts[first_gpu] = parts.get(first_gpu, 0.0) + _device_seconds(
                    first_gpu, weight_bytes, weight_flops, machine, prefill=True
                )
                weight_bytes, weight_flops = 0.0, 0.0
            nbytes = weight_bytes + cache_bytes
            flops = weight_flops + u * attn_flops
            seconds = _device_seconds(name, nbytes, flops, machine, prefill=True) + work.ops * _op_seconds(name)
            if nbytes or flops or work.ops:
                parts[name] = parts.get(name, 0.0) + seconds
        splits = load.prefill_splits if offload else load.decode_splits
        parts["splits"] = parts.get("splits", 0.0) + splits * SPLIT_SECONDS
        parts["overhead"] = parts.get("overhead", 0.0) + UBATCH_SECONDS
        done += u
    return Step(sum(parts.values()), parts)


@dataclass(frozen=True)
class Speed:
    """The speed figures of one placement."""

    depth: int  # context depth of the single-request decode figure
    decode_tokens_per_second: float  # one request, at ``depth``
    decode_by_depth: Mapping[int, float]  # one request, at SHORT_DEPTH and at the full context
    prompt_tokens: int
    prefill_tokens_per_second: float
    time_to_first_token: float  # seconds, for ``prompt_tokens`` from an empty context
    sequences: int  # concurrent requests (the server's parallel slots)
    aggregate_decode_tokens_per_second: float  # all ``sequences`` requests together, each at ``depth``
    per_request_decode_tokens_per_second: float
    seconds_by_part: Mapping[str, float] = field(default_factory=dict)  # one decode step at ``depth``

    def bottleneck(self) -> str:
        devices = {k: v for k, v in self.seconds_by_part.items() if k not in ("overhead",)}
        return max(devices, key=lambda d: devices[d])

    def output(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "decodeTokensPerSecond": round(self.decode_tokens_per_second, 1),
            "decodeTokensPerSecondByDepth": {str(d): round(v, 1) for d, v in self.decode_by_depth.items()},
            "promptTokens": self.prompt_tokens,
            "promptTokensPerSecond": round(self.prefill_tokens_per_second, 1),
            "timeToFirstTokenSeconds": round(self.time_to_first_token, 3),
            "concurrency": {
                "requests": self.sequences,
                "aggregateTokensPerSecond": round(self.aggregate_decode_tokens_per_second, 1),
                "perRequestTokensPerSecond": round(self.per_request_decode_tokens_per_second, 1),
            },
        }


def speed(
    load: Workload,
    machine: Machine,
    *,
    depth: int,
    prompt: int,
    context: int,
    ubatch: int,
    sequences: int,
) -> Speed:
    """The speed figures: decode at ``depth``, at SHORT_DEPTH and at ``context``, prefill, and concurrency."""
    single = decode_step(load, machine, depth=depth)
    by_depth = {
        d: 1.0 / decode_step(load, machine, depth=d).seconds for d in sorted({min(SHORT_DEPTH, context), context})
    }
    pp = prefill(load, machine, prompt=prompt, ubatch=ubatch)
    together = decode_step(load, machine, sequences=sequences, depth=depth)
    return Speed(
        depth=depth,
        decode_tokens_per_second=1.0 / single.seconds,
        decode_by_depth=by_depth,
        prompt_tokens=prompt,
        prefill_tokens_per_second=prompt / pp.seconds,
        time_to_first_token=pp.seconds + single.seconds,
        sequences=sequences,
        aggregate_decode_tokens_per_second=sequences / together.seconds,
        per_request_decode_tokens_per_second=1.0 / together.seconds,
        seconds_by_part=single.by_part,
    )
