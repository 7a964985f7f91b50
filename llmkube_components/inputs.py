"""Component arguments as Pulumi Inputs: which parts are Outputs, when they are known, their plain values.

A component's arguments may mix plain values with Outputs of other resources (a Namespace's name, a
Secret's, a Model component's spec), at any depth. The pipeline runs on plain values only; this module
tells the components whether they can run it now (nothing is an Output) or once the Outputs are known, and
which argument paths a preview could not know.
"""

import asyncio
import inspect
from collections.abc import Mapping
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


def unknown_paths(value: Any) -> pulumi.Output[list[str]]:
    """The argument paths whose Outputs are not known (in a preview, those of resources not yet created)."""
    found = leaves(value)

    async def unknown() -> list[str]:
        return [path for path, output in found if not await output.is_known()]

    return pulumi.Output.from_input(asyncio.ensure_future(unknown()))


def carried(value: Any, carry: pulumi.Output[None] | None) -> Any:
    """``value`` as an Output that carries ``carry``'s dependencies and secrecy, or as it is without one.

    What a component builds from Outputs must keep what they had: the resources they came from (so the
    engine orders and deletes in the right order) and their secret marking (so state never holds a secret
    in plain text). ``carry`` is an Output of the arguments with the value dropped.
    """
    if carry is None:
        return value
    return carry.apply(lambda _: value)
