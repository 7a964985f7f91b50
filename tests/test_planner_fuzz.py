"""The GGUF reader and the model facts on hostile headers: only their own errors, and bounded work.

A model header comes from anywhere a stack points at (a URL, a file on the Pulumi machine); whatever its
bytes, reading it must end in the facts or in the reader's own error (MetadataError, ModelFactsError: a clean
message at preview), never in another exception, a long loop or a huge allocation. Property-based: mutations
of a real generated header (bytes overwritten, counts and sizes replaced by extreme values, truncation).
"""

from __future__ import annotations

import contextlib
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmkube_components.planner.facts import ModelFacts, ModelFactsError
from llmkube_components.planner.gguf import parse_header
from llmkube_components.planner.types import GGUFMetadata, MetadataError, TensorInfo
from testkit.gguf_files import write_dense

HEADER_BUDGET_S = 1.0  # the bound for a 1 MiB header; typical runs take milliseconds


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The header of a generated dense model with a large vocabulary: about 1 MiB of key-values and infos."""
    path = write_dense(tmp_path_factory.mktemp("fuzz") / "m.gguf", n_layer=4, vocab=40000)
    data = path.read_bytes()
    _, _, end = parse_header(lambda offset, length: data[offset : offset + length])
    assert end > 512 * 1024  # a header of the size the bound is about
    return data[:end]


def read_facts(data: bytes) -> None:
    fields, tensors, _ = parse_header(lambda offset, length: data[offset : offset + length], source="fuzz")
    facts = ModelFacts.from_metadata(GGUFMetadata("fuzz", fields, tensors))
    sum(t.nbytes for t in facts.tensors)  # what the memory plan adds up


def check(data: bytes) -> None:
    started = time.process_time()
    with contextlib.suppress(MetadataError, ModelFactsError):  # the reader's own errors: clean at preview
        read_facts(data)
    assert time.process_time() - started < HEADER_BUDGET_S


EXTREMES = [0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 6_500_000]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_mutated_header_ends_in_the_readers_own_error(header: bytes, data: st.DataObject) -> None:
    mutated = bytearray(header)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        # Anywhere, or where the structure is: the counts and key-values at the start, the tensor infos at the end.
        at = data.draw(
            st.one_of(
                st.integers(0, len(mutated) - 8),
                st.integers(0, 4096),
                st.integers(len(mutated) - 4096, len(mutated) - 8),
            ),
            label="offset",
        )
        if data.draw(st.booleans(), label="as a count"):
            value = data.draw(st.sampled_from(EXTREMES), label="value")
            mutated[at : at + 8] = struct.pack("<Q", value)
        else:
            mutated[at] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        mutated = mutated[: data.draw(st.integers(0, len(mutated)), label="length")]
    check(bytes(mutated))


def _with_field(header: bytes, key: str, value: int) -> bytes:
    """The header with the uint32 or uint64 value of key ``key`` replaced (same width)."""
    name = key.encode()
    at = header.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    (vtype,) = struct.unpack_from("<I", header, at)
    fmt = {4: "<I", 10: "<Q"}[vtype]
    out = bytearray(header)
    struct.pack_into(fmt, out, at + 4, value % (1 << (8 * struct.calcsize(fmt))))
    return bytes(out)


@pytest.mark.parametrize("value", [0, 6_500_000, 2**32 - 1])
def test_an_absurd_block_count_is_refused_quickly(header: bytes, value: int) -> None:
    mutated = _with_field(header, "qwen3.block_count", value)
    with pytest.raises(ModelFactsError, match="block_count"):
        read_facts(mutated)
    check(mutated)


def test_a_tensor_with_a_zero_dimension_has_no_bytes() -> None:
    # It used to divide by zero (a Python traceback at preview).
    assert TensorInfo("t", "F32", (0, 4)).nbytes == 0
    assert TensorInfo("t", "Q4_K", (256, 0)).nbytes == 0


def test_a_file_that_is_not_gguf_is_described_without_its_content(tmp_path: Path) -> None:
    # The planner reads local paths on the Pulumi machine: never echo what they hold (/etc/shadow, keys).
    secret = b"root:$6$saltsalt$hash:19000:0:99999:7:::\n"
    with pytest.raises(MetadataError) as info:
        parse_header(lambda offset, length: secret[offset : offset + length], source="file:///etc/shadow")
    assert "root" not in str(info.value) and "$6$" not in str(info.value)
    assert str(info.value).startswith("file:///etc/shadow: not a GGUF file")
