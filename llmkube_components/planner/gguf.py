"""The GGUF format: the key-values and tensor infos of a model file's header, parsed from bytes.

A GGUF file starts with everything the planner needs: ``GGUF``, a version, the key-values (architecture,
layer and head counts, the tokenizer) and one info per tensor (name, shape, ggml type), then the tensor data.
The header of a 20 GB model is a few megabytes, so planning reads that much and no more, with a small parser
of its own: no numpy and no gguf package, because planning runs inside ``pulumi preview``. Where the bytes
come from (files, HTTP ranges) and the cache of parsed headers are ``metadata``'s.

One parser for every source: :func:`parse_header` asks a ``read(offset, length)`` callback for bytes, in
chunks that double (2 MiB first, then as much again as was read so far), so a remote header takes a few
range requests and never more than twice what it needs (or the first chunk). Arrays of fixed-size items that
the planner does not keep (token types) are stepped over without being fetched when they lie beyond what was
read.

Long arrays are kept as their length only (``fields["tokenizer.ggml.tokens"] == 151936``), so metadata stays
small: arrays of more than ``LONG_ARRAY`` items, except numeric arrays of up to ``LONG_NUMERIC_ARRAY`` items,
which are per-layer hyperparameters (head counts, sliding-window patterns) of models with many layers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..api.base import format_bytes
from .types import TYPES_BY_ID, MetadataError, TensorInfo

Read = Callable[[int, int], bytes]

MiB: Final = 1024 * 1024
FIRST_CHUNK: Final = 2 * MiB  # the first read; later reads double what was read so far
MAX_HEADER: Final = 512 * MiB  # a header this large is a corrupt file, not a model
MAX_STRING: Final = 64 * MiB
MAX_COUNT: Final = 1 << 32  # tensors, key-values or array items: more means a corrupt count
GGML_MAX_DIMS: Final = 4
LONG_ARRAY: Final = 64
LONG_NUMERIC_ARRAY: Final = 1024
DEFAULT_ALIGNMENT: Final = 32  # general.alignment when the file does not say


# ---------------------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------------------

# GGUF value types (gguf.h enum gguf_type) -> struct format of the scalar ones.
_STRING: Final = 8
_ARRAY: Final = 9
_SCALARS: Final = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMERIC: Final = frozenset(_SCALARS)


class FormatError(Exception):
    """Not a GGUF header, or a broken one; the reader adds the source (MetadataError)."""


@dataclass(frozen=True)
class Header:
    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    header_end: int  # the byte after the last tensor info
    data_end: int  # the byte after the last tensor's data: a shorter file is truncated


class _Cursor:
    """A forward-only view of ``read(offset, length)``: a window of fetched bytes, grown in doubling chunks.

    Bytes before the position are dropped (the parser never goes back), and a skip beyond the window fetches
    nothing: the next fetch starts where the parser needs bytes again.
    """

    def __init__(self, read: Read, first_chunk: int) -> None:
        self._read = read
        self._first_chunk = first_chunk
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0  # file offset of the parser
        self.fetched = 0
        self._eof: int | None = None

    def need(self, n: int) -> int:
        """Make ``n`` bytes from the position available; return their index in ``buf``."""
        end = self.pos + n
        if end > self.base + len(self.buf):
            self._fill(end)
        return self.pos - self.base

    def _fill(self, end: int) -> None:
        if end > MAX_HEADER:
            raise FormatError(
                f"the header would be larger than {format_bytes(MAX_HEADER)}: a corrupt file, not a model"
            )
        buf_end = self.base + len(self.buf)
        keep = self.buf[self.pos - self.base :] if self.pos < buf_end else b""
        start = max(buf_end, self.pos)
        if self._eof is not None and start >= self._eof:
            raise _truncated(self._eof)
        size = max(end - start, self.fetched, self._first_chunk)
        data = self._read(start, size)
        self.fetched += len(data)
        if len(data) < size:
            self._eof = start + len(data)
        self.buf = keep + data
        self.base = self.pos
        if self.base + len(self.buf) < end:
            raise _truncated(self.base + len(self.buf))


def _truncated(at: int) -> FormatError:
    return FormatError(f"truncated: the file ends at byte {at}, inside the GGUF header")


class _Parser:
    def __init__(self, cursor: _Cursor, endian: str) -> None:
        self.c = cursor
        self.e = endian
        self._u32 = struct.Struct(endian + "I").unpack_from
        self._u64 = struct.Struct(endian + "Q").unpack_from

    def u32(self) -> int:
        i = self.c.need(4)
        self.c.pos += 4
        return self._u32(self.c.buf, i)[0]

    def u64(self) -> int:
        i = self.c.need(8)
        self.c.pos += 8
        return self._u64(self.c.buf, i)[0]

    def count(self, what: str) -> int:
        n = self.u64()
        if n > MAX_COUNT:
            raise FormatError(f"implausible {what} {n}: a corrupt header")
        return n

    def string(self) -> str:
        n = self.u64()
        if n > MAX_STRING:
            raise FormatError(f"implausible string length {n} at byte {self.c.pos - 8}: a corrupt header")
        i = self.c.need(n)
        self.c.pos += n
        return self.c.buf[i : i + n].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # The hot loop of a cold read (token and merge lists: ~300k strings), kept free of method calls.
        c, u64 = self.c, self._u64
        buf, base, pos = c.buf, c.base, c.pos
        for _ in range(count):
            if pos + 8 > base + len(buf):
                c.pos = pos
                c.need(8)
                buf, base = c.buf, c.base
            n = u64(buf, pos - base)[0]
            if n > MAX_STRING:
                raise FormatError(f"implausible string length {n} at byte {pos}: a corrupt header")
            pos += 8 + n
        c.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise FormatError(f"unknown GGUF value type {vtype} at byte {self.c.pos - 4}")
        size = struct.calcsize(fmt)
        i = self.c.need(size)
        self.c.pos += size
        return struct.unpack_from(self.e + fmt, self.c.buf, i)[0]

    def array(self) -> Any:
        """A list of values, or for a long array its length only."""
        item = self.u32()
        n = self.count("array length")
        keep = n <= LONG_ARRAY or (item in _NUMERIC and n <= LONG_NUMERIC_ARRAY)
        if item in _SCALARS:
            size = struct.calcsize(_SCALARS[item]) * n
            if not keep:
                self.c.pos += size  # stepped over, fetched only if later bytes share its chunk
                return n
            i = self.c.need(size)
            self.c.pos += size
            return list(struct.unpack_from(f"{self.e}{n}{_SCALARS[item]}", self.c.buf, i))
        if item == _STRING:
            if keep:
                return [self.string() for _ in range(n)]
            self.skip_strings(n)
            return n
        if item == _ARRAY:
            values = [self.array() for _ in range(n)]
            return values if keep else n
        raise FormatError(f"unknown GGUF array item type {item} at byte {self.c.pos - 12}")

    def tensor_info(self) -> tuple[TensorInfo, int]:
        name = self.string()
        n_dims = self.u32()
        if n_dims > GGML_MAX_DIMS:
            raise FormatError(f"tensor {name!r} has {n_dims} dimensions; ggml allows at most {GGML_MAX_DIMS}")
        shape = tuple(self.u64() for _ in range(n_dims))
        type_id = self.u32()
        offset = self.u64()
        ggml = TYPES_BY_ID.get(type_id)
        if ggml is None:
            raise FormatError(
                f"tensor {name!r} has ggml type id {type_id}, unknown to this planner (known: "
                f"{', '.join(sorted(t.name for t in TYPES_BY_ID.values()))}); a newer llama.cpp type?"
            )
        if shape and shape[0] % ggml.block_size:
            raise FormatError(
                f"tensor {name!r}: {shape[0]} values per row is not a whole number of {ggml.name} blocks "
                f"of {ggml.block_size}"
            )
        return TensorInfo(name, ggml.name, shape), offset


def _describe_start(head: bytes) -> str:
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file it points to"
    if head.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        return "an HTML page (a login or error page?)"
    # Never the bytes themselves: the source may be any file on the Pulumi machine (a key, /etc/shadow).
    return "it does not start with the GGUF magic"


def parse(read: Read, first_chunk: int = FIRST_CHUNK) -> Header:
    """The header behind ``read``; FormatError (without the source) for one that is not GGUF or is broken."""
    cursor = _Cursor(read, first_chunk)
    try:
        cursor.need(4)
    except FormatError:
        raise FormatError(f"not a GGUF file: it has only {len(cursor.buf)} bytes") from None
    if cursor.buf[:4] != b"GGUF":
        raise FormatError(f"not a GGUF file: {_describe_start(cursor.buf[:64])}")
    cursor.pos = 4
    version = _Parser(cursor, "<").u32()
    endian = "<"
    if version not in (2, 3) and int.from_bytes(version.to_bytes(4, "little"), "big") in (2, 3):
        endian = ">"  # a big-endian GGUF (s390x builds): same layout, byte-swapped numbers
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version == 1:
        raise FormatError("GGUF version 1 is not supported (llama.cpp dropped it too): convert the model again")
    if version not in (2, 3):
        raise FormatError(f"unsupported GGUF version {version} (known: 2 and 3)")
    p = _Parser(cursor, endian)
    n_tensors = p.count("tensor count")
    n_kv = p.count("key-value count")

    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = p.string()
        fields[key] = p.value(p.u32())

    tensors: list[TensorInfo] = []
    names: set[str] = set()
    data_size = 0
    for _ in range(n_tensors):
        info, offset = p.tensor_info()
        if info.name in names:
            raise FormatError(f"tensor {info.name!r} appears twice")
        names.add(info.name)
        tensors.append(info)
        data_size = max(data_size, offset + info.nbytes)
    header_end = cursor.pos
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_start = -(-header_end // alignment) * alignment
    return Header(fields, tuple(tensors), header_end, data_start + data_size)


def parse_header(
    read: Read, *, source: str = "", first_chunk: int = FIRST_CHUNK
) -> tuple[dict[str, Any], tuple[TensorInfo, ...], int]:
    """Parse a GGUF header through ``read(offset, length) -> bytes``: key-values, tensor infos, header end.

    ``read`` may return fewer bytes than asked only at the end of the file. It is called with growing,
    non-overlapping ranges: ``first_chunk`` bytes first, then as many as were read so far, so a 6 MB header
    takes three calls. Long arrays come back as their length only (see the module's docstring). Raises
    MetadataError (with ``source``) for a file that is not GGUF or ends inside its header.
    """
    try:
        h = parse(read, first_chunk)
    except FormatError as exc:
        raise MetadataError(source, str(exc)) from None
    return h.fields, h.tensors, h.header_end
