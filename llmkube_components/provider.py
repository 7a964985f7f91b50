"""The component provider: serves Platform, Model, InferenceService and Operator to every Pulumi language.

Pulumi runs it through the Python language host's plugin mode (``PulumiPlugin.yaml`` at the repository root,
entry point ``__main__.py``) for ``pulumi package add``, ``pulumi package get-schema`` and a YAML program's
``packages:``. The schema is inferred from the components' typed Args and Output annotations.

It is Pulumi's component provider (``pulumi.provider.experimental``) with one change: a bad argument
(``ConfigError``) reaches the engine as the property error it is, naming the argument path, the value and
what is allowed, instead of a Python stack trace. That holds whether the arguments were plain values (the
error comes from the constructor) or Outputs (it comes when the component's outputs are resolved).
"""

import argparse
import asyncio
import contextlib
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
from pulumi.provider.experimental.component import ComponentProvider
from pulumi.provider.provider import ConstructResult
from pulumi.provider.server import ComponentInitError, ProviderServicer
from pulumi.resource import ResourceOptions
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import provider_pb2_grpc

from .components import InferenceService, Model, Operator, Platform
from .errors import ConfigError

NAME = "llmkube"
COMPONENTS = [Platform, Model, InferenceService, Operator]


def version() -> str:
    """The package version: the checkout's pyproject.toml when run from one (a plugin folder need not have the
    package installed), else the installed distribution's."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    return metadata.version("llmkube-components")


class _Provider(ComponentProvider):
    def construct(
        self, name: str, resource_type: str, inputs: Any, options: ResourceOptions | None = None
    ) -> ConstructResult:
        try:
            return super().construct(name, resource_type, inputs, options)
        except ComponentInitError as error:
            if isinstance(error.inner, ConfigError):
                raise error.inner from None
            raise


class _Servicer(ProviderServicer):
    async def Construct(self, request: Any, context: Any) -> Any:
        try:
            return await super().Construct(request, context)
        except ConfigError as error:
            problems = [{"property_path": p.path, "reason": p.message} for p in error.problems]
            status = self.create_grpc_invalid_properties_status(str(error), problems)  # type: ignore[arg-type]
            await context.abort_with_status(status)
            raise


def serve(argv: list[str] | None = None) -> None:
    """Serve the provider: the engine passes its address, and reads our port from our first line of stdout."""
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="llmkube component provider (gRPC server)")
    parser.add_argument("engine", help="Pulumi engine address")
    engine = parser.parse_known_args(args)[0].engine
    provider = _Provider(list(COMPONENTS), NAME, None, version())

    async def run() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(
            _Servicer(provider, args, engine_address=engine), server
        )
        port = server.add_insecure_port(address="127.0.0.1:0")
        await server.start()
        sys.stdout.buffer.write(f"{port}\n".encode())
        sys.stdout.buffer.flush()
        await server.wait_for_termination()

    with contextlib.suppress(KeyboardInterrupt):  # the engine stops its plugins with SIGINT
        asyncio.run(run())
