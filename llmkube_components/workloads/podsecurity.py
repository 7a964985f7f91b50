"""Pod Security: the security context our pods run with, and the strictest Pod Security Standard a pod
(and so a namespace) meets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from ..meta import restricted_pod_security_context, sorted_by_key

Manifest = dict[str, Any]
PodSecurityLevel = Literal["restricted", "baseline", "privileged"]

# Who the pod runs as: a fixed numeric uid, because runAsNonRoot can only be enforced against a numeric user and
# llama.cpp's server images declare none (they would run as root). 65532 is the conventional "nonroot" uid of
# distroless images. fsGroup makes a freshly provisioned cache volume group-writable for it; OnRootMismatch
# skips the recursive chown of tens of gigabytes on every later start. The operator instead runs a root prep
# container that chowns the volume (for CSI drivers that ignore fsGroup, such as NFS and CephFS); that needs
# CAP_CHOWN, which the restricted Pod Security Standard forbids. We keep every container restricted and have the
# prep container fail with instructions where fsGroup is not applied.
# GPUs: NVIDIA's container toolkit opens its device nodes to any uid. AMD (/dev/kfd, /dev/dri) and Intel
# (/dev/dri) device nodes belong to the node's video/render groups, whose GIDs differ from host to host; such
# pods need those as supplemental groups, which no spec field carries yet (the operator leaves them to the
# user too, #1572).
POD_UID: Final = 65532
POD_GID: Final = 65532

# Volume types the restricted Pod Security Standard allows (pod-security-admission, restrictedVolumes).
_RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


def pod_security_context() -> Manifest:
    context = restricted_pod_security_context(run_as_user=POD_UID, run_as_group=POD_GID, fs_group=POD_GID)
    context["fsGroupChangePolicy"] = "OnRootMismatch"
    return sorted_by_key(context)


def containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A pod spec's init containers and containers."""
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def restricted_shortfalls(container: Mapping[str, Any], pod_context: Mapping[str, Any]) -> list[str]:
    """The restricted standard's container settings a container (under its pod's securityContext) lacks."""
    context = container.get("securityContext") or {}
    capabilities = context.get("capabilities") or {}
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    missing = []
    if context.get("allowPrivilegeEscalation") is not False:
        missing.append("allowPrivilegeEscalation: false")
    if "ALL" not in (capabilities.get("drop") or []):
        missing.append("capabilities.drop: [ALL]")
    if not set(capabilities.get("add") or []) <= {"NET_BIND_SERVICE"}:
        missing.append("capabilities.add: at most [NET_BIND_SERVICE]")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        missing.append("runAsNonRoot: true")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        missing.append("runAsUser: not 0")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        missing.append("seccompProfile.type: RuntimeDefault")
    return missing


def pod_security_level(pod: Mapping[str, Any]) -> PodSecurityLevel:
    """The strictest Pod Security Standard a pod spec meets, for the pods these builders make.

    Checks what our pods can vary in (volumes, privilege, user, capabilities, seccomp), not every rule of the
    standard: a hostPath volume (a local model source) is privileged-only; restricted needs every container
    non-root, without privilege escalation, dropping ALL capabilities, under a RuntimeDefault seccomp profile.
    """
    every = containers(pod)
    if (
        any("hostPath" in v for v in pod.get("volumes", []))
        or any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        or any((c.get("securityContext") or {}).get("privileged") for c in every)
    ):
        return "privileged"
    pod_context = pod.get("securityContext") or {}
    volume_types_ok = all(set(v) - {"name"} <= _RESTRICTED_VOLUME_TYPES for v in pod.get("volumes", []))
    if volume_types_ok and not any(restricted_shortfalls(c, pod_context) for c in every):
        return "restricted"
    return "baseline"


_LEVELS: Final = ("restricted", "baseline", "privileged")


def namespace_pod_security(manifests: Iterable[Mapping[str, Any]]) -> PodSecurityLevel:
    """The level a namespace can enforce: the most permissive one any of its Deployments needs."""
    levels = [pod_security_level(m["spec"]["template"]["spec"]) for m in manifests if m.get("kind") == "Deployment"]
    return max(levels, key=_LEVELS.index, default="restricted")
