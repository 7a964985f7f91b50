"""Plain manifest dicts -> pulumi_kubernetes resources: the one place that maps a kind to its SDK class.

Builders return Kubernetes objects as plain dicts (camelCase, as kubectl would take them). The SDK's typed
classes take the top-level fields as snake_case keyword arguments and pass nested camelCase dicts through
unchanged, so registering an object needs only its kind and its top-level keys.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

import pulumi

# The SDK module and class of each kind we register. Resolved on first use: importing every SDK module up
# front costs a `pulumi preview` most of a second, and a stack uses a few kinds.
_CLASSES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Namespace"): ("core.v1", "Namespace"),
    ("v1", "ServiceAccount"): ("core.v1", "ServiceAccount"),
    ("v1", "Service"): ("core.v1", "Service"),
    ("v1", "ConfigMap"): ("core.v1", "ConfigMap"),
    ("v1", "Secret"): ("core.v1", "Secret"),
    ("v1", "PersistentVolumeClaim"): ("core.v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"): ("apps.v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("autoscaling.v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networking.v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"): ("policy.v1", "PodDisruptionBudget"),
    ("scheduling.k8s.io/v1", "PriorityClass"): ("scheduling.v1", "PriorityClass"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("rbac.v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("rbac.v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("rbac.v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rbac.v1", "RoleBinding"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("apiextensions.v1", "CustomResourceDefinition"),
}


@functools.cache
def _sdk_class(module: str, name: str) -> type[pulumi.CustomResource]:
    cls: type[pulumi.CustomResource] = getattr(importlib.import_module(f"pulumi_kubernetes.{module}"), name)
    return cls


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def register(resource_name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Register one Kubernetes object; kinds without an SDK class here become CustomResources."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    body = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    where = _CLASSES.get((api_version, kind))
    if where is None:
        extra = {_snake(key): value for key, value in body.items() if key not in ("metadata", "spec")}
        custom: Any = _sdk_class("apiextensions", "CustomResource")  # takes apiVersion, kind, metadata, spec
        return custom(
            resource_name,
            api_version=api_version,
            kind=kind,
            metadata=body.get("metadata"),
            spec=body.get("spec"),
            opts=opts,
            **extra,
        )
    cls = _sdk_class(*where)
    return cls(resource_name, opts=opts, **{_snake(key): value for key, value in body.items()})


def resource_names(prefix: str, manifests: list[dict[str, Any]]) -> list[str]:
    """Pulumi names for a component's objects: ``<prefix>-<kind>``, or ``<prefix>-<object name>`` where a kind repeats.

    Kubernetes names come from the manifests themselves (no Pulumi auto-naming), so the same config always
    gives the same objects; the Pulumi names only need to be unique and stable within the component.
    """
    kinds = [_kebab(m["kind"]) for m in manifests]
    names = [
        f"{prefix}-{kind}" if kinds.count(kind) == 1 else f"{prefix}-{manifest['metadata']['name']}"
        for kind, manifest in zip(kinds, manifests, strict=True)
    ]
    if len(set(names)) != len(names):  # an object name that equals another's kind: fall back to both
        names = [f"{prefix}-{kind}-{m['metadata']['name']}" for kind, m in zip(kinds, manifests, strict=True)]
    return names


def _kebab(kind: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", kind).lower()
