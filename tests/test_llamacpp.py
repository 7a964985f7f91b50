"""llama-server arguments: every spec field's flag (set, unset, zero), GPU flags, order, extraArgs precedence."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from llmkube_components import checks, flags
from llmkube_components.api import InferenceServiceSpec, ModelSpec
from llmkube_components.api.service import InferenceResources
from llmkube_components.errors import ConfigError
from llmkube_components.flags import (
    FIELD_FLAGS,
    FLAG_TABLE,
    REPEATED,
    SWITCH,
    Inputs,
    effective,
    from_extra_args_only,
    go_float,
)
from llmkube_components.hardware import builtin_profiles
from llmkube_components.llamacpp import build_args
from llmkube_components.resolve import ResolvedModel, ResolvedService
from tests.stacks import load_stack


def server_args(service: ResolvedService, model_file: str) -> list[str]:
    return build_args(service.spec, service.model.spec, model_file, service.gpu_count)


MODEL_FILE = "/models/model.gguf"
HEAD = ["--model", MODEL_FILE, "--port", "8080", "--host", "0.0.0.0"]
ROUTER_HEAD = ["--models-preset", "/etc/llmkube/router/models.ini", "--models-max", "1", "--port", "8080", "--host",
               "0.0.0.0"]  # fmt: skip
MMPROJ = ["--mmproj", "/models/mmproj-F16.gguf"]  # a Model with mmproj (test_draft_and_projector_need_their_paths)
# multiNode's workers, rank order (test_rpc_servers_come_before_the_gpu_flags)
RPC = ["--rpc", "chat-rpc-1.llmkube.svc:50052,chat-rpc-2.llmkube.svc:50052"]


def service(**fields: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"modelRef": "m", **fields})


def model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"source": "https://example.com/model.gguf", **fields})


DRAFT_FILE = "/models/draft/draft.gguf"
MMPROJ_FILE = "/models/mmproj-F16.gguf"


def args(spec: InferenceServiceSpec | None = None, mdl: ModelSpec | None = None, gpus: int = 0) -> list[str]:
    # Where the storage layout puts a draft model and the Model's projector (workloads.storage).
    mdl = mdl or model()
    mmproj = MMPROJ_FILE if mdl.mmproj else None
    return build_args(spec or service(), mdl, MODEL_FILE, gpus, draft_path=DRAFT_FILE, mmproj_path=mmproj)


def middle(out: list[str]) -> list[str]:
    """What a spec adds between the fixed head and the trailing --metrics."""
    assert out[: len(HEAD)] == HEAD
    assert out[-1] == "--metrics"
    return out[len(HEAD) : -1]


def config_error(spec: InferenceServiceSpec, mdl: ModelSpec | None = None, gpus: int = 0) -> str:
    """The checks' problems of a service (key svc) on a model (key mdl), as preview would print them."""
    if gpus:
        resources = (spec.resources or InferenceResources()).model_copy(update={"gpu": gpus})
        spec = spec.model_copy(update={"resources": resources})
    profile = builtin_profiles()["dual-rtx5060ti"]
    svc = ResolvedService("svc", "svc", "llmkube", spec, ResolvedModel("mdl", "mdl", mdl or model()), profile)
    return str(ConfigError(checks.service_problems(svc)))


# --- one spec field at a time: set, unset (None), zero or false ----------------------------------------------

FIELD_ROWS: list[tuple[dict[str, Any], list[str]]] = [
    ({"contextSize": 90112}, ["--ctx-size", "90112"]),
    ({"contextSize": None}, []),
    ({"parallelSlots": 4}, ["--parallel", "4"]),
    ({"parallelSlots": None}, []),
    ({"flashAttention": True}, ["--flash-attn", "on"]),
    ({"flashAttention": False}, ["--flash-attn", "off"]),
    ({"flashAttention": None}, []),
    ({"jinja": True}, ["--jinja"]),
    ({"jinja": False}, []),
    ({"jinja": None}, []),
    ({"cacheTypeK": "q8_0"}, ["--cache-type-k", "q8_0"]),
    ({"cacheTypeK": None}, []),
    ({"cacheTypeV": "q4_0"}, ["--cache-type-v", "q4_0"]),
    ({"cacheTypeV": None}, []),
    ({"cacheTypeCustomK": "turbo3"}, ["--cache-type-k", "turbo3"]),
    ({"cacheTypeCustomK": "turbo3", "cacheTypeK": "q8_0"}, ["--cache-type-k", "turbo3"]),
    ({"cacheTypeCustomK": None, "cacheTypeK": "q8_0"}, ["--cache-type-k", "q8_0"]),
    ({"cacheTypeCustomV": "turbo4"}, ["--cache-type-v", "turbo4"]),
    ({"cacheTypeCustomV": "turbo4", "cacheTypeV": "q8_0"}, ["--cache-type-v", "turbo4"]),
    ({"cacheTypeCustomV": None, "cacheTypeV": "f16"}, ["--cache-type-v", "f16"]),
    ({"moeCPUOffload": True}, ["--cpu-moe"]),
    ({"moeCPUOffload": False}, []),
    ({"moeCPUOffload": None}, []),
    ({"moeCPULayers": 20}, ["--n-cpu-moe", "20"]),
    ({"moeCPULayers": 0}, []),
    ({"moeCPULayers": None}, []),
    ({"noKvOffload": True}, ["--no-kv-offload"]),
    ({"noKvOffload": False}, []),
    ({"noKvOffload": None}, []),
    ({"tensorOverrides": ["exps=CPU"]}, ["--override-tensor", "exps=CPU"]),
    (
        {"tensorOverrides": [r"blk\.(0|1)\.ffn_.*_exps=CPU", r"blk\.[0-9]+\.attn_.*=CUDA0"]},
        ["--override-tensor", r"blk\.(0|1)\.ffn_.*_exps=CPU", "--override-tensor", r"blk\.[0-9]+\.attn_.*=CUDA0"],
    ),
    ({"tensorOverrides": []}, []),
    ({"tensorOverrides": None}, []),
    ({"batchSize": 2048}, ["--batch-size", "2048"]),
    ({"batchSize": None}, []),
    ({"uBatchSize": 512}, ["--ubatch-size", "512"]),
    ({"uBatchSize": None}, []),
    ({"noWarmup": True}, ["--no-warmup"]),
    ({"noWarmup": False}, []),
    ({"noWarmup": None}, []),
    # The planner records the mode it planned in; a planned service turns llama-server's --fit off.
    ({"offload": "auto"}, ["--fit", "off"]),
    ({"offload": "manual"}, ["--fit", "off"]),
    ({"offload": None}, []),
    ({"mode": "embedding"}, ["--embedding", "--pooling", "last", "--cache-ram", "0"]),
    ({"mode": "rerank"}, ["--reranking", "--embedding", "--pooling", "rank", "--cache-ram", "0"]),
    ({"mode": "chat"}, []),
    ({"mode": None}, []),
    # Threads follow the CPU limit (whole cores, at least one), not the node's cores.
    ({"resources": {"cpu": "8"}}, ["--threads", "8"]),
    ({"resources": {"cpu": "2500m"}}, ["--threads", "2"]),
    ({"resources": {"cpu": "500m"}}, ["--threads", "1"]),
    ({"resources": {"memory": "8Gi"}}, []),
    # The key is a file the pod mounts from its Secret: never the key itself on the command line.
    ({"apiKey": {"secretName": "chat-key"}}, ["--api-key-file", "/etc/llmkube/api-key/api-key"]),
    ({"apiKey": None}, []),
    # An exposed server hides its web UI and /slots unless told otherwise; an in-cluster one keeps them.
    ({"endpoint": {"type": "LoadBalancer"}}, ["--no-ui", "--no-slots"]),
    ({"endpoint": {"type": "NodePort"}}, ["--no-ui", "--no-slots"]),
    ({"endpoint": {"type": "NodePort"}, "webUI": True, "slotsEndpoint": True}, []),
    ({"endpoint": {"type": "ClusterIP"}}, []),
    ({"webUI": False}, ["--no-ui"]),
    ({"slotsEndpoint": False}, ["--no-slots"]),
    # RoPE scaling: right after the context size, as in the operator.
    (
        {"contextSize": 65536, "ropeScaling": {"type": "yarn", "factor": "4", "originalContext": 32768}},
        ["--ctx-size", "65536", "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "32768"],
    ),
    ({"ropeScaling": {"type": "linear", "factor": "2.5"}}, ["--rope-scaling", "linear", "--rope-scale", "2.5"]),
    ({"ropeScaling": {"type": "yarn"}}, ["--rope-scaling", "yarn"]),
    ({"ropeScaling": None}, []),
    # Speculative decoding: upstream's aliases resolved; -md only for types that read draft weights.
    (
        {"speculativeDecoding": {"type": "draft", "draftModelRef": "small", "nDraftMax": 8, "pMin": 0.75}},
        ["--spec-type", "draft-simple", "-md", DRAFT_FILE, "--spec-draft-n-max", "8", "--spec-draft-p-min", "0.75"],
    ),
    (
        {"speculativeDecoding": {"type": "draft-eagle3", "draftModel": "eagle3.gguf"}},
        ["--spec-type", "draft-eagle3", "-md", DRAFT_FILE],
    ),
    ({"speculativeDecoding": {"type": "mtp"}}, ["--spec-type", "draft-mtp", "-md", DRAFT_FILE]),
    ({"speculativeDecoding": {"type": "ngram-simple", "nDraftMax": 4}},
     ["--spec-type", "ngram-simple", "--spec-draft-n-max", "4"]),
    ({"speculativeDecoding": {"type": "ngram-mod", "pMin": 0}},
     ["--spec-type", "ngram-mod", "--spec-draft-p-min", "0"]),
    ({"speculativeDecoding": {"type": "ngram-cache", "pMin": 1}},
     ["--spec-type", "ngram-cache", "--spec-draft-p-min", "1"]),
    ({"speculativeDecoding": {"type": "ngram-map-k", "pMin": 0.00001}},
     ["--spec-type", "ngram-map-k", "--spec-draft-p-min", "1e-05"]),
    ({"speculativeDecoding": {"type": "disabled", "nDraftMax": 4}}, []),
    ({"speculativeDecoding": {"type": "none"}}, []),
    ({"speculativeDecoding": None}, []),
    # The reasoning budget's 0 (no thinking) is emitted; the message only beside a budget.
    ({"reasoningBudget": 0}, ["--reasoning-budget", "0"]),
    ({"reasoningBudget": 512, "reasoningBudgetMessage": "Answer now."},
     ["--reasoning-budget", "512", "--reasoning-budget-message", "Answer now."]),
    ({"reasoningBudgetMessage": "Answer now."}, []),
    ({"reasoningBudget": None}, []),
    # GGUF metadata overrides, in one flag (llama.cpp warns when it repeats).
    (
        {"metadataOverrides": ["tokenizer.ggml.add_bos_token=bool:false", "qwen3.context_length=int:8192"]},
        ["--override-kv", "tokenizer.ggml.add_bos_token=bool:false,qwen3.context_length=int:8192"],
    ),
    ({"metadataOverrides": []}, []),
    ({"metadataOverrides": None}, []),
    # The router: its models preset instead of --model; the per-model flags go to its instances.
    ({"runtime": "llamacpp", "contextSize": 4096}, ["--ctx-size", "4096"]),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), FIELD_ROWS, ids=lambda v: str(v))
def test_field_flag(fields: dict[str, Any], expected: list[str]) -> None:
    assert middle(args(service(**fields))) == expected


# Fields whose zero the API already refuses: the builder guards them anyway, as the operator's helpers do.
@pytest.mark.parametrize(
    ("alias", "attribute"),
    [
        ("contextSize", "context_size"),
        ("parallelSlots", "parallel_slots"),
        ("batchSize", "batch_size"),
        ("uBatchSize", "u_batch_size"),
    ],
)
def test_zero_is_refused_by_the_api_and_guarded_by_the_builder(alias: str, attribute: str) -> None:
    with pytest.raises(ValidationError):
        service(**{alias: 0})
    unchecked = service().model_copy(update={attribute: 0})
    assert middle(args(unchecked)) == []


def test_every_row_of_the_table_has_a_test_row() -> None:
    expected_lists = [expected for _, expected in FIELD_ROWS] + [expected for _, _, expected in GPU_ROWS]
    tested = {arg for expected in expected_lists for arg in expected} | set(HEAD) | set(ROUTER_HEAD) | set(MMPROJ)
    tested |= set(RPC)
    rendered = [row for row in FLAG_TABLE if row.value is not from_extra_args_only]
    assert [row.flag for row in rendered if row.flag not in tested] == []


def test_rows_without_a_spec_field_are_never_rendered_but_read() -> None:
    spec = service(parallelSlots=4)
    only = [row for row in FLAG_TABLE if row.value is from_extra_args_only]
    assert only and all(row.memory for row in only)
    for row in only:
        assert row.flag not in args(spec)
        given = [row.flag] if row.kind is SWITCH else [row.flag, "q8_0"]
        read = effective(Inputs(spec.model_copy(update={"extra_args": given}), model(), "", 0))[row.flag]
        assert read == (True if row.kind is SWITCH else "q8_0")


def test_endpoint_port() -> None:
    out = args(service(endpoint={"port": 9000}))
    assert out[:6] == ["--model", MODEL_FILE, "--port", "9000", "--host", "0.0.0.0"]
    assert args(service(endpoint={"path": "/v1/embeddings"}))[:6] == HEAD


@pytest.mark.parametrize(
    ("fields", "head"),
    [
        ({"containerPort": 8081}, ["--model", MODEL_FILE, "--port", "8081", "--host", "0.0.0.0"]),
        (
            {"containerPort": 8081, "endpoint": {"port": 80}},
            ["--model", MODEL_FILE, "--port", "8081", "--host", "0.0.0.0"],
        ),
        (
            {"containerPort": None, "endpoint": {"port": 80}},
            ["--model", MODEL_FILE, "--port", "80", "--host", "0.0.0.0"],
        ),
        ({"bindAddress": "::"}, ["--model", MODEL_FILE, "--port", "8080", "--host", "::"]),
        ({"bindAddress": "127.0.0.1"}, ["--model", MODEL_FILE, "--port", "8080", "--host", "127.0.0.1"]),
        ({"bindAddress": None}, HEAD),
        ({"runtime": "llamacpp-router"}, ROUTER_HEAD),
    ],
    ids=str,
)
def test_head(fields: dict[str, Any], head: list[str]) -> None:
    out = args(service(**fields))
    assert out[: len(head)] == head and out[-1] == "--metrics"


def test_router_keeps_the_per_model_flags_and_drops_the_projector() -> None:
    # llama-server's router passes its own arguments on to every model instance it starts (but --model and
    # --mmproj: the preset gives those, flags.router_preset).
    spec = service(runtime="llamacpp-router", contextSize=4096, flashAttention=True)
    out = build_args(
        spec, model(), "/models/0123abcd/qwen.gguf", 1, mmproj_path="/models/0123abcd/mmproj.gguf",
        router_preset_path="/tmp/models.ini",
    )  # fmt: skip
    assert out == [
        "--models-preset", "/tmp/models.ini", "--models-max", "1", "--port", "8080", "--host", "0.0.0.0",
        "--n-gpu-layers", "99", "--ctx-size", "4096", "--flash-attn", "on", "--metrics",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "out", "warned"),
    [
        ([], ["--models-max", "1"], None),
        (["--models-max", "1"], ["--models-max", "1"], None),
        (["--models-max", "2"], ["--models-max", "2"], 0),
        (["--ctx-size", "512", "--models-max=0"], ["--models-max", "0"], 2),
    ],
    ids=str,
)
def test_router_models_max(extra: list[str], out: list[str], warned: int | None) -> None:
    # One loaded model at a time unless extraArgs say otherwise; then the preview warns where they do.
    spec = service(runtime="llamacpp-router", extraArgs=extra)
    rendered = args(spec)
    assert rendered.count("--models-max") == 1
    at = rendered.index("--models-max")
    assert rendered[at : at + 2] == out
    warnings = flags.router_models_max_warnings(spec, PATH)
    assert [w.path for w in warnings] == ([] if warned is None else [f"{PATH}.extraArgs[{warned}]"])
    if warned is not None:
        assert "plans one loaded model at a time" in warnings[0].message
    assert flags.router_models_max_warnings(service(extraArgs=extra), PATH) == []


def test_router_preset() -> None:
    preset = flags.router_preset(
        [
            flags.RoutedModel("qwen", "/models/0123/qwen-00001-of-00002.gguf"),
            flags.RoutedModel("gemma", "/models/4567/gemma.gguf", "/models/4567/mmproj-F16.gguf"),
        ]
    )
    assert preset == (
        "version = 1\n"
        "\n[qwen]\nmodel = /models/0123/qwen-00001-of-00002.gguf\n"
        "\n[gemma]\nmodel = /models/4567/gemma.gguf\nmmproj = /models/4567/mmproj-F16.gguf\n"
    )


@pytest.mark.parametrize(
    ("servers", "gpus", "expected"),
    [
        # The workers' devices come first in llama.cpp's list, so --rpc comes before the GPU flags, which count
        # them (the pod's own GPUs and the workers' devices).
        (("chat-rpc-1.llmkube.svc:50052", "chat-rpc-2.llmkube.svc:50052"), 4,
         [*RPC, "--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1,1,1"]),
        (("w:50052",), 1, ["--rpc", "w:50052", "--n-gpu-layers", "99"]),
        ((), 0, []),
    ],
    ids=str,
)  # fmt: skip
def test_rpc_servers_come_before_the_gpu_flags(servers: tuple[str, ...], gpus: int, expected: list[str]) -> None:
    out = build_args(service(), model(), MODEL_FILE, gpus, rpc_servers=servers)
    assert middle(out) == expected


def test_draft_and_projector_need_their_paths() -> None:
    # No staged draft (or projector): no -md (--mmproj), whatever the spec says.
    spec = service(speculativeDecoding={"type": "draft", "draftModelRef": "small"})
    mmproj = model(mmproj="mmproj-F16.gguf")
    assert middle(build_args(spec, mmproj, MODEL_FILE, 0)) == ["--spec-type", "draft-simple"]
    assert middle(args(service(), mmproj)) == MMPROJ
    # ngram types never read draft weights, even if a path is given.
    ngram = service(speculativeDecoding={"type": "ngram-simple"})
    assert middle(build_args(ngram, model(), MODEL_FILE, 0, draft_path=DRAFT_FILE)) == ["--spec-type", "ngram-simple"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (1.0, "1"), (0.5, "0.5"), (0.05, "0.05"), (0.1, "0.1"), (0.0001, "0.0001"), (0.00001, "1e-05"),
     (0.000015, "1.5e-05"), (0.123456789, "0.123456789")],
)  # fmt: skip
def test_p_min_is_formatted_as_go_does(value: float, text: str) -> None:
    assert go_float(value) == text


# --- GPU flags -----------------------------------------------------------------------------------------------

GPU_ROWS: list[tuple[dict[str, Any], int, list[str]]] = [
    # CPU only: no GPU flags, whatever the Model says.
    ({}, 0, []),
    ({"gpu": {"count": 2, "layers": 20, "sharding": {"strategy": "row", "layerSplit": ["3", "1"]}}}, 0, []),
    # One GPU: layers, no split.
    ({}, 1, ["--n-gpu-layers", "99"]),
    ({"gpu": {"layers": 20}}, 1, ["--n-gpu-layers", "20"]),
    ({"gpu": {"layers": -1}}, 1, ["--n-gpu-layers", "99"]),  # -1 is "all"; llama.cpp would read it as auto
    ({"gpu": {"layers": 0}}, 1, ["--n-gpu-layers", "99"]),  # the operator cannot tell 0 from unset
    ({"gpu": {"layers": None}}, 1, ["--n-gpu-layers", "99"]),
    ({"gpu": {"sharding": {"strategy": "row"}}}, 1, ["--n-gpu-layers", "99"]),
    # Several GPUs: split mode and an even tensor split unless layerSplit says otherwise.
    ({}, 2, ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"]),
    ({}, 3, ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1,1"]),
    ({"gpu": {"sharding": {}}}, 2, ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"]),
    (
        {"gpu": {"sharding": {"strategy": "layer"}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"],
    ),
    (
        {"gpu": {"sharding": {"strategy": "row"}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "row", "--tensor-split", "1,1"],
    ),
    (
        {"gpu": {"sharding": {"strategy": "tensor"}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "row", "--tensor-split", "1,1"],
    ),
    (
        {"gpu": {"sharding": {"strategy": "pipeline"}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"],
    ),
    ({"gpu": {"sharding": {"strategy": "none"}}}, 2, ["--n-gpu-layers", "99", "--split-mode", "none"]),
    (
        {"gpu": {"sharding": {"strategy": "none", "layerSplit": ["0-9", "10-99", "x"]}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "none"],
    ),
    # layerSplit: the operator's layer ranges (25 and 15 layers -> 5,3), or llama.cpp proportions.
    (
        {"gpu": {"layers": 40, "sharding": {"layerSplit": ["0-24", "25-39"]}}},
        2,
        ["--n-gpu-layers", "40", "--split-mode", "layer", "--tensor-split", "5,3"],
    ),
    (
        {"gpu": {"sharding": {"strategy": "row", "layerSplit": ["0-15", "16-31", "32-47"]}}},
        3,
        ["--n-gpu-layers", "99", "--split-mode", "row", "--tensor-split", "1,1,1"],
    ),
    (
        {"gpu": {"sharding": {"layerSplit": ["3", "2"]}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "3,2"],
    ),
    (
        {"gpu": {"sharding": {"layerSplit": ["0.6", "0.4"]}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "0.6,0.4"],
    ),
    (
        {"gpu": {"sharding": {"layerSplit": []}}},
        2,
        ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"],
    ),
]


@pytest.mark.parametrize(("hardware", "gpus", "expected"), GPU_ROWS, ids=lambda v: str(v))
def test_gpu_flags(hardware: dict[str, Any], gpus: int, expected: list[str]) -> None:
    mdl = model(hardware=hardware) if hardware else model()
    assert middle(args(service(), mdl, gpus)) == expected


LAYER_SPLIT = "llmkube:models.mdl.hardware.gpu.sharding.layerSplit"


@pytest.mark.parametrize(
    ("layer_split", "gpus", "message"),
    [
        (
            ["0-24", "25-39", "40-47"],
            2,
            f"{LAYER_SPLIT}: ['0-24', '25-39', '40-47'] has 3 entries, but the service runs on 2 GPUs; give one "
            "entry per GPU (a layer range such as '0-23' or a proportion such as '3'), or leave layerSplit unset "
            "for an even split",
        ),
        (
            ["0-47"],
            2,
            f"{LAYER_SPLIT}: ['0-47'] has 1 entry, but the service runs on 2 GPUs; give one entry per GPU (a layer "
            "range such as '0-23' or a proportion such as '3'), or leave layerSplit unset for an even split",
        ),
        (
            ["0-24", "first half"],
            2,
            f"{LAYER_SPLIT}: 'first half' is neither a layer range such as '0-23' nor a proportion such as '3'",
        ),
        (["30-20", "21-40"], 2, f"{LAYER_SPLIT}: '30-20' starts after it ends; write a layer range as start-end"),
        (
            ["0-24", "3"],
            2,
            f"{LAYER_SPLIT}: ['0-24', '3'] mixes layer ranges and proportions; use one form for every GPU",
        ),
    ],
)
def test_layer_split_errors(layer_split: list[str], gpus: int, message: str) -> None:
    mdl = model(hardware={"gpu": {"sharding": {"layerSplit": layer_split}}})
    assert config_error(service(), mdl, gpus) == message


def test_layer_split_error_is_reported_even_when_extra_args_set_the_split() -> None:
    mdl = model(hardware={"gpu": {"sharding": {"layerSplit": ["0-47"]}}})
    spec = service(extraArgs=["--tensor-split", "1,1"])
    assert config_error(spec, mdl, 2).startswith(f"{LAYER_SPLIT}: ['0-47'] has 1 entry")


# --- the reference service: dual RTX 5060 Ti, Qwen3.6-35B-A3B at 90K context -----------------------------

REFERENCE_SERVICE = {
    "modelRef": "qwen36-35b-a3b",
    "contextSize": 90112,
    "cacheTypeK": "q8_0",
    "cacheTypeV": "q8_0",
    "moeCPUOffload": True,
    "noKvOffload": True,
    "flashAttention": True,
    "jinja": True,
    "resources": {"gpu": 2, "cpu": "8", "hostMemory": "48Gi"},
}
REFERENCE_MODEL = {
    "source": "https://huggingface.co/ggml-org/Qwen3.6-35B-A3B-GGUF/resolve/main/Qwen3.6-35B-A3B-Q4_K_M.gguf",
    "format": "gguf",
    "quantization": "Q4_K_M",
    "hardware": {
        "accelerator": "cuda",
        "gpu": {"enabled": True, "count": 2, "vendor": "nvidia", "sharding": {"strategy": "layer"}},
    },
}
REFERENCE_FILE = "/models/Qwen3.6-35B-A3B-Q4_K_M.gguf"
REFERENCE_ARGS = [
    "--model", REFERENCE_FILE,
    "--port", "8080",
    "--host", "0.0.0.0",
    "--n-gpu-layers", "99",
    "--split-mode", "layer",
    "--tensor-split", "1,1",
    "--ctx-size", "90112",
    "--flash-attn", "on",
    "--jinja",
    "--cache-type-k", "q8_0",
    "--cache-type-v", "q8_0",
    "--cpu-moe",
    "--no-kv-offload",
    "--threads", "8",  # llmkube only: from the CPU limit
    "--metrics",
]  # fmt: skip


def test_reference_service_full_order() -> None:
    spec = InferenceServiceSpec.model_validate(REFERENCE_SERVICE)
    mdl = ModelSpec.model_validate(REFERENCE_MODEL)
    assert build_args(spec, mdl, REFERENCE_FILE, 2) == REFERENCE_ARGS


def test_reference_stack_through_resolve() -> None:
    stack = load_stack(
        {
            "hardware": "dual-rtx5060ti",
            "models": {"qwen36-35b-a3b": REFERENCE_MODEL},
            "services": {"qwen36-hybrid": REFERENCE_SERVICE},
        }
    )
    # Through the planner the service is planned (manual: its offload fields are explicit), so --fit is off.
    assert server_args(stack.services["qwen36-hybrid"], REFERENCE_FILE) == [
        *REFERENCE_ARGS[:-3],
        "--fit",
        "off",
        "--threads",
        "8",
        "--metrics",
    ]


def test_gpu_count_comes_from_the_profile_when_the_service_does_not_say() -> None:
    stack = load_stack(
        {
            "hardware": "dual-rtx5060ti",
            "models": {"qwen": {"source": REFERENCE_MODEL["source"]}},
            "services": {"chat": {"modelRef": "qwen"}},
        }
    )
    assert middle(server_args(stack.services["chat"], MODEL_FILE)) == [
        "--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1", "--fit", "off",
    ]  # fmt: skip


def test_layer_split_errors_name_the_model_key() -> None:
    # The checks run before any builder, so the problem surfaces at preview with the model's path.
    model_with_bad_split = {**REFERENCE_MODEL, "hardware": {"gpu": {"sharding": {"layerSplit": ["0-47"]}}}}
    with pytest.raises(ConfigError) as info:
        load_stack(
            {
                "hardware": "dual-rtx5060ti",
                "models": {"Qwen36": model_with_bad_split},
                "services": {"qwen36-hybrid": {**REFERENCE_SERVICE, "modelRef": "qwen36"}},
            }
        )
    assert str(info.value).startswith("llmkube:models.Qwen36.hardware.gpu.sharding.layerSplit: ['0-47'] has 1 entry")


def test_cpu_only_service_has_no_gpu_flags() -> None:
    spec = InferenceServiceSpec.model_validate({**REFERENCE_SERVICE, "resources": {"gpu": 0, "cpu": "8"}})
    out = build_args(spec, ModelSpec.model_validate(REFERENCE_MODEL), REFERENCE_FILE, 0)
    gpu_flags = {"--n-gpu-layers", "--split-mode", "--tensor-split"}
    assert gpu_flags.isdisjoint(out)
    assert out == [arg for arg in REFERENCE_ARGS if arg not in gpu_flags | {"99", "layer", "1,1"}]


# --- extraArgs: the user's value wins, under any spelling; --metrics once --------------------------------------

PRECEDENCE_ROWS: list[tuple[dict[str, Any], int, list[str], list[str]]] = [
    # spec fields, GPUs, extraArgs, what the table still emits (extraArgs follow it, then --metrics)
    ({"contextSize": 90112}, 0, ["--ctx-size", "4096"], []),
    ({"contextSize": 90112}, 0, ["--ctx-size=4096"], []),
    ({"contextSize": 90112}, 0, ["-c", "4096"], []),
    ({"contextSize": 90112}, 0, ["-c=4096"], []),
    ({"contextSize": 90112}, 0, ["--ctx_size", "4096"], []),  # llama.cpp reads '_' in long flags as '-'
    ({"parallelSlots": 4}, 0, ["-np", "2"], []),
    ({"parallelSlots": 4}, 0, ["--parallel=2"], []),
    ({"flashAttention": True}, 0, ["-fa", "auto"], []),
    ({"flashAttention": True}, 0, ["--flash-attn=off"], []),
    ({"jinja": True}, 0, ["--no-jinja"], []),
    ({"cacheTypeK": "q8_0", "cacheTypeV": "q8_0"}, 0, ["-ctk", "f16"], ["--cache-type-v", "q8_0"]),
    ({"cacheTypeK": "q8_0", "cacheTypeV": "q8_0"}, 0, ["-ctv", "f16"], ["--cache-type-k", "q8_0"]),
    ({"moeCPUOffload": True}, 0, ["-cmoe"], []),
    ({"moeCPULayers": 10}, 0, ["-ncmoe", "12"], []),
    ({"noKvOffload": True}, 0, ["-kvo"], []),
    ({"noKvOffload": True}, 0, ["-nkvo"], []),
    ({"batchSize": 2048, "uBatchSize": 512}, 0, ["-b", "4096"], ["--ubatch-size", "512"]),
    ({"batchSize": 2048, "uBatchSize": 512}, 0, ["-ub", "1024"], ["--batch-size", "2048"]),
    ({"noWarmup": True}, 0, ["--warmup"], []),
    ({}, 1, ["-ngl", "30"], []),
    ({}, 1, ["--n-gpu-layers=30"], []),
    ({}, 1, ["--gpu-layers", "30"], []),
    ({}, 2, ["-sm", "row"], ["--n-gpu-layers", "99", "--tensor-split", "1,1"]),
    ({}, 2, ["-ts", "3,1"], ["--n-gpu-layers", "99", "--split-mode", "layer"]),
    ({"mode": "embedding"}, 0, ["--pooling", "mean"], ["--embedding", "--cache-ram", "0"]),
    ({"mode": "embedding"}, 0, ["--embeddings"], ["--pooling", "last", "--cache-ram", "0"]),
    ({"mode": "rerank"}, 0, ["--rerank"], ["--embedding", "--pooling", "rank", "--cache-ram", "0"]),
    ({"mode": "rerank"}, 0, ["-cram", "512"], ["--reranking", "--embedding", "--pooling", "rank"]),
    # Repeatable: the user's overrides add to the spec's.
    ({"tensorOverrides": ["exps=CPU"]}, 0, ["-ot", "attn=CUDA0"], ["--override-tensor", "exps=CPU"]),
    ({"tensorOverrides": ["exps=CPU"]}, 0, ["--override-tensor=attn=CUDA0"], ["--override-tensor", "exps=CPU"]),
    # A value that looks like a flag name does not count; only flags do.
    ({"contextSize": 4096}, 0, ["--alias", "ctx-size"], ["--ctx-size", "4096"]),
    # The new decoding flags, under llama.cpp's other spellings.
    (
        {"speculativeDecoding": {"type": "draft", "draftModelRef": "s", "pMin": 0.5}},
        0,
        ["--model-draft", "/other.gguf"],
        ["--spec-type", "draft-simple", "--spec-draft-p-min", "0.5"],
    ),
    (
        {"speculativeDecoding": {"type": "draft", "draftModelRef": "s", "pMin": 0.5}},
        0,
        ["--spec-draft-model=/other.gguf", "--draft-p-min", "0.1"],
        ["--spec-type", "draft-simple"],
    ),
    ({"speculativeDecoding": {"type": "ngram-mod"}}, 0, ["--spec-type", "ngram-simple"], []),
    ({"reasoningBudget": 0}, 0, ["--reasoning-budget", "-1"], []),
    ({"reasoningBudget": 0, "reasoningBudgetMessage": "m"}, 0, ["--reasoning-budget-message", "n"],
     ["--reasoning-budget", "0"]),
    ({}, 0, ["-mm", "/other-mmproj.gguf"], []),
    # --rope-scaling in extraArgs takes the whole RoPE block over, as in the operator.
    ({"ropeScaling": {"type": "yarn", "factor": "4", "originalContext": 8192}}, 0, ["--rope-scaling", "linear"], []),
    (
        {"ropeScaling": {"type": "yarn", "factor": "4", "originalContext": 8192}},
        0,
        ["--rope-scale", "2"],
        ["--rope-scaling", "yarn", "--yarn-orig-ctx", "8192"],
    ),
    # Repeatable: the user's metadata overrides add to the spec's.
    ({"metadataOverrides": ["a=int:1"]}, 0, ["--override-kv", "b=int:2"], ["--override-kv", "a=int:1"]),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "gpus", "extra", "from_table"), PRECEDENCE_ROWS, ids=lambda v: str(v))
def test_extra_args_win(fields: dict[str, Any], gpus: int, extra: list[str], from_table: list[str]) -> None:
    out = middle(args(service(**fields, extraArgs=extra), gpus=gpus))
    split_extra = [part for arg in extra for part in (arg.split("=", 1) if arg.startswith("-") else [arg])]
    assert out == [*from_table, *split_extra]


@pytest.mark.parametrize(
    ("extra", "head"),
    [
        (["-m", "/models/other.gguf"], ["--port", "8080", "--host", "0.0.0.0"]),
        (["--model=/models/other.gguf"], ["--port", "8080", "--host", "0.0.0.0"]),
        (["--host", "::"], ["--model", MODEL_FILE, "--port", "8080"]),
    ],
)
def test_extra_args_win_for_model_and_host(extra: list[str], head: list[str]) -> None:
    out = args(service(extraArgs=extra))
    assert out[: len(head)] == head
    assert out.count("--model") + out.count("-m") == 1
    assert out.count("--host") == 1


def test_extra_args_follow_the_table_and_precede_metrics() -> None:
    out = args(service(jinja=True, extraArgs=["--reasoning-format", "deepseek", "--n-predict", "-1"]))
    assert middle(out) == ["--jinja", "--reasoning-format", "deepseek", "--n-predict", "-1"]


@pytest.mark.parametrize("extra", [[], ["--metrics"], ["--metrics", "--jinja"], ["--slots", "--metrics"]])
def test_metrics_exactly_once(extra: list[str]) -> None:
    out = args(service(extraArgs=extra))
    assert out.count("--metrics") == 1
    assert out[len(HEAD) :] == [*extra, *([] if "--metrics" in extra else ["--metrics"])]


@pytest.mark.parametrize(("extra", "index"), [(["--port", "9000"], 0), (["--jinja", "--port=9000"], 1)])
def test_port_in_extra_args_is_a_config_error(extra: list[str], index: int) -> None:
    message = config_error(service(extraArgs=extra))
    assert message == (
        f"llmkube:services.svc.extraArgs[{index}]: {extra[index]!r} would move the server off port 8080, where "
        "the Service and the probes connect; set endpoint.port (or containerPort) instead"
    )


def test_flash_attention_is_never_a_bare_flag() -> None:
    for value in (True, False):
        out = args(service(flashAttention=value, jinja=True))
        assert out[out.index("--flash-attn") + 1] in ("on", "off")


def test_repeatable_rows() -> None:
    assert [row.flag for row in FLAG_TABLE if row.kind is REPEATED] == ["--override-tensor", "--override-kv"]


def test_deterministic() -> None:
    spec = InferenceServiceSpec.model_validate(REFERENCE_SERVICE)
    mdl = ModelSpec.model_validate(REFERENCE_MODEL)
    assert build_args(spec, mdl, REFERENCE_FILE, 2) == build_args(spec, mdl, REFERENCE_FILE, 2)


# --- FIELD_FLAGS: derived from the table, names real API fields ----------------------------------------------

# InferenceService fields that are not llama-server flags (or, like extraArgs, pass through as they are).
NOT_FLAGS = {
    "modelRef", "replicas", "image", "endpoint", "resources", "nodeSelector", "tolerations", "affinity",
    "podAnnotations", "podLabels", "runtimeClassName", "priorityClassName", "extraArgs", "autoscaling",
    "modelCache", "hardwareProfile",
    # Pod, lifecycle and routing fields: the workload builders render them, not llama-server flags.
    "suspend", "revisionHistoryLimit", "rolloutPolicy", "disruption", "maxPodLifetimeSeconds",
    "maxPodLifetimeIdleTimeoutSeconds", "priority", "evictionProtection", "topologySpreadConstraints",
    "podSecurityContext", "securityContext", "allowWeakerSecurityContext", "imagePullSecrets", "env", "command",
    "args", "skipModelInit", "extraVolumes", "extraVolumeMounts", "probeOverrides", "slo",
    # Other runtimes' settings (delivery operator only) and the Metal agent's oMLX settings.
    "vllmConfig", "sglangConfig", "tgiConfig", "personaPlexConfig", "turboQuantBits", "hotCacheMaxSize",
    "pagedSSDCacheDir", "pagedSSDCacheMaxSize",
}  # fmt: skip


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found:
                return found
    return None


def _has_field(cls: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    for name, info in cls.model_fields.items():
        if (info.alias or name) == head:
            if not rest:
                return True
            nested = _model_class(info.annotation)
            return nested is not None and _has_field(nested, rest)
    return False


def test_field_flags_name_real_fields() -> None:
    assert [name for name in FIELD_FLAGS if not _has_field(InferenceServiceSpec, name)] == []
    assert FIELD_FLAGS["contextSize"] == ("--ctx-size",)
    assert FIELD_FLAGS["cacheTypeCustomK"] == FIELD_FLAGS["cacheTypeK"] == ("--cache-type-k",)
    assert FIELD_FLAGS["mode"] == ("--reranking", "--embedding", "--pooling", "--cache-ram")
    assert FIELD_FLAGS["speculativeDecoding"] == ("--spec-type", "-md", "--spec-draft-n-max", "--spec-draft-p-min")
    assert FIELD_FLAGS["runtime"] == ("--model", "--models-preset", "--models-max", "--mmproj")
    assert FIELD_FLAGS["routerModels"] == ("--models-preset",)


def test_every_service_field_is_a_flag_or_known_not_to_be() -> None:
    # A new InferenceService field either gets a row in FLAG_TABLE or is listed in NOT_FLAGS.
    aliases = {info.alias or name for name, info in InferenceServiceSpec.model_fields.items()}
    mapped = {name.partition(".")[0] for name in FIELD_FLAGS}
    assert sorted(aliases - mapped - NOT_FLAGS) == []


# --- preview checks of the decoding fields -------------------------------------------------------------------

PATH = "services.svc"


@pytest.mark.parametrize(
    ("fields", "messages"),
    [
        (
            {"ropeScaling": {"type": "longrope", "factor": "4"}},
            ["llmkube:services.svc.ropeScaling.type: 'longrope' is not a --rope-scaling this llama.cpp takes "
             "(none, linear, yarn): llama-server would stop with 'invalid value'; use yarn or linear, or leave "
             "ropeScaling unset to keep the model's own RoPE settings"],
        ),
        (
            {"ropeScaling": {"type": "yarn", "factor": "0"}},
            ["llmkube:services.svc.ropeScaling.factor: '0': llama.cpp scales RoPE frequencies by 1/factor; give a "
             "factor above 0, such as 4"],
        ),
        ({"ropeScaling": {"type": "yarn", "factor": "4", "originalContext": 32768}}, []),
        ({"ropeScaling": {"type": "linear"}}, []),
    ],
    ids=str,
)  # fmt: skip
def test_rope_scaling_problems(fields: dict[str, Any], messages: list[str]) -> None:
    assert [str(p) for p in flags.rope_scaling_problems(service(**fields), PATH)] == messages


@pytest.mark.parametrize(
    ("speculative", "paths"),
    [
        ({"type": "none", "nDraftMax": 4, "pMin": 0.5}, ["nDraftMax", "pMin"]),
        ({"type": "disabled", "pMin": 0.5}, ["pMin"]),
        ({"type": "ngram-simple", "nDraftMax": 4, "pMin": 0.5}, []),
        ({"type": "none"}, []),
    ],
    ids=str,
)
def test_speculative_problems(speculative: dict[str, Any], paths: list[str]) -> None:
    problems = flags.speculative_problems(service(speculativeDecoding=speculative), PATH)
    assert [p.path for p in problems] == [f"{PATH}.speculativeDecoding.{name}" for name in paths]
    assert all("has no effect with type" in p.message for p in problems)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("general.name=str:a,b", "llama.cpp splits each --override-kv value on commas"),
        ('general.name=str:"quoted"', "llama.cpp splits each --override-kv value on commas"),
        ("general.name=str:" + "x" * 128, "the str value is 128 characters; llama.cpp takes at most 127"),
        ("k" * 128 + "=int:1", "the key is 128 characters; llama.cpp takes at most 127"),
        ("tokenizer.ggml.add_bos_token=bool:False", "'False' is not a bool llama.cpp reads; write true or false"),
        ("qwen3.context_length=int:8k", "'8k' is not an int; llama.cpp would read it as 8"),
        ("qwen3.context_length=int:8192", None),
        ("general.name=str:" + "x" * 127, None),
        ("qwen3.rope.freq_base=float:1e6", None),
        ("tokenizer.ggml.add_bos_token=bool:true", None),
    ],
)
def test_metadata_overrides_problems(entry: str, message: str | None) -> None:
    problems = flags.metadata_overrides_problems(service(metadataOverrides=["a=int:1", entry]), PATH)
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].path == f"{PATH}.metadataOverrides[1]"
        assert message in problems[0].message


@pytest.mark.parametrize(
    ("address", "bad"), [("127.0.0.1", True), ("10.0.0.5", True), ("0.0.0.0", False), ("::", False), (None, False)]
)
def test_bind_address_problems(address: str | None, bad: bool) -> None:
    problems = flags.bind_address_problems(service(bindAddress=address), PATH)
    assert [p.path for p in problems] == ([f"{PATH}.bindAddress"] if bad else [])


ONE = [flags.RoutedModel("m", "/models/k/qwen-00001-of-00003.gguf", "/models/k/mmproj-F16.gguf")]
TWO = [*ONE, flags.RoutedModel("small", "/models/j/small.gguf")]


@pytest.mark.parametrize(
    ("fields", "routed", "paths"),
    [
        # A split model and a projector are served through the preset (tests/e2e/test_llama_server_flags.py).
        ({}, ONE, []),
        ({}, TWO, []),
        # A draft beside one model; with several the router would pass -md on to each.
        ({"speculativeDecoding": {"type": "draft", "draftModel": "small.gguf"}}, ONE, []),
        ({"speculativeDecoding": {"type": "draft", "draftModelRef": "d"}}, ONE, []),
        ({"speculativeDecoding": {"type": "draft", "draftModel": "small.gguf"}}, TWO,
         ["speculativeDecoding.draftModel"]),
        ({"speculativeDecoding": {"type": "draft", "draftModelRef": "d"}}, TWO, ["speculativeDecoding.draftModelRef"]),
        ({"speculativeDecoding": {"type": "ngram-simple"}}, TWO, []),
        # What the INI would cut short.
        ({}, [flags.RoutedModel("m", "/models/k/a;b.gguf")], ["runtime"]),
        ({}, [flags.RoutedModel("m", "/models/k/a.gguf", "/models/k/#mmproj.gguf")], ["runtime"]),
        ({}, [flags.RoutedModel("m", "/models/k/a.gguf ")], ["runtime"]),
    ],
    ids=str,
)  # fmt: skip
def test_router_problems(fields: dict[str, Any], routed: list[flags.RoutedModel], paths: list[str]) -> None:
    spec = service(runtime="llamacpp-router", **fields)
    problems = flags.router_problems(spec, routed, PATH)
    assert [p.path for p in problems] == [f"{PATH}.{name}" for name in paths]
    # Not the router: nothing to say.
    assert flags.router_problems(service(**fields), routed, PATH) == []
