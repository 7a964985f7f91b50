"""Run the real Pulumi program (__main__.py) under Pulumi's mocks with a stack file's config.

The mocks stand in for the engine and the Kubernetes provider: they record every resource the program
registers, with its type, name, inputs and parent, so tests can check exactly what a stack would deploy.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"


def stack_files() -> list[Path]:
    return sorted(STACKS.glob("Pulumi.*.yaml"))


def stack_name(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def stack_config(name: str) -> dict[str, Any]:
    """The ``config:`` block of stacks/Pulumi.<name>.yaml."""
    return yaml.safe_load((STACKS / f"Pulumi.{name}.yaml").read_text())["config"]


def as_pulumi_config(config: dict[str, Any]) -> dict[str, str]:
    # The engine hands config to the program as strings: objects as JSON, booleans as true/false.
    out = {}
    for key, value in config.items():
        if isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    return out


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.inputs.get("kind", "")

    @property
    def object_name(self) -> str:
        return (self.inputs.get("metadata") or {}).get("name", "")


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def install_mocks(config: dict[str, Any], *, preview: bool = True, secret_keys: tuple[str, ...] = ()) -> RecordingMocks:
    """Mocks for a program with this stack config; ``secret_keys`` are the keys set with --secret."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="llmkube", stack="test", preview=preview)
    pulumi.runtime.set_all_config(as_pulumi_config(config), list(secret_keys))
    return mocks


def run_main() -> Any:
    """Run __main__.py as Pulumi would; returns its Platform component."""
    return runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")["platform"]


class Resolved:
    """A component's outputs once resolved, read as its attributes are named (``svc.server_args``)."""

    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs

    def __getattr__(self, name: str) -> Any:
        head, *rest = name.split("_")
        return self.outputs.get(head + "".join(part.title() for part in rest))


def resolved(result: Any) -> Any:
    """An Output of ``result`` with its outputs known: a component becomes ``Resolved``, anything else stays."""
    from llmkube_components.components import _Component

    if isinstance(result, _Component):
        return result._outputs.apply(Resolved)
    return pulumi.Output.from_input(result)
