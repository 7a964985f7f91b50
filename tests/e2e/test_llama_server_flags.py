"""The real llama-server on the decoding and serving fields' flags, exactly as ``llamacpp.build_args`` renders them.

Speculative decoding (a draft model with -md, ngram types, nDraftMax, pMin), the reasoning budget (0 too) and
its message, YaRN RoPE scaling, GGUF metadata overrides, bindAddress, containerPort, the multimodal projector
and the llamacpp-router runtime. Only the file paths are pointed at generated files (the builder renders the
pod's paths); the port is a free one, given as containerPort. The server must start (GET /health 200), answer a
completion, show in its log that each flag took effect, and print nothing about an invalid, unknown or
deprecated argument. Missing server: a failure in CI, a skip elsewhere (tests/e2e/required.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmkube_components import flags
from llmkube_components.api.model import ModelSpec
from llmkube_components.api.service import InferenceServiceSpec
from llmkube_components.llamacpp import build_args
from testkit import gguf_files
from testkit.llama_server import LlamaServer, ServerFailed, free_port, require_server

pytestmark = pytest.mark.e2e

SERVER = require_server()

# The pod's paths, as the storage layout would give them; replaced by the generated files below.
MODEL_PATH = "/models/0123456789abcdef/tiny-qwen3.gguf"
DRAFT_PATH = "/models/fedcba9876543210/draft.gguf"
MMPROJ_PATH = "/models/0123456789abcdef/mmproj-F16.gguf"
ACCOUNTING = ["-lv", "4"]  # llama.cpp's own accounting lines (llama_kv_cache:, spec ...)
CHAT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    # F16 weights (see test_llama_server.py). The draft has one layer and the target's vocabulary: the
    # generator's tokenizer is deterministic, so llama.cpp finds the two vocabularies compatible.
    # The router's second model is split in two parts: the preset names the first, llama.cpp finds the other.
    router_dir = folder / "router"
    router_dir.mkdir()
    return {
        "model": gguf_files.write_dense(folder / "tiny-qwen3.gguf", weight_type="F16"),
        "draft": gguf_files.write_dense(folder / "draft.gguf", weight_type="F16", n_layer=1),
        "split": gguf_files.write_dense(router_dir / "tiny-split.gguf", weight_type="F16", n_layer=1, parts=2),
    }


def render(fields: dict[str, Any], model: dict[str, Any] | None = None) -> list[str]:
    spec = InferenceServiceSpec.model_validate({"modelRef": "m", "containerPort": free_port(), **fields})
    mdl = ModelSpec.model_validate({"source": "https://example.com/tiny-qwen3.gguf", **(model or {})})
    # The storage layout stages a draft only for a service that names one, and a projector for a Model with one.
    speculative = spec.speculative_decoding
    draft = DRAFT_PATH if speculative and speculative.draft_given else None
    return build_args(spec, mdl, MODEL_PATH, 0, draft_path=draft, mmproj_path=MMPROJ_PATH if mdl.mmproj else None)


def localize(args: list[str], files: dict[str, Path]) -> list[str]:
    """Our rendering with the pod's paths replaced by the generated files (and nothing else changed)."""
    paths = {MODEL_PATH: str(files["model"]), DRAFT_PATH: str(files["draft"]),
             MMPROJ_PATH: str(files["model"].with_name("mmproj-F16.gguf"))}  # fmt: skip
    return [paths.get(arg, arg) for arg in args]


def complaints(srv: LlamaServer) -> list[str]:
    return srv.rejected_lines()


def serve(args: list[str], files: dict[str, Path], tmp_path: Path, model: str | None = None) -> LlamaServer:
    local = [*localize(args, files), *ACCOUNTING]
    with LlamaServer(SERVER, local, tmp_path / "llama-server.log") as srv:
        assert srv.get("/health")[0] == 200
        status, body = srv.post("/v1/chat/completions", {**CHAT, **({"model": model} if model else {})})
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
    assert complaints(srv) == [], f"llama-server complained about our arguments {args}"
    return srv


# fmt: off
CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # fields, the flags they render (in order), what the log shows
    "draft-model": (
        {"speculativeDecoding": {"type": "draft", "draftModelRef": "draft", "nDraftMax": 4, "pMin": 0.5},
         "contextSize": 1024},
        ["--ctx-size", "1024", "--spec-type", "draft-simple", "-md", DRAFT_PATH, "--spec-draft-n-max", "4",
         "--spec-draft-p-min", "0.5"],
        [r"loading draft model '.*draft\.gguf'", r"adding speculative implementation 'draft-simple'",
         r"n_max=4, n_min=0, p_min=0\.500000",
         # The draft's KV cache: the target's context and sequences, the draft's one layer, f16.
         r"llama_kv_cache: size = .*\(  1024 cells,   1 layers,  4/1 seqs\), K \(f16\)"],
    ),
    "ngram-simple": (
        {"speculativeDecoding": {"type": "ngram-simple", "nDraftMax": 8, "pMin": 0.00001}},
        ["--spec-type", "ngram-simple", "--spec-draft-n-max", "8", "--spec-draft-p-min", "1e-05"],
        # llama.cpp logs n_max and p_min for the draft types only (see draft-model).
        [r"adding speculative implementation 'ngram-simple'"],
    ),
    # Accepted and read; the budget only acts on a template with thinking tags, which the generated one has not.
    "reasoning-budget-0": (
        {"reasoningBudget": 0, "reasoningBudgetMessage": "Answer now.", "jinja": True},
        ["--jinja", "--reasoning-budget", "0", "--reasoning-budget-message", "Answer now."],
        [],
    ),
    "rope-yarn": (
        {"contextSize": 8192, "ropeScaling": {"type": "yarn", "factor": "2", "originalContext": 4096}},
        ["--ctx-size", "8192", "--rope-scaling", "yarn", "--rope-scale", "2", "--yarn-orig-ctx", "4096"],
        [r"custom YaRN scaling detected", r"freq_scale\s+= 0\.5"],
    ),
    "metadata-overrides": (
        {"metadataOverrides": ["tokenizer.ggml.add_bos_token=bool:false",
                               "qwen3.attention.layer_norm_rms_epsilon=float:0.00001"]},
        ["--override-kv",
         "tokenizer.ggml.add_bos_token=bool:false,qwen3.attention.layer_norm_rms_epsilon=float:0.00001"],
        [r"Using metadata override \(float\) 'qwen3\.attention\.layer_norm_rms_epsilon'",
         r"Using metadata override \( bool\) 'tokenizer\.ggml\.add_bos_token'"],
    ),
}
# fmt: on


@pytest.mark.parametrize("name", list(CASES))
def test_decoding_flags(name: str, files: dict[str, Path], tmp_path: Path) -> None:
    fields, flags, expect = CASES[name]
    args = render({**fields, "bindAddress": "127.0.0.1"})
    port = args[args.index("--port") + 1]
    assert args[:6] == ["--model", MODEL_PATH, "--port", port, "--host", "127.0.0.1"]
    assert args[6:-1] == flags and args[-1] == "--metrics"
    log = serve(args, files, tmp_path).log()
    for pattern in expect:
        assert re.search(pattern, log), f"{pattern!r} not in the log of {args}"


def test_the_projector_flag_is_read(files: dict[str, Path], tmp_path: Path) -> None:
    """--mmproj as rendered for a Model with mmproj. Generating a CLIP projector GGUF is not cheap, so the
    server is given a projector path with no file: it must fail on loading that file, which shows it parsed the
    flag and its value (an unknown flag stops it with 'invalid argument' before any loading)."""
    args = render({"bindAddress": "127.0.0.1"}, {"mmproj": "mmproj-F16.gguf"})
    assert args[args.index("--mmproj") :][:2] == ["--mmproj", MMPROJ_PATH]
    with pytest.raises(ServerFailed) as failed:
        LlamaServer(SERVER, localize(args, files), tmp_path / "llama-server.log", timeout=30).start()
    message = str(failed.value)
    assert "failed to load multimodal model" in message and "mmproj-F16.gguf" in message, message
    assert "invalid argument" not in message


def test_bind_address_and_container_port(files: dict[str, Path], tmp_path: Path) -> None:
    args = render({"bindAddress": "127.0.0.1", "endpoint": {"port": 80}})
    port = int(args[args.index("--port") + 1])
    assert port != 80 and args[args.index("--host") + 1] == "127.0.0.1"
    log = serve(args, files, tmp_path).log()
    assert f"http://127.0.0.1:{port}" in log or f"127.0.0.1:{port}" in log


ROUTER_FIELDS = {
    "runtime": "llamacpp-router", "bindAddress": "127.0.0.1", "contextSize": 2048, "flashAttention": True,
    "cacheTypeK": "q8_0", "cacheTypeV": "q8_0", "jinja": True, "resources": {"gpu": 2, "cpu": "1"},
}  # fmt: skip


def router_args(preset: list[flags.RoutedModel], tmp_path: Path) -> list[str]:
    """The router's arguments as rendered, pointed at a preset of the generated files written as rendered."""
    spec = InferenceServiceSpec.model_validate({"modelRef": "m", "containerPort": free_port(), **ROUTER_FIELDS})
    args = build_args(spec, ModelSpec.model_validate({"source": "https://example.com/m.gguf"}), MODEL_PATH, 2)
    assert "--model" not in args
    assert args[:4] == ["--models-preset", flags.ROUTER_PRESET_FILE, "--models-max", "1"]
    path = tmp_path / flags.ROUTER_PRESET_KEY
    path.write_text(flags.router_preset(preset))
    return [str(path) if arg == flags.ROUTER_PRESET_FILE else arg for arg in args]


def test_router_serves_the_preset_models_one_at_a_time(files: dict[str, Path], tmp_path: Path) -> None:
    """runtime llamacpp-router: the preset's two models are listed under their names, each answers a completion
    (the router swaps them: --models-max 1), a split model is loaded from its first part, and the per-model
    flags the table renders reach each model instance the router starts (it lists them before loading)."""
    preset = [
        flags.RoutedModel("tiny-qwen3", str(files["model"])),
        flags.RoutedModel("tiny-split", str(files["split"])),
    ]
    assert files["split"].name == "tiny-split-00001-of-00002.gguf"
    with LlamaServer(SERVER, router_args(preset, tmp_path), tmp_path / "llama-server.log") as srv:
        status, body = srv.get("/v1/models")
        assert status == 200, body
        models = {m["id"]: m for m in json.loads(body)["data"]}
        assert sorted(models) == ["tiny-qwen3", "tiny-split"]  # the preset's names, nothing else
        for routed in preset:
            child = models[routed.name]["status"]["args"]
            for flag in ("--n-gpu-layers", "--split-mode", "--tensor-split", "--ctx-size", "--flash-attn",
                         "--cache-type-k", "--cache-type-v", "--jinja", "--threads", "--metrics"):  # fmt: skip
                assert flag in child, f"{flag} not passed on to the model instance: {child}"
            assert child[child.index("--model") + 1] == routed.model_path
            assert "--models-max" not in child and "--models-preset" not in child
        for name in ("tiny-qwen3", "tiny-split", "tiny-qwen3"):
            status, body = srv.post("/v1/chat/completions", {**CHAT, "model": name})
            assert status == 200, body
            assert json.loads(body)["model"] == name
            status, body = srv.get("/v1/models")
            loaded = [m["id"] for m in json.loads(body)["data"] if m["status"]["value"] == "loaded"]
            assert loaded == [name], body  # one at a time: the other was unloaded
    # The CPU build warns that it ignores the GPU flags; nothing is refused.
    assert complaints(srv) == []


def test_the_router_passes_the_preset_projector_on(files: dict[str, Path], tmp_path: Path) -> None:
    """A Model's mmproj goes in the preset (the router drops --mmproj from its own command line): the model
    instance gets it as --mmproj. As in test_the_projector_flag_is_read the file does not exist: the instance
    must fail on loading it, which shows it read the preset's path."""
    mmproj = str(files["model"].with_name("mmproj-F16.gguf"))
    preset = [flags.RoutedModel("tiny-qwen3", str(files["model"]), mmproj)]
    with LlamaServer(SERVER, router_args(preset, tmp_path), tmp_path / "llama-server.log") as srv:
        status, body = srv.get("/v1/models")
        child = json.loads(body)["data"][0]["status"]["args"]
        assert child[child.index("--mmproj") + 1] == mmproj, child
        status, body = srv.post("/v1/chat/completions", {**CHAT, "model": "tiny-qwen3"})
        assert status == 500 and "failed to load" in body, body
    assert "failed to load CLIP model from " + mmproj in srv.log()


# --- the planner against the server's own accounting ------------------------------------------------------------

SIZE = re.compile(r"(llama_kv_cache|llama_memory_recurrent): size =\s+([\d.]+) MiB")


def logged_sizes(log: str) -> list[tuple[str, float]]:
    """(what, MiB) of each cache llama-server allocates, in order: the main context's, then the draft's."""
    return [(m[1], float(m[2])) for m in SIZE.finditer(log)]


@pytest.mark.parametrize("kind", ["draft", "mtp"])
def test_the_plan_counts_the_draft_and_mtp_caches(kind: str, files: dict[str, Path], tmp_path: Path) -> None:
    """The planner's draft_kv and recurrent state against llama-server's log for the same files and flags."""
    from llmkube_components.planner.facts import ModelFacts
    from llmkube_components.planner.memory import DRAFT_KV, RECURRENT_STATE, DraftModel, Placement, plan_memory
    from llmkube_components.planner.metadata import read_metadata

    if kind == "mtp":
        model = gguf_files.write_hybrid_mtp(tmp_path / "tiny-qwen3.gguf", weight_type="F16")
        fields: dict[str, Any] = {"speculativeDecoding": {"type": "mtp"}}
        draft = None
    else:
        model = files["model"]
        fields = {"speculativeDecoding": {"type": "draft", "draftModelRef": "d"}}
        draft = DraftModel(ModelFacts.from_metadata(read_metadata(files["draft"])))
    args = render({**fields, "contextSize": 1024, "bindAddress": "127.0.0.1"})
    local = [*localize(args, {**files, "model": model}), *ACCOUNTING]
    with LlamaServer(SERVER, local, tmp_path / "llama-server.log") as srv:
        assert srv.post("/v1/chat/completions", CHAT)[0] == 200
    assert complaints(srv) == []
    facts = ModelFacts.from_metadata(read_metadata(model))
    types = ["draft-mtp"] if kind == "mtp" else ["draft-simple"]
    plan = plan_memory(facts, Placement(), context_size=1024, spec_types=types, draft=draft)
    sizes = logged_sizes(srv.log())
    mib = 1024 * 1024
    # The side context's KV cache is the last one llama-server logs.
    assert sizes[-1][0] == "llama_kv_cache"
    assert abs(plan.host[DRAFT_KV] / mib - sizes[-1][1]) < 0.01, (sizes, plan.host[DRAFT_KV])
    recurrent = [size for what, size in sizes if what == "llama_memory_recurrent"]
    if kind == "mtp":
        assert abs(plan.host[RECURRENT_STATE] / mib - recurrent[0]) < 0.01, (sizes, plan.host[RECURRENT_STATE])
