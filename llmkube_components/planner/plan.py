"""The plan of a service: where its weights and caches live, whether that fits, how fast it decodes.

The planner reads a service's memory flags through the flag table (extraArgs included, with the same
precedence as the rendered command line), so that what it plans is exactly what the server will be told.
For a service with ``offload: auto`` it tries placements from the fastest down and keeps the first that fits
the hardware profile:

    everything on the GPUs -> the smallest --n-cpu-moe N -> --cpu-moe -> --cpu-moe and --no-kv-offload

and sets the host memory request from the plan. Explicit offload fields (``offload: manual``) are kept and
checked; when a faster placement would fit, the plan says so, with both estimates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import InferenceServiceSpec, ModelSpec, parse_quantity
from ..api.base import format_bytes
from ..api.service import OFFLOAD_FIELDS, InferenceResources, offload_fields
from ..errors import Problem
from ..flags import ALL_LAYERS, DEFAULTS, Inputs, effective, read_args
from ..hardware import HardwareProfile
from .facts import ModelFacts, ProjectorFacts, TensorClass
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
    parse_overrides,
    plan_memory,
)
from .throughput import KV_FILL, Throughput, decode_estimate

# The host memory request is the plan's host total plus this margin, rounded up to whole GiB: the plan's
# compute buffers are estimates and the C library keeps some freed memory.
HOST_MARGIN = 0.10
GiB = 2**30


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
    )


def _layers(text: str) -> int:
    """--spec-draft-ngl: a number, or auto / all (every layer: with --fit off, auto keeps llama.cpp's -1)."""
    return int(text) if text.lstrip("-").isdigit() else -1


@dataclass(frozen=True)
class Option:
    """One placement, with its memory plan, whether it fits and how fast it decodes."""

    label: str  # how a user would say it: "all layers on the GPUs", "--n-cpu-moe 12", ...
    fields: dict[str, Any]  # the InferenceService fields that select it
    memory: MemoryPlan
    shortfalls: tuple[Shortfall, ...]
    throughput: Throughput

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
    alternatives: tuple[Option, ...] = ()
    advice: tuple[str, ...] = field(default=())

    def output(self) -> dict[str, Any]:
        """The structured plan, as the InferenceService component outputs it."""
        return {
            "mode": self.mode,
            "placement": self.chosen.label,
            "fields": self.chosen.fields,
            "hostMemoryRequest": f"{self.host_memory_request // GiB}Gi",
            "bytes": self.chosen.memory.totals(),
            "byCategory": {d.name: {k: v for k, v in d.bytes.items() if v} for d in self.chosen.memory.devices},
            "decodeTokensPerSecond": round(self.chosen.throughput.decode_tokens_per_second, 1),
            "source": self.model_source,
            **({"estimate": self.estimate} if self.estimate else {}),
            **({"advice": list(self.advice)} if self.advice else {}),
        }

    def table(self) -> str:
        head = (
            f"plan for {self.service} ({self.mode}): {self.chosen.label}; about "
            f"{self.chosen.throughput.decode_tokens_per_second:.1f} tokens/s decode (estimate); host memory "
            f"request {self.host_memory_request // GiB}Gi"
        )
        lines = [head, self.chosen.memory.table()]
        if self.estimate:
            lines.append(self.estimate)
        lines += list(self.advice)
        return "\n".join(lines)


def bytes_per_token(memory: MemoryPlan, facts: ModelFacts) -> dict[str, float]:
    """What one decode step reads on each device: active weights and the KV cache at its average fill."""
    active = facts.expert_used_count / facts.expert_count if facts.expert_count else 1.0
    out: dict[str, float] = {}
    for device in memory.devices:
        b = device.bytes
        read: float = sum(
            b[c.value]
            for c in TensorClass
            if c.value in b and c not in (TensorClass.TOKEN_EMBD, TensorClass.ROUTED_EXPERT, TensorClass.MTP)
        )
        read += b[TensorClass.ROUTED_EXPERT.value] * active
        read += (b[KV_K] + b[KV_V]) * KV_FILL
        out[device.name] = read
    return out


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
) -> Option:
    settings = server_settings(spec, model, gpu_count, draft=draft_facts is not None)
    draft = None
    if settings.draft and draft_facts is not None:
        draft = DraftModel(
            draft_facts, settings.draft_cache_type_k, settings.draft_cache_type_v, settings.draft_n_gpu_layers
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
        mmproj=mmproj,
        mmproj_offload=settings.mmproj_offload,
    )
    gpu_bw = float(parse_quantity(profile.gpu.memory_bandwidth)) if profile.gpu else 1.0
    host_bw = float(parse_quantity(profile.host_memory_bandwidth))
    throughput = decode_estimate(bytes_per_token(memory, facts), gpu_bw, host_bw)
    return Option(label, fields, memory, tuple(memory.fits(profile)), throughput)


def candidates(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpu_count: int,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
) -> list[Option]:
    """Placements from the fastest down, stopping at the first that fits (the auto decision's search)."""
    base = spec.model_copy(update=dict.fromkeys(OFFLOAD_FIELDS))

    def option(label: str, **fields: Any) -> Option:
        trial = base.model_copy(update=fields)
        return evaluate(label, offload_fields(trial), trial, model, facts, profile, gpu_count, draft_facts, mmproj)

    first = option("all layers on the GPUs" if gpu_count else "everything in system RAM (no GPU)")
    if first.fits or not gpu_count:
        return [first]
    tried = [first]
    if facts.expert_count:
        n_layer = facts.n_layer
        # The smallest N whose plan fits: fitting only gets easier as N grows, so bisect. N = every layer is
        # --cpu-moe, the next option, under its own name.
        low, high = 1, n_layer - 1
        best: Option | None = None
        while low <= high:
            mid = (low + high) // 2
            opt = option(f"--n-cpu-moe {mid} (routed experts of the first {mid} layers in RAM)", moe_cpu_layers=mid)
            if opt.fits:
                best, high = opt, mid - 1
            else:
                low = mid + 1
        if best is not None:
            return [*tried, best]
        cpu_moe = option("--cpu-moe (all routed experts in RAM)", moe_cpu_offload=True)
        tried.append(cpu_moe)
        if cpu_moe.fits:
            return tried
        both = option(
            "--cpu-moe and --no-kv-offload (experts and KV cache in RAM)", moe_cpu_offload=True, no_kv_offload=True
        )
    else:
        both = option("--no-kv-offload (KV cache in RAM)", no_kv_offload=True)
    tried.append(both)
    return tried


def host_request(memory: MemoryPlan) -> int:
    return math.ceil(memory.host.total * (1 + HOST_MARGIN) / GiB) * GiB


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
) -> tuple[ServicePlan | None, list[Problem], list[Problem]]:
    """The plan of one service: (plan, errors, warnings). Errors say what does not fit, with the numbers.

    ``draft_facts`` are the facts of the service's draft model (speculativeDecoding draftModelRef or
    draftModel), when it has one and they could be read: its weights, KV cache and compute buffers are planned
    beside the model's. ``mmproj`` are those of the Model's multimodal projector, when it has one and it could
    be read: its weights are planned on the first GPU (or in host memory, see ``memory``)."""
    mode = spec.offload_mode
    try:
        if mode == "auto":
            tried = candidates(spec, model, facts, profile, gpu_count, draft_facts, mmproj)
            chosen = tried[-1]
            alternatives: tuple[Option, ...] = tuple(tried[:-1])
        else:
            fields = offload_fields(spec)
            label = f"as configured ({_describe(fields)})" if fields else "as configured"
            chosen = evaluate(label, fields, spec, model, facts, profile, gpu_count, draft_facts, mmproj)
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
    explicit = offload_fields(spec)
    if explicit and not facts.expert_count and ({"moeCPUOffload", "moeCPULayers"} & set(explicit)):
        warnings.append(Problem(path, f"{_describe(explicit)} has no effect: the model has no routed experts to move"))
    elif explicit and not gpu_count:
        warnings.append(Problem(path, f"{_describe(explicit)} has no effect: the service runs without GPUs"))
    if not chosen.fits:
        largest = _largest_context(spec, model, facts, profile, gpu_count, draft_facts, mmproj)
        message = _no_fit(chosen, profile, spec, largest)
        if mode == "manual" and gpu_count:
            auto = candidates(spec, model, facts, profile, gpu_count, draft_facts, mmproj)[-1]
            if auto.fits:
                message += (
                    f"; offload: auto would fit with {auto.label}, about "
                    f"{auto.throughput.decode_tokens_per_second:.1f} tokens/s (estimate)"
                )
        errors.append(Problem(path, message))
    advice: list[str] = []
    if mode == "manual" and chosen.fits:
        faster = _faster_fitting(spec, model, facts, profile, gpu_count, chosen, draft_facts, mmproj)
        if faster is not None:
            advice.append(
                f"{chosen.label} decodes about "
                f"{chosen.throughput.decode_tokens_per_second:.1f} tokens/s; {faster.label} would fit and decode "
                f"about {faster.throughput.decode_tokens_per_second:.1f} tokens/s (estimates): set offload: auto, "
                "or drop the offload fields"
            )
            warnings.append(Problem(path, advice[-1]))
    request = host_request(chosen.memory)
    resources = spec.resources or InferenceResources()
    if mode == "manual" and resources.host_memory is not None:
        given = int(parse_quantity(resources.host_memory))
        if given < chosen.memory.host.total:
            errors.append(
                Problem(
                    f"{path}.resources.hostMemory",
                    f"{resources.host_memory} is below the {format_bytes(chosen.memory.host.total)} of system RAM "
                    f"the plan needs ({_host_parts(chosen.memory)}); ask for at least {request // GiB}Gi",
                )
            )
    plan = ServicePlan(key, source, estimate, mode, chosen, request, alternatives, tuple(advice))
    return plan, errors, warnings


def _describe(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in fields.items()) or "no offload"


def _faster_fitting(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpus: int,
    chosen: Option,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
) -> Option | None:
    if not gpus:
        return None
    best = candidates(spec, model, facts, profile, gpus, draft_facts, mmproj)[-1]
    if best.fits and best.throughput.decode_tokens_per_second > chosen.throughput.decode_tokens_per_second * 1.05:
        return best
    return None


def _host_parts(memory: MemoryPlan) -> str:
    parts = [(k, v) for k, v in memory.host.bytes.items() if v]
    parts.sort(key=lambda kv: -kv[1])
    return ", ".join(f"{k} {format_bytes(v)}" for k, v in parts[:4])


def _largest_context(
    spec: InferenceServiceSpec,
    model: ModelSpec,
    facts: ModelFacts,
    profile: HardwareProfile,
    gpus: int,
    draft_facts: ModelFacts | None = None,
    mmproj: ProjectorFacts | None = None,
) -> int:
    """The largest contextSize (a multiple of 256) at which the service would fit, 0 when none does.

    Each step of the bisection is a whole auto search (a fixed placement would miss the --n-cpu-moe N that
    fits in between): costly, but only on the way to an error.
    """

    def fits(ctx: int) -> bool:
        trial = spec.model_copy(update={"context_size": ctx})
        if trial.offload_mode == "auto":
            return candidates(trial, model, facts, profile, gpus, draft_facts, mmproj)[-1].fits
        return evaluate("", {}, trial, model, facts, profile, gpus, draft_facts, mmproj).fits

    asked = spec.context_size or facts.context_length
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
        hints.append(f"reduce contextSize to at most {largest_context}")
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
