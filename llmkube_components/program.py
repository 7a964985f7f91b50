"""The Pulumi program behind ``pulumi up -s <stack>``: stack config -> Platform -> stack outputs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Any, cast

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

from .components import Platform, PlatformArgs
from .errors import CONFIG_NAMESPACE
from .settings import Settings

API_KEYS = "apiKeys"  # the stack config key of the services' API keys (StackConfig.api_keys)


def stack_config() -> dict[str, Any]:
    """Every ``llmkube:`` key of the stack, objects decoded, so that an unknown key is seen and reported.

    ``pulumi.Config.get_object`` reads only keys we already know; a typo such as ``llmkube:servics`` would be
    silently ignored, and the services it holds silently dropped. So read the whole namespace instead.

    A secret key (``pulumi config set --secret``) stays secret: its value is a secret Output, and everything
    built from it is secret too. ``apiKeys`` is the exception that keeps the rest readable: each of its
    values becomes a secret Output of its own, which only the key's Secret receives.
    """
    raw = {**get_config_env(), **CONFIG.get()}
    prefix = f"{CONFIG_NAMESPACE}:"
    out: dict[str, Any] = {}
    for key, value in sorted(raw.items()):
        if not key.startswith(prefix):
            continue
        name = key.removeprefix(prefix)
        decoded = _decode(value)
        if name == API_KEYS and isinstance(decoded, dict):
            if not is_config_secret(key):
                pulumi.log.warn(
                    f"{key} is in plain text in the stack file: set each key with pulumi config set --secret "
                    f"--path '{key}.<service>' KEY"
                )
            decoded = {service: pulumi.Output.secret(v) for service, v in decoded.items()}
        elif is_config_secret(key):
            decoded = pulumi.Output.secret(decoded)
        out[name] = decoded
    return out


def _decode(value: Any) -> Any:
    # Pulumi hands structured config over as JSON text and plain values as strings.
    if (isinstance(value, str) and value[:1] in ("{", "[")) or value in ("true", "false"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def quiet_interrupt() -> None:
    """Leave on SIGINT without Python's KeyboardInterrupt traceback.

    The Pulumi engine stops its plugins with SIGINT to their process group, which includes the program the
    language host started: when an update fails (a resource the API server refused, say) or is cancelled, a
    program still running would print a traceback of wherever it happened to be, below the real error the
    engine has already reported. Installed by the stack program only, never by the components.
    """
    # Outside the main thread (an embedding host) signal() raises ValueError: leave Python's default then.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))


def main() -> Platform:
    quiet_interrupt()
    try:
        settings = Settings.from_env(os.environ)  # the edge: nothing below it reads the environment
    except ValueError as exc:
        raise pulumi.RunError(str(exc)) from None
    platform = Platform(pulumi.get_project(), cast(PlatformArgs, stack_config()), settings=settings, stack_config=True)
    pulumi.export("namespace", platform.namespace)
    pulumi.export("delivery", platform.delivery)
    pulumi.export("services", platform.services)
    return platform
