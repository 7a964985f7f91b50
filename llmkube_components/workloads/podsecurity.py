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


# What the baseline standard still allows (pod-security-admission): capabilities beyond the container runtime's
# defaults are privileged-only, as are the SELinux types other than these, and the sysctls outside the safe set.
_BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_BASELINE_SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)


def _context_baseline_shortfalls(context: Mapping[str, Any]) -> list[str]:
    """What a pod's or a container's securityContext sets that the baseline standard forbids."""
    missing = []
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        missing.append("seccompProfile.type: not Unconfined")
    if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
        missing.append("appArmorProfile.type: not Unconfined")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("user") or selinux.get("role") or selinux.get("type", "") not in _BASELINE_SELINUX_TYPES:
        missing.append("seLinuxOptions: no user or role, a container_* type")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        missing.append("windowsOptions.hostProcess: false")
    return missing


def baseline_shortfalls(pod: Mapping[str, Any]) -> list[str]:
    """The baseline standard's rules a pod spec breaks (those its securityContexts, volumes and host settings can
    break): a pod that breaks one needs a privileged namespace."""
    pod_context = pod.get("securityContext") or {}
    missing = _context_baseline_shortfalls(pod_context)
    if any("hostPath" in v for v in pod.get("volumes") or []):
        missing.append("no hostPath volumes")
    missing += [f"{k}: false" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    if any(s.get("name") not in _SAFE_SYSCTLS for s in pod_context.get("sysctls") or []):
        missing.append("sysctls: only the safe ones")
    for container in containers(pod):
        context = container.get("securityContext") or {}
        missing += _context_baseline_shortfalls(context)
        if context.get("privileged"):
            missing.append("privileged: false")
        if not set((context.get("capabilities") or {}).get("add") or []) <= _BASELINE_CAPABILITIES:
            missing.append("capabilities.add: only the runtime's defaults")
        if context.get("procMount", "Default") != "Default":
            missing.append("procMount: Default")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            missing.append("no hostPort")
    return sorted(set(missing))


def weakenings(container_context: Mapping[str, Any], pod_context: Mapping[str, Any]) -> list[str]:
    """Where a server container, under its pod's context, is weaker than our defaults: below the restricted
    standard (restricted_shortfalls), privileged, or with a writable root filesystem."""
    context = container_context
    missing = restricted_shortfalls({"securityContext": context}, pod_context)
    if context.get("privileged"):
        missing.append("privileged: false")
    if context.get("readOnlyRootFilesystem") is not True:
        missing.append("readOnlyRootFilesystem: true")
    missing += _context_baseline_shortfalls(context) + _context_baseline_shortfalls(pod_context)
    return sorted(set(missing))


def pod_security_level(pod: Mapping[str, Any]) -> PodSecurityLevel:
    """The strictest Pod Security Standard a pod spec meets, for the pods these builders make.

    Checks what our pods can vary in (volumes, host settings, the securityContexts a spec may weaken), not
    every rule of the standard: what baseline forbids (a hostPath volume for a local model source, privilege,
    capabilities beyond the runtime's defaults, an Unconfined seccomp profile, ...) needs privileged; restricted
    needs every container non-root, without privilege escalation, dropping ALL capabilities, under a
    RuntimeDefault seccomp profile.
    """
    every = containers(pod)
    if baseline_shortfalls(pod):
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
