"""Speed estimates of a placement: decode at a context depth, prefill and time to first token, concurrent decode.

A step (one decode step of ``n`` sequences, or one prefill ubatch) costs, summed over the devices it runs on one
after another (layer split: GPU 0's layers, then GPU 1's, with the host's share, such as experts kept in RAM
under --cpu-moe, in between):

    per GPU:  max(bytes read / (bandwidth x GPU_MEMORY_EFFICIENCY), flops / (compute x GPU efficiency))
    host:     max(bytes read / (bandwidth x HOST_MEMORY_EFFICIENCY), product flops / (hostCompute x CPU efficiency))
              + attention flops over cached tokens / (hostCompute x its efficiency)
    + host weights copied to the first GPU (prefill) / (host link x LINK_EFFICIENCY)
    + graph operations x GPU_OP_SECONDS / HOST_OP_SECONDS + device changes x SPLIT_SECONDS + STEP/UBATCH_SECONDS

- **Decode** (one token for each of ``n`` sequences at context depth ``d``) reads every dense weight once, the
  routed experts the ``n`` tokens pick (``1 - (1 - used/count)^n`` of them: each token picks ``used`` of
  ``count``, taken as independent and uniform), and each sequence's K and V rows up to ``d`` (a sliding-window
  layer up to its window), and reads and writes the recurrent state. Flops: 2 per weight element per token
  (only the picked experts), and ``2 x heads x (head_k + head_v)`` per layer per token of context for attention.
  With one request a GPU is memory-bound; a CPU with few cores is compute-bound.
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

- **Network** (multiNode, llama.cpp RPC): a worker's devices come first, each with its own node's figures (a GPU,
  or a CPU worker's RAM and cores). Every visit of a step to a worker (a run of the graph on one rank's devices)
  costs a round trip and the hidden state of the step's tokens (``n_embd`` f32 values each) sent there and back
  over the slower end's link (``network_seconds``): ggml-rpc queues the inputs' copy and the graph without
  waiting (``send_async``) and waits for the outputs, and copies between two workers go through the server's
  node; and a step that runs on any worker costs RPC_STEP_SECONDS more (measured on loopback). A decode step
  sends a few KB: the round trips count; a prefill ubatch sends ``ubatch x n_embd x 4`` bytes: the bandwidth
  counts. ggml-rpc offloads no ops, so op offload goes to the server's own first GPU.

Calibration (``benchmarks/throughput.py --fit`` finds the values below from the data, and shows they are the ones
in use): the CPU-side constants (HOST_* but the memory efficiency, STEP_SECONDS, UBATCH_SECONDS) on the real
llama-bench and llama-server of the pinned tree on generated models on this project's machine
(``benchmarks/data/this_machine.json``, worst row first: ``tests/e2e/test_throughput.py`` holds every row within
20%); then the GPU, link, split and host-memory constants on published measurements, each with its source
(``benchmarks/data/calibration.yaml``, every second row held out). An estimate: use it to compare placements and
hardware, not as a promise.
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

# GPU decode: weights streamed by llama.cpp's CUDA matrix-vector kernels (published rows: 3090, 4090, 5090).
GPU_MEMORY_EFFICIENCY: Final = 0.8
# GPU prefill: quantized matrix products (MMQ, int8 tensor cores) against the dense FP16 tensor-core figure.
GPU_COMPUTE_EFFICIENCY: Final = 0.6
# GPU decode steps of several sequences: llama.cpp's matrix-vector kernels (MMVQ, up to 8 tokens) run on the
# CUDA cores with int8 dot products, not on the tensor cores the compute figure counts, so a step of a few
# sequences turns compute-bound far below the tensor rate (published ubatch 1-32 rows).
GPU_DECODE_COMPUTE_EFFICIENCY: Final = 0.12
# Host memory: what many desktop cores stream of their DDR channels' peak (published CPU-only and hybrid rows).
HOST_MEMORY_EFFICIENCY: Final = 0.95
# The CPU's matrix products against the profile's hostCompute (peak FLOPS of its cores). A decode step (one
# token per sequence: each weight dequantised and dotted again for every token) reaches a small fraction of the
# peak, so few cores are compute-bound in decode; the rate grows with the columns of a product (tokens in the step,
# or per expert) as their power HOST_BATCH_EXPONENT (measured with 1, 2, 4 and 64 tokens), up to
# HOST_COMPUTE_EFFICIENCY for a prefill ubatch (llamafile sgemm, repacked kernels).
HOST_DECODE_COMPUTE_EFFICIENCY: Final = 0.1
HOST_BATCH_EXPONENT: Final = 0.5
HOST_COMPUTE_EFFICIENCY: Final = 0.4
# Routed experts' products (mul_mat_id) never take llamafile's sgemm (ggml-cpu.c calls it from mul_mat only), so
# a prefill ubatch's expert products stay at the chunked dot-product rate: a lower cap.
HOST_EXPERT_COMPUTE_EFFICIENCY: Final = 0.2
# Flash attention's CPU kernel in decode converts and dots every cached K and V row for each query: far below the
# peak (a prefill ubatch's queries share the rows, at HOST_COMPUTE_EFFICIENCY). The published CPU rows at depth,
# from other builds, ran this several times faster: a build-dependent figure.
HOST_ATTENTION_EFFICIENCY: Final = 0.0125
# Host <-> GPU copies (pinned staging buffers over PCIe).
LINK_EFFICIENCY: Final = 0.9
# TCP payload over Ethernet at 1500 bytes MTU: 1448 of every 1538 bytes on the wire (headers, preamble, gap),
# 94%; a little less in practice.
NETWORK_EFFICIENCY: Final = 0.9
# Activations cross between nodes as f32 rows of n_embd per token (the hidden state at a layer boundary).
ACTIVATION_BYTES: Final = 4
# A step that runs on any worker, beyond its visits' round trips: the RPC client's dispatch and the worker's graph
# recompute. Measured with llama-bench tg128 on this project's machine, workers on loopback (-t 1 everywhere):
# the 12-layer dense test model ran 545 us a token locally, 1020-1195 on one worker, 1076-1222 on two (a second
# visit costs about a loopback round trip, 95 us measured); the 8-layer MoE one 150, 525-790 and 760. A slower
# core than a desktop's: an upper figure.
RPC_STEP_SECONDS: Final = 4e-4

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
GPU_OP_SECONDS: Final = 1e-06
# One operation's fixed cost on the CPU: ggml's thread barrier after every node and the work split.
HOST_OP_SECONDS: Final = 6e-06

# One change of device inside a step: a stream synchronisation, the activations' copy and the CPU threadpool's
# wake-up.
SPLIT_SECONDS: Final = 0.00016
# Per step, beyond the devices' work: graph build, sampling, the server's bookkeeping.
STEP_SECONDS: Final = 0.0001
# Per ubatch of prefill, beyond its work.
UBATCH_SECONDS: Final = 0.004

# op offload threshold: ggml-cuda.cu GGML_OP_OFFLOAD_MIN_BATCH default.
OP_OFFLOAD_MIN_BATCH: Final = 32
# Depth of the decode figure the plan shows beside the asked depth and the full context.
SHORT_DEPTH: Final = 1024


@dataclass(frozen=True)
class RemoteDevice:
    """A worker's device in a multi-node group (llama.cpp RPC): its own figures, and the network to it."""

    rank: int  # the worker's rank in the group (devices of one rank share a ggml-rpc-server)
    gpu: bool  # False: the worker's CPU, served as a device
    bandwidth: float  # memory bandwidth of the GPU, or of the worker's RAM
    flops: float  # the GPU's tensor FLOPS, or the worker's cores'
    network_bandwidth: float  # bytes/s one direction between the server's node and the worker's: the slower end
    round_trip: float  # seconds, TCP, between the two nodes: the slower end


@dataclass(frozen=True)
class Machine:
    """The figures of a hardware profile the estimate reads, in bytes/s and FLOPS (per GPU where it says)."""

    gpu_count: int
    gpu_bandwidth: float
    gpu_flops: float
    link_bandwidth: float  # host <-> one GPU, one direction
    host_bandwidth: float
    host_flops: float  # every core the server's threads use
    remote: Mapping[str, RemoteDevice] = field(default_factory=dict)  # multiNode: the workers' devices by name


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
    # The devices one step's graph runs on, in order (a device per layer part): where the network is crossed.
    decode_path: tuple[str, ...] = ()
    prefill_path: tuple[str, ...] = ()
    n_embd: int = 0

    def expert_fraction(self, tokens: int) -> float:
        """Share of a layer's routed experts that ``tokens`` tokens read (uniform, independent routing)."""
        if not self.expert_count:
            return 0.0
        return 1.0 - (1.0 - self.expert_used / self.expert_count) ** max(1, tokens)


def workload(
    memory: MemoryPlan, facts: ModelFacts, cache_type_k: str, cache_type_v: str, *, kv_on_host: bool, rpc: int = 0
) -> Workload:
    """Where each weight, cache row and attention product of the plan sits (``kv_on_host``: --no-kv-offload;
    ``rpc``: the first devices are that many workers' devices of a multi-node group, which offload no ops)."""
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
    decode_path, prefill_path = _paths(memory, facts, host_expert_layers, kv_on_host, rpc)
    return Workload(
        devices,
        facts.expert_used_count,
        facts.expert_count,
        facts.sliding_window,
        _changes(decode_path),
        _changes(prefill_path),
        tuple(decode_path),
        tuple(prefill_path),
        facts.n_embd,
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


def _paths(
    memory: MemoryPlan, facts: ModelFacts, host_experts: set[int], kv_on_host: bool, rpc: int
) -> tuple[list[str], list[str]]:
    """The devices along one step's graph, a device per layer part: (decode, prefill with op offload)."""
    if not memory.gpus:
        return [], []
    decode: list[str] = [HOST]  # token embeddings are looked up on the CPU
    prefill: list[str] = [HOST]
    # op offload: a CPU layer's and CPU experts' matrix products run on the server's first own GPU (ggml-rpc
    # offloads none: without an own GPU the CPU runs them).
    first_local = memory.gpus[rpc].name if rpc < len(memory.gpus) else HOST
    for il in range(facts.n_layer):
        main = memory.layer_devices[il]
        cache = HOST if kv_on_host and (facts.has_attention_kv[il] or facts.is_recurrent[il]) else main
        experts = HOST if il in host_experts else main
        decode += [main, cache, main, experts, main]
        offloaded = first_local if main == HOST else main
        prefill += [offloaded, cache, offloaded]
    decode.append(memory.layer_devices[-1])
    prefill.append(memory.layer_devices[-1])
    return decode, prefill


def network_seconds(path: Sequence[str], machine: Machine, tokens: int, n_embd: int) -> float:
    """The network a step crosses: every visit to a worker (a run of the path on one rank's devices) is a round
    trip (ggml-rpc queues the inputs' copy and the graph without waiting, then waits for the outputs) and the
    hidden state of ``tokens`` tokens sent there and back through the server's node (copies between two workers
    go through it: ggml-rpc copies device to device only within one ggml-rpc-server)."""
    seconds = 0.0
    previous: int | None = None
    for name in path:
        remote = machine.remote.get(name)
        rank = remote.rank if remote is not None else None
        if remote is not None and rank != previous:
            state = tokens * n_embd * ACTIVATION_BYTES
            seconds += remote.round_trip + 2 * state / (remote.network_bandwidth * NETWORK_EFFICIENCY)
        previous = rank
    return seconds + (RPC_STEP_SECONDS if seconds else 0.0)


def _changes(path: Sequence[str]) -> int:
    return sum(1 for a, b in itertools.pairwise(path) if a != b)


@dataclass(frozen=True)
class Step:
    seconds: float
    by_part: Mapping[str, float]  # gpu0.., host, link, splits, overhead


def _op_seconds(name: str, machine: Machine) -> float:
    remote = machine.remote.get(name)
    return HOST_OP_SECONDS if name == HOST or (remote is not None and not remote.gpu) else GPU_OP_SECONDS


def _host_efficiency(tokens: float, cap: float) -> float:
    """Fraction of the CPU's peak its matrix products reach with ``tokens`` columns: each weight block is
    dequantised once and dotted with every column, so the rate grows with the columns (HOST_BATCH_EXPONENT,
    measured with 1, 2, 4 and 64 tokens on this machine), up to ``cap``."""
    return min(cap, HOST_DECODE_COMPUTE_EFFICIENCY * max(1.0, tokens) ** HOST_BATCH_EXPONENT)


@dataclass(frozen=True)
class _Work:
    """One device's part of a step: weights read, cache read, and the arithmetic by kind."""

    weight_bytes: float
    cache_bytes: float
    dense_flops: float  # matrix products over every token of the step
    expert_flops: float  # routed-expert products, over the tokens routed to each expert
    attention_flops: float
    tokens: float  # columns of the dense products
    expert_tokens: float  # columns of one expert's product (tokens x used / count)


def _device_seconds(name: str, machine: Machine, work: _Work, *, prefill: bool) -> float:
    """One device's share of a step.

    A GPU is a roofline: the larger of its bytes over bandwidth and its flops over compute (a prefill's grouped
    expert products at ``t / (t + EXPERT_HALF_TOKENS)`` of a dense product's rate with ``t`` tokens per expert:
    their tiles run mostly empty; a decode step's few tokens take the matrix-vector kernels, CUDA cores rather
    than tensor cores: GPU_DECODE_COMPUTE_EFFICIENCY).

    On the CPU the matrix products reach ``_host_efficiency`` of the peak for their column count, the larger of
    that and the bytes over memory bandwidth; attention over cached tokens adds its own time: in decode, flash
    attention's CPU kernel converts and dots every cached K and V row for each query, far below the peak
    (HOST_ATTENTION_EFFICIENCY); a prefill ubatch's queries share them, like a matrix product."""
    remote = machine.remote.get(name)
    if name == HOST or (remote is not None and not remote.gpu):
        peak = machine.host_flops if remote is None else remote.flops
        bandwidth = machine.host_bandwidth if remote is None else remote.bandwidth
        products = work.dense_flops / (peak * _host_efficiency(work.tokens, HOST_COMPUTE_EFFICIENCY))
        if work.expert_flops:
            cap = HOST_EXPERT_COMPUTE_EFFICIENCY
            products += work.expert_flops / (peak * _host_efficiency(work.expert_tokens, cap))
        memory = (work.weight_bytes + work.cache_bytes) / (bandwidth * HOST_MEMORY_EFFICIENCY)
        attention = HOST_COMPUTE_EFFICIENCY if prefill else HOST_ATTENTION_EFFICIENCY
        return max(memory, products) + work.attention_flops / (peak * attention)
    expert_flops = work.expert_flops
    if prefill and expert_flops:
        expert_flops *= 1 + EXPERT_HALF_TOKENS / max(1.0, work.expert_tokens)
    compute = GPU_COMPUTE_EFFICIENCY if prefill else GPU_DECODE_COMPUTE_EFFICIENCY
    bandwidth, flops = (
        (machine.gpu_bandwidth, machine.gpu_flops) if remote is None else (remote.bandwidth, remote.flops)
    )
    return max(
        (work.weight_bytes + work.cache_bytes) / (bandwidth * GPU_MEMORY_EFFICIENCY),
        (work.dense_flops + expert_flops + work.attention_flops) / (flops * compute),
    )


def _attention(work: DeviceWork, depth: float, window: int) -> tuple[float, float]:
    """(K/V bytes, flops) of one query token over ``depth`` tokens of context."""
    swa_depth = min(depth, window) if window else depth
    nbytes = work.kv_bytes_per_token * depth + work.swa_kv_bytes_per_token * swa_depth
    flops = work.attention_flops_per_token * depth + work.swa_attention_flops_per_token * swa_depth
    return nbytes, flops


def _step_work(
    load: Workload, work: DeviceWork, tokens: int, context: float, *, sequences: int, weights: bool = True
) -> _Work:
    """What ``tokens`` tokens of ``sequences`` sequences (each token seeing ``context`` cached tokens) need of one
    device's weights and caches: each sequence's cache is read once per step, whatever its tokens."""
    used = load.expert_used / load.expert_count if load.expert_count else 0.0
    kv_bytes, attention = _attention(work, context, load.sliding_window)
    return _Work(
        weight_bytes=work.dense_bytes + work.expert_bytes * load.expert_fraction(tokens) if weights else 0.0,
        cache_bytes=sequences * (kv_bytes + 2 * work.recurrent_bytes),
        dense_flops=2 * tokens * work.dense_elements if weights else 0.0,
        expert_flops=2 * tokens * work.expert_elements * used if weights else 0.0,
        attention_flops=tokens * attention,
        tokens=tokens,
        expert_tokens=tokens * used,
    )


def decode_step(load: Workload, machine: Machine, *, sequences: int = 1, depth: int = 0) -> Step:
    """One decode step: one new token for each of ``sequences`` sequences, each ``depth`` tokens deep."""
    n = max(1, sequences)
    parts: dict[str, float] = {}
    for name, work in load.devices.items():
        seconds = _device_seconds(name, machine, _step_work(load, work, n, depth, sequences=n), prefill=False)
        if seconds or work.ops:
            parts[name] = seconds + work.ops * _op_seconds(name, machine)
    parts["splits"] = load.decode_splits * SPLIT_SECONDS
    if machine.remote:
        parts["network"] = network_seconds(load.decode_path, machine, n, load.n_embd)
    parts["overhead"] = STEP_SECONDS
    return Step(sum(parts.values()), parts)


def prefill(load: Workload, machine: Machine, *, prompt: int, depth: int = 0, ubatch: int = 512) -> Step:
    """Processing a prompt of ``prompt`` tokens after ``depth`` tokens already in context, in ubatches."""
    parts: dict[str, float] = {}
    done = 0
    first_gpu = next((name for name in load.devices if name != HOST and name not in machine.remote), None)

    def add(part: str, seconds: float) -> None:
        parts[part] = parts.get(part, 0.0) + seconds

    while done < prompt:
        u = min(ubatch, prompt - done)
        # Attention of the ubatch: each of its tokens sees the context before it (causal), on average the middle.
        context = depth + done + u / 2
        offload = first_gpu is not None and u >= OP_OFFLOAD_MIN_BATCH
        for name, work in load.devices.items():
            if name == HOST and offload and first_gpu is not None:
                # The host's weights cross the link to the first GPU, which runs their products; the host keeps
                # what its caches need (attention under --no-kv-offload).
                moved = _step_work(load, work, u, context, sequences=1)
                add("link", moved.weight_bytes / (machine.link_bandwidth * LINK_EFFICIENCY))
                gpu_part = _Work(
                    moved.weight_bytes, 0.0, moved.dense_flops, moved.expert_flops, 0.0, u, moved.expert_tokens
                )
                add(first_gpu, _device_seconds(first_gpu, machine, gpu_part, prefill=True))
                step = _step_work(load, work, u, context, sequences=1, weights=False)
            else:
                step = _step_work(load, work, u, context, sequences=1)
            seconds = _device_seconds(name, machine, step, prefill=True)
            if seconds or work.ops:
                add(name, seconds + work.ops * _op_seconds(name, machine))
        add("splits", (load.prefill_splits if offload else load.decode_splits) * SPLIT_SECONDS)
        if machine.remote:
            add("network", network_seconds(load.prefill_path if offload else load.decode_path, machine, u, load.n_embd))
        add("overhead", UBATCH_SECONDS)
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
