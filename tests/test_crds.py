"""The CRDs generated from api/: structural, named like LLMKube's, and accepting what LLMKube samples write."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import kubernetes_validate
import pytest
import yaml
from pydantic import Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from llmkube_components import crds
from llmkube_components.api import (
    ApiModel,
    InferenceServiceSpec,
    MetricSpec,
    ModelCacheSpec,
    ModelSpec,
    Quantity,
)
from llmkube_components.api.base import LLMKUBE_ONLY, llmkube_only

# The hybrid-offload pair in the style of LLMKube's samples: a MoE GGUF on two GPUs, experts and KV cache in RAM.
QWEN_MODEL = yaml.safe_load(
    """
apiVersion: inference.llmkube.dev/v1alpha1
kind: Model
metadata:
  name: qwen3-30b-a3b
  namespace: llmkube
spec:
  source: https://huggingface.co/unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF/resolve/main/Qwen3-30B-A3B-Instruct-2507-Q4_K_M.gguf
  format: gguf
  quantization: Q4_K_M
  hardware:
    accelerator: cuda
    gpu:
      enabled: true
      count: 2
      vendor: nvidia
      layers: -1
      sharding:
        strategy: layer
"""
)

QWEN_SERVICE = yaml.safe_load(
    """
apiVersion: inference.llmkube.dev/v1alpha1
kind: InferenceService
metadata:
  name: qwen3-hybrid
  namespace: llmkube
spec:
  modelRef: qwen3-30b-a3b
  replicas: 1
  contextSize: 90112
  cacheTypeK: q8_0
  cacheTypeV: q8_0
  moeCPUOffload: true
  noKvOffload: true
  flashAttention: true
  jinja: true
  resources:
    gpu: 2
    cpu: "8"
    hostMemory: 48Gi
  endpoint:
    port: 8080
    type: ClusterIP
"""
)

SAMPLES = {"Model": QWEN_MODEL, "InferenceService": QWEN_SERVICE}
SPEC_MODELS: dict[str, type[ApiModel]] = {"Model": ModelSpec, "InferenceService": InferenceServiceSpec}

DELETE = object()


def root_schema(kind: crds.CrdKind) -> dict[str, Any]:
    (version,) = crds.crd(kind)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path: properties, list items and map values."""
    yield path or "(root)", node
    for name, prop in node.get("properties", {}).items():
        yield from schema_nodes(prop, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{*}}")


def node_at(kind: crds.CrdKind, path: str) -> dict[str, Any]:
    return dict(schema_nodes(root_schema(kind)))[path]


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of obj with the dotted path set to value (or removed, for DELETE)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = out
    for part in parents:
        target = target.setdefault(part, {})
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# Shape of the CRDs
# ---------------------------------------------------------------------------------------------------------

# Keywords a structural schema (or apiextensions/v1 JSONSchemaProps) cannot carry, and JSON Schema leftovers.
NOT_STRUCTURAL = {"$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "not", "title", "const", "uniqueItems"}


@pytest.mark.parametrize("kind", crds.KINDS)
def test_every_schema_node_is_structural(kind: crds.CrdKind) -> None:
    nodes = list(schema_nodes(root_schema(kind)))
    assert len(nodes) > 20
    for path, node in nodes:
        assert isinstance(node.get("type"), str), f"{path} has no type"
        assert not NOT_STRUCTURAL & node.keys(), f"{path}: {NOT_STRUCTURAL & node.keys()}"
        assert "default" not in node or node["default"] is not None, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert isinstance(node.get("additionalProperties", {}), dict), f"{path}: additionalProperties must be a schema"
        if node.get("x-kubernetes-list-type") == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"]["required"]), path
    # Nothing of pydantic's references survives anywhere, not only on the nodes walked above.
    assert "$ref" not in json.dumps(root_schema(kind))


@pytest.mark.parametrize(
    ("kind", "name", "plural", "singular", "list_kind", "short_name"),
    [
        ("Model", "models.inference.llmkube.dev", "models", "model", "ModelList", "mdl"),
        (
            "InferenceService",
            "inferenceservices.inference.llmkube.dev",
            "inferenceservices",
            "inferenceservice",
            "InferenceServiceList",
            "isvc",
        ),
    ],
)
def test_names(kind: crds.CrdKind, name: str, plural: str, singular: str, list_kind: str, short_name: str) -> None:
    crd = crds.crd(kind)
    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == name
    assert crd["spec"]["group"] == "inference.llmkube.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": kind,
        "listKind": list_kind,
        "plural": plural,
        "singular": singular,
        "shortNames": [short_name],
        "categories": ["llmkube"],
    }
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


@pytest.mark.parametrize(
    ("kind", "subresources"),
    [
        ("Model", {"status": {}}),
        (
            "InferenceService",
            {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
        ),
    ],
)
def test_subresources(kind: crds.CrdKind, subresources: dict[str, Any]) -> None:
    assert crds.crd(kind)["spec"]["versions"][0]["subresources"] == subresources


def test_scale_paths_are_integers_in_the_schema() -> None:
    # The scale subresource reads and writes these paths, so they must exist with an integer type.
    assert node_at("InferenceService", "spec.replicas")["type"] == "integer"
    assert node_at("InferenceService", "status.replicas")["type"] == "integer"


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "Model",
            [
                ("Phase", "string", ".status.phase"),
                ("Size", "string", ".status.size"),
                ("Accelerator", "string", ".spec.hardware.accelerator"),
                ("Age", "date", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "InferenceService",
            [
                ("Phase", "string", ".status.phase"),
                ("Model", "string", ".spec.modelRef"),
                ("Replicas", "integer", ".status.readyReplicas"),
                ("Endpoint", "string", ".status.endpoint"),
                ("Age", "date", ".metadata.creationTimestamp"),
            ],
        ),
    ],
)
def test_printer_columns(kind: crds.CrdKind, columns: list[tuple[str, str, str]]) -> None:
    printed = crds.crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in printed] == columns
    # Every column other than Age points at a field the schema types the same way.
    paths = dict(schema_nodes(root_schema(kind)))
    for name, type_, json_path in columns:
        if name != "Age":
            assert paths[json_path.removeprefix(".")]["type"] == type_, name


@pytest.mark.parametrize("kind", crds.KINDS)
def test_spec_has_every_api_field_but_the_llmkube_only_ones(kind: crds.CrdKind) -> None:
    model = SPEC_MODELS[kind]
    fields = model.model_fields.values()
    only = {f.alias for f in fields if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(LLMKUBE_ONLY)}
    spec = node_at(kind, "spec")
    assert set(spec["properties"]) == {f.alias for f in fields} - only
    assert spec["required"] == [f.alias for f in fields if f.is_required()]
    assert root_schema(kind)["required"] == ["spec"]


@pytest.mark.parametrize("kind", crds.KINDS)
def test_descriptions_come_from_the_api(kind: crds.CrdKind) -> None:
    model = SPEC_MODELS[kind]
    spec = node_at(kind, "spec")
    assert spec["description"] == model.__doc__
    for name, prop in spec["properties"].items():
        (field,) = [f for f in model.model_fields.values() if f.alias == name]
        assert prop["description"] == field.description, name
    # A nested model's own docstring describes its list items; the field's description wins on the field.
    assert node_at("InferenceService", "spec.autoscaling.metrics[*]")["description"] == MetricSpec.__doc__


def test_hardware_profile_stays_out_of_the_crd() -> None:
    assert "hardwareProfile" not in node_at("InferenceService", "spec")["properties"]
    assert "hardwareProfile" not in json.dumps(crds.all_crds())


@pytest.mark.parametrize(
    ("kind", "path", "model"),
    [
        # Only rules upstream's CRD has too (tests/test_upstream_parity.py); the others are preview errors.
        ("InferenceService", "spec.modelCache", ModelCacheSpec),
    ],
)
def test_cel_rules_sit_on_their_model_object(kind: crds.CrdKind, path: str, model: type[ApiModel]) -> None:
    assert model.cel_rules
    node = node_at(kind, path)
    assert node["type"] == "object"
    assert node["x-kubernetes-validations"] == [{"rule": r, "message": m} for r, m in model.cel_rules]


@pytest.mark.parametrize(("kind", "count"), [("Model", 0), ("InferenceService", 1)])
def test_cel_rules_nowhere_else(kind: crds.CrdKind, count: int) -> None:
    ruled = [p for p, node in schema_nodes(node_at(kind, "spec")) if "x-kubernetes-validations" in node]
    assert len(ruled) == count


@pytest.mark.parametrize(
    ("kind", "phases"), [("Model", crds.MODEL_PHASES), ("InferenceService", crds.INFERENCE_SERVICE_PHASES)]
)
def test_status_is_typed_and_keeps_what_the_controller_writes(kind: crds.CrdKind, phases: tuple[str, ...]) -> None:
    status = node_at(kind, "status")
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    # The pinned controller's phases, as upstream's CRD has them (tests/test_upstream_parity.py compares the rest).
    assert status["properties"]["phase"]["enum"] == list(phases)
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["items"]["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]


@pytest.mark.parametrize("kind", crds.KINDS)
@pytest.mark.parametrize("k8s_version", ["1.30", "1.33", kubernetes_validate.latest_version()])
def test_crd_is_a_valid_kubernetes_manifest(kind: crds.CrdKind, k8s_version: str) -> None:
    kubernetes_validate.validate(crds.crd(kind), k8s_version, strict=True)


def test_kubernetes_validate_does_catch_a_bad_crd() -> None:
    crd = crds.model_crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["typo"] = "object"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, "1.33", strict=True)


def test_labels() -> None:
    assert crds.model_crd()["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/part-of": "llmkube",
    }
    labels = crds.inference_service_crd({"app.kubernetes.io/managed-by": "helm", "team": "ml"})["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/managed-by": "helm", "app.kubernetes.io/part-of": "llmkube", "team": "ml"}


def test_all_crds_in_a_fixed_order_and_byte_identical_every_time() -> None:
    assert [c["metadata"]["name"] for c in crds.all_crds()] == [
        "models.inference.llmkube.dev",
        "inferenceservices.inference.llmkube.dev",
    ]
    first = yaml.safe_dump_all(crds.all_crds(), sort_keys=False)
    assert yaml.safe_dump_all(crds.all_crds(), sort_keys=False) == first
    assert [crds.model_crd(), crds.inference_service_crd()] == crds.all_crds()


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind 'Pod'; the LLMKube API has Model, InferenceService"):
        crds.crd("Pod")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# openapi_schema: one pydantic type -> one structural node
# ---------------------------------------------------------------------------------------------------------


def probe_schema(annotation: Any, field: Any = None) -> dict[str, Any]:
    """The CRD schema of a model with one field, ``probe``, of the given type."""
    probe = create_model("Probe", __base__=ApiModel, probe=(annotation, field))
    return crds.openapi_schema(probe)


@pytest.mark.parametrize(
    ("annotation", "field", "expected"),
    [
        (int | None, Field(None, ge=0, le=8), {"type": "integer", "format": "int32", "minimum": 0, "maximum": 8}),
        (int, Field(..., ge=-1), {"type": "integer", "format": "int32", "minimum": -1}),
        (
            int | None,
            Field(None, ge=0, le=2**40),
            {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**40},
        ),
        (int | None, Field(None, gt=0, lt=10), {"type": "integer", "format": "int32", "minimum": 1, "maximum": 9}),
        (
            float | None,
            Field(None, gt=0, le=1),
            {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
        ),
        (bool | None, Field(None, description="On or off."), {"type": "boolean", "description": "On or off."}),
        (str | None, Field(None, min_length=1, max_length=9), {"type": "string", "minLength": 1, "maxLength": 9}),
        (str, Field("x"), {"type": "string", "default": "x"}),
        (Literal["a", "b"] | None, None, {"type": "string", "enum": ["a", "b"]}),
        (Literal["only"], Field(...), {"type": "string", "enum": ["only"]}),
        (
            Quantity | None,
            None,
            {"type": "string"},  # upstream's CRD takes any string; the typed API checks the quantity
        ),
        (list[str] | None, Field(None, max_length=4), {"type": "array", "maxItems": 4, "items": {"type": "string"}}),
        (dict[str, str] | None, None, {"type": "object", "additionalProperties": {"type": "string"}}),
        (
            dict[str, int] | None,
            None,
            {"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}},
        ),
        (dict[str, Any] | None, None, {"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
        (Any, None, {"x-kubernetes-preserve-unknown-fields": True}),
    ],
)
def test_type_mapping(annotation: Any, field: Any, expected: dict[str, Any]) -> None:
    schema = probe_schema(annotation, field)
    assert schema["type"] == "object"
    assert schema["properties"] == {"probe": expected}
    required = isinstance(field, FieldInfo) and field.is_required()
    assert schema.get("required", []) == (["probe"] if required else [])


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (int | str | None, r"Probe\.probe: a union \(integer \| string \| null\) has no structural CRD schema"),
        (str | dict[str, Any] | None, r"Probe\.probe: a union \(string \| object \| null\)"),
        (set[str] | None, r"Probe\.probe: a set \(uniqueItems\) is forbidden"),
        (tuple[int, str] | None, r"Probe\.probe: a tuple has no structural CRD schema"),
        (None, r"Probe\.probe: every node of a structural schema needs one type, got 'null'"),
    ],
)
def test_types_a_crd_cannot_express_fail_loudly(annotation: Any, message: str) -> None:
    with pytest.raises(crds.CrdSchemaError, match=message):
        probe_schema(annotation)


class TreeNode(ApiModel):
    children: list[TreeNode] | None = None


def test_recursive_model_fails_loudly() -> None:
    with pytest.raises(crds.CrdSchemaError, match=r"TreeNode\.children\[\*\]: TreeNode contains itself"):
        crds.openapi_schema(TreeNode)


def test_llmkube_only_fields_leave_properties_and_required() -> None:
    probe = create_model(
        "Probe",
        __base__=ApiModel,
        plan_only=(str, Field(..., json_schema_extra=llmkube_only())),
        kept=(str, Field(...)),
    )
    schema = crds.openapi_schema(probe)
    assert list(schema["properties"]) == ["kept"]
    assert schema["required"] == ["kept"]


def _ruled_model(rule: str) -> type[ApiModel]:
    class Inner(ApiModel):
        x: int | None = None
        cel_rules: ClassVar[tuple[tuple[str, str], ...]] = ((rule, "x is off"),)

    return Inner


def test_cel_rules_follow_their_class_even_when_class_names_collide() -> None:
    first, second = _ruled_model("self.x > 1"), _ruled_model("self.x < 1")
    outer = create_model(
        "Outer",
        __base__=ApiModel,
        a=(first | None, None),
        b=(list[second] | None, None),  # type: ignore[valid-type]
    )
    schema = crds.openapi_schema(outer)
    assert schema["properties"]["a"]["x-kubernetes-validations"] == [{"rule": "self.x > 1", "message": "x is off"}]
    assert schema["properties"]["b"]["items"]["x-kubernetes-validations"] == [
        {"rule": "self.x < 1", "message": "x is off"}
    ]
    assert "x-kubernetes-validations" not in schema


def test_openapi_schema_is_pure() -> None:
    assert crds.openapi_schema(InferenceServiceSpec) == crds.openapi_schema(InferenceServiceSpec)
    assert crds.openapi_schema(InferenceServiceSpec) is not crds.openapi_schema(InferenceServiceSpec)


# ---------------------------------------------------------------------------------------------------------
# validate_custom_resource: the samples pass, bad values fail with the field named
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crds.KINDS)
def test_samples_validate(kind: crds.CrdKind) -> None:
    sample = SAMPLES[kind]
    assert crds.validate_custom_resource(kind, sample) == []
    # The same spec passes the pydantic API, and what the API writes back (wire form) passes the CRD.
    spec = SPEC_MODELS[kind].model_validate(sample["spec"])
    assert crds.validate_custom_resource(kind, {**sample, "spec": spec.wire()}) == []


# (kind, dotted path, value, the one problem reported). Every row breaks the spec, so pydantic rejects it too.
SPEC_PROBLEMS = [
    ("InferenceService", "spec.contextSize", 50, "spec.contextSize: 50 is less than the minimum of 128"),
    (
        "InferenceService",
        "spec.cacheTypeK",
        "q9",
        "spec.cacheTypeK: 'q9' is not one of ['f16', 'f32', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'iq4_nl']",
    ),
    ("InferenceService", "spec.replicas", 11, "spec.replicas: 11 is greater than the maximum of 10"),
    ("InferenceService", "spec.contextSizee", 4096, "spec.contextSizee: unknown field"),
    ("InferenceService", "spec.endpoint.nodePort", 80, "spec.endpoint.nodePort: 80 is less than the minimum of 30000"),
    ("InferenceService", "spec.modelRef", DELETE, "spec.modelRef: is required"),
    ("Model", "spec.source", "ftp://example.com/m.gguf", "spec.source: 'ftp://example.com/m.gguf' does not match"),
    ("Model", "spec.format", "onnx", "spec.format: 'onnx' is not one of"),
    ("Model", "spec.hardware.gpu.count", 9, "spec.hardware.gpu.count: 9 is greater than the maximum of 8"),
    ("Model", "spec.hardware.gpu.layers", -2, "spec.hardware.gpu.layers: -2 is less than the minimum of -1"),
    ("Model", "spec.hardware.gpu.vram", "16Gi", "spec.hardware.gpu.vram: unknown field"),
]


@pytest.mark.parametrize(("kind", "path", "value", "problem"), SPEC_PROBLEMS)
def test_bad_spec_is_reported_with_its_field(kind: crds.CrdKind, path: str, value: Any, problem: str) -> None:
    bad = changed(SAMPLES[kind], path, value)
    problems = crds.validate_custom_resource(kind, bad)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem)
    with pytest.raises(ValidationError):
        SPEC_MODELS[kind].model_validate(bad["spec"])


# pydantic's lax mode turns these into the right type (and wire() writes that type), but the API server takes a
# custom resource as written: a hand-written "1" for an integer is rejected there.
@pytest.mark.parametrize(
    ("kind", "path", "value", "problem"),
    [
        ("InferenceService", "spec.replicas", "1", "spec.replicas: '1' is not of type 'integer'"),
        ("InferenceService", "spec.moeCPUOffload", "true", "spec.moeCPUOffload: 'true' is not of type 'boolean'"),
        ("Model", "spec.hardware.gpu.enabled", "yes", "spec.hardware.gpu.enabled: 'yes' is not of type 'boolean'"),
    ],
)
def test_the_crd_takes_types_as_written(kind: crds.CrdKind, path: str, value: Any, problem: str) -> None:
    written = changed(SAMPLES[kind], path, value)
    assert crds.validate_custom_resource(kind, written) == [problem]
    SPEC_MODELS[kind].model_validate(written["spec"])  # coerced, not rejected


# Unknown fields: a structural schema makes the API server prune them. It rejects the object only when the
# client asks for strict field validation (kubectl's default); with the server's default (Warn) the field is
# dropped with a warning. validate_custom_resource reports it either way, since the field would be lost.
CONDITION = {
    "type": "Available",
    "status": "True",
    "lastTransitionTime": "2026-12-01T10:00:00Z",
    "reason": "Ready",
    "message": "1/1 replicas ready",
}


@pytest.mark.parametrize(
    ("kind", "obj", "problems"),
    [
        ("Model", changed(QWEN_MODEL, "spec", DELETE), ["spec: is required"]),
        (
            "Model",
            changed(QWEN_MODEL, "apiVersion", "inference.llmkube.dev/v1"),
            ["apiVersion: 'inference.llmkube.dev/v1' is not inference.llmkube.dev/v1alpha1"],
        ),
        (
            "InferenceService",
            QWEN_MODEL,
            [
                "kind: 'Model' is not InferenceService",
                "spec.format: unknown field",
                "spec.hardware: unknown field",
                "spec.modelRef: is required",
                "spec.quantization: unknown field",
                "spec.source: unknown field",
            ],
        ),
        ("InferenceService", changed(QWEN_SERVICE, "extra", 1), ["extra: unknown field"]),
        # The API server prunes null-valued fields (none is nullable) before it validates.
        ("InferenceService", changed(QWEN_SERVICE, "spec.contextSize", None), []),
        # Status takes what the controller writes, known fields or not, but a known field keeps its type.
        (
            "InferenceService",
            changed(QWEN_SERVICE, "status", {"phase": "Ready", "readyReplicas": 1, "schedulingStatus": "Scheduled"}),
            [],
        ),
        ("Model", changed(QWEN_MODEL, "status", {"phase": "Ready", "gguf": {"architecture": "qwen3moe"}}), []),
        # A field a newer controller adds is kept; the phases are the pinned controller's, as upstream's CRD says.
        ("Model", changed(QWEN_MODEL, "status", {"phase": "Ready", "newerField": 1}), []),
        (
            "Model",
            changed(QWEN_MODEL, "status", {"phase": "Serving"}),
            ["status.phase: 'Serving' is not one of ['Pending', 'Downloading', 'Copying', 'Ready', 'Failed']"],
        ),
        (
            "InferenceService",
            changed(QWEN_SERVICE, "status", {"conditions": [{**CONDITION, "status": "Maybe"}]}),
            ["status.conditions[0].status: 'Maybe' is not one of ['True', 'False', 'Unknown']"],
        ),
        (
            "InferenceService",
            changed(QWEN_SERVICE, "status", {"conditions": [{"type": "Available", "status": "True"}]}),
            [
                "status.conditions[0].lastTransitionTime: is required",
                "status.conditions[0].message: is required",
                "status.conditions[0].reason: is required",
            ],
        ),
        ("InferenceService", changed(QWEN_SERVICE, "status", {"conditions": [CONDITION], "phase": "Suspended"}), []),
    ],
)
def test_object_problems(kind: crds.CrdKind, obj: dict[str, Any], problems: list[str]) -> None:
    assert crds.validate_custom_resource(kind, obj) == problems


def test_companion_crds_let_the_controller_start_and_validate() -> None:
    from llmkube_components.crds import COMPANION_KINDS, companion_crds

    manifests = companion_crds()
    assert [m["spec"]["names"]["kind"] for m in manifests] == [kind for _, kind, _, _ in COMPANION_KINDS]
    assert {m["metadata"]["name"] for m in manifests} == {
        "gpuquotas.inference.llmkube.dev",
        "loraadapters.inference.llmkube.dev",
        "modelpools.inference.llmkube.dev",
        "modelrouters.inference.llmkube.dev",
        "federatedclusters.federation.llmkube.dev",
    }
    for manifest in manifests:
        kubernetes_validate.validate(manifest, "1.37", strict=True)


# Checks that protect a user but that upstream's CRD does not make: the typed API refuses them at preview, our
# CRD accepts them as upstream's does, so a custom resource written for the operator is never refused.
@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("InferenceService", "spec.resources.hostMemory", "48GB"),
        ("InferenceService", "spec.moeCPULayers", 5000),
        ("InferenceService", "spec.uBatchSize", 20000),
        ("InferenceService", "spec.modelRef", ""),
        ("InferenceService", "spec.tolerations", [{"key": "k", "operator": "Maybe"}]),
        ("InferenceService", "spec.autoscaling", {"maxReplicas": 2, "metrics": [{"type": "Pods", "name": "x"}]}),
        ("Model", "spec.hardware.gpu.layers", 5000),
    ],
)
def test_preview_only_checks_stay_out_of_the_crd(kind: crds.CrdKind, path: str, value: Any) -> None:
    bad = changed(SAMPLES[kind], path, value)
    assert crds.validate_custom_resource(kind, bad) == []
    with pytest.raises(ValidationError):
        SPEC_MODELS[kind].model_validate(bad["spec"])
