"""The one error type for bad configuration, and the warnings that travel beside it.

Every message reads the same way: the config path first (``llmkube:services.qwen.contextSize``), then the
bad value, then what is allowed or what to do. ``ConfigError`` is a ``pulumi.RunError`` so that the Pulumi
engine prints the message alone, without a Python stack trace, and ``pulumi preview`` exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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
