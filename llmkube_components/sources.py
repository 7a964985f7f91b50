"""Model sources, parsed once: scheme, host, path, file name, download URL, cache key and credentials.

Every stage that needs to know where a model comes from asks this module: the checks (an hf:// source that
names no file), the planner (which file to read metadata from), the workload builders (what the downloader
fetches, where the file lands, what a pvc:// or local source mounts). One parser, so that all of them agree
on case (URL schemes are case-insensitive, RFC 3986 3.1, as in the operator) and on decoding: an http(s)
URL's path is percent-decoded for the file name; a file:// path is taken as written after the scheme, as the
operator takes it, so that both deliveries mount, and the planner reads, the same node path.

Three forms name a place that holds files rather than a file: a Hugging Face repository (hf://org/repo, or
the bare ``owner/name`` id the operator's CRD admits), and an s3:// source given with ``files`` (its key is
then the prefix the files are under, as in the operator). Their model file is the first of ``files``.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import secret_query_parameter

Scheme = Literal["http", "https", "hf", "file", "path", "pvc", "s3"]

CACHE_KEY_LENGTH = 16  # the operator's pkg/cachekey Compute: first 16 hex characters of sha256(source)
FALLBACK_FILE_NAME = "model.gguf"  # the operator's legacy name, for a URL that ends in '/'
HF_HOST = "huggingface.co"
# A bare repository id, as the typed API admits it (api.model.SOURCE_PATTERN's third form): owner/name[/path].
BARE_ID = re.compile(r"^[a-zA-Z0-9][\w\-.]*/[\w\-.]+(/[\w\-.]+)*$")


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
    host: str  # http(s) host, hf organisation's host (huggingface.co), s3 bucket; "" otherwise
    path: str  # the URL's decoded path, the hf repository file's, the local file's (as written), in the claim,
    # "/<key>" of an s3 object
    claim: str = ""  # pvc:// only: the PersistentVolumeClaim
    # What the downloader fetches: http(s) as written, hf:// on huggingface.co (a repository: its resolve root,
    # ending in '/'), s3://<bucket>/<key, percent-encoded> (the downloader signs it for the endpoint it is given)
    url: str | None = None
    repository: bool = False  # hf://org/repo or a bare owner/name: a repository, whose files come from `files`

    @property
    def on_node(self) -> bool:
        """A path of the node (file:// or an absolute path): mounted into the pod as hostPath."""
        return self.scheme in ("file", "path")

    @property
    def downloaded(self) -> bool:
        """Fetched over the network by the downloader (http(s)://, hf://, bare repository ids and s3://)."""
        return self.scheme in ("http", "https", "hf", "s3")

    @property
    def local(self) -> bool:
        """A file on the node (file:// or an absolute path): mounted from the host and copied into the cache."""
        return self.scheme in ("file", "path")

    @property
    def file_name(self) -> str:
        """The model file's upstream name (split GGUF parts are found by it), or model.gguf for a bare URL."""
        return posixpath.basename(self.path) or FALLBACK_FILE_NAME

    def names_directory(self, files: Sequence[str] | None) -> bool:
        """Whether the source names where the model's files are rather than its file: a repository, or an s3://
        source with files (its key is their prefix, as in the operator). The model file is then files[0]."""
        return self.repository or (self.scheme == "s3" and bool(files))

    def file_url(self, rel: str, files: Sequence[str] | None) -> str:
        """The URL of the file ``rel`` (a path relative to the model's directory upstream) for the downloader."""
        assert self.url is not None, "only a downloaded source has URLs"
        if self.repository:
            return self.url + quote(rel)
        if self.scheme == "s3" and files:
            return f"{self.url.rstrip('/')}/{quote(rel)}"
        return sibling_url(self.url, rel)

    @property
    def cache_key(self) -> str:
        """The cache directory name of the model: the first 16 hex digits of sha256 of the source as written."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:CACHE_KEY_LENGTH]

    def pinned_cache_key(self, sha256s: Mapping[str, str], companions: Sequence[str] = ()) -> str:
        """The cache directory name of a model whose files (by path in its directory) are pinned by sha256.

        Nothing pinned: the operator's key (``cache_key``), so both deliveries share the download. Pinned: the
        key also covers every pin, so a file in that directory was checked against exactly these digests by
        whoever published it, and an unpinned model of the same URL (or one pinned to other digests, after an
        upstream change) never shares, nor skips the download for, a file it did not verify. The operator keys
        by the source alone: a pinned model is downloaded once per delivery.

        ``companions``: URLs of files staged in the directory from elsewhere (an mmproj given as a URL, an
        llmkube extension): covered too, so that two models of one source with different projectors of one
        name never share a directory.
        """
        if not sha256s and not companions:
            return self.cache_key
        pins = "".join(f"\n{digest.lower()}  {name}" for name, digest in sorted(sha256s.items()))
        pins += "".join(f"\nfrom {url}" for url in sorted(companions))
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
        if BARE_ID.match(text):
            # owner/name[/file]: a Hugging Face repository id, as upstream's CRD pattern admits; fetched like
            # hf://owner/name/file (the operator leaves a bare id to runtimes that download it themselves).
            return _hugging_face(text, text)
        raise SourceError(text, "is neither a URL, an absolute path, nor a repository id (owner/name/file.gguf)")
    if lowered in ("http", "https"):
        return _downloaded(text, "https" if lowered == "https" else "http", text)
    if lowered == "hf":
        return _hugging_face(text, rest)
    if lowered == "s3":
        bucket, _, key = rest.partition("/")
        if not (bucket and key.strip("/")):
            raise SourceError(text, "names no object; write s3://<bucket>/<key>")
        # Path style, as the operator's downloader: <endpoint>/<bucket>/<key>, the key percent-encoded once
        # (what SigV4 signs as the canonical URI of an S3 request).
        return ModelSource(text, "s3", bucket, "/" + key, url=f"s3://{bucket}/{quote(key)}")
    if lowered == "file":
        return ModelSource(text, "file", "", rest)
    if lowered == "pvc":
        claim, _, path = rest.partition("/")
        return ModelSource(text, "pvc", "", path, claim=claim)
    raise SourceError(
        text, "unsupported scheme: use a path, a repository id, file://, http(s)://, hf://, s3:// or pvc://", colon=True
    )


def on_node(text: str) -> bool:
    """Whether a source is a path of the node (hostPath); False for one that does not parse (reported apart)."""
    try:
        return parse_source(text).on_node
    except SourceError:
        return False


def is_url(text: str) -> bool:
    """Whether a file reference is a URL (scheme://...) rather than a path relative to the model's directory."""
    return "://" in text


def _hugging_face(text: str, rest: str) -> ModelSource:
    """hf://org/repo[@rev][/file] or a bare org/repo[/file]: a file of a repository on huggingface.co, or the
    repository itself (its files come from the Model's files)."""
    org, _, after = rest.partition("/")
    repo, _, file = after.partition("/")
    repo, _, revision = repo.partition("@")
    if not (org and repo):
        raise SourceError(text, "names no repository; write hf://<org>/<repo>/<file>.gguf")
    # hf://org/repo@rev/file pins a revision the way the operator's hf:// repo sources do.
    root = f"https://{HF_HOST}/{org}/{repo}/resolve/{revision or 'main'}/"
    if not file:
        return ModelSource(text, "hf", HF_HOST, urlsplit(root).path, url=root, repository=True)
    return _downloaded(text, "hf", root + file)


def _downloaded(text: str, scheme: Scheme, url: str) -> ModelSource:
    parts = urlsplit(url)
    return ModelSource(text, scheme, parts.hostname or "", unquote(parts.path), url=url)
