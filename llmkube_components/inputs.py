"""Component arguments as Pulumi Inputs: which parts are Outputs, when they are known, their plain values.

A component's arguments may mix plain values with Outputs of other resources (a Namespace's name, a
Secret's, a Model component's spec), at any depth. The pipeline runs on plain values only; this module
tells the components whether they can run it now (nothing is an Output) or once the Outputs are known, and
which argument paths a preview could not know.
"""

import asyncio
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pulumi


def leaves(value: Any, path: str = "") -> list[tuple[str, pulumi.Output[Any]]]:
    """Every Output (or awaitable) inside ``value``, with its argument path (``spec.source``)."""
    if isinstance(value, pulumi.Output):
        return [(path, value)]
    if inspect.isawaitable(value):
        return [(path, pulumi.Output.from_input(value))]
    if isinstance(value, Mapping):
        return [leaf for key, item in value.items() for leaf in leaves(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list | tuple):
        return [leaf for i, item in enumerate(value) for leaf in leaves(item, f"{path}[{i}]")]
    return []


def has_outputs(value: Any) -> bool:
    return bool(leaves(value))


def plain(value: Any) -> Any:
    """Known argument values as the typed API reads them: string enums become their strings, tuples lists, and
    whole floats integers (other languages' numbers reach a provider as floats: 2048.0 for a contextSize)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Known:
    """What a preview knows of some arguments: the paths of the Outputs it cannot know, and the values of the
    others (the arguments with the unknown ones left out)."""

    unknown: list[str]
    without_unknown: Any


def known(value: Any) -> pulumi.Output[Known]:
    """``value``'s Outputs resolved as far as a preview can: an unknown one is left out, with its path noted."""
    found = leaves(value)

    async def resolve() -> Known:
        values: dict[str, Any] = {}
        unknown: list[str] = []
        for path, output in found:
            if await output.is_known():
                values[path] = await output.future()
            else:
                unknown.append(path)
        return Known(unknown, _replaced(value, values, ""))

    return pulumi.Output.from_input(asyncio.ensure_future(resolve()))


_LEFT_OUT = object()


def _replaced(value: Any, values: dict[str, Any], path: str) -> Any:
    if isinstance(value, pulumi.Output) or inspect.isawaitable(value):
        return values.get(path, _LEFT_OUT)
    if isinstance(value, Mapping):
        items = ((key, _replaced(item, values, f"{path}.{key}" if path else str(key))) for key, item in value.items())
        return {key: item for key, item in items if item is not _LEFT_OUT}
    if isinstance(value, list | tuple):
        items = (_replaced(item, values, f"{path}[{i}]") for i, item in enumerate(value))
        return [item for item in items if item is not _LEFT_OUT]
    return value


def carried(value: Any, carry: pulumi.Output[None] | None) -> Any:
    """``value`` as an Output that carries ``carry``'s dependencies and secrecy, or as it is without one.

    What a component builds from Outputs must keep what they had: the resources they came from (so the
    engine orders and deletes in the right order) and their secret marking (so state never holds a secret
    in plain text). ``carry`` is an Output of the arguments with the value dropped.
    """
    if carry is None:
        return value
    return carry.apply(lambda _: value)
