"""Metadata and security settings that every manifest builder shares: labels, object metadata, and the
contexts that satisfy the restricted Pod Security Standard."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final

PART_OF: Final = "llmkube"
MANAGED_BY: Final = "pulumi"

# A label value the API server accepts: at most 63 characters, alphanumerics with '-', '_' and '.' inside.
# Checked here so that a version such as "1.2.3+build" fails at preview instead of at apply.
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _check_label_value(key: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        raise ValueError(
            f"label {key}={value!r} is not a valid label value: at most 63 characters, letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return value


def sorted_by_key(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with its keys in sorted order: manifests come out the same whatever order a spec listed them in."""
    return {key: mapping[key] for key in sorted(mapping)}


def recommended_labels(name: str, component: str, instance: str, version: str | None = None) -> dict[str, str]:
    """The Kubernetes recommended labels (app.kubernetes.io/*) of an llmkube object."""
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if version is not None:
        labels["app.kubernetes.io/version"] = version
    return {key: _check_label_value(key, value) for key, value in labels.items()}


def object_meta(
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """ObjectMeta with only the entries that are set; the mappings are copied, never shared with the caller."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# The container half of the restricted Pod Security Standard. Read it, never mutate it: builders take a copy
# from restricted_container_security_context(), so no two manifests share (and can corrupt) one dict, and
# PyYAML does not turn the shared object into anchors.
RESTRICTED_CONTAINER_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_container_security_context(*, read_only_root_filesystem: bool = False) -> dict[str, Any]:
    """A fresh copy of RESTRICTED_CONTAINER_SECURITY_CONTEXT; a read-only root filesystem is an opt-in
    hardening beyond the standard (it needs writable emptyDirs wherever the program writes)."""
    context = copy.deepcopy(RESTRICTED_CONTAINER_SECURITY_CONTEXT)
    if read_only_root_filesystem:
        context["readOnlyRootFilesystem"] = True
    return context


def restricted_pod_security_context(
    *, run_as_user: int | None = None, run_as_group: int | None = None, fs_group: int | None = None
) -> dict[str, Any]:
    """The pod half of the restricted Pod Security Standard.

    runAsNonRoot is only checkable when the image names a numeric user; an image that runs as root, or as a
    user name, needs ``run_as_user`` or the kubelet refuses to start the container. ``fs_group`` makes a
    freshly provisioned volume writable by that user.
    """
    if run_as_user == 0:
        # The restricted standard forbids runAsUser 0, and runAsNonRoot would refuse it at container start.
        raise ValueError("run_as_user 0 is root, which the restricted Pod Security Standard forbids")
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if run_as_user is not None:
        context["runAsUser"] = run_as_user
    if run_as_group is not None:
        context["runAsGroup"] = run_as_group
    if fs_group is not None:
        context["fsGroup"] = fs_group
    return context
