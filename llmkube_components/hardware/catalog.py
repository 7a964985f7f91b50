"""The built-in hardware profiles (YAML files shipped in ``profiles/``) and how a config selects one."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api.base import suggest
from ..api.validation import problems_from_validation_error
from ..data import load_named
from ..errors import ConfigError, config_path
from .profile import HardwareProfile

PROFILE_DIR = "profiles"
# Overrides that say how many machines there are, not what a machine is: alone, they keep the base's name.
POOL_ONLY_FIELDS = frozenset({"nodes"})


@functools.cache
def _load_builtin_profiles() -> dict[str, HardwareProfile]:
    return load_named(__package__, PROFILE_DIR, HardwareProfile)


def builtin_profiles() -> dict[str, HardwareProfile]:
    """The built-in profiles by name (read once; a fresh dict each call, so callers cannot edit the cache)."""
    return dict(_load_builtin_profiles())


def resolve_profile(selection: str | Mapping[str, Any] | HardwareProfile, path: str) -> HardwareProfile:
    """The profile a config selects, or ConfigError naming ``path`` (e.g. ``hardware``).

    ``selection`` is a built-in name; or ``{extends: <name>, ...overrides}``, the overrides applied to the
    built-in's JSON form as a JSON merge patch (RFC 7386: mappings merge, lists and scalars replace, null
    removes a key); or a whole profile as a mapping without ``extends``.
    """
    if isinstance(selection, HardwareProfile):
        return selection
    if isinstance(selection, str):
        return _builtin(selection, path)
    if not isinstance(selection, Mapping):
        raise ConfigError.at(
            path,
            f"{selection!r} is not a hardware profile: write a built-in name ({', '.join(builtin_profiles())}), "
            "{extends: <name>, ...overrides}, or a whole profile",
        )
    data = dict(selection)
    if "extends" in data:
        base = _builtin(data.pop("extends"), config_path(path, "extends"))
        # Only what the base file states is merged onto; derived defaults (image, productLabel, resource
        # name) are derived again from the merged result, so overriding gpu.vendor or gpu.product carries.
        # A composed profile is not the built-in any more: it gets its own name, and its description says
        # what changed, unless the overrides give them. The count of nodes is no change to the machine: with
        # nodes alone it keeps the built-in's name, the pool the built-in's other users share (planner/pool.py).
        changed = sorted(data)
        own = (
            {
                "name": f"{base.name}+custom",
                "description": f"{base.description} Overridden: {', '.join(changed)}.".strip(),
            }
            if set(changed) - POOL_ONLY_FIELDS
            else {}
        )
        base_data = base.model_dump(by_alias=True, exclude_unset=True, mode="json")
        if "gpu" in data and data["gpu"] is None:
            # Removing the GPUs removes what only GPUs need: their image, node selector and tolerations,
            # unless the overrides set them again.
            base_data = {k: v for k, v in base_data.items() if k not in ("image", "nodeSelector", "tolerations")}
        data = merge_patch(base_data, {**own, **data})
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc, path)) from None


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386), without changing either."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def _builtin(name: object, path: str) -> HardwareProfile:
    profiles = builtin_profiles()
    if isinstance(name, str) and name in profiles:
        return profiles[name]
    known = list(profiles)
    hints = suggest(name, known) if isinstance(name, str) else []
    hint = f"did you mean {' or '.join(hints)}? " if hints else ""
    raise ConfigError.at(path, f"{name!r} is not a built-in hardware profile; {hint}known: {', '.join(known)}")
