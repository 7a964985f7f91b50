"""The spec's pod and container fields over ours: what they replace, what they add to, and what they may not touch.

- podSecurityContext and securityContext are merged over our restricted defaults, key by key (a nested object
  merges, anything else replaces): ``{runAsUser: 1000}`` changes the user and keeps everything else. (The
  operator replaces its defaults wholesale instead.) A result weaker than our defaults is refused at preview
  unless the service sets allowWeakerSecurityContext, which turns that into a warning naming what is weakened;
  the namespace's Pod Security level then follows the weakest pod (podsecurity.namespace_pod_security).
- env, extraVolumes and extraVolumeMounts are added after ours; a name or mount path of ours cannot be taken
  over (it would break the model's staging or the API key, or, for env, be silently overridden by Kubernetes'
  last-wins rule), and a mount must name a volume the pod has.
- command, args and each of probeOverrides' probes replace ours.
- resources.memory is the memory limit; without it the limit is the request plus headroom (memory_limit_for).

The merged securityContexts and the memory rule apply to every container llmkube runs for a service: the
llama-server container, and a multi-node service's ggml-rpc-server workers (multinode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..api.base import parse_quantity
from ..errors import Problem, config_path
from ..meta import restricted_container_security_context, sorted_by_key
from ..resolve import ResolvedService
from .podsecurity import pod_security_context, weakenings

Manifest = dict[str, Any]


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``over`` merged in: objects merge key by key, any other value (lists too) replaces."""
    out = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def server_security_context(service: ResolvedService) -> Manifest:
    """The server container's securityContext: the spec's merged over our restricted defaults."""
    # llama-server writes no file (tests/e2e/test_llama_server.py runs it on a read-only root): nothing in the
    # image can be changed by a compromised server.
    ours = restricted_container_security_context(read_only_root_filesystem=True)
    return sorted_by_key(deep_merge(ours, service.spec.security_context))


def pod_security_context_of(service: ResolvedService) -> Manifest:
    """The pod's securityContext: the spec's podSecurityContext merged over our restricted defaults."""
    return sorted_by_key(deep_merge(pod_security_context(), service.spec.pod_security_context))


# A server without a memory limit of its own gets its request plus this headroom as the limit: the request
# (hostMemory, the plan's host memory with its own 10% margin) counts weights, KV cache, compute buffers and the
# prompt cache; the headroom is for what no plan counts (allocator slack, the GPU runtime's pinned host
# buffers, thread stacks). A runaway is OOM-killed in its own cgroup instead of taking the node. A multi-node
# service's workers get the same headroom over the host memory the planner gives them.
MEMORY_LIMIT_HEADROOM: Final = 0.10
MEMORY_LIMIT_HEADROOM_MIN: Final = 2 * 2**30


def memory_limit_for(request: str) -> str:
    """The memory limit for a request without one: request + max(10%, 2 GiB), in whole Gi or Mi."""
    asked = int(parse_quantity(request))
    limit = asked + max(math.ceil(asked * MEMORY_LIMIT_HEADROOM), MEMORY_LIMIT_HEADROOM_MIN)
    return mebibytes(limit)


def mebibytes(size: int) -> str:
    """A byte count as a memory quantity in whole Gi or Mi, rounded up to the next MiB."""
    mib = math.ceil(size / 2**20)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def env_problems(service: ResolvedService, ours: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """An env entry whose name is one of ours."""
    taken = sorted({e["name"] for e in ours})
    return [
        Problem(
            config_path(service.path, "env", i),
            f"{entry.get('name')!r} is set by llmkube itself (it sets {', '.join(taken)}); choose another name",
        )
        for i, entry in enumerate(service.spec.env or [])
        if entry.get("name") in taken
    ]


def volume_problems(
    service: ResolvedService, our_volumes: Iterable[Mapping[str, Any]], our_mounts: Iterable[Mapping[str, Any]]
) -> list[Problem]:
    """extraVolumes and extraVolumeMounts that collide with ours, or mount a volume the pod does not have."""
    spec = service.spec
    volume_names = [v["name"] for v in our_volumes]
    mount_paths = [m["mountPath"] for m in our_mounts]
    problems = [
        Problem(
            config_path(service.path, "extraVolumes", i, "name"),
            f"{volume.get('name')!r} is a volume of llmkube's ({', '.join(volume_names)}); choose another name",
        )
        for i, volume in enumerate(spec.extra_volumes or [])
        if volume.get("name") in volume_names
    ]
    known = {*volume_names, *(v.get("name") for v in spec.extra_volumes or [])}
    for i, mount in enumerate(spec.extra_volume_mounts or []):
        path = mount.get("mountPath")
        if path in mount_paths or any(str(path).startswith(p.rstrip("/") + "/") for p in mount_paths):
            problems.append(
                Problem(
                    config_path(service.path, "extraVolumeMounts", i, "mountPath"),
                    f"{path!r} is (inside) a mount path of llmkube's ({', '.join(mount_paths)}); mount elsewhere",
                )
            )
        if mount.get("name") not in known:
            problems.append(
                Problem(
                    config_path(service.path, "extraVolumeMounts", i, "name"),
                    f"{mount.get('name')!r} names no volume of the pod; add it to extraVolumes",
                )
            )
    return problems


def security_problems(
    service: ResolvedService, container_context: Mapping[str, Any], pod_context: Mapping[str, Any]
) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): merged contexts weaker than our defaults, refused unless allowWeakerSecurityContext."""
    spec = service.spec
    if spec.security_context is None and spec.pod_security_context is None:
        return [], []
    weaker = weakenings(container_context, pod_context)
    if not weaker:
        return [], []
    fields = (("podSecurityContext", spec.pod_security_context), ("securityContext", spec.security_context))
    given = [name for name, value in fields if value]
    where = config_path(service.path, given[0] if len(given) == 1 else "")
    if spec.allow_weaker_security_context:
        return [], [
            Problem(
                where,
                f"{' and '.join(given)} {'weaken' if len(given) > 1 else 'weakens'} the server's restricted "
                "defaults (allowWeakerSecurityContext): "
                f"it no longer has {', '.join(weaker)}; the namespace's Pod Security level is lowered to admit it",
            )
        ]
    return [
        Problem(
            where,
            f"{' and '.join(given)} would leave the server without {', '.join(weaker)}, weaker than the restricted "
            "defaults; drop those settings, or set allowWeakerSecurityContext: true to accept it",
        )
    ], []
