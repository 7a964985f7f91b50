"""Writes ``spec_args.py``: the components' typed Args, derived from the typed API (``api/``).

    python -m llmkube_components.argsgen          # rewrite spec_args.py
    python -m llmkube_components.argsgen --check  # exit 1 when spec_args.py is out of date (a test runs this)

The API models stay the one home of every field name, description and enum; the Args are their form for
Pulumi: ``TypedDict``s whose keys are the LLMKube JSON names and whose values accept ``pulumi.Input``, in
the shapes Pulumi's schema inference accepts (it refuses ``Literal`` and ``Union``):

- a ``Literal`` becomes a string ``Enum`` (named after the API's own alias where it has one);
- a union of a name and an object (a hardware profile) becomes ``Any``; its description says which forms;
- ``Optional[X]`` becomes ``NotRequired[X]``; a Kubernetes quantity is a string.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import api
from .api import model as api_model
from .api import runtimes as api_runtimes
from .api import service as api_service
from .api import stack as api_stack
from .api.base import LLMKUBE_ONLY

TARGET = Path(__file__).with_name("spec_args.py")

# The roots, and the name each one's Args take. The others keep the API's class names: they become the
# schema's type names, and SDK generators add "Args" to input types themselves.
ROOTS: dict[type[BaseModel], str] = {
    api.StackConfig: "PlatformArgs",
    api.OperatorSettings: "OperatorSettings",
}

HEADER = '''\
"""Typed Args of the LLMKube specs, for the Pulumi components and their schema.

Generated from the typed API (``api/``) by ``python -m llmkube_components.argsgen``: do not edit by hand;
a test keeps this file equal to what the generator writes. Keys are the LLMKube JSON names; every value
accepts a ``pulumi.Input`` (a plain value or an Output of another resource).
"""

# ruff: noqa: E501

from enum import StrEnum
from typing import Any, NotRequired, Required, TypedDict

import pulumi
'''


def _literal_names() -> dict[tuple[Any, ...], str]:
    """The API's own names for its enums (``CacheType``, ``EndpointType``, ...), by their values."""
    names: dict[tuple[Any, ...], str] = {}
    for module in (api_stack, api_model, api_service, api.core, api_runtimes):
        for attr, value in vars(module).items():
            if typing.get_origin(value) is Literal and attr[:1].isupper():
                names.setdefault(typing.get_args(value), attr)
    return names


class _Writer:
    def __init__(self) -> None:
        self.blocks: dict[str, str] = {}  # name -> source, in the order written (dependencies first)
        self.enum_names = _literal_names()
        self.enums: dict[tuple[Any, ...], str] = {}

    def model(self, cls: type[BaseModel], name: str | None = None) -> str:
        name = name or ROOTS.get(cls) or cls.__name__
        if name in self.blocks:
            return name
        self.blocks[name] = ""  # reserved: recursion and order
        lines = [f"class {name}(TypedDict, total=False):", f'    """{_doc(cls.__doc__ or name)}"""', ""]
        for field_name, info in cls.model_fields.items():
            key = info.alias or field_name
            annotation = self.type_of(info.annotation, f"{cls.__name__}{key[:1].upper()}{key[1:]}")
            wrapper = "Required" if info.is_required() else "NotRequired"
            lines.append(f"    {key}: {wrapper}[{annotation}]")
            lines.append(f'    """{_doc(_description(info, cls, key))}"""')
            lines.append("")
        del self.blocks[name]
        self.blocks[name] = "\n".join(lines).rstrip() + "\n"
        return name

    def type_of(self, annotation: Any, enum_hint: str) -> str:
        """The Args form of one API type, wrapped in ``pulumi.Input``."""
        return f"pulumi.Input[{self.plain(annotation, enum_hint)}]"

    def plain(self, annotation: Any, enum_hint: str) -> str:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            return self.plain(args[0], enum_hint)
        if origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                return self.plain(rest[0], enum_hint)
            return "Any"  # e.g. a profile name or an object: schema inference refuses unions
        if origin is Literal:
            if not all(isinstance(a, str) for a in args):
                return " | ".join(sorted({type(a).__name__ for a in args}))  # e.g. turboQuantBits: 3, 6 or 8
            return self.enum(args, enum_hint)
        if origin is list:
            return f"list[{self.type_of(args[0], enum_hint)}]"
        if origin is dict:
            return f"dict[str, {self.type_of(args[1], enum_hint)}]"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.model(annotation)
        if annotation in (str, int, float, bool):
            return annotation.__name__
        if annotation is Any:
            return "Any"
        raise TypeError(f"no Args form for {annotation!r} ({enum_hint})")

    def enum(self, values: tuple[Any, ...], hint: str) -> str:
        if values in self.enums:
            return self.enums[values]
        name = self.enum_names.get(values, hint)
        self.enums[values] = name
        lines = [f"class {name}(StrEnum):", f'    """One of: {", ".join(str(v) for v in values)}."""', ""]
        members: list[str] = []
        for v in values:
            member = _member(v)
            while member in members:  # FLASHINFER and flashinfer: both spellings are values of one enum
                member += "_"
            members.append(member)
        lines += [f'    {member} = "{v}"' for member, v in zip(members, values, strict=True)]
        self.blocks[name] = "\n".join(lines) + "\n"
        return name


def _description(info: FieldInfo, owner: type[BaseModel], key: str) -> str:
    text = info.description
    if text is None:
        for meta in info.metadata:  # a described type such as Quantity
            text = getattr(meta, "description", None) or text
    if text is None:
        raise ValueError(f"{owner.__name__}.{key} has no description: document it in api/")
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get(LLMKUBE_ONLY) and not text.startswith("llmkube only"):
        text = f"llmkube only: {text}"
    return text


def _doc(text: str) -> str:
    return " ".join(text.split()).replace('"""', "'''").replace("\\", "\\\\")


def _member(value: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", str(value))
    member = re.sub(r"[^0-9A-Za-z]+", "_", snake).upper()
    return member if member[:1].isalpha() else f"V_{member}"


def render() -> str:
    writer = _Writer()
    for root in ROOTS:
        writer.model(root)
    return HEADER + "\n\n" + "\n\n".join(writer.blocks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmkube_components.argsgen")
    parser.add_argument("--check", action="store_true", help="fail when spec_args.py is out of date")
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python -m llmkube_components.argsgen", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
