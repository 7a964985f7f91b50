"""The run's settings: one object, built once at the edge (the stack program, the CLI) and passed down.

Nothing below the edge reads the environment. ``Settings.from_env`` is the one place that turns the
``LLMKUBE_*`` variables into settings, with one rule for what counts as true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The environment variables the edge reads, and what each sets.
OFFLINE_ENV = "LLMKUBE_OFFLINE"  # plan from the catalog only, without reading model files over the network
TIMEOUT_ENV = "LLMKUBE_METADATA_TIMEOUT"  # seconds for each network operation of the metadata reader
REVALIDATE_ENV = "LLMKUBE_GGUF_REVALIDATE"  # ask model hosts whether cached metadata is still current
NODE_CHECK_ENV = "LLMKUBE_NODE_CHECK"  # read the target cluster's nodes at preview (on by default)
CACHE_DIR_ENV = "LLMKUBE_CACHE_DIR"  # where metadata (gguf/) is cached; default ~/.cache/llmkube

DEFAULT_TIMEOUT = 10.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "llmkube"


@dataclass(frozen=True)
class Settings:
    """How this run plans and checks; the defaults are those of an unset environment."""

    offline: bool = False  # no network for model metadata (local files are still read)
    metadata_timeout: float = DEFAULT_TIMEOUT  # seconds, per network operation
    revalidate: bool = False  # revalidate cached metadata of http(s) sources with their hosts
    node_check: bool = True  # judge each service's pod against the target cluster's nodes
    cache_dir: Path = field(default_factory=default_cache_dir)
    # What the plan's speed figures answer (llmkube plan --depth / --prompt): decode with this many tokens
    # already in context, and the time to first token of a prompt this long.
    decode_depth: int = 0
    prompt_tokens: int = 512
    # The process environment, for what inherits it: KUBECONFIG and kubeconfig exec plugins (node check).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``LLMKUBE_*`` variables; a value that is neither true nor false is a ValueError."""
        defaults = cls()
        timeout = environ.get(TIMEOUT_ENV, "").strip()
        try:
            metadata_timeout = float(timeout) if timeout else defaults.metadata_timeout
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={timeout!r} is not a number of seconds") from None
        cache_dir = environ.get(CACHE_DIR_ENV, "").strip()
        return cls(
            offline=flag(environ, OFFLINE_ENV, defaults.offline),
            metadata_timeout=metadata_timeout,
            revalidate=flag(environ, REVALIDATE_ENV, defaults.revalidate),
            node_check=flag(environ, NODE_CHECK_ENV, defaults.node_check),
            cache_dir=Path(cache_dir).expanduser() if cache_dir else defaults.cache_dir,
            environ=dict(environ),
        )


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """The one rule for booleans in the environment: 1/true/yes/on, 0/false/no/off (any case).

    Unset or empty: the default. Anything else is a ValueError naming the variable.
    """
    if name not in environ:
        return default
    value = environ[name].strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={environ[name]!r} is neither true (1, true, yes, on) nor false (0, false, no, off)")
