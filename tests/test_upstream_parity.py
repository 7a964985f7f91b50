"""Parity with the LLMKube operator's API: every upstream field is modelled or deliberately left out, and our CRDs
never refuse, prune or default differently what upstream's accept.

The upstream facts are the committed field-path lists in tests/data/upstream (written by
tools/upstream-crd-fields from upstream's generated CRDs): v0.9.19, the version we pin, and the newest main.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmkube_components import crds
from llmkube_components.api.upstream import UNSUPPORTED_FIELDS

UPSTREAM = sorted((Path(__file__).parent / "data" / "upstream").glob("*.json"))
KINDS = ("Model", "InferenceService")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def our_paths(kind: crds.CrdKind) -> dict[str, dict[str, Any]]:
    """Our CRD's schema as path -> node, in the same path syntax as the upstream lists."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        out[path] = node
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}" if path else name)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(crds.resource_schema(kind), "")
    out.pop("", None)
    return out


def covering(path: str, ours: dict[str, dict[str, Any]]) -> str | None:
    """The path of ours that takes ``path``: itself, or the nearest ancestor that keeps unknown fields."""
    if path in ours:
        return path
    parts = path
    while True:
        cut = max(parts.rfind("."), parts.rfind("["), parts.rfind("{"))
        if cut <= 0:
            return None
        parts = parts[:cut]
        if parts in ours:
            return parts if ours[parts].get("x-kubernetes-preserve-unknown-fields") else None


def test_upstream_lists_are_committed() -> None:
    refs = {load(p)["ref"] for p in UPSTREAM}
    assert "v0.9.19" in refs and any(r.startswith("main") for r in refs), refs


@pytest.mark.parametrize("source", UPSTREAM, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", KINDS)
def test_every_upstream_field_is_modelled_or_listed(source: Path, kind: crds.CrdKind) -> None:
    ours = our_paths(kind)
    missing = [path for path in load(source)["kinds"][kind] if covering(path, ours) is None and not listed(kind, path)]
    assert missing == [], f"upstream {kind} fields neither modelled nor in api/upstream.UNSUPPORTED_FIELDS"


def listed(kind: str, path: str) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[", p + "{")) for p in UNSUPPORTED_FIELDS.get(kind, {}))


def test_unsupported_fields_give_reasons_and_exist_upstream() -> None:
    upstream = {kind: set().union(*(load(p)["kinds"][kind] for p in UPSTREAM)) for kind in KINDS}
    for kind, fields in UNSUPPORTED_FIELDS.items():
        for path, reason in fields.items():
            assert path in upstream[kind], f"{kind} {path}: not an upstream field"
            assert len(reason) > 20, f"{kind} {path}: say why it is left out"


def stricter(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """How our schema node refuses, prunes or defaults what upstream's accepts (empty when it does not)."""
    if ours.get("x-kubernetes-preserve-unknown-fields") and "properties" not in ours:
        return []  # kept as written: refuses nothing
    problems = []
    if ours.get("type") != theirs.get("type") and not (
        theirs.get("intOrString") and ours.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"type {ours.get('type')} vs {theirs.get('type')}")
    if "enum" in ours and not set(theirs.get("enum", [object()])) <= set(ours["enum"]):
        problems.append(f"enum {ours['enum']} vs {theirs.get('enum')}")
    for low in ("minimum", "minLength", "minItems"):
        if low in ours and (low not in theirs or ours[low] > theirs[low]):
            problems.append(f"{low} {ours[low]} vs {theirs.get(low)}")
    for high in ("maximum", "maxLength", "maxItems"):
        if high in ours and (high not in theirs or ours[high] < theirs[high]):
            problems.append(f"{high} {ours[high]} vs {theirs.get(high)}")
    if "pattern" in ours and ours["pattern"] != theirs.get("pattern"):
        problems.append(f"pattern {ours['pattern']!r} vs {theirs.get('pattern')!r}")
    extra_required = set(ours.get("required", [])) - set(theirs.get("required", []))
    if extra_required:
        problems.append(f"required {sorted(extra_required)} upstream does not require")
    rules = [v["rule"] for v in ours.get("x-kubernetes-validations", [])]
    if set(rules) - set(theirs.get("rules", [])):
        problems.append(f"CEL rules {sorted(set(rules) - set(theirs.get('rules', [])))} upstream does not have")
    if ours.get("default") != theirs.get("default"):
        problems.append(f"default {ours.get('default')!r} vs {theirs.get('default')!r}")
    return problems


@pytest.mark.parametrize("source", UPSTREAM, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", KINDS)
def test_our_crds_accept_what_upstream_accepts(source: Path, kind: crds.CrdKind) -> None:
    theirs = load(source)["kinds"][kind]
    found = {
        path: problems
        for path, node in our_paths(kind).items()
        if path in theirs and (problems := stricter(node, theirs[path]))
    }
    assert found == {}


@pytest.mark.parametrize("kind", KINDS)
def test_our_crds_carry_no_field_upstream_lacks(kind: crds.CrdKind) -> None:
    upstream = set().union(*(load(p)["kinds"][kind] for p in UPSTREAM))
    assert [path for path in our_paths(kind) if path not in upstream] == []


@pytest.mark.parametrize("source", UPSTREAM, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", KINDS)
def test_status_is_typed_path_for_path(source: Path, kind: crds.CrdKind) -> None:
    # The controller's status writes are checked against the same fields upstream's CRD has, not just kept.
    ours = our_paths(kind)
    assert [p for p in load(source)["kinds"][kind] if p.startswith("status") and p not in ours] == []


RESOURCES = Path(__file__).parent / "data" / "upstream" / "resources.yaml"


def upstream_resources() -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(RESOURCES.read_text()) if doc]


@pytest.mark.parametrize("resource", upstream_resources(), ids=lambda r: r["metadata"]["name"])
def test_upstream_style_resources_pass_our_crd_schema(resource: dict[str, Any]) -> None:
    assert crds.validate_custom_resource(resource["kind"], resource) == []


@pytest.mark.parametrize("resource", upstream_resources(), ids=lambda r: r["metadata"]["name"])
def test_the_typed_api_takes_them_but_what_protects_a_user(resource: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from llmkube_components.api import InferenceServiceSpec, ModelSpec

    spec_model = ModelSpec if resource["kind"] == "Model" else InferenceServiceSpec
    if resource["metadata"]["name"] != "lenient":
        assert spec_model.model_validate(resource["spec"]).wire() == resource["spec"]
        return
    with pytest.raises(ValidationError) as info:
        spec_model.model_validate(resource["spec"])
    assert {".".join(map(str, e["loc"])) for e in info.value.errors()} == {
        "modelRef",
        "moeCPULayers",
        "uBatchSize",
        "resources.hostMemory",
        "tolerations.0.operator",
        "autoscaling.metrics.0.name",
    }
