"""The ggml type table is checked against the gguf package's, which follows ggml itself."""

from __future__ import annotations

import pytest
from gguf import GGML_QUANT_SIZES

from llmkube_components.planner.types import GGML_TYPES, TensorInfo, ggml_type, row_bytes


@pytest.mark.parametrize("t", GGML_TYPES, ids=lambda t: t.name)
def test_block_and_type_sizes_match_ggml(t) -> None:
    sizes = {q.name: v for q, v in GGML_QUANT_SIZES.items()}
    assert sizes[t.name] == (t.block_size, t.type_size)
    assert ggml_type(t.id) == ggml_type(t.name) == t


@pytest.mark.parametrize(
    ("type_name", "shape", "nbytes"),
    [
        ("F32", (16, 4), 16 * 4 * 4),
        ("F16", (4096,), 8192),
        ("Q8_0", (64, 2), 2 * 2 * 34),
        ("Q4_K", (4096, 4096), 4096 * 16 * 144),
        ("Q4_0", (2048, 768, 128), 2048 // 32 * 18 * 768 * 128),
    ],
)
def test_tensor_bytes(type_name: str, shape: tuple[int, ...], nbytes: int) -> None:
    assert TensorInfo("t", type_name, shape).nbytes == nbytes


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown ggml tensor type 'Q9_X'"):
        row_bytes("Q9_X", 32)
