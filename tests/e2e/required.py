"""End-to-end tests need real tools: in CI a missing one fails the run, elsewhere its module is skipped."""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

T = TypeVar("T")


def required(found: T | None, why: str) -> T:
    """``found``, or stop the calling test module: a failure in CI (tools/test builds every tool first), a
    skip saying ``why`` elsewhere. Call it at module level."""
    if found:
        return found
    if os.environ.get("CI"):
        raise RuntimeError(f"{why} (in CI a missing tool is a failure, never a skip)")
    pytest.skip(why, allow_module_level=True)
