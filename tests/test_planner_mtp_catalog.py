"""Qwen3.5/3.6's multi-token-prediction block in the model catalog and the plan (issue 14).

llama.cpp's converter keeps the checkpoint's ``mtp.*`` tensors by default (conversion/qwen.py _QwenMtpMixin):
``block_count`` = layers + ``mtp_num_hidden_layers``, ``nextn_predict_layers``, and one gated-attention block with
the model's feed-forward plus ``nextn.eh_proj``/``enorm``/``hnorm``/``shared_head_norm`` after the layers. The
catalog entries carry it, so their file size counts it; llama-server skips it unless ``--spec-type draft-mtp``
(TENSOR_SKIP), so the plan puts it nowhere until then. tests/e2e/test_planner_mtp_catalog.py loads
catalog-shaped models with the block in the real server.
"""

from __future__ import annotations

import pytest

from llmkube_components.planner.catalog import CatalogEntry, catalog_entries, catalog_metadata, entry_metadata
from llmkube_components.planner.facts import ModelFacts, TensorClass
from llmkube_components.planner.memory import DRAFT_KV, SKIPPED, Placement, plan_memory

# name -> (layers, the MTP block's index, what its feed-forward is)
QWEN = {"Qwen3.5-27B": (64, 64, "dense"), "Qwen3.6-35B-A3B": (40, 40, "moe")}


def facts(name: str, quantization: str | None = None) -> ModelFacts:
    return ModelFacts.from_metadata(catalog_metadata(name, quantization))


@pytest.mark.parametrize("name", QWEN)
def test_the_entry_has_the_mtp_block_as_the_converter_writes_it(name: str) -> None:
    layers, mtp, _ = QWEN[name]
    meta = catalog_metadata(name)
    arch = meta.architecture
    assert meta.fields[f"{arch}.block_count"] == layers + 1
    assert meta.fields[f"{arch}.nextn_predict_layers"] == 1
    f = ModelFacts.from_metadata(meta)
    assert (f.block_count, f.n_layer, f.nextn_layers) == (layers + 1, layers, 1)
    # Not recurrent, no KV cache in the main context (load_arch_hparams: is_recr only below n_layer).
    assert not f.is_recurrent[mtp] and not f.has_attention_kv[mtp]
    assert all(f.classify(t.name) == (TensorClass.MTP, mtp) for t in meta.tensors if t.name.startswith(f"blk.{mtp}."))


@pytest.mark.parametrize(
    ("name", "tensor", "shape"),
    [
        ("Qwen3.5-27B", "blk.64.attn_q.weight", (5120, 2 * 24 * 256)),  # query and gate: a full-attention block
        ("Qwen3.5-27B", "blk.64.attn_k.weight", (5120, 4 * 256)),
        ("Qwen3.5-27B", "blk.64.ffn_down.weight", (17408, 5120)),
        ("Qwen3.5-27B", "blk.64.nextn.eh_proj.weight", (2 * 5120, 5120)),
        ("Qwen3.5-27B", "blk.64.nextn.shared_head_norm.weight", (5120,)),
        ("Qwen3.6-35B-A3B", "blk.40.ffn_gate_exps.weight", (2048, 512, 256)),
        ("Qwen3.6-35B-A3B", "blk.40.ffn_down_shexp.weight", (512, 2048)),
        ("Qwen3.6-35B-A3B", "blk.40.ffn_gate_inp_shexp.weight", (2048,)),
        ("Qwen3.6-35B-A3B", "blk.40.nextn.enorm.weight", (2048,)),
        ("Qwen3.6-35B-A3B", "blk.40.nextn.hnorm.weight", (2048,)),
    ],
)
def test_mtp_tensor_shapes(name: str, tensor: str, shape: tuple[int, ...]) -> None:
    assert {t.name: t.shape for t in catalog_metadata(name).tensors}[tensor] == shape


@pytest.mark.parametrize("name", QWEN)
def test_the_block_has_no_linear_attention_and_no_optional_nextn_heads(name: str) -> None:
    _, mtp, _ = QWEN[name]
    names = {t.name for t in catalog_metadata(name).tensors}
    assert f"blk.{mtp}.attn_qkv.weight" not in names and f"blk.{mtp}.ssm_conv1d.weight" not in names
    # Qwen's MTP block shares the model's embeddings and output: no nextn.embed_tokens or shared_head_head.
    assert not {f"blk.{mtp}.nextn.embed_tokens.weight", f"blk.{mtp}.nextn.shared_head_head.weight"} & names


@pytest.mark.parametrize(
    ("name", "tensor", "type_"),
    [
        # llama-quant.cpp counts the MTP block among the layers (n_ffn_down = n_layer_all): the last eighth of 65
        # blocks gets Q6_K on Q4_K_M, the MTP block included.
        ("Qwen3.5-27B", "blk.64.ffn_down.weight", "Q6_K"),
        ("Qwen3.5-27B", "blk.64.attn_v.weight", "Q6_K"),
        ("Qwen3.5-27B", "blk.64.nextn.eh_proj.weight", "Q4_K"),
        ("Qwen3.5-27B", "blk.64.nextn.enorm.weight", "F32"),
        ("Qwen3.6-35B-A3B", "blk.40.ffn_down_exps.weight", "Q6_K"),
        ("Qwen3.6-35B-A3B", "blk.40.ffn_up_exps.weight", "Q4_K"),
    ],
)
def test_mtp_tensor_types_at_q4_k_m(name: str, tensor: str, type_: str) -> None:
    assert {t.name: t.type for t in catalog_metadata(name, "Q4_K_M").tensors}[tensor] == type_


@pytest.mark.parametrize("name", QWEN)
def test_the_file_counts_the_block_and_the_plan_skips_it_unless_draft_mtp(name: str) -> None:
    _, mtp, _ = QWEN[name]
    f = facts(name)
    mtp_bytes = sum(t.nbytes for t in f.tensors if t.name.startswith(f"blk.{mtp}."))
    # Published sizes: about 0.26 GB (27B) and 0.55 GB (35B-A3B) at Q4_K_M.
    assert 0.2e9 < mtp_bytes < 0.6e9
    assert f.file_bytes == sum(t.nbytes for t in f.tensors)

    one_gpu = Placement(gpu_count=1)
    plain = plan_memory(f, one_gpu, context_size=8192)
    assert plain.skipped == mtp_bytes
    assert {plain.tensor_devices[t.name] for t in f.tensors if t.name.startswith(f"blk.{mtp}.")} == {SKIPPED}
    assert sum(d["mtp"] for d in plain.devices) == 0

    draft = plan_memory(f, one_gpu, context_size=8192, spec_types=["draft-mtp"])
    assert draft.skipped == 0
    assert draft.device("gpu0")["mtp"] == mtp_bytes  # on its layer's device
    assert draft.device("gpu0")[DRAFT_KV] > 0  # the MTP context's cache of the MTP block


def test_draft_mtp_is_planned_for_the_catalog_entries_instead_of_refused() -> None:
    # Without the block, --spec-type draft-mtp is refused ("failed to create MTP context"); the entries have it.
    for name in QWEN:
        plan_memory(facts(name), Placement(), context_size=4096, spec_types=["draft-mtp"])


def test_an_mtp_block_is_written_only_for_architectures_that_have_one() -> None:
    raw = catalog_entries()["Llama-3.1-8B"].model_dump(by_alias=True)
    raw["config"]["mtp_num_hidden_layers"] = 1
    with pytest.raises(ValueError, match="multi-token-prediction blocks for qwen35 and qwen35moe only, not llama"):
        CatalogEntry.model_validate(raw)


def test_without_mtp_layers_the_entry_is_as_before() -> None:
    raw = catalog_entries()["Qwen3.6-35B-A3B"].model_dump(by_alias=True)
    raw["config"]["mtp_num_hidden_layers"] = 0
    meta = entry_metadata(CatalogEntry.model_validate(raw))
    assert meta.fields["qwen35moe.block_count"] == 40
    assert "qwen35moe.nextn_predict_layers" not in meta.fields
    assert not any(t.name.startswith("blk.40.") for t in meta.tensors)
