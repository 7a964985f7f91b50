"""The planner's shared vocabulary: ggml tensor types and their sizes, tensors, a GGUF file's metadata, and
the error for metadata that cannot be read.

Kept free of numpy and of the gguf package: metadata is read from a few megabytes of header, often over
HTTP range requests, and planning runs inside ``pulumi preview``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class GgmlType:
    name: str
    id: int
    block_size: int  # elements per block
    type_size: int  # bytes per block


# ggml's tensor types (ggml.h enum ggml_type, with block and byte sizes from ggml's type traits).
# tests/test_planner_types.py checks this table against the gguf package's GGML_QUANT_SIZES.
GGML_TYPES: tuple[GgmlType, ...] = (
    GgmlType("F32", 0, 1, 4),
    GgmlType("F16", 1, 1, 2),
    GgmlType("Q4_0", 2, 32, 18),
    GgmlType("Q4_1", 3, 32, 20),
    GgmlType("Q5_0", 6, 32, 22),
    GgmlType("Q5_1", 7, 32, 24),
    GgmlType("Q8_0", 8, 32, 34),
    GgmlType("Q8_1", 9, 32, 40),
    GgmlType("Q2_K", 10, 256, 84),
    GgmlType("Q3_K", 11, 256, 110),
    GgmlType("Q4_K", 12, 256, 144),
    GgmlType("Q5_K", 13, 256, 176),
    GgmlType("Q6_K", 14, 256, 210),
    GgmlType("Q8_K", 15, 256, 292),
    GgmlType("IQ2_XXS", 16, 256, 66),
    GgmlType("IQ2_XS", 17, 256, 74),
    GgmlType("IQ3_XXS", 18, 256, 98),
    GgmlType("IQ1_S", 19, 256, 50),
    GgmlType("IQ4_NL", 20, 32, 18),
    GgmlType("IQ3_S", 21, 256, 110),
    GgmlType("IQ2_S", 22, 256, 82),
    GgmlType("IQ4_XS", 23, 256, 136),
    GgmlType("I8", 24, 1, 1),
    GgmlType("I16", 25, 1, 2),
    GgmlType("I32", 26, 1, 4),
    GgmlType("I64", 27, 1, 8),
    GgmlType("F64", 28, 1, 8),
    GgmlType("IQ1_M", 29, 256, 56),
    GgmlType("BF16", 30, 1, 2),
    GgmlType("TQ1_0", 34, 256, 54),
    GgmlType("TQ2_0", 35, 256, 66),
    GgmlType("MXFP4", 39, 32, 17),
)
TYPES_BY_ID: Mapping[int, GgmlType] = {t.id: t for t in GGML_TYPES}
TYPES_BY_NAME: Mapping[str, GgmlType] = {t.name: t for t in GGML_TYPES}


def ggml_type(name_or_id: str | int) -> GgmlType:
    table = TYPES_BY_ID if isinstance(name_or_id, int) else TYPES_BY_NAME
    key = name_or_id if isinstance(name_or_id, int) else str(name_or_id).upper()
    try:
        return table[key]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown ggml tensor type {name_or_id!r}") from None


def row_bytes(type_name: str, n_elements: int) -> int:
    """Bytes of ``n_elements`` values of a type (whole blocks; ggml rows are block-aligned)."""
    t = ggml_type(type_name)
    blocks = -(-n_elements // t.block_size)
    return blocks * t.type_size


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: its name, ggml type and shape (ne[0] first, the contiguous dimension)."""

    name: str
    type: str
    shape: tuple[int, ...]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @functools.cached_property
    def nbytes(self) -> int:
        # Rows of ne[0] elements are stored in whole blocks; a tensor with no elements has no bytes.
        if not self.shape or 0 in self.shape:
            return 0
        rows = self.n_elements // self.shape[0]
        return rows * row_bytes(self.type, self.shape[0])


@dataclass(frozen=True)
class GGUFMetadata:
    """What the planner needs of a GGUF model (all split files merged): key-values and tensor infos."""

    source: str
    fields: Mapping[str, Any]  # every key-value; long arrays (token lists) are kept as their length only
    tensors: tuple[TensorInfo, ...]
    files: int = 1  # how many split files were merged
    notes: tuple[str, ...] = field(default=())  # how it was obtained, e.g. "catalog estimate"

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture", ""))

    def arch(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key: ``arch("block_count")`` reads ``<architecture>.block_count``."""
        return self.fields.get(f"{self.architecture}.{key}", default)


class MetadataError(UserError):
    """A model's GGUF metadata could not be read: the source, then what went wrong and what to do.

    A ``pulumi.RunError``, like ``ConfigError``, so that an unhandled one prints as its message alone.
    """

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}" if source else message)
