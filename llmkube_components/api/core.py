"""The few Kubernetes core types our specs carry, typed so that bad values fail at preview."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from .base import ApiModel


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = Field(None, description="Taint key the toleration applies to; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None,
        json_schema_extra={"format": "int64"},
        description="How long a NoExecute toleration keeps the pod bound after the taint appears.",
    )


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether a toleration (core/v1 JSON) tolerates a taint, by the scheduler's rule (ToleratesTaint).

    An empty effect matches every effect; an empty key with Exists matches every taint; Exists matches any
    value of its key, Equal (the default) only its own value.
    """
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if key == "":
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    return operator == "Exists" or (operator == "Equal" and (toleration.get("value") or "") == taint.get("value", ""))
