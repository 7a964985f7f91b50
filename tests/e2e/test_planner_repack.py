"""Repacked host weights (issue 14) on the real CPU llama-server: what the plan says against what llama.cpp does.

With repacking on (llama-server's default), a CPU-only server copies host weights of the types its CPU's matrix
kernels want (Q4_0 on every CPU: AVX2, AMX, ARM NEON) into extra buffer types (CPU_REPACK, AMX). Two claims of
``planner.memory`` (its docstring, "Repacked host weights") are checked here:

- the extra buffers hold what the plan says: ``MemoryPlan.repacked`` plus category ``repack``, for every shape of
  the accuracy matrix with Q4_0 weights and for a model with tied embeddings, whose output matrix becomes a
  second, repacked copy of token_embd (testkit/accuracy.py, ``repack_*``);
- the copy replaces the mapped file pages instead of adding to them: after a completion, nothing has read the
  mapped pages of the repacked weights again (``Referenced`` in /proc/<pid>/smaps, after clearing it through
  /proc/<pid>/clear_refs), so they are clean page cache the kernel reclaims under the pod's memory limit, and
  the plan counts those weights once. Without repacking the same completion reads the whole mapping.

Missing server: a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmkube_components.planner.memory import WEIGHT_CATEGORIES, Placement, plan_memory
from testkit import gguf_files
from testkit.accuracy import (
    TARGETS,
    Case,
    facts_of,
    repack_predicted,
    run_repack_server,
    server_args,
    write_repack_models,
)
from testkit.llama_server import LlamaServer, free_port, require_server

pytestmark = pytest.mark.e2e

SERVER = require_server()
CASE = Case("repack", "f16", 2048, None)
PRINTED = 0.005  # llama.cpp prints MiB with two decimals
KiB, MiB = 1024, 1024 * 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_repack_models(tmp_path_factory.mktemp("gguf"))


@pytest.mark.parametrize("shape", ["dense-small", "dense-large", "moe", "moe-shared", "hybrid", "swa", "dense-tied"])
def test_extra_buffers_hold_what_the_plan_says(shape: str, models: dict[str, Path], tmp_path: Path) -> None:
    got = run_repack_server(SERVER, models[shape], CASE, tmp_path / "server.log")
    if got == 0:
        pytest.skip("this CPU repacks no Q4_0 weights (no AVX2, AMX or NEON dot product)")
    want = repack_predicted(facts_of(models[shape]), CASE)
    assert abs(want - got) <= max(TARGETS["weights"] * got, PRINTED), f"plan {want:.3f} MiB, llama.cpp {got:.2f} MiB"


def test_the_tied_output_copy_is_counted_as_output(models: dict[str, Path]) -> None:
    facts = facts_of(models["dense-tied"])
    on, off = (plan_memory(facts, Placement(), context_size=2048, repack=r) for r in (True, False))
    embd = next(t.nbytes for t in facts.tensors if t.name == "token_embd.weight")
    assert on.host["output"] - off.host["output"] == embd
    assert sum(on.host[c] for c in WEIGHT_CATEGORIES) == facts.file_bytes + embd


# --- the mapped pages of repacked weights go unused ---------------------------------------------------------------


def _mapping(pid: int, path: Path) -> dict[str, int]:
    """Size, Rss and Referenced (KiB) of the process's mappings of ``path`` (/proc/<pid>/smaps)."""
    out = {"Size": 0, "Rss": 0, "Referenced": 0}
    with open(f"/proc/{pid}/smaps") as f:
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", f.read())
    for block in blocks:
        if block.splitlines()[0].endswith(str(path)):
            for key in out:
                m = re.search(rf"^{key}:\s+(\d+) kB", block, re.M)
                if m is None:
                    pytest.skip(f"/proc/{pid}/smaps has no {key} field here")
                out[key] += int(m.group(1))
    return out


def _referenced_after_a_completion(model: Path, log: Path, *, repack: bool) -> dict[str, int]:
    with LlamaServer(SERVER, server_args(model, CASE, free_port(), repack=repack), log) as srv:
        pid = srv.proc.pid
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("1")  # clear the referenced bits of every page of the process
        except OSError as exc:
            pytest.skip(f"cannot clear the page references of the server ({exc})")
        status, body = srv.post("/completion", {"prompt": "hello world", "n_predict": 8})
        assert status == 200, body
        return _mapping(pid, model)


def test_the_mapped_pages_of_repacked_weights_are_not_read_again(tmp_path: Path) -> None:
    # 38 MiB of Q4_0, 37 MiB of it in 2-D matrices: page granularity is far below the margins.
    dims = {"n_layer": 4, "n_embd": 1024, "n_head": 8, "n_head_kv": 8, "head_dim": 128, "n_ff": 4096, "vocab": 2048}
    model = gguf_files.write_dense(tmp_path / "m.gguf", weight_type="Q4_0", **dims)
    plan = plan_memory(facts_of(model), Placement(), context_size=CASE.context)
    assert plan.repacked > 0.9 * plan.host.weights
    kept = plan.host.weights - plan.repacked  # token_embd (row lookups) and the norms stay mapped

    repacked = _referenced_after_a_completion(model, tmp_path / "repack.log", repack=True)
    plain = _referenced_after_a_completion(model, tmp_path / "no-repack.log", repack=False)

    # Without repacking, decoding reads the mapped weights: nearly all of the mapping is referenced.
    assert plain["Referenced"] * KiB > 0.9 * plan.host.weights, plain
    # With it, the repacked weights' pages are still mapped and resident (RSS counts them) but nothing reads
    # them: only (part of) what stays mapped is referenced.
    assert repacked["Rss"] * KiB > plan.repacked / 2, repacked
    assert repacked["Referenced"] * KiB <= kept + 256 * KiB, (repacked, kept)
