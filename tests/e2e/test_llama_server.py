"""The real llama-server on the exact arguments our builder renders (issue 5).

For every service of every stack file and for a matrix of InferenceService fields, the args come from
``llamacpp.build_args`` / ``workloads.server_args_for``; only --model (a small generated GGUF file), --port (a
free loopback port) and --host (127.0.0.1) are changed, and a log level is appended where the test reads
llama.cpp's own accounting. The server must start (GET /health 200), answer its endpoint (chat, embeddings
or rerank), serve llamacpp: metrics under --metrics, and print nothing about an invalid, unknown or
deprecated argument. Offload flags are checked in its log: which tensors an override rule placed in host
buffers (--cpu-moe, --n-cpu-moe N, -ot), where the KV buffer is (--no-kv-offload), the K and V cache types.

The server is the CPU build of tools/setup-llama-server (or $LLAMA_SERVER). On a CPU build every buffer is
a host buffer anyway, so the offload checks prove which tensors llama.cpp's override rules matched, not that
a GPU build would move them: that is what our flags control. Missing server: a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkube_components import workloads
from llmkube_components.api.model import ModelSpec
from llmkube_components.api.service import InferenceServiceSpec
from llmkube_components.llamacpp import build_args
from testkit import gguf_files
from testkit.llama_server import (
    LlamaServer,
    ServerFailed,
    free_port,
    kv_buffers,
    kv_cache_types,
    localize,
    overridden_tensors,
    read_only_root,
    require_server,
)
from tests.stacks import load_stack

pytestmark = pytest.mark.e2e

SERVER = require_server()

STACKS = Path(__file__).resolve().parents[2] / "stacks"
MODEL_PATH = "/models/m.gguf"  # what the builder renders; replaced by the generated file
# F16 weights: quantized weights crash this CPU build's weight repacking (unless --no-repack), and the tests
# are about our flags, not weight formats. head_dim 32, so q8_0 and q4_0 KV caches divide it.
WEIGHT_TYPE = "F16"
MOE_LAYERS = 3
EXPERTS = re.compile(r"^blk\.(\d+)\.ffn_(up|down|gate|gate_up)_(ch|)exps\.weight$")  # llama.cpp's --cpu-moe rule
HOST_BUFFERS = {"CPU", "CPU_REPACK", "AMX", "CPU_Mapped"}
# llama.cpp's own accounting (the llama_kv_cache: lines, llama_context: settings) is logged from -lv 4 up; the
# tensor override lines are debug messages (llama-model-loader.cpp), logged from -lv 5.
ACCOUNTING = ["-lv", "4"]
DEBUG = ["-lv", "5"]


# --- models -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    path: Path
    tensors: tuple[str, ...]

    def experts(self, layers: range | None = None) -> set[str]:
        names = {name for name in self.tensors if EXPERTS.match(name)}
        if layers is None:
            return names
        return {name for name in names if int(EXPERTS.match(name)[1]) in layers}  # type: ignore[index]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    folder = tmp_path_factory.mktemp("gguf")
    built = {
        "dense": (gguf_files.dense_model(), gguf_files.write_dense),
        "moe": (gguf_files.moe_model(n_layer=MOE_LAYERS), gguf_files.write_moe),
        "hybrid": (gguf_files.hybrid_model(), gguf_files.write_hybrid),
    }
    out = {}
    for kind, (spec, write) in built.items():
        dims = {"n_layer": MOE_LAYERS} if kind == "moe" else {}
        path = write(folder / f"{kind}.gguf", weight_type=WEIGHT_TYPE, **dims)
        out[kind] = Model(path, tuple(name for name, _, _ in spec.tensors))
    return out


# --- running one server ------------------------------------------------------------------------------------------


def mode_of(args: list[str]) -> str:
    if "--reranking" in args:
        return "rerank"
    return "embedding" if "--embedding" in args else "chat"


def value_of(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def serve_and_check(args: list[str], model: Model, tmp_path: Path, extra: list[str] = ()) -> LlamaServer:
    """Start the server on ``args`` (our rendering, localized) and run the checks every case shares."""
    local = [*localize(args, model.path, free_port()), *extra]
    log_path = tmp_path / "llama-server.log"
    with LlamaServer(SERVER, local, log_path) as srv:
        mode = mode_of(args)
        if mode == "chat":
            status, body = srv.post(
                "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
            )
            assert status == 200, body
            assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        elif mode == "embedding":
            status, body = srv.post("/v1/embeddings", {"input": "Hello world"})
            assert status == 200, body
            assert len(json.loads(body)["data"][0]["embedding"]) == 64  # n_embd of the generated model
        else:
            status, body = srv.post("/v1/rerank", {"query": "hello", "documents": ["hello there", "goodbye"]})
            assert status == 200, body
            assert sorted(r["index"] for r in json.loads(body)["results"]) == [0, 1]
        if "--metrics" in args:
            status, body = srv.get("/metrics")
            assert status == 200, body
            assert "llamacpp:" in body
    log = srv.log()
    assert srv.rejected_lines() == [], f"llama-server complained about our arguments {args}"
    check_offload(args, log, model)
    return srv


def check_offload(args: list[str], log: str, model: Model) -> None:
    """What llama.cpp's log says it did, for the offload flags in ``args``."""
    overridden = overridden_tensors(log)  # empty unless the server ran with DEBUG
    n_cpu_moe = value_of(args, "--n-cpu-moe")
    if "--cpu-moe" in args:
        assert set(overridden) >= model.experts() and model.experts(), overridden
    elif n_cpu_moe is not None and "--override-tensor" not in args:
        assert set(overridden) == model.experts(range(int(n_cpu_moe))), overridden
    for name, buffer in overridden.items():
        assert buffer in HOST_BUFFERS, f"{name} overridden to {buffer}"
    k_type, v_type = value_of(args, "--cache-type-k"), value_of(args, "--cache-type-v")
    types = set(kv_cache_types(log))
    assert types, "no llama_kv_cache: size line in the log"
    assert types == {(k_type or "f16", v_type or "f16")}, types
    if "--no-kv-offload" in args:
        assert kv_buffers(log) and set(kv_buffers(log)) == {"CPU"}, kv_buffers(log)


# --- every service of every stack file ------------------------------------------------------------------------------


def stack_services() -> Iterator[Any]:
    for path in sorted(STACKS.glob("Pulumi.*.yaml")):
        config = yaml.safe_load(path.read_text())["config"]
        raw = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("llmkube:")}
        stack = load_stack(raw)
        for service in stack.services.values():
            name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
            yield pytest.param(workloads.server_args_for(service), id=f"{name}/{service.key}")


@pytest.mark.parametrize("args", list(stack_services()))
def test_stack_service(args: list[str], models: dict[str, Model], tmp_path: Path) -> None:
    # A service that keeps experts on the CPU serves an MoE model: the hybrid (the reference stack runs
    # Qwen3.6-35B-A3B, a qwen35moe); the others the dense model.
    moe = any(flag in args for flag in ("--cpu-moe", "--n-cpu-moe", "--override-tensor"))
    serve_and_check(args, models["hybrid" if moe else "dense"], tmp_path, DEBUG)


# --- the matrix of spec fields --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    fields: dict[str, Any]
    model: str = "dense"
    gpu_count: int = 0
    debug: bool = False
    expect: list[str] = field(default_factory=list)  # regexes the log must match
    check: Callable[[str, Model], None] | None = None


def all_experts_overridden(log: str, model: Model) -> None:
    assert set(overridden_tensors(log)) == model.experts() != set()


# fmt: off
CASES = {
    "cache-f16": Case({"cacheTypeK": "f16", "cacheTypeV": "f16"}),
    "cache-q8_0": Case({"cacheTypeK": "q8_0", "cacheTypeV": "q8_0"}),
    "cache-q4_0": Case({"cacheTypeK": "q4_0", "cacheTypeV": "q4_0"}),
    "moeCPUOffload": Case({"moeCPUOffload": True}, model="moe", debug=True, check=all_experts_overridden),
    "moeCPULayers-1": Case({"moeCPULayers": 1}, model="moe", debug=True),
    "noKvOffload": Case({"noKvOffload": True}, expect=[r"llama_kv_cache:\s+CPU KV buffer size"]),
    "tensorOverrides-exps": Case(
        {"tensorOverrides": ["exps=CPU"]}, model="moe", debug=True, check=all_experts_overridden
    ),
    "batch-sizes": Case({"batchSize": 256, "uBatchSize": 128}, expect=[r"n_batch\s+= 256", r"n_ubatch\s+= 128"]),
    "parallelSlots-2": Case({"parallelSlots": 2}, expect=[r"n_seq_max\s+= 2", r"n_slots = 2"]),
    "flashAttention-on": Case({"flashAttention": True}, expect=[r"flash_attn\s+= enabled"]),
    "flashAttention-off": Case({"flashAttention": False}, expect=[r"flash_attn\s+= disabled"]),
    "jinja": Case({"jinja": True}),
    "embedding": Case({"mode": "embedding"}),
    # The generated qwen3 dense model has no classifier head; llama.cpp still serves rank pooling on it.
    "rerank": Case({"mode": "rerank"}),
    # Not the default thread count of this 2-core machine, so the log shows the flag took effect.
    "extraArgs-threads": Case({"extraArgs": ["--threads", "1"]}, expect=[r"n_threads = 1 \(n_threads_batch = 1\)"]),
    "gpus-2": Case({"resources": {"gpu": 2}, "flashAttention": True}, gpu_count=2, expect=[r"flash_attn\s+= enabled"]),
    "moe-everything": Case(
        {"cacheTypeK": "q8_0", "cacheTypeV": "q4_0", "moeCPUOffload": True, "noKvOffload": True,
         "flashAttention": True, "jinja": True, "parallelSlots": 2, "resources": {"gpu": 2}},
        model="moe", gpu_count=2, debug=True, check=all_experts_overridden,
    ),
}
# fmt: on


def rendered(case: Case) -> list[str]:
    spec = InferenceServiceSpec.model_validate({"modelRef": "m", **case.fields})
    model = ModelSpec.model_validate({"source": "https://example.com/m.gguf"})
    return build_args(spec, model, MODEL_PATH, case.gpu_count)


@pytest.mark.parametrize("name", list(CASES))
def test_spec_field(name: str, models: dict[str, Model], tmp_path: Path) -> None:
    case = CASES[name]
    args = rendered(case)
    srv = serve_and_check(args, models[case.model], tmp_path, DEBUG if case.debug else ACCOUNTING)
    log = srv.log()
    for pattern in case.expect:
        assert re.search(pattern, log), f"{pattern!r} not in the log of {args}"
    if case.check:
        case.check(log, models[case.model])


def test_gpu_flags_are_rendered() -> None:
    # The gpus-2 row above runs these: the CPU build accepts them (and warns that it has no GPU).
    args = rendered(CASES["gpus-2"])
    assert args[args.index("--n-gpu-layers") :][:6] == [
        "--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1",
    ]  # fmt: skip


def test_n_cpu_moe_is_exactly_the_first_layers(models: dict[str, Model], tmp_path: Path) -> None:
    args = rendered(CASES["moeCPULayers-1"])
    srv = serve_and_check(args, models["moe"], tmp_path, DEBUG)
    overridden = set(overridden_tensors(srv.log()))
    assert overridden == models["moe"].experts(range(1))
    assert len(overridden) == 3 and all(name.startswith("blk.0.") for name in overridden)


def test_a_rejected_argument_fails_the_check(models: dict[str, Model], tmp_path: Path) -> None:
    # The harness itself: a flag this llama.cpp does not know stops the server, and the test says why.
    args = rendered(Case({"extraArgs": ["--no-such-flag"]}))
    with pytest.raises(ServerFailed, match="invalid argument: --no-such-flag"):
        serve_and_check(args, models["dense"], tmp_path, ACCOUNTING)


def test_the_api_key_file_is_required_and_exposed_servers_hide_the_web_ui_and_slots(
    models: dict[str, Model], tmp_path: Path
) -> None:
    """An exposed service with a key, rendered by the builder: the real server asks the key from the file."""
    key = "sk-e2e-0123456789abcdef"
    spec = InferenceServiceSpec.model_validate(
        {"modelRef": "m", "endpoint": {"type": "LoadBalancer"}, "apiKey": {"secretName": "chat-api-key"}}
    )
    args = build_args(spec, ModelSpec.model_validate({"source": "https://example.com/m.gguf"}), MODEL_PATH, 0)
    assert "--no-ui" in args and "--no-slots" in args
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    local = localize(args, models["dense"].path, free_port())
    local[local.index("--api-key-file") + 1] = str(key_file)  # the pod's /etc/llmkube/api-key/api-key
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    with LlamaServer(SERVER, local, tmp_path / "llama-server.log") as srv:
        assert srv.get("/health")[0] == 200  # the probes need no key
        assert srv.post("/v1/chat/completions", chat)[0] == 401
        assert srv.post("/v1/chat/completions", chat, headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body = srv.post("/v1/chat/completions", chat, headers={"Authorization": f"Bearer {key}"})
        assert status == 200, body
        # /metrics needs the key too: a scraper has to send it (see the README's Security section).
        assert srv.get("/metrics")[0] == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert srv.get("/metrics", headers=auth)[0] == 200
        assert srv.get("/slots", headers=auth)[0] == 501  # --no-slots
        assert srv.get("/", headers=auth)[0] == 404  # --no-ui
    assert srv.rejected_lines() == []
    assert key not in " ".join(local)


def test_the_server_runs_on_a_read_only_root_filesystem(models: dict[str, Model], tmp_path: Path) -> None:
    """The Deployment sets readOnlyRootFilesystem with no writable volume for llama-server: the real server
    serves with every file system read-only (stricter than the pod, whose cache mount is read-only too)."""
    spec = InferenceServiceSpec.model_validate({"modelRef": "m"})
    args = build_args(spec, ModelSpec.model_validate({"source": "https://example.com/m.gguf"}), MODEL_PATH, 0)
    root = tmp_path / "root"
    root.mkdir()
    local = localize(args, models["dense"].path, free_port())
    prefix = read_only_root(root)
    with LlamaServer(SERVER, local, tmp_path / "llama-server.log", prefix=prefix) as srv:
        chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
        status, body = srv.post("/v1/chat/completions", chat)
        assert status == 200, body
        assert srv.get("/metrics")[0] == 200
    # The namespace really was read-only: the same prefix cannot write where the server ran.
    probe = subprocess.run([*prefix, "touch", str(tmp_path / "written")], capture_output=True, text=True)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe
    assert not (tmp_path / "written").exists()
