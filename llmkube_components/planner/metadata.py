"""Reading GGUF metadata: local files and HTTP ranges, split files merged, parsed headers cached.

The bytes go to ``gguf.parse`` (the format). Reading costs, and how they stay low:

- http(s) and ``hf://`` sources are read with ``Range: bytes=`` requests; redirects are followed (a Hugging
  Face ``resolve/`` URL redirects to a CDN) and later ranges go straight to where the first one landed.
- Parsed headers are cached as JSON in ``<cache dir>/gguf/`` (``cache_dir``, else ``~/.cache/llmkube``; the
  stack program and the CLI pass the run's settings), one file per URL or path, with the ETag and size the
  server reported. A cached URL is trusted without any request: model URLs that pin a revision never
  change, and even a branch URL (``resolve/main/...``) rarely gets a different file under the same name,
  while every ``pulumi preview`` would otherwise pay a round trip per model. ``revalidate=True``
  (``LLMKUBE_GGUF_REVALIDATE=1``) asks the server instead (one conditional range request: ``If-None-Match``
  with the cached ETag; an unchanged file costs that request only, plus a redirect where the URL has one).
  Local files are checked by size and modification time, which costs no request.
- Every socket operation has the timeout; a whole file's header must also arrive within
  ``TOTAL_TIMEOUT_FACTOR`` times it, so a server that trickles bytes cannot hang a preview. (Name resolution
  is the one step Python's sockets cannot bound.)

"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, build_opener

from ..api.base import format_bytes
from ..settings import default_cache_dir
from ..sources import SourceError, parse_source, sibling_url
from .gguf import FormatError, Header, MetadataError, MiB, parse
from .types import GGUFMetadata, TensorInfo

Progress = Callable[[str], None]

TOTAL_TIMEOUT_FACTOR: Final = 12
# Bump when what a cache entry holds changes (the parser's output or the entry's layout): old entries are
# then ignored and rewritten.
CACHE_FORMAT: Final = 1
USER_AGENT: Final = "llmkube-planner (GGUF metadata reader)"

# llama.cpp's split naming (llama_split_path): <prefix>-00001-of-00003.gguf, numbers from 1.
SPLIT_NAME: Final = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


# ---------------------------------------------------------------------------------------------------------
# Sources: local files and HTTP ranges
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    """One file to read: a local path or an http(s) URL."""

    path: str | None = None
    url: str | None = None

    @property
    def key(self) -> str:
        return self.url if self.url is not None else f"file:{os.path.realpath(self.path or '')}"

    @property
    def display(self) -> str:
        return self.url if self.url is not None else str(self.path)

    @property
    def name(self) -> str:
        if self.url is not None:
            return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])
        return os.path.basename(self.path or "")

    def sibling(self, rel: str) -> _Location:
        """A file beside this one (``rel`` relative to its directory), as the downloader places further files."""
        if self.url is not None:
            return _Location(url=sibling_url(self.url, rel))
        return _Location(path=os.path.join(os.path.dirname(self.path or ""), rel))


def _locate(source: str, files: Sequence[str] = ()) -> _Location:
    try:
        parsed = parse_source(source)
    except SourceError as exc:
        raise MetadataError(source, exc.reason) from None
    if parsed.scheme == "s3":
        raise MetadataError(
            source,
            "an s3:// model is read with credentials only its download container gets (sourceSecretRef); its "
            "metadata cannot be read at plan time: set catalog",
        )
    if parsed.names_directory(files):
        if not files:
            raise MetadataError(source, "names no file: a repository's model file is the first of files")
        return _Location(url=parsed.file_url(files[0], files))
    if parsed.url is not None:
        # The URL the downloader fetches, so the planner reads the file the pod will load.
        return _Location(url=parsed.url)
    if parsed.scheme == "pvc":
        raise MetadataError(
            source, "a pvc:// model lives on a claim inside the cluster; its metadata cannot be read at plan time"
        )
    return _Location(path=os.path.expanduser(parsed.path))


class _NotModified(Exception):
    """The server says the cached entry is still the file (304, or the same ETag and size)."""


class _HttpReader:
    """``read(offset, length)`` over HTTP range requests, following redirects, with bounded time."""

    def __init__(self, url: str, timeout: float, progress: Progress, cached: dict[str, Any] | None) -> None:
        self.origin = url
        self.url = url
        self.timeout = timeout
        self.deadline = time.monotonic() + TOTAL_TIMEOUT_FACTOR * timeout
        self.progress = progress
        self.cached = cached  # an entry to revalidate: its ETag is sent as If-None-Match
        self.requests = 0
        self.received = 0
        self.etag: str | None = None
        self.size: int | None = None
        self.ignored_range = False
        self._stream: http.client.HTTPResponse | None = None
        self._stream_pos = 0
        self._opener = build_opener()

    def fail(self, message: str) -> MetadataError:
        return MetadataError(self.origin, message)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def read(self, offset: int, length: int) -> bytes:
        if self._stream is not None:
            return self._from_stream(offset, length)
        if self.size is not None:
            if offset >= self.size:
                return b""
            length = min(length, self.size - offset)
        resp = self._open(offset, length)
        if resp is None:  # 416: the range starts at or after the end of the file
            return b""
        try:
            self.url = resp.geturl() or self.url
            self.etag = resp.headers.get("ETag")
            if resp.status == 206:
                content_range = resp.headers.get("Content-Range", "")
                m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", content_range)
                if not m:
                    raise self.fail(f"a 206 response with an unreadable Content-Range {content_range!r}")
                start, total = int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))
                if start != offset:
                    raise self.fail(f"asked for bytes from {offset}, the server sent bytes from {start}")
                self.size = total
                self._check_unchanged()
                return self._body(resp, length)
            # Any other 2xx: the server ignored Range and sends the whole file from byte 0. Read on from that
            # one response as the parser needs bytes and close it when the header is parsed.
            self.ignored_range = True
            length_header = resp.headers.get("Content-Length")
            self.size = int(length_header) if length_header and length_header.isdigit() else None
            self._check_unchanged()
            self.progress(
                f"{self.origin}: the server ignored the Range header and sends the whole file"
                + (f" ({format_bytes(self.size)})" if self.size is not None else "")
                + "; reading only the header from it"
            )
            self._stream, resp = resp, None
            self._stream_pos = 0
            return self._from_stream(offset, length)
        finally:
            if resp is not None:
                resp.close()

    def _check_unchanged(self) -> None:
        if self.requests != 1 or self.cached is None or not self.etag:
            return
        if self.etag == self.cached.get("etag") and self.size in (None, self.cached.get("size")):
            raise _NotModified

    def _open(self, offset: int, length: int) -> http.client.HTTPResponse | None:
        headers = {
            "Range": f"bytes={offset}-{offset + length - 1}",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        if self.requests == 0 and self.cached is not None and self.cached.get("etag"):
            headers["If-None-Match"] = self.cached["etag"]
        for attempt in (1, 2):
            self._check_deadline()
            self.requests += 1
            try:
                return self._opener.open(Request(self.url, headers=headers), timeout=self.timeout)
            except HTTPError as exc:
                exc.close()
                if exc.code == 304:
                    raise _NotModified from None
                if exc.code == 416:
                    return None
                if attempt == 1 and self.url != self.origin and exc.code in (401, 403, 404, 410):
                    # A redirect target (a signed CDN URL) may expire between ranges: ask the origin again.
                    self.url = self.origin
                    continue
                hint = ""
                if exc.code in (401, 403):
                    hint = ": the file may be private or gated (accept its license on the hub)"
                elif exc.code == 404:
                    hint = ": check the organisation, repository, revision and file name"
                raise self.fail(f"HTTP {exc.code} {exc.reason} from {self.url}{hint}") from None
            except (URLError, OSError, http.client.HTTPException) as exc:
                raise self._network_error(exc) from None
        raise AssertionError("unreachable")

    def _network_error(self, exc: BaseException) -> MetadataError:
        reason = exc.reason if isinstance(exc, URLError) else exc
        host = urlsplit(self.url).netloc
        if isinstance(reason, TimeoutError):
            return self.fail(f"no answer from {host} within {self.timeout:g} s (timeout)")
        return self.fail(f"cannot read from {host}: {reason}")

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.fail(
                f"the header did not arrive within {TOTAL_TIMEOUT_FACTOR * self.timeout:g} s "
                f"({TOTAL_TIMEOUT_FACTOR} x the timeout of {self.timeout:g} s)"
            )

    def _body(self, resp: http.client.HTTPResponse, length: int) -> bytes:
        out = bytearray()
        try:
            while len(out) < length:
                self._check_deadline()
                piece = resp.read1(min(length - len(out), MiB))
                if not piece:
                    break
                out += piece
        except (OSError, http.client.HTTPException) as exc:
            raise self._network_error(exc) from None
        self.received += len(out)
        return bytes(out)

    def _from_stream(self, offset: int, length: int) -> bytes:
        assert self._stream is not None
        if offset < self._stream_pos:
            raise AssertionError("the parser reads forward only")
        while self._stream_pos < offset:  # bytes the parser stepped over
            skipped = self._body(self._stream, min(offset - self._stream_pos, 4 * MiB))
            if not skipped:
                return b""
            self._stream_pos += len(skipped)
        data = self._body(self._stream, length)
        self._stream_pos += len(data)
        return data


# ---------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileHeader:
    """What is kept of one file: its fields and tensors, and notes on how it was read."""

    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    notes: tuple[str, ...] = ()


class _Cache:
    def __init__(self, directory: Path) -> None:
        self.dir = directory / "gguf"

    def _file(self, key: str) -> Path:
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
            return None
        return entry

    def store(self, key: str, header: _FileHeader, **validators: Any) -> None:
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            **validators,
            "fields": header.fields,
            "tensors": [[t.name, t.type, list(t.shape)] for t in header.tensors],
            "notes": list(header.notes),
        }
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Written beside and renamed: a concurrent preview reads the old entry or the new one, never half.
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, separators=(",", ":"))
            os.replace(tmp, self._file(key))
        except OSError:
            pass  # a cache that cannot be written costs time, not correctness


def _from_entry(entry: dict[str, Any]) -> _FileHeader:
    tensors = tuple(TensorInfo(name, type_, tuple(shape)) for name, type_, shape in entry["tensors"])
    return _FileHeader(entry["fields"], tensors, tuple(entry.get("notes", ())))


# ---------------------------------------------------------------------------------------------------------
# read_metadata
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    source: str
    main: _Location
    cache: _Cache
    timeout: float
    revalidate: bool
    progress: Progress

    def file(self, loc: _Location) -> _FileHeader:
        """One file's header; errors name the model's source, and the file if it is a further one."""
        try:
            return self._local(loc) if loc.path is not None else self._remote(loc)
        except MetadataError as exc:
            message = exc.message if loc == self.main else f"{loc.name}: {exc.message}"
            raise MetadataError(self.source, message) from None

    def _local(self, loc: _Location) -> _FileHeader:
        path = loc.path or ""
        try:
            st = os.stat(path)
            entry = self.cache.load(loc.key)
            if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
                return _from_entry(entry)
            with open(path, "rb") as f:

                def read(offset: int, length: int) -> bytes:
                    f.seek(offset)
                    return f.read(length)

                h = parse(read)
        except FormatError as exc:
            raise MetadataError(loc.display, str(exc)) from None
        except FileNotFoundError:
            raise MetadataError(loc.display, "no such file") from None
        except OSError as exc:
            raise MetadataError(loc.display, f"cannot read: {exc.strerror or exc}") from None
        _check_complete(loc, h, st.st_size)
        header = _FileHeader(h.fields, h.tensors)
        self.cache.store(loc.key, header, size=st.st_size, mtime_ns=st.st_mtime_ns)
        return header

    def _remote(self, loc: _Location) -> _FileHeader:
        url = loc.url or ""
        entry = self.cache.load(loc.key)
        if entry is not None and not self.revalidate:
            self.progress(f"{url}: GGUF metadata from the cache")
            return _from_entry(entry)
        reader = _HttpReader(url, self.timeout, self.progress, entry)
        started = time.monotonic()
        try:
            h = parse(reader.read)
        except _NotModified:
            self.progress(f"{url}: unchanged since cached (1 request)")
            assert entry is not None
            return _from_entry(entry)
        except FormatError as exc:
            raise MetadataError(url, str(exc)) from None
        finally:
            reader.close()
        self.progress(
            f"{url}: GGUF header read in {reader.requests} request(s), {format_bytes(reader.received)}, "
            f"{time.monotonic() - started:.2f} s"
        )
        if reader.size is not None:
            _check_complete(loc, h, reader.size)
        notes: tuple[str, ...] = ()
        if reader.ignored_range:
            notes = (
                f"{loc.name}: the server ignored HTTP Range requests; the header was read from the start of "
                "the whole-file response, which was then closed",
            )
        header = _FileHeader(h.fields, h.tensors, notes)
        self.cache.store(loc.key, header, etag=reader.etag, size=reader.size)
        return header


def _check_complete(loc: _Location, h: Header, size: int) -> None:
    if size < h.data_end:
        raise MetadataError(
            loc.display,
            f"truncated: the file has {size} bytes but its tensor data ends at byte {h.data_end} "
            "(an interrupted download?)",
        )


def _split_parts(loc: _Location, first: _FileHeader, files: Sequence[str]) -> tuple[list[_Location], list[str]]:
    """The other files of the model, and notes on files left out."""
    if files:
        gguf = [f for f in files if f.lower().endswith(".gguf")]
        skipped = [f for f in files if not f.lower().endswith(".gguf")]
        notes = [f"{f}: not a .gguf file, not read for metadata" for f in skipped]
        others = [loc.sibling(f) for f in gguf]
        return [other for i, other in enumerate(others) if other != loc and other not in others[:i]], notes
    count = first.fields.get("split.count", 1)
    m = SPLIT_NAME.match(loc.name)
    if m is None:
        if isinstance(count, int) and count > 1:
            raise MetadataError(
                loc.display,
                f"split.count says the model has {count} files, but the name does not follow llama.cpp's "
                "<name>-00001-of-0000N.gguf: list the other files in the model's files",
            )
        return [], []
    n = int(m.group("count"))
    no = int(m.group("no"))
    numbers = [i for i in range(1, n + 1) if i != no]
    return [loc.sibling(f"{m.group('prefix')}-{i:05d}-of-{n:05d}.gguf") for i in numbers], []


def _merge_split_parts(
    source: str, locs: list[_Location], headers: list[_FileHeader]
) -> tuple[dict[str, Any], list[TensorInfo]]:
    count = headers[0].fields.get("split.count", 1)
    if len(headers) == 1 and count == 1:
        return headers[0].fields, list(headers[0].tensors)
    # Order by split.no (the first part carries the model's key-values); check the files belong together.
    numbered = []
    for loc, h in zip(locs, headers, strict=True):
        part_count, no = h.fields.get("split.count"), h.fields.get("split.no")
        if part_count != count or not isinstance(no, int):
            raise MetadataError(
                source,
                f"{loc.name} is not a part of the same split as {locs[0].name} "
                f"(split.count {part_count!r}, split.no {no!r}; expected split.count {count!r})",
            )
        numbered.append((no, loc, h))
    if count != len(headers):
        raise MetadataError(
            source,
            f"split.count says the model has {count} files, {len(headers)} were given "
            f"({', '.join(x.name for x in locs)}): list every further part in the model's files",
        )
    numbered.sort(key=lambda x: x[0])
    if [no for no, _, _ in numbered] != list(range(len(headers))):
        raise MetadataError(
            source, f"split parts numbered {[no for no, _, _ in numbered]}, expected 0..{len(headers) - 1}"
        )
    fields = numbered[0][2].fields
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for _, loc, h in numbered:
        for t in h.tensors:
            if t.name in seen:
                raise MetadataError(source, f"tensor {t.name!r} appears in more than one part ({loc.name})")
            seen.add(t.name)
            tensors.append(t)
    expected = fields.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise MetadataError(source, f"split.tensors.count says {expected} tensors, the parts hold {len(tensors)}")
    return fields, tensors


def read_metadata(
    source: str | os.PathLike[str],
    *,
    files: Sequence[str] = (),
    cache_dir: Path | None = None,
    timeout: float = 10.0,
    progress: Progress | None = None,
    revalidate: bool = False,
) -> GGUFMetadata:
    """The GGUF metadata of a model, all split files merged.

    ``source`` is a Model spec's source: a local path, ``file://``, ``http(s)://`` or ``hf://org/repo[@rev]/file``.
    ``files`` are the model's further files (the spec's ``files``, relative to the source's directory); without
    them a llama.cpp split (``<name>-00001-of-00003.gguf``) is found by its name. ``timeout`` bounds every
    network operation, in seconds. ``progress`` receives one line per file read (requests, bytes, cache hits).
    ``revalidate`` asks the server whether cached URLs changed. ``cache_dir`` defaults to ``~/.cache/llmkube``
    (the entries go in its ``gguf/`` folder).

    Raises MetadataError for anything that keeps the metadata from being read.
    """
    source = os.fspath(source)
    loc = _locate(source, files)
    if parse_source(source).names_directory(files):
        files = files[1:]  # the first is the model file itself
    reading = _Reading(
        source=source,
        main=loc,
        cache=_Cache(Path(cache_dir) if cache_dir is not None else default_cache_dir()),
        timeout=timeout,
        revalidate=revalidate,
        progress=progress or (lambda _message: None),
    )
    first = reading.file(loc)
    others, notes = _split_parts(loc, first, files)
    locs = [loc, *others]
    headers = [first, *(reading.file(other) for other in others)]
    fields, tensors = _merge_split_parts(source, locs, headers)
    for h in headers:
        notes.extend(h.notes)
    return GGUFMetadata(source=source, fields=fields, tensors=tuple(tensors), files=len(headers), notes=tuple(notes))
