"""Pulumi components: thin shells that register what the pure builders return.

Arguments are plain typed dicts with the LLMKube JSON names, so that these components can later be served
to other Pulumi languages as a component provider; the pydantic API validates them inside. A bad argument
raises ConfigError, which Pulumi prints as one clean message (no stack trace) and which fails the preview.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypedDict

import pulumi

from . import crds, operator, workloads
from .api import ModelSpec, OperatorSettings
from .api.stack import Delivery
from .api.validation import problems_from_validation_error
from .errors import ConfigError
from .register import register, resource_names
from .resolve import ResolvedModel, ResolvedService, ResolvedStack, load_stack

API_VERSION = f"{crds.GROUP}/{crds.VERSION}"


class OperatorArgs(TypedDict, total=False):
    """LLMKube operator install settings (the ``llmkube:operator`` config)."""

    version: str
    namespace: str
    image: str
    install: bool
    resources: dict[str, str]


class ModelArgs(TypedDict):
    spec: Required[dict[str, Any]]  # an LLMKube Model spec (JSON names)
    namespace: NotRequired[str]
    delivery: NotRequired[Delivery]


class InferenceServiceArgs(TypedDict):
    spec: Required[dict[str, Any]]  # an LLMKube InferenceService spec (JSON names)
    model: Required[Model]
    namespace: NotRequired[str]
    delivery: NotRequired[Delivery]
    hardware: NotRequired[str | dict[str, Any]]  # a hardware profile name or {extends: ..., ...}


class PlatformArgs(TypedDict, total=False):
    """A whole stack: the keys of the ``llmkube:`` config namespace."""

    delivery: Delivery
    namespace: str
    createNamespace: bool
    hardware: str | dict[str, Any]
    operator: OperatorArgs
    models: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]


def _child(parent: pulumi.Resource, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=parent), opts)


def _register_all(prefix: str, manifests: list[dict[str, Any]], opts: pulumi.ResourceOptions) -> list[Any]:
    return [register(n, m, opts) for n, m in zip(resource_names(prefix, manifests), manifests, strict=True)]


class Operator(pulumi.ComponentResource):
    """The LLMKube operator: its CRDs, RBAC, controller Deployment and metrics Service."""

    namespace: str
    image: str

    def __init__(self, name: str, args: OperatorArgs | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:Operator", name, {}, opts)
        settings = _validate_operator(dict(args or {}))
        child = _child(self)
        self.crds = _register_all(f"{name}-crd", crds.all_crds() + crds.companion_crds(), child)
        self.resources = _register_all(name, operator.operator_manifests(settings), child)
        self.namespace = settings.namespace
        self.image = settings.image_ref
        self.register_outputs({"namespace": self.namespace, "image": self.image})


def _validate_operator(args: dict[str, Any]) -> OperatorSettings:
    from pydantic import ValidationError

    try:
        return OperatorSettings.model_validate(args)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc, "operator")) from None


class Model(pulumi.ComponentResource):
    """A model file. Delivery operator: a Model custom resource. Direct: the services' init containers fetch it."""

    name: str
    spec: ModelSpec
    cache_path: str

    def __init__(self, name: str, args: ModelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:Model", name, {}, opts)
        stack = load_stack(
            {
                "namespace": args.get("namespace", "llmkube"),
                "delivery": args.get("delivery", "direct"),
                "models": {name: args["spec"]},
            }
        )
        (model,) = stack.models.values()
        self._init(model, stack.namespace, stack.delivery)

    @classmethod
    def _from_resolved(
        cls, name: str, model: ResolvedModel, stack: ResolvedStack, opts: pulumi.ResourceOptions | None
    ) -> Model:
        self = cls.__new__(cls)
        pulumi.ComponentResource.__init__(self, "llmkube:index:Model", name, {}, opts)
        self._init(model, stack.namespace, stack.delivery)
        return self

    def _init(self, model: ResolvedModel, namespace: str, delivery: str) -> None:
        self.key = model.key
        self.name = model.name
        self.spec = model.spec
        self.namespace = namespace
        self.cache_path = workloads.model_path(model.spec, model.path)
        self.custom_resource = None
        if delivery == "operator":
            self.custom_resource = register(
                f"{self._name}-model",
                custom_resource("Model", model.name, namespace, model.spec.wire()),
                _child(self),
            )
        self.register_outputs({"name": self.name, "cachePath": self.cache_path})


class InferenceService(pulumi.ComponentResource):
    """One llama.cpp server. Delivery operator: an InferenceService custom resource. Direct: its workloads."""

    endpoint: str
    base_url: str
    client_config: dict[str, Any]
    args: list[str]

    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:InferenceService", name, {}, opts)
        model: Model = args["model"]
        stack = load_stack(
            {
                "namespace": args.get("namespace", model.namespace),
                "delivery": args.get("delivery", "direct"),
                "hardware": args.get("hardware", "cpu-only"),
                "models": {model.key: model.spec.wire()},
                "services": {name: args["spec"]},
            }
        )
        for warning in stack.warnings:
            pulumi.log.warn(str(warning), resource=self)
        (service,) = stack.services.values()
        self._init(service, stack.delivery)

    @classmethod
    def _from_resolved(
        cls, name: str, service: ResolvedService, stack: ResolvedStack, opts: pulumi.ResourceOptions | None
    ) -> InferenceService:
        self = cls.__new__(cls)
        pulumi.ComponentResource.__init__(self, "llmkube:index:InferenceService", name, {}, opts)
        self._init(service, stack.delivery)
        return self

    def _init(self, service: ResolvedService, delivery: str) -> None:
        child = _child(self)
        if delivery == "operator":
            self.resources = [
                register(
                    f"{self._name}-isvc",
                    custom_resource("InferenceService", service.name, service.namespace, service.spec.wire()),
                    child,
                )
            ]
        else:
            self.resources = _register_all(self._name, workloads.service_workloads(service), child)
        self.service_name = service.name
        self.endpoint = workloads.endpoint_url(service)
        self.base_url = workloads.openai_base_url(service)
        self.client_config = client_config(service, self.base_url)
        self.server_args = workloads.server_args_for(service)
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "baseUrl": self.base_url,
                "clientConfig": self.client_config,
                "serverArgs": self.server_args,
            }
        )


class Platform(pulumi.ComponentResource):
    """A whole stack: namespace, model cache, operator (delivery operator), models and services."""

    services: dict[str, dict[str, Any]]
    namespace: str
    delivery: str

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llmkube:index:Platform", name, {}, opts)
        stack = load_stack(dict(args))
        for warning in stack.warnings:
            pulumi.log.warn(str(warning), resource=self)
        child = _child(self)

        foundation: list[pulumi.Resource] = []
        if stack.config.create_namespace:
            namespace = workloads.namespace_manifests(
                stack.namespace, list(stack.services.values()), delivery=stack.delivery
            )
            foundation += _register_all(name, namespace, child)
        if stack.delivery == "operator" and stack.config.operator.install:
            self.operator = Operator(
                f"{name}-operator", stack.config.operator.model_dump(by_alias=True, exclude_none=True), child
            )
            foundation.append(self.operator)
        if stack.delivery == "direct":
            settings = stack.config.model_cache
            cache = workloads.shared_cache_manifests(
                stack, size=settings.size, storage_class=settings.storage_class, access_mode=settings.access_mode
            )
            # The shared model cache outlives every service and the stack itself: re-downloading tens of
            # gigabytes because a service was renamed is the failure this prevents.
            keep = pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(retain_on_delete=True, depends_on=foundation)
            )
            foundation += [register(f"{name}-model-cache", m, keep) for m in cache]

        after = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=foundation))
        self.models = {m.name: Model._from_resolved(f"{name}-{m.name}", m, stack, after) for m in stack.models.values()}
        self.inference_services = {
            s.name: InferenceService._from_resolved(
                f"{name}-{s.name}",
                s,
                stack,
                pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=[self.models[s.model.name]])),
            )
            for s in stack.services.values()
        }
        self.services = {
            key: {
                "endpoint": svc.endpoint,
                "baseUrl": svc.base_url,
                "clientConfig": svc.client_config,
                "serverArgs": svc.server_args,
            }
            for key, svc in self.inference_services.items()
        }
        self.namespace = stack.namespace
        self.delivery = stack.delivery
        self.register_outputs({"services": self.services, "delivery": self.delivery, "namespace": self.namespace})


def custom_resource(
    kind: Literal["Model", "InferenceService"], name: str, namespace: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": workloads.common_labels(name, kind)},
        "spec": spec,
    }


def client_config(service: ResolvedService, base_url: str) -> dict[str, Any]:
    """A ready-to-paste OpenAI provider entry, in the shape of Qwen Code's ``modelProviders`` setting.

    llama-server serves one model and ignores the model name a client sends, so the service name is the id.
    It needs no key unless started with --api-key; the envKey is there because clients insist on one.
    """
    return {
        "modelProviders": {
            "openai": [
                {
                    "id": service.name,
                    "name": f"{service.name} ({service.model.name}, llmkube)",
                    "baseUrl": base_url,
                    "envKey": "LLMKUBE_API_KEY",
                }
            ]
        }
    }
