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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import Problem, config_path
from ..resolve import ResolvedService
from .podsecurity import weakenings

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
