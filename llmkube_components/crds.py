"""CustomResourceDefinitions of the LLMKube API, generated from the pydantic models in ``api/``.

The spec schemas are derived, never written: field names, enums, bounds, descriptions and cross-field rules
come from ``ModelSpec`` and ``InferenceServiceSpec``. What the API models do not describe lives here: the CRD
names, printer columns and subresources, and the status the LLMKube controller writes (facts of the
operator v0.9.19 API).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    import jsonschema

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .api import ApiModel, InferenceServiceSpec, ModelSpec
from .api.base import LLMKUBE_ONLY
from .api.status import InferenceServicePhase, InferenceServiceStatus, ModelPhase, ModelStatus
from .errors import config_path
from .meta import MANAGED_BY, PART_OF, recommended_labels

GROUP = "inference.llmkube.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CrdKind = Literal["Model", "InferenceService"]

# The lifecycle phases the LLMKube controller (v0.9.19) writes to status.phase.
MODEL_PHASES: tuple[str, ...] = typing.get_args(ModelPhase)
INFERENCE_SERVICE_PHASES: tuple[str, ...] = typing.get_args(InferenceServicePhase)

DEFAULT_LABELS = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": MANAGED_BY}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# The keywords of apiextensions.k8s.io/v1 JSONSchemaProps this generator emits, in the order it writes them.
# Anything else pydantic produces is a type the generator does not know how to map: it fails, not guesses.
_CRD_KEYWORDS = (
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
# JSON Schema annotations with no place (or no use) in a CRD.
_DROPPED = frozenset({"title", "examples", "deprecated"})


class CrdSchemaError(ValueError):
    """A type in api/ that a structural CRD schema cannot express; the message names the field."""


# ---------------------------------------------------------------------------------------------------------
# Structural OpenAPI schema from a pydantic model
# ---------------------------------------------------------------------------------------------------------


class _CrdJsonSchema(GenerateJsonSchema):
    """pydantic's generator, plus each model class's CEL rules at that class's object level.

    Hooking the generator ties every rule to the class that produced the schema, so a ``$defs`` name that
    pydantic disambiguated (two classes of the same name) cannot attach a rule to the wrong object.
    """

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        rules = getattr(schema["cls"], "cel_rules", ())
        if rules:
            json_schema["x-kubernetes-validations"] = [{"rule": rule, "message": message} for rule, message in rules]
        return json_schema


def openapi_schema(model_cls: type[ApiModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of an API model, as a CRD's ``openAPIV3Schema`` wants it.

    Every ``$ref`` is inlined, optional fields are simply not required, llmkube-only fields are left out
    and each model's ``cel_rules`` become ``x-kubernetes-validations``. Raises ``CrdSchemaError`` for a
    type a structural schema cannot express (a union, a recursive model, a set, a tuple).
    """
    raw = model_cls.model_json_schema(by_alias=True, mode="validation", schema_generator=_CrdJsonSchema)
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, model_cls.__name__, ())


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any], path: str, refs: tuple[str, ...]) -> dict[str, Any]:
    out = dict(node)
    if out.get("default", ...) is None:
        del out["default"]  # an optional field: the API server prunes nulls, "unset" needs no default
    if "$ref" in out:
        name = out.pop("$ref").removeprefix("#/$defs/")
        if name in refs:
            raise CrdSchemaError(f"{path}: {name} contains itself; a CRD schema cannot express a recursive type")
        # Keys beside the $ref (the field's description) win over the class's own.
        return _structural({**defs[name], **out}, defs, path, (*refs, name))
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            options = out.pop(key)
            chosen = [o for o in options if o != {"type": "null"}]
            if len(chosen) != 1 or (key == "oneOf" and len(options) > 1):
                raise CrdSchemaError(
                    f"{path}: a union ({_describe_union(options)}) has no structural CRD schema; give the field "
                    "one type, or mark it llmkube_only() if the CRD does not carry it"
                )
            return _structural({**chosen[0], **out}, defs, path, refs)
    for key in _DROPPED:
        out.pop(key, None)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("uniqueItems"):
        raise CrdSchemaError(f"{path}: a set (uniqueItems) is forbidden in CRD schemas; use a list")
    out.pop("uniqueItems", None)
    if "prefixItems" in out:
        raise CrdSchemaError(f"{path}: a tuple has no structural CRD schema; use a list or a model")

    if not out.get("type") and not (out.keys() - {"description", "default"}):
        # Any: kept as written.
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out
    kind = out.get("type")
    if kind not in _TYPES:
        raise CrdSchemaError(f"{path}: every node of a structural schema needs one type, got {kind!r}")

    if kind == "object":
        _object(out, defs, path, refs)
    elif kind == "array":
        if "items" not in out:
            raise CrdSchemaError(f"{path}: a list needs an item type")
        out["items"] = _structural(out["items"], defs, f"{path}[*]", refs)
    elif kind in ("integer", "number"):
        _exclusive_bounds(out)
        if kind == "integer" and "format" not in out:
            bounds = [out[k] for k in ("minimum", "maximum") if k in out]
            out["format"] = "int32" if all(_INT32_MIN <= b <= _INT32_MAX for b in bounds) else "int64"

    unknown = out.keys() - set(_CRD_KEYWORDS)
    if unknown:
        raise CrdSchemaError(f"{path}: no CRD equivalent for JSON schema keyword(s) {', '.join(sorted(unknown))}")
    return {key: out[key] for key in _CRD_KEYWORDS if key in out}


def _object(out: dict[str, Any], defs: Mapping[str, Any], path: str, refs: tuple[str, ...]) -> None:
    extra = out.pop("additionalProperties", None)
    # False is what extra="forbid" produces. A structural schema may not say it: the API server prunes
    # fields it has no schema for instead (see validate_custom_resource).
    if isinstance(extra, dict) and extra:
        out["additionalProperties"] = _structural(extra, defs, f"{path}[*]", refs)
    elif (extra is True or extra == {}) or ("properties" not in out and extra is None):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "properties" not in out:
        return
    if "additionalProperties" in out:
        raise CrdSchemaError(f"{path}: a CRD object has either named fields or typed extra keys, not both")
    properties: dict[str, Any] = {}
    dropped: set[str] = set()
    for name, prop in out["properties"].items():
        if prop.get(LLMKUBE_ONLY):
            dropped.add(name)
            continue
        properties[name] = _structural(prop, defs, f"{path}.{name}", refs)
    out["properties"] = properties
    required = [name for name in out.get("required", []) if name not in dropped]
    if required:
        out["required"] = required
    else:
        out.pop("required", None)


def _exclusive_bounds(out: dict[str, Any]) -> None:
    # JSON Schema 2020 writes gt/lt as a number; OpenAPI v3.0 (and so a CRD) as a flag beside minimum/maximum.
    for exclusive, inclusive, step in (("exclusiveMinimum", "minimum", 1), ("exclusiveMaximum", "maximum", -1)):
        value = out.get(exclusive)
        if isinstance(value, bool) or value is None:
            continue
        if out.get("type") == "integer":
            del out[exclusive]
            out[inclusive] = value + step
        else:
            out[inclusive] = value
            out[exclusive] = True


def _describe_union(options: list[Any]) -> str:
    names = [str(o.get("type", o.get("$ref", "?"))).removeprefix("#/$defs/") for o in options]
    return " | ".join(names)


# ---------------------------------------------------------------------------------------------------------
# Status: what the LLMKube controller writes (not part of our API models)
# ---------------------------------------------------------------------------------------------------------


def _status_schema(model: type[ApiModel]) -> dict[str, Any]:
    # Typed as the pinned controller writes it (api/status.py); unknown fields are kept, so a newer controller's
    # new status field is not pruned.
    schema = openapi_schema(model)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


# ---------------------------------------------------------------------------------------------------------
# The CRDs
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resource:
    kind: CrdKind
    plural: str
    short_name: str
    spec: type[ApiModel]
    # (name, type, JSONPath) of the columns kubectl get prints.
    columns: tuple[tuple[str, str, str], ...]
    scale: bool


_AGE = ("Age", "date", ".metadata.creationTimestamp")

_RESOURCES: dict[str, _Resource] = {
    "Model": _Resource(
        kind="Model",
        plural="models",
        short_name="mdl",
        spec=ModelSpec,
        columns=(
            ("Phase", "string", ".status.phase"),
            ("Size", "string", ".status.size"),
            ("Accelerator", "string", ".spec.hardware.accelerator"),
            _AGE,
        ),
        scale=False,
    ),
    "InferenceService": _Resource(
        kind="InferenceService",
        plural="inferenceservices",
        short_name="isvc",
        spec=InferenceServiceSpec,
        columns=(
            ("Phase", "string", ".status.phase"),
            ("Model", "string", ".spec.modelRef"),
            ("Replicas", "integer", ".status.readyReplicas"),
            ("Endpoint", "string", ".status.endpoint"),
            _AGE,
        ),
        scale=True,
    ),
}

_STATUS: dict[str, type[ApiModel]] = {"Model": ModelStatus, "InferenceService": InferenceServiceStatus}

KINDS: tuple[CrdKind, ...] = ("Model", "InferenceService")


def _resource(kind: str) -> _Resource:
    try:
        return _RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; the LLMKube API has {', '.join(KINDS)}") from None


def resource_schema(kind: CrdKind) -> dict[str, Any]:
    """The whole ``openAPIV3Schema`` of a kind: apiVersion, kind, metadata, spec and status."""
    res = _resource(kind)
    spec = openapi_schema(res.spec)
    return {
        "type": "object",
        "description": f"{kind} of the LLMKube API ({API_VERSION}).",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": _status_schema(_STATUS[kind]),
        },
        "required": ["spec"],
    }


def crd(kind: CrdKind, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind``; ``labels`` are added to (and override) ``DEFAULT_LABELS``."""
    res = _resource(kind)
    subresources: dict[str, Any] = {"status": {}}
    if res.scale:
        subresources["scale"] = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    version = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": resource_schema(kind)},
        "subresources": subresources,
        "additionalPrinterColumns": [
            {"name": name, "type": type_, "jsonPath": path} for name, type_, path in res.columns
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{res.plural}.{GROUP}",
            "labels": dict(sorted({**DEFAULT_LABELS, **(labels or {})}.items())),
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": res.plural,
                "singular": kind.lower(),
                "shortNames": [res.short_name],
                "categories": ["llmkube"],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def model_crd(labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return crd("Model", labels)


def inference_service_crd(labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return crd("InferenceService", labels)


def all_crds(labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every CRD of the API, Model first."""
    return [crd(kind, labels) for kind in KINDS]


# ---------------------------------------------------------------------------------------------------------
# Local validation of custom resources
# ---------------------------------------------------------------------------------------------------------


# Kinds the v0.9.19 controller watches unconditionally but llmkube does not speak: (group, kind, plural,
# scope). Without their CRDs the controller's informers never sync and the manager exits after its cache
# timeout, so the operator crash-loops. We install them with an open schema (anything is kept), so that a
# later install of upstream's full CRDs replaces ours rather than conflicts with what users created.
COMPANION_KINDS: tuple[tuple[str, str, str, str], ...] = (
    (GROUP, "GPUQuota", "gpuquotas", "Namespaced"),
    (GROUP, "LoRAAdapter", "loraadapters", "Namespaced"),
    (GROUP, "ModelPool", "modelpools", "Namespaced"),
    (GROUP, "ModelRouter", "modelrouters", "Namespaced"),
    ("federation.llmkube.dev", "FederatedCluster", "federatedclusters", "Cluster"),
)


def companion_crds(labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Open CRDs for the kinds in ``COMPANION_KINDS``: the operator needs them to exist, we do not use them."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": f"{plural}.{group}",
                "labels": dict(sorted({**DEFAULT_LABELS, **(labels or {})}.items())),
            },
            "spec": {
                "group": group,
                "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
                "scope": scope,
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "description": f"{kind}: installed so the LLMKube controller can start; "
                                "llmkube does not manage it.",
                                "properties": {"spec": open_object, "status": open_object},
                            }
                        },
                        "subresources": {"status": {}},
                    }
                ],
            },
        }
        for group, kind, plural, scope in COMPANION_KINDS
    ]


def validate_custom_resource(kind: CrdKind, obj: Mapping[str, Any]) -> list[str]:
    """What the API server would object to in a custom resource of ``kind``, as ``path: problem`` lines.

    Checks apiVersion, kind and the generated schema (types, enums, bounds, patterns, required fields).
    Not checked: CEL rules (the pydantic validators are their Python twins) and string formats.

    Unknown fields are reported although the API server does not always reject them: a structural schema
    makes it prune them, with a warning by default and as an error when the client asks for strict field
    validation (kubectl's default). Either way the field is lost, which is a bug in whatever wrote it.
    """
    problems: list[str] = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: {obj.get('apiVersion')!r} is not {API_VERSION}")
    if obj.get("kind") != kind:
        problems.append(f"kind: {obj.get('kind')!r} is not {kind}")
    for error in _validator(kind).iter_errors(_without_nulls(obj)):
        problems.extend(_problems(error))
    return sorted(set(problems))


@functools.cache
def _validator(kind: CrdKind) -> jsonschema.Draft202012Validator:
    import jsonschema  # only custom resource validation needs it: kept out of `pulumi preview`'s imports

    return jsonschema.Draft202012Validator(_closed(resource_schema(kind)))


def _closed(node: Any) -> Any:
    """A jsonschema-checkable copy of a CRD schema: x-kubernetes-* dropped, unknown fields made errors."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(inclusive)
    return out


def _without_nulls(value: Any) -> Any:
    # The API server prunes null-valued fields that are not nullable before it validates (none of ours are).
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _problems(error: jsonschema.ValidationError) -> list[str]:
    parts = cast(list[str | int], list(error.absolute_path))
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        return [f"{config_path(*parts, key)}: unknown field" for key in instance if key not in known]
    if error.validator == "required" and isinstance(instance, dict):
        return [f"{config_path(*parts, key)}: is required" for key in error.validator_value if key not in instance]
    return [f"{config_path(*parts) or '(object)'}: {error.message}"]


def custom_resource(
    kind: Literal["Model", "InferenceService"], name: str, namespace: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """A Model or InferenceService custom resource with the recommended labels, for the operator to act on."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": recommended_labels("llmkube", kind.lower(), name)},
        "spec": spec,
    }
