"""The one error type for bad configuration, and the warnings that travel beside it.

Every message reads the same way: the config path first (``llmkube:services.qwen.contextSize``), then the
bad value, then what is allowed or what to do. ``ConfigError`` is a ``pulumi.RunError`` so that the Pulumi
engine prints the message alone, without a Python stack trace, and ``pulumi preview`` exits non-zero. A message
never carries a credential: every URL in it is redacted (``redact``), whoever wrote the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from pulumi import RunError

CONFIG_NAMESPACE = "llmkube"

# The base of every error a user's input can cause: the Pulumi engine prints a RunError's message alone,
# without a Python stack trace. Modules below the components take it from here, never from Pulumi itself.
UserError = RunError


# Query parameters that carry a credential: signed URLs (S3 X-Amz-Signature and X-Amz-Security-Token, GCS
# X-Goog-Signature, Azure SAS sig) and tokens or keys passed in the query. A name is secret when it is one of
# SECRET_QUERY_NAMES or contains one of SECRET_QUERY_WORDS (case-insensitive).
SECRET_QUERY_NAMES: Final = frozenset({"sig", "key", "apikey", "api_key", "auth", "pwd", "pass"})
SECRET_QUERY_WORDS: Final = ("token", "secret", "signature", "credential", "password")
REDACTED: Final = "***"
_URL: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_USERINFO: Final = re.compile(r"^([^:/]+://)[^/?#]*@")
_QUERY_PARAMETER: Final = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def secret_query_parameter(name: str) -> bool:
    """Whether a URL query parameter of this name carries a credential."""
    lowered = unquote(name).lower()
    return lowered in SECRET_QUERY_NAMES or any(word in lowered for word in SECRET_QUERY_WORDS)


def redact(text: str) -> str:
    """``text`` with the user information and the credential query values of every URL in it replaced by ***."""

    def url(match: re.Match[str]) -> str:
        hidden = _USERINFO.sub(rf"\g<1>{REDACTED}@", match.group(0))
        return _QUERY_PARAMETER.sub(
            lambda p: f"{p[1]}{p[2]}={REDACTED}" if secret_query_parameter(p[2]) else p[0], hidden
        )

    return _URL.sub(url, text)


def config_path(*parts: str | int) -> str:
    """Join path parts as users write them: ``services.qwen.tensorOverrides[0]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "":
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about the configuration, at a config path (without the ``llmkube:`` namespace)."""

    path: str
    message: str

    def __post_init__(self) -> None:
        # Messages reach preview output, logs and CI artefacts: a credential in a URL must never be among them.
        object.__setattr__(self, "message", redact(self.message))

    def __str__(self) -> str:
        where = f"{CONFIG_NAMESPACE}:{self.path}" if self.path else CONFIG_NAMESPACE
        return f"{where}: {self.message}"

    def within(self, label: str) -> str:
        """The problem as a component argument's: ``InferenceService chat: spec.contextSize: ...``."""
        return f"{label}: {self.path}: {self.message}" if self.path else f"{label}: {self.message}"


class ConfigError(UserError):
    """Bad configuration, found before anything deploys. Carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem], *, label: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.label = label  # the component whose arguments these paths are, or None for the stack config
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        lines = [str(p) if label is None else p.within(label) for p in self.problems]
        super().__init__("\n".join(lines))

    def relabeled(self, label: str, paths: Callable[[str], str]) -> ConfigError:
        """The same problems told as a component's: ``paths`` turns each config path into an argument path."""
        return ConfigError([Problem(paths(p.path), p.message) for p in self.problems], label=label)

    @classmethod
    def at(cls, path: str, message: str) -> ConfigError:
        return cls([Problem(path, message)])


def raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise ConfigError(problems)
