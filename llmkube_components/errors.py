"""The one error type for bad configuration, and the warnings that travel beside it.

Every message reads the same way: the config path first (``llmkube:services.qwen.contextSize``), then the
bad value, then what is allowed or what to do. ``ConfigError`` is a ``pulumi.RunError`` so that the Pulumi
engine prints the message alone, without a Python stack trace, and ``pulumi preview`` exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pulumi import RunError

CONFIG_NAMESPACE = "llmkube"

# The base of every error a user's input can cause: the Pulumi engine prints a RunError's message alone,
# without a Python stack trace. Modules below the components take it from here, never from Pulumi itself.
UserError = RunError


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

    def __str__(self) -> str:
        where = f"{CONFIG_NAMESPACE}:{self.path}" if self.path else CONFIG_NAMESPACE
        return f"{where}: {self.message}"


class ConfigError(UserError):
    """Bad configuration, found before anything deploys. Carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> ConfigError:
        return cls([Problem(path, message)])


def raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise ConfigError(problems)
