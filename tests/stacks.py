"""Load a stack config (the ``llmkube:`` keys, without the prefix) through the pipeline, as a test sees it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from llmkube_components import pipeline
from llmkube_components.checks import spec_problems
from llmkube_components.errors import raise_if_any
from llmkube_components.planner.plan import ServicePlan
from llmkube_components.resolve import ResolvedStack, resolve_stack, validate_stack
from llmkube_components.settings import Settings


@dataclass(frozen=True)
class Loaded:
    """A resolved (and, unless asked not to, planned) stack: the ResolvedStack's attributes and the plans."""

    stack: ResolvedStack
    plans: dict[str, ServicePlan] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stack, name)


def load_stack(raw: dict[str, Any], *, plan: bool = True, settings: Settings | None = None) -> Loaded:
    """Every stage up to the builders; ConfigError naming every problem. Settings from the test's environment."""
    if not plan:
        stack = resolve_stack(validate_stack(raw))
        raise_if_any(spec_problems(stack))
        return Loaded(stack)
    planned = pipeline.load(raw, settings or Settings.from_env(os.environ))
    return Loaded(planned.stack, planned.plans)
