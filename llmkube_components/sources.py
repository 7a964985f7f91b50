"""Model sources, parsed once: scheme, host, path, file name, download URL, cache key and credentials.

Every stage that needs to know where a model comes from asks this module: the checks (an hf:// source that
names no file), the planner (which file to read metadata from), the workload builders (what the downloader
fetches, where the file lands, what a pvc:// or local source mounts). One parser, so that all of them agree
on case (URL schemes are case-insensitive, RFC 3986 3.1, as in the operator) and on decoding: an http(s)
URL's path is percent-decoded for the file name; a file:// path is taken as written after the scheme, as the
operator takes it, so that both deliveries mount, and the planner reads, the same node path.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import secret_query_parameter

Scheme = Literal["http", "https", "hf", "file", "path", "pvc"]

CACHE_KEY_LENGTH = 16  # the operator's pkg/cachekey Compute: first 16 hex characters of sha256(source)
FALLBACK_FILE_NAME = "model.gguf"  # the operator's legacy name, for a URL that ends in '/'
HF_HOST = "huggingface.co"


class SourceError(ValueError):
    """A source that cannot be used as written: the source, and ``reason`` (why, and what to write)."""

    def __init__(self, text: str, reason: str, *, colon: bool = False) -> None:
        self.reason = reason
        super().__init__(f"{text!r}{':' if colon else ''} {reason}")


@dataclass(frozen=True)
class ModelSource:
    """One model source as written in a Model spec, and what it means."""

    text: str  # as written: the cache key is computed on it
    scheme: Scheme
    host: str  # http(s) host, hf organisation's host (huggingface.co); "" otherwise
    path: str  # the URL's decoded path, the hf repository file's, the local file's (as written), in the claim
    claim: str = ""  # pvc:// only: the PersistentVolumeClaim
    url: str | None = None  # what the downloader fetches: http(s) as written, hf:// on huggingface.co

    @property
    def on_node(self) -> bool:
        """A path of the node (file:// or an absolute path): mounted into the pod as hostPath."""
        return self.scheme in ("file", "path")

    @property
    def downloaded(self) -> bool:
        """Fetched over the network by the downloader (http(s):// and hf://)."""
        return self.scheme in ("http", "https", "hf")

    @property
    def local(self) -> bool:
        """A file on the node (file:// or an absolute path): mounted from the host and copied into the cache."""
        return self.scheme in ("file", "path")

    @property
    def file_name(self) -> str:
        """The model file's upstream name (split GGUF parts are found by it), or model.gguf for a bare URL."""
        return posixpath.basename(self.path) or FALLBACK_FILE_NAME

    @property
    def cache_key(self) -> str:
        """The cache directory name of the model: the first 16 hex digits of sha256 of the source as written."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:CACHE_KEY_LENGTH]

    def pinned_cache_key(self, sha256s: Mapping[str, str]) -> str:
        """The cache directory name of a model whose files (by path in its directory) are pinned by sha256.

        Nothing pinned: the operator's key (``cache_key``), so both deliveries share the download. Pinned: the
        key also covers every pin, so a file in that directory was checked against exactly these digests by
        whoever published it, and an unpinned model of the same URL (or one pinned to other digests, after an
        upstream change) never shares, nor skips the download for, a file it did not verify. The operator keys
        by the source alone: a pinned model is downloaded once per delivery.
        """
        if not sha256s:
            return self.cache_key
        pins = "".join(f"\n{digest.lower()}  {name}" for name, digest in sorted(sha256s.items()))
        return hashlib.sha256((self.text + pins).encode()).hexdigest()[:CACHE_KEY_LENGTH]

    @property
    def credentials(self) -> list[str]:
        """What of a downloaded source's URL carries a credential: its user information, secret query parameters."""
        if self.url is None:
            return []
        parts = urlsplit(self.url)
        found = ["user information"] if "@" in parts.netloc else []
        # Split on ';' too: some servers take it between parameters, as errors.redact does.
        names = [item.partition("=")[0] for item in re.split("[&;]", parts.query)]
        return found + [f"query parameter {unquote(n)}" for n in dict.fromkeys(names) if secret_query_parameter(n)]


def sibling_url(url: str, rel: str) -> str:
    """The URL of a further file beside the one at ``url`` (a query string belongs to the main file only)."""
    parts = urlsplit(url)
    path = posixpath.join(posixpath.dirname(parts.path), quote(rel))
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@functools.lru_cache(maxsize=256)
def parse_source(text: str) -> ModelSource:
    """Parse a source once; SourceError for one that names no file (hf://org/repo) or has an unknown scheme."""
    scheme, sep, rest = text.partition("://")
    lowered = scheme.lower()
    if not sep:
        if text.startswith("/"):
            return ModelSource(text, "path", "", text)
        raise SourceError(text, "is neither a URL nor an absolute path")
    if lowered in ("http", "https"):
        return _downloaded(text, "https" if lowered == "https" else "http", text)
    if lowered == "hf":
        org, _, after = rest.partition("/")
        repo, _, file = after.partition("/")
        repo, _, revision = repo.partition("@")
        if not (org and repo and file):
            raise SourceError(text, "names no file; write hf://<org>/<repo>/<file>.gguf")
        # hf://org/repo@rev/file pins a revision the way the operator's hf:// repo sources do.
        return _downloaded(text, "hf", f"https://{HF_HOST}/{org}/{repo}/resolve/{revision or 'main'}/{file}")
    if lowered == "file":
        return ModelSource(text, "file", "", rest)
    if lowered == "pvc":
        claim, _, path = rest.partition("/")
        return ModelSource(text, "pvc", "", path, claim=claim)
    raise SourceError(text, "unsupported scheme: use a path, file://, http(s)://, hf:// or pvc://", colon=True)


def on_node(text: str) -> bool:
    """Whether a source is a path of the node (hostPath); False for one that does not parse (reported apart)."""
    try:
        return parse_source(text).on_node
    except SourceError:
        return False


def _downloaded(text: str, scheme: Scheme, url: str) -> ModelSource:
    parts = urlsplit(url)
    return ModelSource(text, scheme, parts.hostname or "", unquote(parts.path), url=url)
