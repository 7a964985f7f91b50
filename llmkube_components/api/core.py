"""The few Kubernetes core types our specs carry, typed so that bad values fail at preview."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .base import ApiModel, crd_schema

# Upstream's CRD takes any string for these (core/v1 validates them on the pod); we check them at preview.
TolerationOperator = Annotated[Literal["Exists", "Equal"], crd_schema({"type": "string"})]
TaintEffect = Annotated[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"], crd_schema({"type": "string"})]


class LocalObjectReference(ApiModel):
    """A reference to an object of the same namespace (core/v1 LocalObjectReference)."""

    name: str = Field("", json_schema_extra={"default": ""}, description="Name of the object.")

    @model_validator(mode="after")
    def _named(self) -> LocalObjectReference:
        # The CRD defaults the name to "" as core/v1 does; a reference to nothing is a mistake at preview.
        if not self.name:
            raise PydanticCustomError("llmkube_rule", "name is required: the object to use", {})
        return self


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = Field(None, description="Taint key the toleration applies to; empty with Exists matches all.")
    operator: TolerationOperator | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value to match with operator Equal.")
    effect: TaintEffect | None = Field(None, description="Taint effect to match; empty matches all effects.")
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
