"""The Pulumi program behind ``pulumi up -s <stack>``: stack config -> Platform -> stack outputs."""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from .components import Platform
from .errors import CONFIG_NAMESPACE


def stack_config() -> dict[str, Any]:
    """Every ``llmkube:`` key of the stack, objects decoded, so that an unknown key is seen and reported.

    ``pulumi.Config.get_object`` reads only keys we already know; a typo such as ``llmkube:servics`` would be
    silently ignored, and the services it holds silently dropped. So read the whole namespace instead.
    """
    raw = {**get_config_env(), **CONFIG.get()}
    prefix = f"{CONFIG_NAMESPACE}:"
    out: dict[str, Any] = {}
    for key, value in sorted(raw.items()):
        if not key.startswith(prefix):
            continue
        out[key.removeprefix(prefix)] = _decode(value)
    return out


def _decode(value: Any) -> Any:
    # Pulumi hands structured config over as JSON text and plain values as strings.
    if (isinstance(value, str) and value[:1] in ("{", "[")) or value in ("true", "false"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def main() -> Platform:
    platform = Platform(pulumi.get_project(), stack_config())
    pulumi.export("namespace", platform.namespace)
    pulumi.export("delivery", platform.delivery)
    pulumi.export("services", platform.services)
    return platform
