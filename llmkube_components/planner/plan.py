"""The plan of a service: where its weights and caches live, whether that fits, how fast it runs.

The planner reads a service's memory flags through the flag table (extraArgs included, with the same
precedence as the rendered command line), so that what it plans is exactly what the server will be told.

For a service with ``offload: auto`` (``candidates``): everything on the GPUs when that fits, since nothing is
faster. Otherwise every placement a user could choose is weighed, each with the GPUs balanced:

- for a MoE model, the smallest ``--n-cpu-moe N`` that fits (the first layers' routed experts in RAM) and
  ``--cpu-moe``; each again with the KV cache in RAM (``--no-kv-offload``) and, for a dense model, the KV cache in
  RAM alone;
- fewer GPU layers: the largest ``--n-gpu-layers`` that fits, the first layers on the CPU (after ``--cpu-moe`` for
  a MoE model), with and without the KV cache in RAM;

and the fastest that fits is kept: the one whose single-request decode, averaged over a conversation that fills
the context, is highest (``Option.ranking``). Balancing: after ``--n-cpu-moe N`` (or when even shares do not fit)
whole layers move from the fullest GPU to the emptiest, as llama.cpp's own fitter does, and the layer counts
become ``--tensor-split``. Partial offload and the split are the llmkube-only service fields ``gpuLayers`` and
``tensorSplit``. The plan's advice compares the choice with the next fitting candidates, and says which layers
run on the CPU and what they cost per token. Explicit offload fields (``offload: manual``) are kept and checked;
when a faster placement would fit, the plan says so, with both estimates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..api import InferenceServiceSpec, ModelSpec, parse_quantity
from ..api.base import format_bytes
from ..api.service import OFFLOAD_FIELDS, InferenceResources, offload_fields
from ..errors import Problem
from ..flags import ALL_LAYERS, DEFAULTS, Inputs, effective, read_args, split_shares
from ..hardware import HardwareProfile
from ..resolve import remote_devices
from .facts import ModelFacts, ProjectorFacts
from .memory import (
    HOST,
    KV_K,
    KV_V,
    PROMPT_CACHE,
    DraftModel,
    MemoryPlan,
    Placement,
    PlacementError,
    Shortfall,
    gpu_name,
    parse_overrides,
    plan_memory,
)
from .throughput import NETWORK_EFFICIENCY, Machine, RemoteDevice, Speed, decode_step, speed, workload

# The host memory request is the plan's host total plus this margin, rounded up to whole GiB: the plan's
# compute buffers are estimates and the C library keeps some freed memory.
HOST_MARGIN = 0.10
GiB = 2**30
MiB = 2**20
# A GPU worker's ggml-rpc-server in host memory: the CUDA runtime and libraries, the transfer buffers of a
# tensor in flight, and ggml's CPU backend it also serves.
WORKER_HOST_MEMORY = GiB


@dataclass(frozen=True)
class ServerSettings:
    """What the planner needs of a llama-server command line."""

    placement: Placement
    context_size: int = 0
    parallel: int | None = None
    kv_unified: bool | None = None  # None: llama-server's default for the parallel setting
    cache_type_k: str = DEFAULTS["--cache-type-k"]
    cache_type_v: str = DEFAULTS["--cache-type-v"]
    batch: int = int(DEFAULTS["--batch-size"])
    ubatch: int = int(DEFAULTS["--ubatch-size"])
    flash_attn: bool = True
    cache_ram_mib: int = int(DEFAULTS["--cache-ram"])
    spec_types: tuple[str, ...] = ()  # --spec-type
    spec_n_max: int = int(DEFAULTS["--spec-draft-n-max"])
    draft: bool = False  # -md: a draft model is loaded
    draft_cache_type_k: str = DEFAULTS["--spec-draft-type-k"]
    draft_cache_type_v: str = DEFAULTS["--spec-draft-type-v"]
    draft_n_gpu_layers: int = -1  # --spec-draft-ngl; -1: every layer
    mmproj_offload: bool = True  # --mmproj-offload (default) / --no-mmproj-offload
    repack: bool = True  # --repack (default) / --no-repack
    threads: int | None = None  # --threads; unset: a thread per physical core of the node


def settings_from_args(args: Sequence[str], gpu_count: int) -> ServerSettings:
    """What a llama-server command line sets that decides memory (last one wins, as in llama.cpp)."""
    return _settings(read_args(args), gpu_count)


# Stands for the draft model's path: the planner needs to know that -md is passed, not where the file is.
PLANNED_DRAFT = "<draft>"


def server_settings(
    spec: InferenceServiceSpec, model: ModelSpec, gpu_count: int, *, draft: bool = False
) -> ServerSettings:
    """What the server of this spec will run with: its memory flags, extraArgs included (the flag table's rule).

    ``draft``: the service's draft model is staged (the argument builder gets its path and passes -md)."""
    return _settings(effective(Inputs(spec, model, "", gpu_count, PLANNED_DRAFT if draft else None)), gpu_count)


def _settings(given: Mapping[str, Any], gpu_count: int) -> ServerSettings:
    values = {**DEFAULTS, **given}
    layers = int(values.get("--n-gpu-layers", ALL_LAYERS if gpu_count else 0))
    split = values.get("--tensor-split")
    shares = tuple(float(x) for x in split.split(",")) if split else ()
    placement = Placement(
        gpu_count=gpu_count,
        n_gpu_layers=layers if gpu_count else 0,
        split_mode=values["--split-mode"],
        tensor_split=shares,
        cpu_moe=values.get("--cpu-moe") is True,
        n_cpu_moe=int(values["--n-cpu-moe"]),
        overrides=parse_overrides(values.get("--override-tensor", [])),
        no_kv_offload=values.get("--no-kv-offload") is True,
    )
    parallel = values.get("--parallel")
    return ServerSettings(
        placement=placement,
        context_size=int(values["--ctx-size"]),
        parallel=int(parallel) if parallel is not None else None,
        # server.cpp: without --parallel it serves 4 sequences from one unified cache, whatever --kv-unified says.
        kv_unified=values.get("--kv-unified") if parallel is not None else None,
        cache_type_k=values["--cache-type-k"],
        cache_type_v=values["--cache-type-v"],
        batch=int(values["--batch-size"]),
        ubatch=int(values["--ubatch-size"]),
        # auto turns flash attention on where the device supports it, which every GPU backend we target does.
        flash_attn=values["--flash-attn"] != "off",
        cache_ram_mib=int(values["--cache-ram"]),
        # llama.cpp adds the types of every --spec-type, each a comma-separated list (common/arg.cpp).
        spec_types=tuple(t for t in str(values.get("--spec-type", "")).split(",") if t and t != "none"),
        spec_n_max=int(values["--spec-draft-n-max"]),
        draft="-md" in values,
        draft_cache_type_k=values["--spec-draft-type-k"],
        draft_cache_type_v=values["--spec-draft-type-v"],
        draft_n_gpu_layers=_layers(values.get("--spec-draft-ngl", "-1")),
        mmproj_offload=values.get("--no-mmproj-offload") is not True,
        repack=values.get("--no-repack") is not True,
        threads=int(values["--threads"]) if values.get("--threads") is not None else None,
    )


def _layers(text: str) -> int:
    """--spec-draft-ngl: a number, or auto / all (every layer: with --fit off, auto keeps llama.cpp's -1)."""
    return int(text) if text.lstrip("-").isdigit() else -1


@dataclass(frozen=True)
class SpeedQuery:
    """What the speed figures answer: decode with ``depth`` tokens in context, time to first token of ``prompt``."""

    depth: int = 0
    prompt: int = 512


DEFAULT_QUERY: Final = SpeedQuery()


@dataclass(frozen=True)
class Option:
    """One placement, with its memory plan, whether it fits and how fast it runs."""

    label: str  # how a user would say it: "all layers on the GPUs", "--n-cpu-moe 12", ...
    fields: dict[str, Any]  # the InferenceService fields that select it
    memory: MemoryPlan
    shortfalls: tuple[Shortfall, ...]
    speed: Speed
    # What auto ranks placements by: one request's decode averaged over a conversation that fills the context
    # (the K/V read grows linearly with depth, so the mean step is the step at half the context).
    ranking: float
    nodes: int = 1  # multiNode: the nodes of the group (1: the server's alone)

    @property
    def fits(self) -> bool:
        return not self.shortfalls


@dataclass(frozen=True)
class ServicePlan:
    """What the planner decided for one service, and why."""

    service: str  # config key
    model_source: str
    estimate: str | None  # set when the model facts are a catalog estimate, saying so
    mode: str  # auto | manual
    chosen: Option
    host_memory_request: int  # bytes, with the margin, whole GiB
    alternatives: tuple[Option, ...] = ()  # the other placements tried, fastest first
    advice: tuple[str, ...] = field(default=())
    workers: tuple[HardwareProfile, ...] = ()  # multiNode: the chosen group's ranks 1..

    @property
    def nodes(self) -> int:
        return 1 + len(self.workers)

    def device_names(self) -> dict[str, str]:
        """What each planned device is, for a multi-node plan: a worker's GPU or CPU, or the server's GPU."""
        out: dict[str, str] = {}
        for rank, worker in enumerate(self.workers, start=1):
            for index in range(remote_devices(worker)):
                what = f"GPU {index}" if worker.gpu is not None else "CPU"
                out[gpu_name(len(out))] = f"rank {rank} {what} ({worker.name})"
        local = len(out)
        for device in self.chosen.memory.gpus[local:]:
            out[device.name] = f"rank 0 GPU {int(device.name.removeprefix('gpu')) - local}"
        return out

    def worker_host_memory(self) -> tuple[int, ...]:
        """The host memory request of each worker: a CPU worker holds its device's buffers in RAM (with the
        margin, whole GiB); a GPU worker's ggml-rpc-server needs WORKER_HOST_MEMORY beside the driver's."""
        out: list[int] = []
        device = 0
        for worker in self.workers:
            names = [gpu_name(device + i) for i in range(remote_devices(worker))]
            device += len(names)
            if worker.gpu is not None:
                out.append(WORKER_HOST_MEMORY)
                continue
            held = sum(self.chosen.memory.device(n).total for n in names)
            out.append(host_request(held, worker.usable_host_memory))
        return tuple(out)

    def output(self) -> dict[str, Any]:
        """The structured plan, as the InferenceService component outputs it."""
        return {
            "mode": self.mode,
            "placement": self.chosen.label,
            "fields": self.chosen.fields,
            "hostMemoryRequest": request_quantity(self.host_memory_request),
            "bytes": self.chosen.memory.totals(),
            "byCategory": {d.name: {k: v for k, v in d.bytes.items() if v} for d in self.chosen.memory.devices},
            **self.chosen.speed.output(),
            "bottleneck": self.chosen.speed.bottleneck(),
            "source": self.model_source,
            **({"estimate": self.estimate} if self.estimate else {}),
            **({"advice": list(self.advice)} if self.advice else {}),
            **({"candidates": [_candidate(o) for o in (self.chosen, *self.alternatives)]} if self.alternatives else {}),
            **({"nodes": self.nodes, "devices": self.device_names()} if self.workers else {}),
        }

    def table(self) -> str:
        s = self.chosen.speed
        at = ", ".join(f"{v:.1f} at {_tokens(d)}" for d, v in s.decode_by_depth.items())
        devices = "; ".join(f"{k}: {v}" for k, v in self.device_names().items()) if self.workers else ""
        head = (
            f"plan for {self.service} ({self.mode}): {self.chosen.label}; host memory request "
            f"{request_quantity(self.host_memory_request)}\n"
            f"speed (estimates): decode {s.decode_tokens_per_second:.1f} tokens/s at {_tokens(s.depth)} of context "
            f"({at}); prefill {s.prefill_tokens_per_second:.0f} tokens/s, first token after "
            f"{s.time_to_first_token:.2f} s for a {_tokens(s.prompt_tokens)} prompt; {s.sequences} concurrent "
            f"requests: {s.aggregate_decode_tokens_per_second:.1f} tokens/s together, "
            f"{s.per_request_decode_tokens_per_second:.1f} each; bottleneck {s.bottleneck()}"
        )
        lines = [head, *([f"devices: {devices}"] if devices else []), self.chosen.memory.table()]
        if self.estimate:
            lines.append(self.estimate)
        lines += list(self.advice)
        return "\n".join(lines)


def _tokens(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _candidate(option: Option) -> dict[str, Any]:
    return {
        "placement": option.label,
        "fits": option.fits,
        "decodeTokensPerSecond": round(option.speed.decode_tokens_per_second, 1),
        "conversationDecodeTokensPerSecond": round(option.ranking, 1),
        "promptTokensPerSecond": round(option.speed.prefill_tokens_per_second, 1),
        **({"shortfalls": [str(s) for s in option.shortfalls]} if option.shortfalls else {}),
    }


def machine(profile: HardwareProfile, threads: int | None = None) -> Machine:
    """The profile's figures the speed estimate reads; with ``threads`` (--threads, from resources.cpu) below the
    node's cores, the server's share of the CPU's compute."""
    host_bandwidth = float(parse_quantity(profile.host_memory_bandwidth))
    host_flops = profile.host_flops
    if threads is not None:
        host_flops *= min(threads, profile.cpu_cores) / profile.cpu_cores
    gpu = profile.gpu
    if gpu is None:
        return Machine(0, 1.0, 1.0, 1.0, host_bandwidth, host_flops)
    return Machine(
        gpu.count,
        float(parse_quantity(gpu.memory_bandwidth)),
        gpu.flops,
        gpu.link_bandwidth,
        host_bandwidth,
        host_flops,
    )


def remote_machine(head: HardwareProfile, workers: Sequence[HardwareProfile]) -> dict[str, RemoteDevice]:
    """The workers' devices of a multi-node group by plan name (gpu0.. come first, rank 1's, then rank 2's, as
    llama.cpp orders RPC devices), with their figures and the network between the server's node and theirs."""
    out: dict[str, RemoteDevice] = {}
    for rank, worker in enumerate(workers, start=1):
        network = min(head.network.bytes_per_second, worker.network.bytes_per_second)
        round_trip = max(head.network.round_trip, worker.network.round_trip)
        if worker.gpu is not None:
            bandwidth, flops = float(parse_quantity(worker.gpu.memory_bandwidth)), worker.gpu.flops
        else:
            bandwidth, flops = float(parse_quantity(worker.host_memory_bandwidth)), worker.host_flops
        for _ in range(remote_devices(worker)):
            out[gpu_name(len(out))] = RemoteDevice(rank, worker.gpu is not None, bandwidth, flops, network, round_trip)
    return out


@dataclass(frozen=True)
class _Trial:
    """What evaluate needs besides the placement: the model, its companions, the hardware, the speed query."""

    model: ModelSpec
    facts: ModelFacts
    profile: HardwareProfile
    gpu_count: int
    draft_facts: ModelFacts | None = None
    mmproj: ProjectorFacts | None = None
    query: SpeedQuery = DEFAULT_QUERY
    workers: tuple[HardwareProfile, ...] = ()  # multiNode: the hardware of ranks 1.. of the group tried

    @property
    def nodes(self) -> int:
        return 1 + len(self.workers)

    @property
    def rpc_devices(self) -> tuple[bool, ...]:
        """Each worker device, GPU or not, in llama.cpp's order (before the server's own GPUs)."""
        return tuple(w.gpu is not None for w in self.workers for _ in range(remote_devices(w)))

    @property
    def device_count(self) -> int:
        return len(self.rpc_devices) + self.gpu_count

    @property
    def capacities(self) -> tuple[int, ...]:
        """Usable memory of each device: a worker's GPUs, a CPU worker's RAM, then the server's own GPUs."""
        remote = [
            w.usable_gpu_memory if w.gpu is not None else w.usable_host_memory
            for w in self.workers
            for _ in range(remote_devices(w))
        ]
        return (*remote, *[self.profile.usable_gpu_memory] * self.gpu_count)


def evaluate(
    label: str,
    fields: dict[str, Any],
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpu_count: int,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
    query: SpeedQuery = DEFAULT_QUERY,
) -> Option:
    return _evaluate(label, fields, spec, _Trial(model, facts, profile, gpu_count, draft_facts, mmproj, query))


def _evaluate(label: str, fields: dict[str, Any], spec: InferenceServiceSpec, trial: _Trial) -> Option:
    facts = trial.facts
    settings = server_settings(spec, trial.model, trial.device_count, draft=trial.draft_facts is not None)
    if trial.workers:
        placement = dataclasses.replace(settings.placement, rpc_devices=trial.rpc_devices)
        settings = dataclasses.replace(settings, placement=placement)
    draft = None
    if settings.draft and trial.draft_facts is not None:
        draft = DraftModel(
            trial.draft_facts, settings.draft_cache_type_k, settings.draft_cache_type_v, settings.draft_n_gpu_layers
        )
    memory = plan_memory(
        facts,
        settings.placement,
        context_size=settings.context_size,
        parallel=settings.parallel,
        kv_unified=settings.kv_unified,
        cache_type_k=settings.cache_type_k,
        cache_type_v=settings.cache_type_v,
        batch=settings.batch,
        ubatch=settings.ubatch,
        flash_attn=settings.flash_attn,
        cache_ram_mib=settings.cache_ram_mib,
        spec_types=settings.spec_types,
        spec_n_max=settings.spec_n_max,
        draft=draft,
        draft_cache_type_k=settings.draft_cache_type_k,
        draft_cache_type_v=settings.draft_cache_type_v,
        mmproj=trial.mmproj,
        mmproj_offload=settings.mmproj_offload,
        repack=settings.repack,
    )
    load = workload(
        memory,
        facts,
        settings.cache_type_k,
        settings.cache_type_v,
        kv_on_host=settings.placement.no_kv_offload,
        rpc=len(trial.rpc_devices),
    )
    hardware = machine(trial.profile, settings.threads)
    if trial.workers:
        hardware = dataclasses.replace(hardware, remote=remote_machine(trial.profile, trial.workers))
    context = memory.context_size
    depth = min(trial.query.depth, context)
    figures = speed(
        load,
        hardware,
        depth=depth,
        prompt=min(trial.query.prompt, context),
        context=context,
        ubatch=settings.ubatch,
        sequences=memory.n_seq,
    )
    ranking = 1.0 / decode_step(load, hardware, depth=context // 2).seconds
    shortfalls = memory.fits_capacities(trial.capacities, trial.profile.usable_host_memory)
    return Option(label, fields, memory, tuple(shortfalls), figures, ranking, trial.nodes)


def candidates(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpu_count: int,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
    query: SpeedQuery = DEFAULT_QUERY,
    workers: Sequence[HardwareProfile] = (),
) -> list[Option]:
    """Every placement auto weighs, fastest first among those that fit, then those that do not.

    The first is auto's choice when it fits. Tried, each with the GPUs balanced (``_balanced``):
    everything on the GPUs; for a MoE model the smallest --n-cpu-moe N that fits, --cpu-moe, and each with the
    KV cache in RAM; then fewer GPU layers (the largest --n-gpu-layers that fits, the first layers on the CPU),
    with and without the KV cache in RAM (for a MoE model with --cpu-moe, whose experts are in RAM already).
    ``workers``: a multi-node group's ranks 1.., whose devices come before the server's GPUs.
    """
    return _candidates(spec, _Trial(model, facts, profile, gpu_count, draft_facts, mmproj, query, tuple(workers)))


def _candidates(spec: InferenceServiceSpec, trial: _Trial) -> list[Option]:
    facts = trial.facts
    devices = trial.device_count
    base = spec.model_copy(update=dict.fromkeys(OFFLOAD_FIELDS))
    if trial.workers:
        everything = f"all layers on the devices of {trial.nodes} nodes"
    else:
        everything = "all layers on the GPUs" if devices else "everything in system RAM (no GPU)"
    first = _balanced(everything, base, {}, trial)
    if not devices or first.fits:
        return [first]  # nothing is faster than every weight and cache on the GPUs
    tried = [first]
    moe = bool(facts.expert_count)
    layer_base: dict[str, Any] = {}
    # Tried in this order (the order ties keep, and the order the last resort is named by when nothing fits).
    for kv in (False, True):
        extra = {"no_kv_offload": True} if kv else {}
        also = " and --no-kv-offload" if kv else ""
        if kv:
            tried.append(_balanced("--no-kv-offload (KV cache in RAM)", base, extra, trial))
        if moe:
            n = _smallest(functools.partial(_experts_in_ram, base, extra, also, trial), 1, facts.n_layer - 1)
            if n is not None:
                tried.append(n)
            label = (
                "--cpu-moe and --no-kv-offload (experts and KV cache in RAM)"
                if kv
                else "--cpu-moe (all routed experts in RAM)"
            )
            tried.append(_balanced(label, base, {**extra, "moe_cpu_offload": True}, trial))
            layer_base = {"moe_cpu_offload": True}
        partial = _largest_layers(base, {**layer_base, **extra}, also, trial)
        if partial is not None:
            tried.append(partial)
    if trial.workers:
        tried = [o if o is first else dataclasses.replace(o, label=f"{trial.nodes} nodes, {o.label}") for o in tried]
    return _ranked(tried)


def _experts_in_ram(base: InferenceServiceSpec, extra: dict[str, Any], also: str, trial: _Trial, layers: int) -> Option:
    what = " and the KV cache" if also else ""
    label = f"--n-cpu-moe {layers}{also} (routed experts of the first {layers} layers{what} in RAM)"
    return _balanced(label, base, {**extra, "moe_cpu_layers": layers}, trial)


def _ranked(tried: Sequence[Option]) -> list[Option]:
    """Fitting options fastest first (by the conversation figure; ties keep the order tried), then the rest."""
    unique: dict[str, Option] = {}
    for option in tried:
        unique.setdefault(option.label, option)
    options = list(unique.values())
    fitting = sorted((o for o in options if o.fits), key=lambda o: -o.ranking)
    return fitting + [o for o in options if not o.fits]


def _smallest(make: Callable[[int], Option], low: int, high: int) -> Option | None:
    """The option of the smallest N in low..high that fits, fitting only getting easier as N grows (bisection)."""
    best: Option | None = None
    while low <= high:
        mid = (low + high) // 2
        opt = make(mid)
        if opt.fits:
            best, high = opt, mid - 1
        else:
            low = mid + 1
    return best


def _largest_layers(base: InferenceServiceSpec, extra: dict[str, Any], also: str, trial: _Trial) -> Option | None:
    """The most GPU layers (--n-gpu-layers) that fit, below all of them; None when not even one does."""
    # Every block of the file (multi-token-prediction ones included) and the output layer: llama.cpp's count
    # (llama_model_base::load_tensors).
    n_all = trial.facts.block_count + 1

    def make(on_gpu: int) -> Option:
        on_cpu = n_all - on_gpu
        label = f"--n-gpu-layers {on_gpu}{also} (layers 0-{on_cpu - 1} on the CPU)"
        if extra.get("moe_cpu_offload"):
            label = f"--cpu-moe and {label}"
        return _balanced(label, base, {**extra, "gpu_layers": on_gpu}, trial)

    # Fewer layers on the GPUs only ever fit more easily: bisect on the CPU layer count.
    found = _smallest(lambda cpu: make(n_all - cpu), 1, n_all - 1)
    return found


def _balanced(label: str, base: InferenceServiceSpec, fields: dict[str, Any], trial: _Trial) -> Option:
    """The placement of ``fields``, with --tensor-split moved off an even split when that balances the devices.

    llama.cpp splits the offloaded layers by share; when the first layers' experts are in RAM (--n-cpu-moe) or
    the output layer and compute buffers weigh on one GPU, even shares leave one GPU fuller than the other. As
    llama.cpp's own fitter (common/fit.cpp) does, shift whole layers from the fullest GPU until the fullest is
    as empty as it gets, and pass the layer counts as --tensor-split. Fullness is the share of each device's
    usable memory, so devices of different sizes (a multi-node group's) fill alike; a group starts from layer
    counts in proportion to the devices' usable memory, as llama.cpp splits by their free memory.
    """
    spec = base.model_copy(update=fields)
    if trial.workers and "tensor_split" not in fields and _splits_by_layer(spec, trial):
        counts = _proportional(_layer_counts(_evaluate(label, offload_fields(spec), spec, trial).memory), trial)
        fields = {**fields, "tensor_split": [float(c) for c in counts]}
        spec = base.model_copy(update=fields)
        label = f"{label}, --tensor-split {split_shares(counts)}"
    option = _evaluate(label, offload_fields(spec), spec, trial)
    gpus = option.memory.gpus
    # Only where it matters: the first layers' experts are in RAM (GPU 0 is left light), or even shares do not
    # fit. A fitting even split stays as it is (no churn in what a running stack renders).
    if len(gpus) < 2 or not _splits_by_layer(spec, trial) or (option.fits and not fields.get("moe_cpu_layers")):
        return option
    capacities = [max(1, c) for c in trial.capacities]
    counts = _layer_counts(option.memory)
    best = option
    base_label = label.split(", --tensor-split ")[0]
    for _ in range(trial.facts.n_layer):
        fill = [g.total / c for g, c in zip(best.memory.gpus, capacities, strict=False)]
        heavy = max(range(len(fill)), key=lambda i: fill[i])
        light = min(range(len(fill)), key=lambda i: fill[i])
        if heavy == light or counts[heavy] <= 1:
            break
        trial_counts = list(counts)
        trial_counts[heavy] -= 1
        trial_counts[light] += 1
        split = base.model_copy(update={**fields, "tensor_split": [float(c) for c in trial_counts]})
        candidate = _evaluate(
            f"{base_label}, --tensor-split {split_shares(trial_counts)}", offload_fields(split), split, trial
        )
        fuller = max(g.total / c for g, c in zip(candidate.memory.gpus, capacities, strict=False))
        if fuller >= max(fill):
            break
        best, counts = candidate, trial_counts
    return best


def _proportional(counts: Sequence[int], trial: _Trial) -> list[int]:
    """The offloaded layers (``sum(counts)``) shared out in proportion to the devices' usable memory (largest
    remainders), every device keeping at least one layer while there are enough."""
    total = sum(counts)
    capacities = list(trial.capacities)
    whole = sum(capacities) or 1
    exact = [total * c / whole for c in capacities]
    out = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[: total - sum(out)]:
        out[i] += 1
    for i, n in enumerate(out):
        if n == 0 and total >= len(out):
            donor = max(range(len(out)), key=lambda j: out[j])
            out[donor] -= 1
            out[i] = 1
    return out


def _splits_by_layer(spec: InferenceServiceSpec, trial: _Trial) -> bool:
    """Layer split over several GPUs, and the Model does not fix the shares (layerSplit)."""
    settings = server_settings(spec, trial.model, trial.device_count)
    gpu = trial.model.hardware.gpu if trial.model.hardware else None
    fixed = gpu is not None and gpu.sharding is not None and bool(gpu.sharding.layer_split)
    return str(settings.placement.split_mode) == "layer" and not fixed


def _layer_counts(memory: MemoryPlan) -> list[int]:
    """Offloaded layers (the output layer included) on each GPU."""
    return [sum(1 for d in memory.layer_devices if d == g.name) for g in memory.gpus]


def host_request(held: int, usable: int) -> int:
    """The memory request for ``held`` bytes of RAM: with HOST_MARGIN, whole GiB, but never more than the node's
    ``usable`` memory when the plan fits it (a request above the node's allocatable memory is never scheduled);
    then the usable memory in whole MiB, and at least what is held."""
    want = math.ceil(held * (1 + HOST_MARGIN) / GiB) * GiB
    if want <= usable or held > usable:
        return want
    return max(usable // MiB * MiB, math.ceil(held / MiB) * MiB)


def request_quantity(n: int) -> str:
    """A memory request as a quantity: whole GiB where it is, else MiB."""
    return f"{n // GiB}Gi" if n % GiB == 0 else f"{math.ceil(n / MiB)}Mi"


def group_sizes(spec: InferenceServiceSpec, node: HardwareProfile, workers: Sequence[HardwareProfile]) -> list[int]:
    """The node counts a service may run on: 1 without multiNode, its size, or with size auto every count up to
    maxSize for which each profile has the nodes (its ``nodes``: the server's node and the workers' together)."""
    multi = spec.multi_node
    if multi is None:
        return [1]
    if isinstance(multi.size, int):
        return [multi.size]
    sizes = []
    for n in range(1, multi.largest + 1):
        members = [node, *workers[: n - 1]]
        if all(sum(1 for m in members if m.name == p.name) <= p.nodes for p in members):
            sizes.append(n)
    return sizes


def plan_service(
    key: str,
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpu_count: int,
    path: str,
    estimate: str | None = None,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
    query: SpeedQuery = DEFAULT_QUERY,
    workers: Sequence[HardwareProfile] = (),
) -> tuple[ServicePlan | None, list[Problem], list[Problem]]:
    """The plan of one service: (plan, errors, warnings). Errors say what does not fit, with the numbers.

    ``draft_facts`` are the facts of the service's draft model (speculativeDecoding draftModelRef or
    draftModel), when it has one and they could be read: its weights, KV cache and compute buffers are planned
    beside the model's. ``mmproj`` are those of the Model's multimodal projector, when it has one and it could
    be read: its weights are planned on the first GPU (or in host memory, see ``memory``). ``query`` is the
    context depth and prompt length the speed figures are given for. ``workers``: with multiNode, the hardware
    of ranks 1.. up to the largest group allowed (``group_sizes`` picks the node counts tried)."""
    sizes = group_sizes(spec, profile, workers)
    trials = [
        _Trial(model, facts, profile, gpu_count, draft_facts, mmproj, query, tuple(workers[: n - 1])) for n in sizes
    ]
    trial = trials[-1]
    mode = spec.offload_mode
    try:
        if mode == "auto":
            # Fastest first over every group size, fewer nodes first among equals (the order tried).
            tried = _ranked([o for t in trials for o in _candidates(spec, t)])
            chosen = tried[0] if tried[0].fits else tried[-1]
            alternatives: tuple[Option, ...] = tuple(o for o in tried if o is not chosen)
            trial = trials[sizes.index(chosen.nodes)]
        else:
            fields = offload_fields(spec)
            label = f"as configured ({_describe(fields)})" if fields else "as configured"
            chosen = _evaluate(label, fields, spec, trial)
            alternatives = ()
    except PlacementError as exc:
        return None, [Problem(path, str(exc))], []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    source = facts.source
    if spec.context_size and facts.context_length and spec.context_size > facts.context_length:
        warnings.append(
            Problem(
                f"{path}.contextSize",
                f"{spec.context_size} is above the {facts.context_length} tokens the model was trained on; "
                "without RoPE scaling (extraArgs --rope-scaling yarn --rope-scale N) quality falls off past it",
            )
        )
    multi = spec.multi_node
    if multi is not None and multi.is_auto and len(sizes) < multi.largest:
        short = sorted({p.name for p in (profile, *workers[: multi.largest - 1])})
        warnings.append(
            Problem(
                f"{path}.multiNode.size",
                f"auto tried at most {sizes[-1]} of the {multi.largest} nodes maxSize allows: the stack counts "
                f"{', '.join(f'{_count_nodes(_nodes_of(name, profile, workers))} of {name}' for name in short)} "
                "(hardware nodes); give the profiles their nodes (nodes: N) to let the group grow",
            )
        )
    explicit = offload_fields(spec)
    if explicit and not facts.expert_count and ({"moeCPUOffload", "moeCPULayers"} & set(explicit)):
        warnings.append(Problem(path, f"{_describe(explicit)} has no effect: the model has no routed experts to move"))
    elif explicit and not trial.device_count:
        warnings.append(Problem(path, f"{_describe(explicit)} has no effect: the service runs without GPUs"))
    if not chosen.fits:
        largest = _largest_context(spec, trial)
        if len(sizes) > 1 or trial.workers:
            closest = [_closest(_candidates(spec, t)) if mode == "auto" else chosen for t in trials]
            message = _no_group_fit(closest, spec)
            message += f"; {_context_hint(largest)}" if largest >= 256 else ""
        else:
            message = _no_fit(chosen, profile, spec, largest)
        if mode == "manual" and trial.device_count:
            auto = _candidates(spec, trial)[0]
            if auto.fits:
                message += (
                    f"; offload: auto would fit with {auto.label}, about "
                    f"{auto.speed.decode_tokens_per_second:.1f} tokens/s (estimate)"
                )
        errors.append(Problem(path, message))
    advice: list[str] = []
    if mode == "auto" and chosen.fits:
        advice += _compare(chosen, alternatives)
    if mode == "manual" and chosen.fits and trial.device_count:
        best = _candidates(spec, trial)[0]
        if best.fits and best.ranking > chosen.ranking * 1.05:
            advice.append(
                f"{chosen.label} decodes about {chosen.ranking:.1f} tokens/s over a full conversation; "
                f"{best.label} would fit and decode about {best.ranking:.1f} tokens/s (estimates): set offload: "
                "auto, or drop the offload fields"
            )
            warnings.append(Problem(path, advice[-1]))
    cpu_layers = _cpu_layers(chosen.memory)
    if cpu_layers and chosen.fits:
        advice.append(
            f"layers {cpu_layers} run on the CPU: each token reads their weights from system RAM "
            f"({chosen.speed.seconds_by_part.get(HOST, 0.0) * 1000:.1f} ms of the "
            f"{1000 / chosen.speed.decode_tokens_per_second:.1f} ms a token takes)"
        )
    request = host_request(chosen.memory.host.total, profile.usable_host_memory)
    resources = spec.resources or InferenceResources()
    if mode == "manual" and resources.host_memory is not None:
        given = int(parse_quantity(resources.host_memory))
        if given < chosen.memory.host.total:
            errors.append(
                Problem(
                    f"{path}.resources.hostMemory",
                    f"{resources.host_memory} is below the {format_bytes(chosen.memory.host.total)} of system RAM "
                    f"the plan needs ({_host_parts(chosen.memory)}); ask for at least {request_quantity(request)}",
                )
            )
    if trial.workers and chosen.fits:
        advice += _network_advice(chosen, trial)
    plan = ServicePlan(key, source, estimate, mode, chosen, request, alternatives, tuple(advice), trial.workers)
    return plan, errors, warnings


def _network_advice(chosen: Option, trial: _Trial) -> list[str]:
    """What the network between the nodes costs: per token, and the weights sent to the workers at each start."""
    remote = remote_machine(trial.profile, trial.workers)
    sent = sum(chosen.memory.device(name).weights for name in remote)
    slowest = min(r.network_bandwidth for r in remote.values())
    network = chosen.speed.seconds_by_part.get("network", 0.0)
    return [
        f"the network between the {trial.nodes} nodes takes {network * 1000:.1f} ms of the "
        f"{1000 / chosen.speed.decode_tokens_per_second:.1f} ms a token takes (a round trip and the hidden state "
        f"each time a token's layers move to another node); at every start llama-server sends the workers "
        f"{format_bytes(sent)} of weights, about {sent / (slowest * NETWORK_EFFICIENCY):.0f} s over the slowest "
        "link (multiNode.workerCache keeps them on the workers for a restarted llama-server)"
    ]


def _no_group_fit(options: Sequence[Option], spec: InferenceServiceSpec) -> str:
    """Why no allowed node count fits: each count's closest placement and what it lacks."""
    counts = ", ".join(str(o.nodes) for o in options)
    parts = [
        f"{_count_nodes(o.nodes)} with {o.label.removeprefix(f'{o.nodes} nodes, ')}: "
        + "; ".join(str(s) for s in o.shortfalls)
        for o in options
    ]
    more = spec.multi_node.largest if spec.multi_node is not None else 1
    return (
        f"fits no allowed number of nodes ({counts}): " + " | ".join(parts) + f"; allow more nodes (multiNode "
        f"size or maxSize, now at most {more}, and the profiles' nodes), or pick a smaller quantization"
    )


def _nodes_of(name: str, profile: HardwareProfile, workers: Sequence[HardwareProfile]) -> int:
    return next(p.nodes for p in (profile, *workers) if p.name == name)


def _closest(options: Sequence[Option]) -> Option:
    """The placement that misses by the least memory."""
    return min(options, key=lambda o: sum(s.missing for s in o.shortfalls))


def _count_nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def _context_hint(largest_context: int) -> str:
    return f"reduce contextSize to at most {largest_context}"


def _compare(chosen: Option, alternatives: Sequence[Option]) -> list[str]:
    """The auto choice against the next fitting placements, when there was a choice to make."""
    others = [o for o in alternatives if o.fits][:3]
    if not others:
        return []
    return [
        f"chose {chosen.label} ({chosen.ranking:.1f} tokens/s over a full conversation, "
        f"{chosen.speed.prefill_tokens_per_second:.0f} tokens/s prefill) over "
        + "; ".join(f"{o.label} ({o.ranking:.1f}, {o.speed.prefill_tokens_per_second:.0f} prefill)" for o in others)
    ]


def _cpu_layers(memory: MemoryPlan) -> str:
    """The block range that runs on the CPU although the server has GPUs ("" when none does)."""
    if not memory.gpus:
        return ""
    blocks = [i for i, d in enumerate(memory.layer_devices[:-1]) if d == HOST]
    if not blocks:
        return ""
    return f"{blocks[0]}-{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])


def _describe(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in fields.items()) or "no offload"


def _host_parts(memory: MemoryPlan) -> str:
    parts = [(k, v) for k, v in memory.host.bytes.items() if v]
    parts.sort(key=lambda kv: -kv[1])
    return ", ".join(f"{k} {format_bytes(v)}" for k, v in parts[:4])


def _largest_context(spec: InferenceServiceSpec, trial: _Trial) -> int:
    """The largest contextSize (a multiple of 256) at which the service would fit, 0 when none does.

    Each step of the bisection is a whole auto search (a fixed placement would miss the --n-cpu-moe N that
    fits in between): costly, but only on the way to an error.
    """

    def fits(ctx: int) -> bool:
        attempt = spec.model_copy(update={"context_size": ctx})
        if attempt.offload_mode == "auto":
            return _candidates(attempt, trial)[0].fits
        return _evaluate("", {}, attempt, trial).fits

    asked = spec.context_size or trial.facts.context_length
    low, high, best = 1, asked // 256, 0
    while low <= high:
        mid = (low + high) // 2
        if fits(mid * 256):
            best, low = mid * 256, mid + 1
        else:
            high = mid - 1
    return best


def _no_fit(option: Option, profile: HardwareProfile, spec: InferenceServiceSpec, largest_context: int) -> str:
    short = "; ".join(str(s) for s in option.shortfalls)
    gpus = profile.gpu_count
    where = (
        f"{gpus} x {format_bytes(profile.usable_gpu_memory)} usable GPU memory and "
        f"{format_bytes(profile.usable_host_memory)} usable RAM"
        if gpus
        else f"{format_bytes(profile.usable_host_memory)} usable RAM"
    )
    hints = []
    if largest_context >= 256:
        hints.append(_context_hint(largest_context))
    # Hints only where they would matter: the KV cache is a real part of what is missing, the prompt cache
    # sits on a host that runs short.
    missing = sum(s.missing for s in option.shortfalls)
    kv = sum(d[KV_K] + d[KV_V] for d in option.memory.devices)
    kv_type = spec.cache_type_custom_k or spec.cache_type_k or DEFAULTS["--cache-type-k"]
    if kv_type not in ("q4_0", "q4_1", "iq4_nl") and kv > missing / 4:
        hints.append(f"use a q8_0 or q4_0 KV cache (cacheTypeK/cacheTypeV; it takes {format_bytes(kv)} now)")
    prompt_cache = option.memory.host[PROMPT_CACHE]
    host_short = next((s for s in option.shortfalls if s.device == HOST), None)
    if host_short is not None and prompt_cache:
        keep = max(0, (prompt_cache - host_short.missing) // 2**20)
        hints.append(
            f"cap llama-server's {format_bytes(prompt_cache)} prompt cache (extraArgs: --cache-ram {keep} or less)"
        )
    hints.append("or pick a smaller quantization or a profile with more memory")
    return (
        f"does not fit the hardware profile {profile.name} ({where}) even with {option.label}: {short}; "
        + ", ".join(hints)
    )
