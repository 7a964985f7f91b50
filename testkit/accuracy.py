"""Planner accuracy (issue 5): the memory planner's figures against llama.cpp's own accounting.

For generated GGUF models of several shapes (testkit/gguf_files.py, F16 weights), each KV cache type and a few
context sizes and --parallel settings, the CPU llama-server (tools/setup-llama-server, or $LLAMA_SERVER) is
started once with ``-lv 4 --fit off --no-repack``; its log gives the model buffer size, the K and V cache sizes, the
recurrent state and the compute buffer. ``plan_memory`` runs on the same model and settings (no GPU: all of
it is host memory) and the table prints predicted MiB, reported MiB and the error.

- weights: llama.cpp's ``model buffer size`` (every loaded tensor, token_embd included) against the sum of
  the planner's weight categories.
- K, V: the ``K (type): x MiB, V (type): y MiB`` parts of every ``llama_kv_cache: size`` line (a
  sliding-window model has two caches, summed) against ``kv_k`` and ``kv_v``.
- recurrent: ``llama_memory_recurrent: size`` against ``recurrent_state``.
- compute: every ``compute buffer size`` line of ``sched_reserve`` against ``compute``.

Why ``--no-repack`` in the matrix: with repacking on, this build puts host weights in extra buffer types where
the CPU has them (AMX on a Sapphire Rapids host, CPU_REPACK for Q4_0/Q4_K/IQ4_NL/MXFP4 on x86-64 with AVX2);
the log then shows that copy and the mmap range it was read from (e.g. ``CPU_REPACK model buffer size = 3.09
MiB`` and ``CPU_Mapped model buffer size = 3.18 MiB`` for a 3.40 MiB Q4_0 model), so neither line nor their
sum is the weights' size. The repacking has its own comparison (``repack_*`` below, asserted by
tests/e2e/test_planner_repack.py): the same shapes with Q4_0 weights (which every CPU repacks: AVX2, AMX and
ARM NEON), llama-server with repacking on, and the sum of its extra buffers (CPU_REPACK, AMX) against the
plan's ``repacked`` bytes plus category ``repack``.

llama.cpp prints MiB with two decimals, so a reported figure is only known to +-0.005 MiB: the "within
print" column says whether the prediction rounds to the printed figure. The shapes are sized so that this
resolution stays far below 1% of the K and V figures.

This module holds the matrix and the measurement; benchmarks/planner_accuracy.py prints the whole table
(asserts nothing) and tests/e2e/test_planner_accuracy.py asserts the targets on a subset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkube_components.planner.facts import ModelFacts
from llmkube_components.planner.memory import (
    COMPUTE,
    KV_K,
    KV_V,
    RECURRENT_STATE,
    REPACK,
    WEIGHT_CATEGORIES,
    Placement,
    plan_memory,
)
from llmkube_components.planner.metadata import read_metadata
from testkit import gguf_files
from testkit.llama_server import LlamaServer, free_port

MiB = 1024 * 1024
WEIGHT_TYPE = "F16"  # the matrix runs --no-repack (the repack comparison: Q4_0); head_dim 32/64 suits q8_0, q4_0 KV
CACHE_TYPES = ("f16", "q8_0", "q4_0")
CONTEXTS = (2048, 8192)
PARALLEL = (None, 2)  # None: llama-server's default (4 sequences, one unified cache)
QUANTITIES = ("weights", "K", "V", "recurrent", "compute")
TARGETS = {"weights": 0.01, "K": 0.01, "V": 0.01, "recurrent": 0.01, "compute": 0.10}


# --- the shapes ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    write: Callable[..., Path]
    dims: dict[str, Any]


SHAPES: tuple[Shape, ...] = (
    Shape("dense-small", gguf_files.write_dense, {"n_layer": 4, "n_ctx_train": 32768}),
    Shape(
        "dense-large",
        gguf_files.write_dense,
        {
            "n_layer": 8,
            "n_embd": 256,
            "n_head": 4,
            "n_head_kv": 4,
            "head_dim": 64,
            "n_ff": 512,
            "vocab": 2048,
            "n_ctx_train": 32768,
        },
    ),
    Shape(
        "moe",
        gguf_files.write_moe,
        {
            "n_layer": 4,
            "n_embd": 128,
            "n_head": 4,
            "n_head_kv": 2,
            "head_dim": 64,
            "n_expert": 16,
            "n_ff_exp": 64,
            "n_ctx_train": 32768,
        },
    ),
    Shape(
        "moe-shared",
        gguf_files.write_moe,
        {
            "n_layer": 4,
            "n_embd": 128,
            "n_head": 2,
            "n_head_kv": 2,
            "head_dim": 64,
            "n_expert": 16,
            "n_ff_exp": 64,
            "shared_expert": True,
            "n_ff_shexp": 128,
            "n_ctx_train": 32768,
        },
    ),
    Shape(
        "hybrid",
        gguf_files.write_hybrid,
        {
            "n_layer": 8,
            "full_attention_interval": 4,
            "n_embd": 128,
            "n_head": 4,
            "n_head_kv": 4,
            "head_dim": 64,
            "ssm_state_size": 64,
            "ssm_time_step_rank": 8,
            "ssm_group_count": 4,
            "n_ctx_train": 32768,
        },
    ),
    Shape(
        "swa",
        gguf_files.write_sliding_window,
        {
            "n_layer": 6,
            "sliding_window": 512,
            "n_embd": 128,
            "n_head": 4,
            "n_head_kv": 2,
            "head_dim": 64,
            "n_ctx_train": 32768,
        },
    ),
)


@dataclass(frozen=True)
class Case:
    shape: str
    cache_type: str
    context: int
    parallel: int | None

    @property
    def id(self) -> str:
        return f"{self.shape}/{self.cache_type}/ctx{self.context}/np{self.parallel or 'auto'}"


def all_cases(shapes: Iterable[str] | None = None) -> list[Case]:
    names = [s.name for s in SHAPES] if shapes is None else list(shapes)
    return [Case(n, t, c, p) for n in names for t in CACHE_TYPES for c in CONTEXTS for p in PARALLEL]


def write_models(folder: Path) -> dict[str, Path]:
    return {s.name: s.write(folder / f"{s.name}.gguf", weight_type=WEIGHT_TYPE, **s.dims) for s in SHAPES}


# --- llama.cpp's side -----------------------------------------------------------------------------------------

# `load_tensors:   CPU_Mapped model buffer size =     2.49 MiB`
MODEL_BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s*([\d.]+) MiB")
# `llama_kv_cache: size =    1.06 MiB (  4096 cells, ...), K (q8_0):    0.53 MiB, V (q8_0):    0.53 MiB`
KV_SIZE = re.compile(
    r"llama_kv_cache: size =\s*[\d.]+ MiB \(.*?\), K \((\w+)\):\s*([\d.]+) MiB, V \((\w+)\):\s*([\d.]+) MiB"
)
# `llama_memory_recurrent: size =    0.13 MiB (     4 cells,   8 layers,  4 seqs), R (f32): ..., S (f32): ...`
RECURRENT = re.compile(r"llama_memory_recurrent: size =\s*([\d.]+) MiB")
# `sched_reserve:        CPU compute buffer size =     5.55 MiB`
COMPUTE_BUFFER = re.compile(r"sched_reserve:\s+(\S+) compute buffer size =\s*([\d.]+) MiB")
LOAD_START = re.compile(r"llama_model_loader: loaded meta data")  # each load of the model starts here


def last_load(log: str) -> str:
    """The log from the last model load on (with --fit on, a dry run loads the model first)."""
    starts = [m.start() for m in LOAD_START.finditer(log)]
    return log[starts[-1] :] if starts else log


def reported(log: str) -> dict[str, float]:
    """MiB per quantity, as llama.cpp's log of the last load reports them."""
    log = last_load(log)
    out: dict[str, float] = {}
    buffers = model_buffers(log)
    if buffers:
        out["weights"] = sum(buffers.values())
    kv = KV_SIZE.findall(log)
    if kv:
        out["K"] = sum(float(k) for _, k, _, _ in kv)
        out["V"] = sum(float(v) for _, _, _, v in kv)
    rec = RECURRENT.findall(log)
    if rec:
        out["recurrent"] = sum(float(r) for r in rec)
    compute = {name: float(mib) for name, mib in COMPUTE_BUFFER.findall(log)}  # the last reservation per buffer
    if compute:
        out["compute"] = sum(compute.values())
    return out


def model_buffers(log: str) -> dict[str, float]:
    """MiB per model buffer type of the last load (CPU_Mapped, AMX, CPU_REPACK, ...)."""
    return {name: float(mib) for name, mib in MODEL_BUFFER.findall(last_load(log))}


def server_args(model: Path, case: Case, port: int, *, repack: bool = False) -> list[str]:
    args = [
        "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--ctx-size", str(case.context),
        "--cache-type-k", case.cache_type, "--cache-type-v", case.cache_type, "--cache-ram", "0",
        "--fit", "off", "-lv", "4",
    ]  # fmt: skip
    if not repack:
        args.append("--no-repack")
    if case.parallel is not None:
        args += ["--parallel", str(case.parallel)]
    return args


def run_server(server: Path, model: Path, case: Case, log_path: Path) -> dict[str, float]:
    with LlamaServer(server, server_args(model, case, free_port()), log_path) as srv:
        pass
    return reported(srv.log())


# --- the planner's side ----------------------------------------------------------------------------------------


def predicted(facts: ModelFacts, case: Case, *, repack: bool = False) -> dict[str, float]:
    """The planner's figures for ``case``; ``repack`` true for a server run without --no-repack (the matrix uses it)."""
    plan = plan_memory(
        facts, Placement(gpu_count=0, n_gpu_layers=0), context_size=case.context, parallel=case.parallel,
        cache_type_k=case.cache_type, cache_type_v=case.cache_type, cache_ram_mib=0, repack=repack,
    )  # fmt: skip
    host = plan.host.bytes
    return {
        "weights": sum(host[c] for c in WEIGHT_CATEGORIES) / MiB,
        "K": host[KV_K] / MiB,
        "V": host[KV_V] / MiB,
        "recurrent": host[RECURRENT_STATE] / MiB,
        "compute": host[COMPUTE] / MiB,
    }


def facts_of(model: Path) -> ModelFacts:
    return ModelFacts.from_metadata(read_metadata(model))


# --- repacked weights ------------------------------------------------------------------------------------------

REPACK_WEIGHT_TYPE = "Q4_0"  # repacked by every CPU the server image runs on (x86-64 AVX2 and AMX, ARM64 NEON)
EXTRA_BUFFERS = ("CPU_REPACK", "AMX")  # ggml_backend_cpu_get_extra_buffer_types' names, as load_tensors logs them


def write_repack_models(folder: Path) -> dict[str, Path]:
    """The matrix's shapes with Q4_0 weights, plus ``dense-tied``: dense-large without output.weight, whose output
    matrix llama.cpp then repacks as a second copy of token_embd (TENSOR_DUPLICATED)."""
    out = {s.name: s.write(folder / f"{s.name}-q4_0.gguf", weight_type=REPACK_WEIGHT_TYPE, **s.dims) for s in SHAPES}
    large = next(s for s in SHAPES if s.name == "dense-large")
    tied = gguf_files.dense_model(**large.dims)
    tied.tensors = [t for t in tied.tensors if t[0] != "output.weight"]
    out["dense-tied"] = gguf_files.write_model(folder / "dense-tied-q4_0.gguf", tied, weight_type=REPACK_WEIGHT_TYPE)
    return out


def repack_reported(log: str) -> float:
    """MiB in the CPU's extra buffer types, as load_tensors logs them (0 when the CPU repacks nothing)."""
    return sum(mib for name, mib in model_buffers(log).items() if name in EXTRA_BUFFERS)


def repack_predicted(facts: ModelFacts, case: Case) -> float:
    """MiB the plan puts in the extra buffer types: the repacked weights and what their layout adds."""
    plan = plan_memory(
        facts, Placement(gpu_count=0, n_gpu_layers=0), context_size=case.context, parallel=case.parallel,
        cache_type_k=case.cache_type, cache_type_v=case.cache_type, cache_ram_mib=0,
    )  # fmt: skip
    return (plan.repacked + plan.host[REPACK]) / MiB


def run_repack_server(server: Path, model: Path, case: Case, log_path: Path) -> float:
    with LlamaServer(server, server_args(model, case, free_port(), repack=True), log_path) as srv:
        pass
    return repack_reported(srv.log())


# --- the comparison ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: Case
    quantity: str
    predicted: float  # MiB
    reported: float  # MiB, as printed (two decimals)

    @property
    def error(self) -> float:
        """(predicted - reported) / reported; 0 when both are 0."""
        if self.reported == 0:
            return 0.0 if self.predicted == 0 else float("inf")
        return (self.predicted - self.reported) / self.reported

    @property
    def within_print(self) -> bool:
        """Whether the prediction rounds to the printed figure (llama.cpp prints %.2f MiB)."""
        return abs(self.predicted - self.reported) <= 0.005 + 1e-9

    @property
    def target(self) -> float:
        return TARGETS[self.quantity]

    @property
    def ok(self) -> bool:
        return abs(self.error) <= self.target or self.within_print


def compare(facts: ModelFacts, case: Case, got: dict[str, float]) -> list[Row]:
    want = predicted(facts, case)
    rows = []
    for q in QUANTITIES:
        if q in got or want[q]:
            rows.append(Row(case, q, want[q], got.get(q, 0.0)))
    return rows


def measure(server: Path, models: dict[str, Path], case: Case, folder: Path) -> list[Row]:
    got = run_server(server, models[case.shape], case, folder / f"{case.id.replace('/', '_')}.log")
    return compare(facts_of(models[case.shape]), case, got)


def format_table(rows: Iterable[Row]) -> str:
    lines = [f"{'case':34} {'quantity':9} {'predicted MiB':>13} {'reported MiB':>12} {'error %':>8}  target"]
    for r in rows:
        err = "inf" if r.error == float("inf") else f"{100 * r.error:+.2f}"
        mark = "ok" if abs(r.error) <= r.target else ("ok (print)" if r.within_print else "MISS")
        lines.append(
            f"{r.case.id:34} {r.quantity:9} {r.predicted:13.3f} {r.reported:12.2f} {err:>8}  "
            f"{100 * r.target:.0f}% {mark}"
        )
    return "\n".join(lines)
