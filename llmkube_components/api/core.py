"""The few Kubernetes core types our specs carry, typed so that bad values fail at preview."""

from __future__ import annotations

from typing import Literal

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
