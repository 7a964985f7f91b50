"""The catalog's Qwen3.5/3.6 multi-token-prediction block (issue 14) on the real CPU llama-server.

Small catalog entries of both architectures (qwen35 dense, qwen35moe) with ``mtp_num_hidden_layers: 1`` are
turned into GGUF files with exactly the catalog's key-values and tensors (F16 matrices, F32 norms), so the real
loader checks the catalog's MTP block tensor by tensor: it refuses a file with a tensor it does not create
("wrong number of tensors") or without one it requires. Then the model buffer llama.cpp reports is compared
with the plan: without ``--spec-type draft-mtp`` the block is skipped ("model has unused tensor") and in no
buffer; with it, every tensor is loaded.

Missing server: a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkube_components.planner.catalog import CatalogEntry, entry_metadata
from llmkube_components.planner.memory import WEIGHT_CATEGORIES, Placement, plan_memory
from llmkube_components.planner.types import GGUFMetadata
from testkit import gguf_files
from testkit.accuracy import TARGETS, Case, facts_of, reported, server_args
from testkit.llama_server import LlamaServer, free_port, require_server

pytestmark = pytest.mark.e2e

SERVER = require_server()
MiB = 1024 * 1024
PRINTED = 0.005  # llama.cpp prints MiB with two decimals
VOCAB = 512


def tiny_entry(arch: str) -> CatalogEntry:
    """A catalog entry of Qwen3.5/3.6's shape, small: 4 layers (full attention in the 4th), one MTP block."""
    config: dict[str, Any] = {
        "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 64, "vocab_size": VOCAB, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [3, 3, 2], "full_attention_interval": 4,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32, "linear_value_head_dim": 32,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "mtp_num_hidden_layers": 1,
    }  # fmt: skip
    if arch == "qwen35moe":
        config |= {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                   "shared_expert_intermediate_size": 64}  # fmt: skip
    else:
        config["intermediate_size"] = 256
    return CatalogEntry.model_validate(
        {"name": f"tiny-{arch}", "description": "test", "architecture": arch, "defaultQuantization": "F16",
         "parameters": {"totalBillions": 0.001}, "config": config, "sources": ["test"]}
    )  # fmt: skip


def write(meta: GGUFMetadata, path: Path) -> Path:
    """The catalog metadata as a GGUF file, with the test models' gpt2 tokenizer (the catalog keeps only its size)."""
    model = gguf_files.ModelFile(meta.architecture)
    model.kv = {k: v for k, v in meta.fields.items() if not k.startswith("tokenizer.")}
    model.kv |= {k: v for k, v in gguf_files.dense_model(vocab=VOCAB).kv.items() if k.startswith("tokenizer.")}
    model.tensors = [(t.name, t.shape, gguf_files.F32 if t.type == "F32" else gguf_files.MATRIX) for t in meta.tensors]
    return gguf_files.write_model(path, model, weight_type="F16")


@pytest.mark.parametrize("spec", [(), ("--spec-type", "draft-mtp")], ids=["plain", "draft-mtp"])
@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe"])
def test_the_catalog_mtp_block_loads_as_planned(arch: str, spec: tuple[str, ...], tmp_path: Path) -> None:
    meta = entry_metadata(tiny_entry(arch), "F16")
    model = write(meta, tmp_path / "m.gguf")
    facts = facts_of(model)
    assert facts.nextn_layers == 1 and {t.name for t in facts.tensors} == {t.name for t in meta.tensors}

    args = [*server_args(model, Case("mtp", "f16", 2048, None), free_port()), *spec]
    with LlamaServer(SERVER, args, tmp_path / "server.log") as srv:
        status, body = srv.post("/completion", {"prompt": "hello", "n_predict": 4})
        assert status == 200, body
    log = srv.log()
    got = reported(log)["weights"]

    plan = plan_memory(
        facts, Placement(), context_size=2048, cache_ram_mib=0, spec_types=[s for s in spec if s != "--spec-type"],
        repack=False,
    )  # fmt: skip
    want = sum(plan.host[c] for c in WEIGHT_CATEGORIES) / MiB
    assert abs(want - got) <= max(TARGETS["weights"] * got, PRINTED), f"plan {want:.3f} MiB, llama.cpp {got:.2f} MiB"
    mtp = [t for t in facts.tensors if t.name.startswith("blk.4.")]
    if spec:
        assert plan.skipped == 0 and plan.host["mtp"] == sum(t.nbytes for t in mtp)
        assert "unused tensor" not in log
    else:
        assert plan.skipped == sum(t.nbytes for t in mtp)
        assert all(f"unused tensor {t.name} " in log for t in mtp)
