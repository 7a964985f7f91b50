"""pydantic's validation errors, turned into config problems that name their path the way users write it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import Problem, config_path
from .base import PATTERN_HINTS

# pydantic error types whose message already says everything; the input value would only repeat it.
_NO_VALUE = {"missing", "llmkube_unknown_field", "extra_forbidden"}


def _loc_parts(loc: tuple[Any, ...]) -> list[str | int]:
    # Union members and tagged choices appear in loc as type names ("str", "function-after[...]");
    # they are not part of the path a user wrote.
    parts: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(part)
        elif isinstance(part, str) and ("[" in part or part in {"str", "int", "dict", "list"}):
            continue
        else:
            parts.append(str(part))
    return parts


def problems_from_validation_error(exc: ValidationError, prefix: str) -> list[Problem]:
    """One Problem per pydantic error, with ``prefix`` (a config path such as ``services.qwen``) in front."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        parts = _loc_parts(err["loc"])
        message = err["msg"]
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "string_pattern_mismatch" and err["ctx"]["pattern"] in PATTERN_HINTS:
            message = f"{err['input']!r} is not {PATTERN_HINTS[err['ctx']['pattern']]}"
        elif err["type"] not in _NO_VALUE and not err["type"].startswith("llmkube_"):
            message = f"{err['input']!r}: {_lower_first(message)}"
        path = config_path(prefix, *parts)
        problems.append(Problem(path, message))
    return sorted(set(problems))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text
