"""Built-in data shipped as YAML files in the package (hardware profiles, the planner's catalog)."""

from __future__ import annotations

from importlib import resources
from typing import TypeVar

import yaml
from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

# libyaml's loader where PyYAML was built with it (its wheels are): ten times faster than the pure-Python one,
# which matters because every `pulumi preview` loads the profiles and the catalog.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_named(package: str, folder: str, model: type[T]) -> dict[str, T]:
    """Every ``<folder>/<name>.yaml`` of ``package``, validated as ``model``, by name (in file-name order).

    The file name is the entry's ``name``, so that listing the folder lists what users can write.
    """
    entries: dict[str, T] = {}
    for item in sorted(resources.files(package).joinpath(folder).iterdir(), key=lambda e: e.name):
        if not item.name.endswith(".yaml"):
            continue
        entry = model.model_validate(yaml.load(item.read_text(encoding="utf-8"), Loader=_Loader))
        name = getattr(entry, "name")  # noqa: B009 - every model loaded this way has a name field
        if name != item.name.removesuffix(".yaml"):
            raise ValueError(f"{folder}/{item.name} holds {name!r}; the file name and the name inside must match")
        entries[name] = entry
    return entries
