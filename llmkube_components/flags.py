"""What we know of llama-server's flags: one ordered table, the few special cases, and how to read a command line.

``FLAG_TABLE`` below is the whole mapping from spec fields to llama-server flags, in the order they are
emitted. Each row says its spellings (llama.cpp's aliases and negations), its value kind, the spec field it
reads and whether it changes memory. Everything else derives from it: the argument builder
(``llamacpp.build_args``) renders it, ``extraArgs`` de-duplication matches its spellings, and the planner
reads the memory rows of a service (``effective``) the way llama-server would read the command line.

The order and the nil/zero guards follow the LLMKube operator (v0.9.19, ``internal/controller/
runtime_llamacpp.go`` and ``runtime_llamacpp_args.go``), so a service gets the same command line whether
Pulumi or the operator deploys it: ``--model --port --host``, the GPU flags, the table's spec flags, the
serving-mode flags, then ``extraArgs``, then ``--metrics``.

Where we deliberately differ from the operator, the row or the function says why:
- ``--host 0.0.0.0`` instead of the operator's ``::``;
- ``flashAttention`` is passed as ``on`` or ``off`` whenever it is set, GPUs or not (the operator only
  passes ``on``, and only with GPUs), so an explicit ``false`` is not silently llama.cpp's ``auto``;
- every table flag defers to ``extraArgs`` under any of llama.cpp's spellings of it (the operator checks a
  few long names only), and ``--flag=value`` in ``extraArgs`` is split in two, the only form llama-server
  parses;
- a ``layerSplit`` that cannot be used, and ``--port`` in ``extraArgs``, are config errors at preview
  (``layer_split_problems``, ``extra_args_problems``; the operator falls back to an even split, or serves on
  a port its Service does not point at);
- ``metadataOverrides`` are passed in one ``--override-kv``, not one flag each (``metadata_overrides``);
- runtime ``llamacpp-router`` keeps the table's per-model flags (the router passes its own command line on to
  every model instance it starts), where the operator passes none; the models are a ``--models-preset`` file
  we render (modelRef's and routerModels', each under its Model key: ``router_preset``), not a ``/models``
  directory the user mounts, and ``--models-max 1`` keeps one of them loaded at a time.

llama.cpp facts below are from the tree vendored in llama-cpp-python 0.3.36 (``common/arg.cpp``,
``common/common.h``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from .api.base import parse_quantity
from .api.model import GPUShardingSpec, GPUSpec, ModelSpec
from .api.service import DRAFT_WEIGHT_TYPES, InferenceServiceSpec
from .errors import Problem, config_path


class Kind(Enum):
    SWITCH = "switch"  # the bare flag, when the value is true
    VALUED = "valued"  # the flag and its value, when the value is set (not None, false, 0 or empty)
    REPEATED = "repeated"  # the flag and an item, once per item of a list


SWITCH, VALUED, REPEATED = Kind.SWITCH, Kind.VALUED, Kind.REPEATED

# What a row changes: MEMORY rows change what the server allocates (the planner reads them); SERVING rows
# change how it serves.
MEMORY, SERVING = True, False


@dataclass(frozen=True)
class Inputs:
    """What a row reads: the effective service and model specs, the model file, the GPU count."""

    spec: InferenceServiceSpec
    model: ModelSpec
    model_path: str
    gpu_count: int
    draft_path: str | None = None  # the draft model's file (speculativeDecoding), as the pod sees it
    mmproj_path: str | None = None  # the multimodal projector's file (Model mmproj), as the pod sees it
    router_preset_path: str | None = None  # the router's models preset (default ROUTER_PRESET_FILE), as the pod sees it
    rpc_servers: tuple[str, ...] = ()  # multiNode: the workers' ggml-rpc-server addresses (host:port), rank order


Getter = Callable[[Inputs], Any]
_G = TypeVar("_G", bound=Getter)

_ATTRIBUTE = {f.alias or name: name for name, f in InferenceServiceSpec.model_fields.items()}


class SpecField:
    """Reads InferenceService fields by their JSON names; given several, the first one that is set wins."""

    def __init__(self, *fields: str):
        unknown = [f for f in fields if f not in _ATTRIBUTE]
        if unknown:  # a typo in the table fails at import, not as a flag that is never emitted
            raise KeyError(f"InferenceServiceSpec has no field {', '.join(unknown)}")
        self.fields = fields

    def __call__(self, given: Inputs) -> Any:
        for name in self.fields:
            value = getattr(given.spec, _ATTRIBUTE[name])
            if value is not None:
                return value
        return None

    def __repr__(self) -> str:
        return f"field({', '.join(map(repr, self.fields))})"


field = SpecField


def reads(*fields: str) -> Callable[[_G], _G]:
    """Name the InferenceService fields a special-case getter reads (for FIELD_FLAGS and the README)."""

    def mark(getter: _G) -> _G:
        getter.fields = fields  # type: ignore[attr-defined]
        return getter

    return mark


class Flag:
    """One row of the table: a llama-server flag, its kind, where its value comes from, its other spellings.

        ``aliases`` are llama.cpp's other names for the flag, ``negations`` the names that turn a switch off
        (``--no-jinja`` for ``--jinja``): when ``extraArgs`` holds any spelling, the row is left out and the user's
        value wins. ``memory`` (MEMORY) marks the rows the planner reads: they change what the server allocates
    (or, --threads, how fast its CPU share runs).
    ``default`` is what llama-server runs with when the command line leaves the flag out (common/common.h).
    """

    __slots__ = ("aliases", "default", "flag", "kind", "memory", "negations", "spellings", "value")

    def __init__(
        self,
        flag: str,
        kind: Kind,
        memory: bool,
        value: Getter,
        *aliases: str,
        negations: tuple[str, ...] = (),
        default: str | None = None,
    ):
        self.flag = flag
        self.default = default
        self.kind = kind
        self.value = value
        self.aliases = aliases
        self.negations = negations
        self.memory = memory
        self.spellings = (flag, *aliases, *negations)

    def render(self, value: Any) -> list[str]:
        if not value:  # the operator's guard for every field: nil, false, 0 and empty emit nothing
            return []
        if self.kind is SWITCH:
            return [self.flag]
        if self.kind is REPEATED:
            return [arg for item in value for arg in (self.flag, str(item))]
        return [self.flag, str(value)]

    def __repr__(self) -> str:
        return f"Flag({self.flag!r}, {self.kind.name}, {self.value!r})"


# --- special cases: values that are more than one spec field -----------------------------------------------

# llama-server listens on 127.0.0.1 unless told otherwise, which the Service cannot reach. The operator binds
# "::" (dual-stack); that fails in pods where IPv6 is disabled, and 0.0.0.0 is what the Service's IPv4
# ClusterIP needs. `--host` in extraArgs wins.
LISTEN_ADDRESS = "0.0.0.0"

# "Offload every layer". Not -1: in current llama.cpp -1 means "auto" (fit to free memory), and the word
# "all" only exists in recent builds. 99 is what the operator passes and every build accepts; llama.cpp caps
# it at the model's layer count. (A model with more than 99 blocks needs hardware.gpu.layers set.)
ALL_LAYERS = 99

# Model sharding strategy -> llama.cpp --split-mode, as the operator maps it. llama.cpp has no pipeline
# mode (layer split already pipelines), and its own "tensor" mode is experimental and absent from older
# images, so the operator sends the tensor strategy to "row".
SPLIT_MODES = {"layer": "layer", "row": "row", "tensor": "row", "pipeline": "layer", "none": "none"}

# What the operator sets for the embedding-only modes: the pooling the endpoint needs (--rerank would imply
# rank pooling on its own, --embedding would take the model's default).
POOLING_BY_MODE = {"embedding": "last", "rerank": "rank"}

_LAYER_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_PROPORTION = re.compile(r"^\s*\d+(\.\d+)?\s*$")


ROUTER_RUNTIME = "llamacpp-router"


def is_router(spec: InferenceServiceSpec) -> bool:
    """llama-server's router mode: no --model; it serves the models of --models-preset, one instance each."""
    return spec.runtime == ROUTER_RUNTIME


# Where the pod mounts the router's models preset (a ConfigMap of the service's, workloads) and llama-server
# reads it (--models-preset).
ROUTER_PRESET_DIR = "/etc/llmkube/router"
ROUTER_PRESET_KEY = "models.ini"
ROUTER_PRESET_FILE = f"{ROUTER_PRESET_DIR}/{ROUTER_PRESET_KEY}"

# One model instance at a time: the router starts a model on its first request and stops the least recently
# used one past --models-max (4 by default), so the planner's one-model-at-a-time memory plan holds.
ROUTER_MODELS_MAX = 1


@dataclass(frozen=True)
class RoutedModel:
    """One model of the router's preset: the name clients send, and its files as the pod sees them."""

    name: str
    model_path: str
    mmproj_path: str | None = None


def router_preset(models: Sequence[RoutedModel]) -> str:
    """The router's --models-preset file (llama.cpp's INI, common/preset.cpp load_from_ini): ``version = 1``,
    then one section per model, its name the one clients send, with ``model`` (a split model's first part:
    llama.cpp finds the others beside it) and ``mmproj``. The router drops --model and --mmproj from its own
    command line, but passes a preset's on to the model instance (server-models.cpp unset_reserved_args), so a
    projector goes here. Values end at ';' or '#' (comments): router_problems refuses paths that hold one."""
    lines = ["version = 1"]
    for routed in models:
        lines += ["", f"[{routed.name}]", f"model = {routed.model_path}"]
        if routed.mmproj_path:
            lines.append(f"mmproj = {routed.mmproj_path}")
    return "\n".join(lines) + "\n"


@reads("runtime")
def model_file(given: Inputs) -> str | None:
    return None if is_router(given.spec) else given.model_path


@reads("runtime", "routerModels")
def models_preset(given: Inputs) -> str | None:
    """The router's --models-preset: the file that lists modelRef's and routerModels' models (router_preset),
    so the router serves those and nothing else of the shared cache (--models-dir would list every .gguf of
    a directory: each part of a split model, a draft file beside the model)."""
    return (given.router_preset_path or ROUTER_PRESET_FILE) if is_router(given.spec) else None


@reads("runtime")
def models_max(given: Inputs) -> int | None:
    return ROUTER_MODELS_MAX if is_router(given.spec) else None


def listen_port(spec: InferenceServiceSpec) -> int:
    """The port llama-server listens on in the pod: containerPort, else endpoint.port (the Service's port)."""
    return spec.container_port or spec.serving_port


@reads("containerPort", "endpoint.port")
def serving_port(given: Inputs) -> int:
    # Always emitted: the container port and the probes use the same number (the Service targets it).
    return listen_port(given.spec)


@reads("bindAddress")
def listen_address(given: Inputs) -> str:
    return given.spec.bind_address or LISTEN_ADDRESS


def _gpu(model: ModelSpec) -> GPUSpec | None:
    return model.hardware.gpu if model.hardware else None


def _sharding(model: ModelSpec) -> GPUShardingSpec | None:
    gpu = _gpu(model)
    return gpu.sharding if gpu else None


@reads("resources.gpu", "gpuLayers")
def gpu_layers(given: Inputs) -> int | None:
    """The service's gpuLayers, else Model hardware.gpu.layers when positive, else all of them; nothing without GPUs.

    In the Model, 0 means "all" too, as in the operator, which cannot tell 0 from unset: a service that should
    stay off the GPUs asks for resources.gpu 0. The service's gpuLayers (llmkube only) is taken as written.
    """
    if given.gpu_count <= 0:
        return None
    if given.spec.gpu_layers is not None:
        return given.spec.gpu_layers
    gpu = _gpu(given.model)
    layers = gpu.layers if gpu else None
    return layers if layers is not None and layers > 0 else ALL_LAYERS


@reads("resources.gpu")
def split_mode(given: Inputs) -> str | None:
    """How the model is spread over several GPUs (Model hardware.gpu.sharding.strategy); nothing for one."""
    if given.gpu_count <= 1:
        return None
    sharding = _sharding(given.model)
    return SPLIT_MODES[(sharding.strategy if sharding else None) or "layer"]


@reads("resources.gpu", "tensorSplit")
def tensor_split(given: Inputs) -> str | None:
    """Each GPU's share of the model: the service's tensorSplit, else Model hardware.gpu.sharding.layerSplit,
    else even (1,1,...).

    Only for layer and row splits over several GPUs: with split mode none one GPU holds everything.
    """
    if split_mode(given) in (None, "none"):
        return None
    if given.spec.tensor_split:
        return split_shares(given.spec.tensor_split)
    sharding = _sharding(given.model)
    if sharding is None or not sharding.layer_split:
        return ",".join(["1"] * given.gpu_count)
    return tensor_split_from_layer_split(sharding.layer_split)


def split_shares(shares: Sequence[float]) -> str:
    """--tensor-split of a list of shares: whole numbers without a decimal point (22,27), others as written."""
    return ",".join(str(int(x)) if float(x).is_integer() else str(x) for x in shares)


def layer_split_problems(entries: Sequence[str], gpu_count: int, path: str) -> list[Problem]:
    """Why a layerSplit cannot become --tensor-split: one entry per GPU, all layer ranges or all proportions.

    Where the operator quietly falls back to an even split (wrong length, unreadable entry), we stop at preview.
    """
    if len(entries) != gpu_count:
        return [
            Problem(
                path,
                f"{list(entries)!r} has {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, but the service "
                f"runs on {gpu_count} GPUs; give one entry per GPU (a layer range such as '0-23' or a proportion "
                "such as '3'), or leave layerSplit unset for an even split",
            )
        ]
    ranges = [_LAYER_RANGE.match(entry) for entry in entries]
    if all(ranges):
        return [
            Problem(path, f"{entry!r} starts after it ends; write a layer range as start-end")
            for entry, m in zip(entries, ranges, strict=True)
            if m and int(m[2]) < int(m[1])
        ][:1]
    for entry, is_range in zip(entries, ranges, strict=True):
        if not is_range and not _PROPORTION.match(entry):
            return [Problem(path, f"{entry!r} is neither a layer range such as '0-23' nor a proportion such as '3'")]
    if any(ranges):
        return [Problem(path, f"{list(entries)!r} mixes layer ranges and proportions; use one form for every GPU")]
    return []


def tensor_split_from_layer_split(entries: Sequence[str]) -> str:
    """layerSplit -> --tensor-split, for a layerSplit without problems (see layer_split_problems).

    Layer ranges are the operator's form: ["0-24", "25-39"] are 25 and 15 layers, passed reduced as 5,3.
    Plain numbers (["3", "2"]) are llama.cpp's own proportions and pass through.
    """
    ranges = [_LAYER_RANGE.match(entry) for entry in entries]
    if all(ranges):
        counts = [int(m[2]) - int(m[1]) + 1 for m in ranges if m]
        divisor = math.gcd(*counts)
        return ",".join(str(count // divisor) for count in counts)
    return ",".join(entry.strip() for entry in entries)


@reads("flashAttention")
def flash_attention(given: Inputs) -> str | None:
    """on or off, never the bare flag; unset leaves llama.cpp's default (auto) alone.

    llama.cpp made -fa take a value (on|off|auto). A bare --flash-attn now takes the next argument as its
    value ("unknown value for --flash-attn: '--jinja'") or, last on the line, fails with "expected value
    for argument": either way the server exits and the pod crash-loops.
    """
    value = given.spec.flash_attention
    return None if value is None else ("on" if value else "off")


@reads("mode")
def reranking(given: Inputs) -> bool:
    return given.spec.mode == "rerank"


@reads("mode")
def embedding(given: Inputs) -> bool:
    # A reranker is an embedding server with rank pooling: it needs both flags, as in the operator.
    return given.spec.mode in ("embedding", "rerank")


@reads("mode")
def pooling(given: Inputs) -> str | None:
    return POOLING_BY_MODE.get(given.spec.mode or "chat")


def from_extra_args_only(given: Inputs) -> None:
    """A flag no spec field sets: the table knows its spellings so that extraArgs setting it are read."""
    return None


# Where the pod mounts the API key's Secret (workloads) and llama-server reads it (--api-key-file): the key
# never appears in the command line, the Deployment or the Pulumi state, only in the Secret.
API_KEY_DIR = "/etc/llmkube/api-key"
API_KEY_FILE = f"{API_KEY_DIR}/api-key"


@reads("resources.cpu")
def threads(given: Inputs) -> int | None:
    """The CPU limit's whole cores (at least one): llama.cpp otherwise starts a thread per physical core of the
    node, whatever the pod's CPU limit, and the kernel throttles them all (common/common.h: n_threads -1)."""
    cpu = given.spec.resources.cpu if given.spec.resources else None
    if cpu is None:
        return None
    return max(1, math.floor(parse_quantity(cpu)))


@reads("apiKey")
def api_key_file(given: Inputs) -> str | None:
    return API_KEY_FILE if given.spec.api_key is not None else None


@reads("webUI", "endpoint.type")
def web_ui_off(given: Inputs) -> bool:
    # Only ever switched off: the web UI is llama-server's default.
    return not given.spec.web_ui_on


@reads("slotsEndpoint", "endpoint.type")
def slots_off(given: Inputs) -> bool:
    return not given.spec.slots_on


@reads("offload")
def fit_off(given: Inputs) -> str | None:
    """``off`` once the planner has placed the service: llama-server's --fit (on by default in current builds)
    changes the arguments we leave unset to fit device memory at load time, so the server would run
    something other than what the plan sized and checked. Unplanned services keep llama.cpp's default."""
    return "off" if given.spec.offload is not None else None


@reads("mode")
def prompt_cache_off(given: Inputs) -> str | None:
    # llama-server fills its host prompt cache up to --cache-ram (8192 MiB by default) and never gives it
    # back, but only completion requests read it: embedding and rerank servers would hold 8 GiB of RAM for
    # nothing (the operator's fix, #1406).
    return "0" if given.spec.mode in POOLING_BY_MODE else None


# --- decoding and context: speculative decoding, RoPE scaling, reasoning budget -------------------------------


def _extra_flags(spec: InferenceServiceSpec) -> set[str]:
    return flags_in(extra_args(spec))


@reads("ropeScaling")
def rope_scaling(given: Inputs) -> str | None:
    rope = given.spec.rope_scaling
    return rope.type if rope else None


@reads("ropeScaling")
def rope_scale(given: Inputs) -> str | None:
    """The factor, unless extraArgs choose the scaling: as in the operator, --rope-scaling in extraArgs
    takes the whole RoPE block over (a factor for another scaling type would be wrong)."""
    rope = given.spec.rope_scaling
    if rope is None or "--rope-scaling" in _extra_flags(given.spec):
        return None
    return rope.factor


@reads("ropeScaling")
def yarn_original_context(given: Inputs) -> int | None:
    rope = given.spec.rope_scaling
    if rope is None or "--rope-scaling" in _extra_flags(given.spec):
        return None
    return rope.original_context


def _speculative_type(given: Inputs) -> str | None:
    """llama.cpp's name of the speculative type; None when there is no speculation (unset, none, disabled)."""
    speculative = given.spec.speculative_decoding
    if speculative is None or speculative.resolved_type == "none":
        return None
    return speculative.resolved_type


@reads("speculativeDecoding")
def spec_type(given: Inputs) -> str | None:
    return _speculative_type(given)


# Types that read a separate file of draft weights: the draft-* types, and draft-mtp optionally (a separate
# MTP head; without one it runs the model's own multi-token-prediction layer).
TAKES_DRAFT_FILE = DRAFT_WEIGHT_TYPES | {"draft-mtp"}


@reads("speculativeDecoding")
def draft_model(given: Inputs) -> str | None:
    """-md: where the pod finds the draft weights, for a type that reads them and a draft that was staged."""
    kind = _speculative_type(given)
    return given.draft_path if kind in TAKES_DRAFT_FILE and given.draft_path else None


@reads("speculativeDecoding")
def spec_draft_n_max(given: Inputs) -> int | None:
    speculative = given.spec.speculative_decoding
    return speculative.n_draft_max if speculative and _speculative_type(given) else None


def go_float(value: float) -> str:
    """pMin as the operator prints it (Go's %g): the shortest digits that read back as the same float, in
    exponent form (two exponent digits at least) below 1e-4: 0.05, 1, 0, 1e-05. Python's repr is the same
    shortest form with the same exponent rule for 0 <= value <= 1 (the field's bounds), but for the ".0" of
    whole numbers."""
    text = repr(float(value))
    return text.removesuffix(".0")


@reads("speculativeDecoding")
def spec_draft_p_min(given: Inputs) -> str | None:
    # Text, so that 0 is emitted too: a set pMin is passed whatever its value, as in the operator.
    speculative = given.spec.speculative_decoding
    if speculative is None or speculative.p_min is None or not _speculative_type(given):
        return None
    return go_float(speculative.p_min)


@reads("reasoningBudget")
def reasoning_budget(given: Inputs) -> str | None:
    # Text, so that 0 (no thinking at all, the field's most common value) is emitted: the table leaves out
    # falsy values, and llama.cpp's default is -1 (unlimited).
    budget = given.spec.reasoning_budget
    return None if budget is None else str(budget)


@reads("reasoningBudgetMessage", "reasoningBudget")
def reasoning_budget_message(given: Inputs) -> str | None:
    # Only beside a budget, as in the operator: without one the message is never injected.
    return given.spec.reasoning_budget_message if given.spec.reasoning_budget is not None else None


@reads("metadataOverrides")
def metadata_overrides(given: Inputs) -> list[str] | None:
    """Every entry in one --override-kv, comma-separated. llama.cpp splits each value on commas anyway (so an
    entry cannot hold one: metadata_overrides_problems), and one flag per entry, the operator's form, makes it
    log "DEPRECATED: argument '--override-kv' specified multiple times ... (only last value will be used)" at
    every start, which is false (it appends them all) and alarming. extraArgs add to these."""
    entries = given.spec.metadata_overrides
    return [",".join(entries)] if entries else None


@reads("multiNode")
def rpc_servers(given: Inputs) -> str | None:
    """The workers of a multi-node group, rank order: llama.cpp puts their devices first, in this order
    (src/llama.cpp, "add RPC servers at the front of the list"), which is the order of tensorSplit's shares."""
    return ",".join(given.rpc_servers) if given.rpc_servers else None


@reads("runtime")
def mmproj_file(given: Inputs) -> str | None:
    # The router drops --mmproj from what it passes to its model instances (server-models.cpp,
    # unset_reserved_args): router_problems reports a projector there instead.
    return None if is_router(given.spec) else given.mmproj_path


# --- the table ------------------------------------------------------------------------------------------------
# One row per flag, in the order llama-server receives them (the operator's). Adding a flag is one row here
# and one row in tests/test_llamacpp.py. Aliases and negations are llama.cpp's, from common/arg.cpp; rows
# marked memory change what the server allocates, and the planner reads them.

# fmt: off
FLAG_TABLE: tuple[Flag, ...] = (
    #    flag                 kind      changes   value                                     aliases, negations
    Flag("--model",            VALUED,   SERVING,  model_file,                               "-m"),
    # The router's models and how many run at once (--models-max in extraArgs: router_models_max_warnings).
    Flag("--models-preset",    VALUED,   SERVING,  models_preset),
    Flag("--models-max",       VALUED,   SERVING,  models_max,                               default="4"),
    Flag("--port",             VALUED,   SERVING,  serving_port),
    Flag("--host",             VALUED,   SERVING,  listen_address),
    # Before the GPU flags: llama.cpp registers the workers' devices when it parses this (common/arg.cpp).
    # llmkube only (multiNode); the planner reads the group from the spec, not from this flag.
    Flag("--rpc",              VALUED,   SERVING,  rpc_servers),
    Flag("--n-gpu-layers",     VALUED,   MEMORY,   gpu_layers,                               "-ngl", "--gpu-layers"),
    Flag("--split-mode",       VALUED,   MEMORY,   split_mode,                               "-sm", default="layer"),
    Flag("--tensor-split",     VALUED,   MEMORY,   tensor_split,                             "-ts"),
    Flag("--ctx-size",         VALUED,   MEMORY,   field("contextSize"),                     "-c", default="0"),
    Flag("--rope-scaling",     VALUED,   SERVING,  rope_scaling),
    Flag("--rope-scale",       VALUED,   SERVING,  rope_scale),
    Flag("--yarn-orig-ctx",    VALUED,   SERVING,  yarn_original_context),
    Flag("--parallel",         VALUED,   MEMORY,   field("parallelSlots"),                   "-np"),
    # No spec field: read from extraArgs only. One KV stream for all sequences instead of one each.
    Flag("--kv-unified",       SWITCH,   MEMORY,   from_extra_args_only,
         "-kvu", negations=("--no-kv-unified", "-no-kvu")),
    Flag("--flash-attn",       VALUED,   MEMORY,   flash_attention,                          "-fa", default="auto"),
    # false emits nothing, as in the operator: --no-jinja would stop older images ("invalid argument").
    # Builds where Jinja is the default need --no-jinja in extraArgs, which also drops this row.
    Flag("--jinja",            SWITCH,   SERVING,  field("jinja"),                           negations=("--no-jinja",)),
    # The custom type wins over the enum: fork-only cache types (e.g. turbo3) without widening the API.
    Flag("--cache-type-k",     VALUED,   MEMORY,   field("cacheTypeCustomK", "cacheTypeK"),  "-ctk", default="f16"),
    Flag("--cache-type-v",     VALUED,   MEMORY,   field("cacheTypeCustomV", "cacheTypeV"),  "-ctv", default="f16"),
    Flag("--cpu-moe",          SWITCH,   MEMORY,   field("moeCPUOffload"),                   "-cmoe"),
    Flag("--n-cpu-moe",        VALUED,   MEMORY,   field("moeCPULayers"),                    "-ncmoe", default="0"),
    Flag("--no-kv-offload",    SWITCH,   MEMORY,   field("noKvOffload"),  "-nkvo", negations=("--kv-offload", "-kvo")),
    # One flag per entry, as in the operator. Every -ot adds rules (llama.cpp warns that the flag repeats, but
    # its handler appends each one), so extraArgs add to these instead of replacing them.
    Flag("--override-tensor",  REPEATED, MEMORY,   field("tensorOverrides"),                 "-ot"),
    Flag("--batch-size",       VALUED,   MEMORY,   field("batchSize"),                       "-b", default="2048"),
    Flag("--ubatch-size",      VALUED,   MEMORY,   field("uBatchSize"),                      "-ub", default="512"),
    Flag("--no-warmup",        SWITCH,   SERVING,  field("noWarmup"),                        negations=("--warmup",)),
    # draft-mtp loads the model's multi-token-prediction layers and gives them a KV cache of their own; the
    # draft model (-md) is a second model with a KV cache as large as the main one's (common/speculative.cpp).
    Flag("--spec-type",        VALUED,   MEMORY,   spec_type),
    Flag("-md",                VALUED,   MEMORY,   draft_model,              "--spec-draft-model", "--model-draft"),
    Flag("--spec-draft-n-max", VALUED,   MEMORY,   spec_draft_n_max,                         default="3"),
    Flag("--spec-draft-p-min", VALUED,   SERVING,  spec_draft_p_min,                         "--draft-p-min"),
    # No spec field: read from extraArgs only. The draft's KV cache types (f16 whatever -ctk says) and layers.
    Flag("--spec-draft-type-k", VALUED,  MEMORY,   from_extra_args_only,
         "-ctkd", "--cache-type-k-draft", default="f16"),
    Flag("--spec-draft-type-v", VALUED,  MEMORY,   from_extra_args_only,
         "-ctvd", "--cache-type-v-draft", default="f16"),
    Flag("--spec-draft-ngl",   VALUED,   MEMORY,   from_extra_args_only,
         "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"),
    Flag("--reasoning-budget", VALUED,   SERVING,  reasoning_budget),
    Flag("--reasoning-budget-message", VALUED, SERVING, reasoning_budget_message),
    Flag("--mmproj",           VALUED,   MEMORY,   mmproj_file,                              "-mm"),
    # No spec field: read from extraArgs only. The projector goes to the first GPU unless this says the CPU
    # (common_params::mmproj_use_gpu, default on; clip.cpp's clip_ctx).
    Flag("--no-mmproj-offload", SWITCH,  MEMORY,   from_extra_args_only,      negations=("--mmproj-offload",)),
    # No spec field: read from extraArgs only. A CPU-only server copies some host weights into repacked
    # buffers (AMX's layout is larger); off, the weights stay in the mapping as they are.
    Flag("--no-repack",        SWITCH,   MEMORY,   from_extra_args_only,      "-nr", negations=("--repack",)),
    # All entries in one flag, where the operator passes one each: see metadata_overrides.
    Flag("--override-kv",      REPEATED, SERVING,  metadata_overrides),
    Flag("--fit",              VALUED,   SERVING,  fit_off,                                  "-fit"),
    Flag("--reranking",        SWITCH,   SERVING,  reranking,                                "--rerank"),
    Flag("--embedding",        SWITCH,   SERVING,  embedding,                                "--embeddings"),
    Flag("--pooling",          VALUED,   SERVING,  pooling),
    Flag("--cache-ram",        VALUED,   MEMORY,   prompt_cache_off,                         "-cram", default="8192"),
    # llmkube only (the operator has no such fields): threads for the CPU limit, the key file, and the endpoints
    # an exposed server hides.
    # MEMORY here as "the planner reads it": the threads bound the CPU's share of the speed estimate.
    Flag("--threads",          VALUED,   MEMORY,   threads,                                  "-t"),
    Flag("--api-key-file",     VALUED,   SERVING,  api_key_file),
    Flag("--no-ui",            SWITCH,   SERVING,  web_ui_off,            "--no-webui", negations=("--ui", "--webui")),
    Flag("--no-slots",         SWITCH,   SERVING,  slots_off,                                negations=("--slots",)),
)
# fmt: on


# What llama-server runs with for a flag the command line leaves out, by canonical flag.
DEFAULTS: dict[str, str] = {row.flag: row.default for row in FLAG_TABLE if row.default is not None}
_ROW: dict[str, Flag] = {row.flag: row for row in FLAG_TABLE}


def _field_flags() -> dict[str, tuple[str, ...]]:
    flags: dict[str, tuple[str, ...]] = {}
    for row in FLAG_TABLE:
        for name in getattr(row.value, "fields", ()):
            flags[name] = (*flags.get(name, ()), row.flag)
    return flags


# InferenceService field (JSON name, dotted for nested ones) -> the llama-server flags it sets.
FIELD_FLAGS: dict[str, tuple[str, ...]] = _field_flags()


# --- extraArgs precedence and --metrics -------------------------------------------------------------------------

_FLAG_TOKEN = re.compile(r"^--?[A-Za-z]")  # a flag, not a negative number such as -1


def extra_args(spec: InferenceServiceSpec) -> list[str]:
    """spec.extraArgs as llama-server can read them: ``--flag=value`` split into ``--flag value``.

    llama-server looks every argument up whole (common/arg.cpp), so ``--ctx-size=4096`` would stop it with
    "invalid argument". Only the first '=' splits: ``--override-tensor=exps=CPU`` keeps ``exps=CPU``.
    """
    args: list[str] = []
    for arg in spec.extra_args or []:
        name, equals, value = arg.partition("=")
        if equals and _FLAG_TOKEN.match(name):
            args += [name, value]
        else:
            args.append(arg)
    return args


def flags_in(args: Sequence[str]) -> set[str]:
    """The flags among ``args``, spelled as llama.cpp matches them ('_' in a long flag is '-')."""
    return {arg.replace("_", "-") if arg.startswith("--") else arg for arg in args if _FLAG_TOKEN.match(arg)}


def given_by_user(row: Flag, user_flags: set[str]) -> bool:
    """True when extraArgs already set this row's option: the table leaves it out and the user's value wins.

    Repeated flags are the exception: the user's entries add to the spec's.
    """
    return row.kind is not REPEATED and not user_flags.isdisjoint(row.spellings)


def metrics_once(user_flags: set[str]) -> list[str]:
    """--metrics (the autoscaler's llamacpp:* series) unless extraArgs has it: once, never "--metrics --metrics".

    llama.cpp takes the repeat, with a warning that the flag was given several times (operator #1384).
    """
    return [] if "--metrics" in user_flags else ["--metrics"]


# Addresses that keep the server reachable on the pod's own IP, where the Service and the probes connect.
ALL_INTERFACES = ("0.0.0.0", "::")


def extra_args_problems(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """extraArgs llama-server cannot take: --port (the server would leave the port its Service and probes
    use), --host other than all interfaces (likewise), and a table flag that takes a value without one
    (llama-server stops on it, or reads the next flag
    as its value)."""
    problems: list[Problem] = []
    given = spec.extra_args or []
    for index, arg in enumerate(given):
        name, equals, _ = arg.partition("=")
        where = config_path(path, "extraArgs", index)
        if name == "--port":
            problems.append(
                Problem(
                    where,
                    f"{arg!r} would move the server off port {listen_port(spec)}, where the Service and the probes "
                    "connect; set endpoint.port (or containerPort) instead",
                )
            )
            continue
        if name in ("--api-key", "--api-key-file"):
            # The value would sit in plain text in the Deployment, the Pulumi state and the serverArgs output.
            problems.append(
                Problem(
                    where,
                    f"{name!r} in extraArgs would put the key in plain text in the Deployment, the Pulumi state "
                    "and the serverArgs output; set it with pulumi config set --secret --path "
                    "'llmkube:apiKeys.<service>' KEY, or name an existing Secret in apiKey.secretName",
                )
            )
            continue
        if name == "--host":
            value = arg.partition("=")[2] if equals else (given[index + 1] if index + 1 < len(given) else "")
            if value not in ALL_INTERFACES:
                problems.append(
                    Problem(
                        where,
                        f"{arg!r} {value!r} would listen where the Service and the probes cannot connect (they "
                        f"reach the pod's own address); the server listens on {', '.join(ALL_INTERFACES)} as "
                        "rendered: leave --host out",
                    )
                )
            continue
        known = _BY_SPELLING.get(arg.replace("_", "-") if arg.startswith("--") else arg)
        if equals or known is None or known[0].kind is SWITCH:
            continue
        following = given[index + 1] if index + 1 < len(given) else None
        if following is None or _FLAG_TOKEN.match(following):
            problems.append(Problem(where, f"{arg!r} needs a value; write {arg!r} and its value as two entries"))
    return problems


# --- preview checks of the decoding fields -----------------------------------------------------------------------

# What the pinned llama.cpp's --rope-scaling takes (common/arg.cpp); the API also has upstream's longrope.
ROPE_SCALING_TYPES = ("none", "linear", "yarn")
# common/common.cpp string_parse_kv_override: the key and a str value are copied into 128-byte buffers.
MAX_OVERRIDE_KEY = 127
MAX_OVERRIDE_STR = 127
_OVERRIDE = re.compile(r"^(?P<key>[^=]*)=(?P<type>int|float|bool|str):(?P<value>.*)$", re.DOTALL)


def rope_scaling_problems(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """ropeScaling llama-server would refuse: a type its --rope-scaling does not know (it stops with "invalid
    value"), a factor of 0 (--rope-scale N sets the frequency scale to 1/N)."""
    rope = spec.rope_scaling
    if rope is None:
        return []
    problems: list[Problem] = []
    if rope.type not in ROPE_SCALING_TYPES:
        problems.append(
            Problem(
                config_path(path, "ropeScaling", "type"),
                f"{rope.type!r} is not a --rope-scaling this llama.cpp takes ({', '.join(ROPE_SCALING_TYPES)}): "
                "llama-server would stop with 'invalid value'; use yarn or linear, or leave ropeScaling unset to "
                "keep the model's own RoPE settings",
            )
        )
    if rope.factor is not None and float(rope.factor) == 0:
        problems.append(
            Problem(
                config_path(path, "ropeScaling", "factor"),
                f"{rope.factor!r}: llama.cpp scales RoPE frequencies by 1/factor; give a factor above 0, such as 4",
            )
        )
    return problems


def speculative_problems(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """speculativeDecoding settings that would do nothing: nDraftMax or pMin without speculation."""
    speculative = spec.speculative_decoding
    if speculative is None or speculative.resolved_type != "none":
        return []
    given = [
        name
        for name, value in (("nDraftMax", speculative.n_draft_max), ("pMin", speculative.p_min))
        if value is not None
    ]
    return [
        Problem(
            config_path(path, "speculativeDecoding", name),
            f"has no effect with type {speculative.type!r}: nothing is drafted; set a type such as ngram-simple or "
            "draft-simple, or leave it out",
        )
        for name in given
    ]


def metadata_overrides_problems(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """metadataOverrides llama-server would refuse or misread (common/arg.cpp, common/common.cpp): every
    --override-kv value is split on commas (a double quote starts a quoted field), a key or str value
    longer than 127 characters is refused, and a bool is true or false."""
    problems: list[Problem] = []
    for index, entry in enumerate(spec.metadata_overrides or []):
        where = config_path(path, "metadataOverrides", index)
        m = _OVERRIDE.match(entry)
        if m is None:
            continue  # the API's pattern reports it
        key, kind, value = m["key"], m["type"], m["value"]
        if "," in entry or '"' in entry:
            problems.append(
                Problem(
                    where,
                    f"{entry!r}: llama.cpp splits each --override-kv value on commas and reads double quotes as "
                    "CSV quoting, so this entry would not arrive whole; drop the comma or quote",
                )
            )
        elif len(key) > MAX_OVERRIDE_KEY:
            problems.append(
                Problem(where, f"the key is {len(key)} characters; llama.cpp takes at most {MAX_OVERRIDE_KEY}")
            )
        elif kind == "str" and len(value) > MAX_OVERRIDE_STR:
            problems.append(
                Problem(where, f"the str value is {len(value)} characters; llama.cpp takes at most {MAX_OVERRIDE_STR}")
            )
        elif kind == "bool" and value not in ("true", "false"):
            problems.append(Problem(where, f"{value!r} is not a bool llama.cpp reads; write true or false"))
        elif kind == "int" and not re.fullmatch(r"-?\d+", value):
            problems.append(Problem(where, f"{value!r} is not an int; llama.cpp would read it as {_atol(value)}"))
    return problems


def _atol(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m[1]) if m else 0


def bind_address_problems(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """A bindAddress the Service and the probes cannot reach: they connect to the pod's own address."""
    address = spec.bind_address
    if address is None or address in ALL_INTERFACES:
        return []
    return [
        Problem(
            config_path(path, "bindAddress"),
            f"{address!r}: the Service and the probes connect to the pod's own address, so the server would "
            f"never become ready unless something in the pod forwards to it; use {' or '.join(ALL_INTERFACES)}, "
            "or leave bindAddress unset",
        )
    ]


# What ends a value in the preset's INI (a comment or the line), or is trimmed from it.
_PRESET_UNSAFE = re.compile(r"[;#\r\n]|^\s|\s$")


def router_problems(spec: InferenceServiceSpec, routed: Sequence[RoutedModel], path: str) -> list[Problem]:
    """What runtime llamacpp-router cannot serve from the preset we render (router_preset): a file path the
    INI would cut short, and draft weights beside several models. A split model and a projector are served
    (the preset's model and mmproj reach the model instance). The router passes its own command line, -md
    too, on to every model instance (server-models.cpp load_models: the router's options are merged over every
    preset), so a draft model would draft for each routed model, whose vocabularies it need not share."""
    if not is_router(spec):
        return []
    problems: list[Problem] = []
    for model in routed:
        for file in (model.model_path, model.mmproj_path):
            if file and _PRESET_UNSAFE.search(file):
                problems.append(
                    Problem(
                        config_path(path, "runtime"),
                        f"{ROUTER_RUNTIME} lists its models in an INI file, where ';' and '#' start a comment and "
                        f"surrounding spaces are dropped: the path {file!r} of {model.name!r} would be cut short; "
                        "rename the file, or use runtime llamacpp",
                    )
                )
    speculative = spec.speculative_decoding
    if len(routed) > 1 and speculative is not None and speculative.draft_given:
        name = "draftModelRef" if speculative.draft_model_ref else "draftModel"
        problems.append(
            Problem(
                config_path(path, "speculativeDecoding", name),
                f"{speculative.draft_model_ref or speculative.draft_model!r} would draft for every model of "
                f"routerModels: {ROUTER_RUNTIME} passes -md on to each model instance it starts, whatever its "
                "vocabulary; leave speculativeDecoding out, or serve the drafted model as a service of its own",
            )
        )
    return problems


def router_models_max_warnings(spec: InferenceServiceSpec, path: str) -> list[Problem]:
    """--models-max above 1 (or 0, no limit) in extraArgs: several model instances at once, where the planner
    counts one loaded model at a time."""
    if not is_router(spec):
        return []
    value = read_args(extra_args(spec)).get("--models-max")
    if value is None or value.strip() == str(ROUTER_MODELS_MAX):
        return []
    given = spec.extra_args or []
    index = max(i for i, arg in enumerate(given) if arg.partition("=")[0].replace("_", "-") == "--models-max")
    return [
        Problem(
            config_path(path, "extraArgs", index),
            f"--models-max {value} lets the router keep {'every model' if value.strip() == '0' else value} "
            "loaded at once, but the planner plans one loaded model at a time: the memory of the models loaded "
            f"together is not checked; leave --models-max out ({ROUTER_MODELS_MAX}) or plan the memory yourself",
        )
    ]


# --- reading a command line, as llama-server does --------------------------------------------------------------

_BY_SPELLING: dict[str, tuple[Flag, bool]] = {
    spelling: (row, spelling not in row.negations) for row in FLAG_TABLE for spelling in row.spellings
}


def read_args(args: Sequence[str]) -> dict[str, Any]:
    """The table's options a command line sets, by canonical flag: the last one wins, as in llama.cpp.

    Switches read True, or False under a negation; valued flags their text; repeated flags a list of every
    value. A flag the table does not know takes a value only if one follows, so that a switch such as --mlock
    does not swallow the flag after it.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        spelled = arg.replace("_", "-") if arg.startswith("--") else arg
        known = _BY_SPELLING.get(spelled)
        has_next = i + 1 < len(args)
        if known is None:
            i += 2 if has_next and _FLAG_TOKEN.match(arg) and not _FLAG_TOKEN.match(args[i + 1]) else 1
            continue
        row, positive = known
        if row.kind is SWITCH:
            out[row.flag] = positive
            i += 1
        elif has_next:
            if row.kind is REPEATED:
                out.setdefault(row.flag, []).append(args[i + 1])
            else:
                out[row.flag] = args[i + 1]
            i += 2
        else:
            i += 1
    return out


def effective(given: Inputs) -> dict[str, Any]:
    """What llama-server will run with for every memory row: the spec's value, unless extraArgs says otherwise.

    The same precedence as the rendered command line (``llamacpp.build_args``), read without rendering it:
    a row set in extraArgs under any spelling takes the user's value; repeated rows add the user's entries.
    Values are as the command line spells them (text), switches True or False; unset rows are absent.
    """
    extra = extra_args(given.spec)
    user = read_args(extra)
    user_flags = flags_in(extra)
    out: dict[str, Any] = {}
    for row in FLAG_TABLE:
        if not row.memory:
            continue
        value = row.value(given)
        if row.kind is REPEATED:
            items = [str(v) for v in value or []] + user.get(row.flag, [])
            if items:
                out[row.flag] = items
        elif given_by_user(row, user_flags):
            if row.flag in user:
                out[row.flag] = user[row.flag]
        elif value:
            out[row.flag] = True if row.kind is SWITCH else str(value)
    return out


def operator_extra_args(spec: InferenceServiceSpec) -> list[str] | None:
    """extraArgs for the LLMKube operator's custom resource: the user's, then the llmkube-only placement fields
    (gpuLayers, tensorSplit) as flags, which the operator's API has no field for.

    The operator passes extraArgs after its own flags (runtime_llamacpp.go) and llama.cpp takes the last value,
    so these win over the --n-gpu-layers and --tensor-split it derives from the Model. A flag the user's
    extraArgs already set is theirs, as in delivery direct.
    """
    user = flags_in(extra_args(spec))
    added: list[str] = []
    for row, value in (
        (_ROW["--n-gpu-layers"], spec.gpu_layers),
        (_ROW["--tensor-split"], split_shares(spec.tensor_split) if spec.tensor_split else None),
    ):
        if value is not None and not given_by_user(row, user):
            added += [row.flag, str(value)]
    if not added:
        return spec.extra_args
    return [*(spec.extra_args or []), *added]
